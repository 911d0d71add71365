"""The MQTT collector: one broker connection, its subscriptions, its whole life.

QoS 1, a fixed client id and a persistent session (clean_session=False), so the broker keeps messages for
us while we are away; subscriptions are made in the connect callback, so every reconnect restores them;
shutdown disconnects without unsubscribing, which would throw the session away.

paho runs inside the asyncio event loop (its socket is watched by the loop; no network thread): a paho
thread and the loop would hand the interpreter lock back and forth on every message and every syscall.
The message callback only queues the message; after each read of the socket the loop decodes what was
queued, spools the samples as one frame, and only then acknowledges the messages (manual acks), so an
acknowledged message is on disk. Rejected messages are acknowledged too (counted and quarantined), or the
broker would redeliver garbage forever. When the spool is full, the collector disconnects (the broker keeps
the session and the unacknowledged messages) and reconnects once there is room again.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo

import paho.mqtt.client as mqtt

from biopilot.aio import wait_for_any, wait_for_event
from biopilot.config import MqttBroker, MqttSource, Tag
from biopilot.samples import Sample, utcnow
from collectors import decoders as dec
from collectors.sink import Counts, SampleSink
from collectors.spool import SpoolFullError

log = logging.getLogger(__name__)

READ_BATCH = 2000  # packets read from the socket per wake-up of the loop, before handling them
RESUME_FILL = 0.5  # after a full spool, reconnect once it is this empty again
# Every message gets exactly one outcome: msg_accepted (every mapped field gave a sample), msg_partial
# (some did), or msg_rejected:<reason of the first rejection>. Rejections are also counted by reason.
ACCEPTED = "msg_accepted"
PARTIAL = "msg_partial"
REJECTED = "msg_rejected:"


@dataclass(frozen=True)
class _Field:
    tag: Tag
    source: MqttSource


class MqttCollector:
    def __init__(
        self,
        name: str,
        broker: MqttBroker,
        tags: list[Tag],
        sink: SampleSink,
        counts: Counts,
        site_tz: tzinfo,
        window: dec.TimeWindow | None = None,
    ) -> None:
        self.name = name
        self.broker = broker
        self.sink = sink
        self.counts = counts
        self.source = f"mqtt:{name}"
        self.tz = site_tz
        self.window = window or dec.TimeWindow()
        self.topics: dict[str, list[_Field]] = {}
        for tag in tags:
            assert isinstance(tag.source, MqttSource)
            self.topics.setdefault(tag.source.topic, []).append(_Field(tag, tag.source))
        self.connected = asyncio.Event()
        self.connects = 0
        self.messages = 0
        self.last_message: float | None = None  # wall clock of the newest message
        self.paused_for_spool = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._inbox: list[mqtt.MQTTMessage] = []
        self._writing = False
        self._stopping = False
        self._lost = asyncio.Event()
        self._loop_thread = 0

    # -- paho thread: hand over, nothing else ----------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("%s: broker refused the connection: %s", self.source, rc)
            return
        client.subscribe([(topic, 1) for topic in self.topics])
        self.connects += 1
        self.connected.set()
        log.info(
            "%s: connected to %s:%d (session present: %s)",
            self.source,
            self.broker.host,
            self.broker.port,
            bool(getattr(flags, "session_present", False)),
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        if self.connected.is_set() and not self.paused_for_spool and not self._stopping:
            log.warning("%s: disconnected (%s); reconnecting with backoff", self.source, rc)
        self.connected.clear()
        self._lost.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._inbox.append(msg)

    # -- the socket in the event loop ------------------------------------------------------------------
    # paho calls these from the loop or from the thread running the (blocking) connect: marshal to the loop.
    def _in_loop(self, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
        self._in_loop(self._watch, sock)

    def _on_socket_close(self, client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
        self._in_loop(self._unwatch, sock)

    def _on_register_write(self, client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
        self._in_loop(self._want_write, sock)

    def _on_unregister_write(self, client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
        self._in_loop(self._done_writing, sock)

    def _watch(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, self._readable, sock)

    def _unwatch(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._writing = False

    def _want_write(self, sock: socket.socket) -> None:
        if not self._writing and self._client is not None and self._client.socket() is sock:
            assert self._loop is not None
            self._loop.add_writer(sock, self._client.loop_write)
            self._writing = True

    def _done_writing(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)
        self._writing = False

    def _readable(self, sock: socket.socket) -> None:
        """Read the packets waiting on the socket (up to a bound), then handle the messages among them."""
        client = self._client
        assert client is not None
        for _ in range(READ_BATCH):
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS or not _has_data(sock):
                break
        self._drain()

    def _drain(self) -> None:
        """Decode queued messages, spool their samples as one frame, then acknowledge them."""
        if not self._inbox:
            return
        batch = list(self._inbox)
        self._inbox.clear()
        samples: list[Sample] = []
        for msg in batch:
            samples.extend(self.decode(msg.topic, msg.payload))
        try:
            self.sink.put(samples)
        except SpoolFullError as exc:
            self._pause(exc)  # not acknowledged: the broker redelivers them after we reconnect
            return
        client = self._client
        if client is not None:
            for msg in batch:
                if msg.qos > 0:
                    client.ack(msg.mid, msg.qos)
        self.messages += len(batch)
        self.last_message = time.time()

    def handle(self, topic: str, payload: bytes) -> None:
        """Decode one message and spool its samples (no acknowledgement: for messages not from paho)."""
        self.sink.put(self.decode(topic, payload))

    def decode(self, topic: str, payload: bytes) -> list[Sample]:
        """Samples for every tag mapped to the topic; counts the message's outcome (exactly one) and
        every rejected field by reason."""
        fields = self.topics.get(topic)
        if fields is None:
            self.counts.reject(self.source, "unknown_topic", topic)
            self.counts.add(self.source, REJECTED + "unknown_topic")
            return []
        samples: list[Sample] = []
        rejected: str | None = None
        obj: dict[str, object] | None = None
        for f in fields:
            src = f.source
            if src.format == "number":
                number = dec.parse_number(payload)
                if isinstance(number, dec.Rejected):
                    self.counts.reject(self.source, number.reason, f"{topic}: {number.detail}")
                    rejected = rejected or number.reason
                    continue
                samples.append(Sample(f.tag.name, utcnow(), number))
                continue
            if obj is None:
                parsed = dec.parse_json_object(payload)
                if isinstance(parsed, dec.Rejected):
                    self.counts.reject(self.source, parsed.reason, f"{topic}: {parsed.detail}")
                    self.counts.add(self.source, REJECTED + parsed.reason)
                    return []
                obj = parsed
            sample = self._json_field(f, obj, topic)
            if isinstance(sample, dec.Rejected):
                rejected = rejected or sample.reason
            else:
                samples.append(sample)
        outcome = ACCEPTED if rejected is None else PARTIAL if samples else REJECTED + rejected
        self.counts.add(self.source, outcome)
        if samples:
            self.counts.add(self.source, "values", len(samples))
        return samples

    def _json_field(self, f: _Field, obj: dict[str, object], topic: str) -> Sample | dec.Rejected:
        src = f.source
        if src.field not in obj:
            self.counts.reject(self.source, "missing_field", f"{topic}: no {src.field!r}")
            return dec.Rejected("missing_field", src.field)
        raw = obj[src.field]
        value = dec.text_value(raw) if f.tag.is_text else dec.numeric_value(raw)
        now = utcnow()
        ts = dec.parse_time(obj[src.time_field], self.tz) if src.time_field in obj else now
        status = dec.parse_status(obj.get(src.status_field)) if src.status_field else 0
        window = self.window.check(ts, now) if isinstance(ts, datetime) else None
        for part in (value, ts, status, window):
            if isinstance(part, dec.Rejected):
                self.counts.reject(self.source, part.reason, f"{topic}#{src.field}: {part.detail}")
                return part
        return Sample(f.tag.name, ts, value, status)  # type: ignore[arg-type]

    def _pause(self, exc: SpoolFullError) -> None:
        if self.paused_for_spool:
            return
        log.error(
            "%s: %s; disconnecting until there is room (the broker keeps our messages)", self.source, exc
        )
        self.paused_for_spool = True
        self._inbox.clear()
        if self._client is not None:
            self._client.disconnect()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stay connected (reconnecting with backoff), disconnect on stop."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.broker.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s)
        self._client = client
        started = time.monotonic()
        delay = 0.5
        try:
            while not stop.is_set():
                spool = self.sink.spool
                if self.paused_for_spool:
                    if spool is not None:
                        spool.refresh()
                    if spool is not None and spool.fill > RESUME_FILL:
                        await wait_for_event(stop, 0.5)
                        continue
                    log.warning("%s: the spool has room again; reconnecting", self.source)
                    self.paused_for_spool = False
                try:
                    self._lost.clear()
                    await asyncio.wait_for(asyncio.to_thread(client.reconnect), timeout=15)
                except (OSError, TimeoutError, mqtt.WebsocketConnectionError) as exc:
                    log.warning(
                        "%s: cannot connect to %s:%d (%s); retrying in %.1f s",
                        self.source,
                        self.broker.host,
                        self.broker.port,
                        exc or type(exc).__name__,
                        delay,
                    )
                    await wait_for_event(stop, delay)
                    delay = min(delay * 2, 10.0)
                    continue
                # the socket is watched by the loop now; keep paho's timers (keepalive pings) going
                while not stop.is_set() and not self._lost.is_set():
                    if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                        break
                    await wait_for_any([stop, self._lost], 1.0)
                if self.connected.is_set():  # stopped while connected
                    break
                if self.connects:
                    delay = 0.5  # it was up: retry soon
                await wait_for_event(stop, delay)
                delay = min(delay * 2, 10.0)
        finally:
            # Never unsubscribe: the persistent session keeps what arrives while we are away.
            self._stopping = True
            self._drain()
            if client.socket() is not None:
                client.disconnect()
                client.loop_write()
                client.loop_read()  # lets paho close the socket
            log.info("%s: stopped after %.0f s", self.source, time.monotonic() - started)


def _has_data(sock: socket.socket) -> bool:
    """Is there more to read on the socket right now?"""
    if isinstance(sock, ssl.SSLSocket):
        return sock.pending() > 0 or bool(select.select([sock], [], [], 0)[0])
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # let paho find out what is wrong
