"""The MQTT collector: one broker connection, its subscriptions, its whole life.

QoS 1, a fixed client id and a persistent session (clean_session=False), so the broker keeps messages for
us while we are away; subscriptions are made in the connect callback, so every reconnect restores them;
shutdown disconnects without unsubscribing, which would throw the session away.

Acknowledgements are manual: a message is acknowledged only once its samples are in the spool (or once it
was counted as rejected, so the broker does not redeliver garbage forever). The paho callback does nothing
but queue the message and wake the event loop; the loop decodes queued messages in batches, spools their
samples as one frame, then acknowledges them. When the spool is full, the collector disconnects (the broker
keeps the session and the unacknowledged messages) and reconnects once there is room again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, tzinfo

import paho.mqtt.client as mqtt

from biopilot.aio import wait_for_event
from biopilot.config import MqttBroker, MqttSource, Tag
from biopilot.samples import Sample, utcnow
from collectors import decoders as dec
from collectors.sink import Counts, SampleSink
from collectors.spool import SpoolFullError

log = logging.getLogger(__name__)

DRAIN_BATCH = 5000  # messages decoded per turn of the event loop
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
        self._inbox: deque[mqtt.MQTTMessage] = deque()
        self._scheduled = False
        self._lock = threading.Lock()

    # -- paho thread: hand over, nothing else ----------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("%s: broker refused the connection: %s", self.source, rc)
            return
        client.subscribe([(topic, 1) for topic in self.topics])
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected, bool(getattr(flags, "session_present", False)))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._disconnected, str(rc))

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._inbox.append(msg)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._drain)

    # -- event loop ------------------------------------------------------------------------------------
    def _connected(self, session_present: bool) -> None:
        self.connects += 1
        self.connected.set()
        log.info(
            "%s: connected to %s:%d (session present: %s)",
            self.source,
            self.broker.host,
            self.broker.port,
            session_present,
        )

    def _disconnected(self, reason: str) -> None:
        if self.connected.is_set() and not self.paused_for_spool:
            log.warning("%s: disconnected (%s); reconnecting with backoff", self.source, reason)
        self.connected.clear()

    def _drain(self) -> None:
        """Decode queued messages, spool their samples as one frame, then acknowledge them."""
        with self._lock:
            self._scheduled = False
        batch: list[mqtt.MQTTMessage] = []
        while self._inbox and len(batch) < DRAIN_BATCH:
            batch.append(self._inbox.popleft())
        if self._inbox:
            with self._lock:
                self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._drain)
        if not batch:
            return
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
        """Connect, keep connected (paho reconnects with backoff), disconnect on stop."""
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.broker.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.reconnect_delay_set(0.5, 10)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s)
        client.loop_start()
        started = time.monotonic()
        try:
            while not await wait_for_event(stop, 0.5):
                spool = self.sink.spool
                if self.paused_for_spool and (spool is None or spool.fill <= RESUME_FILL):
                    log.warning("%s: the spool has room again; reconnecting", self.source)
                    await asyncio.to_thread(client.loop_stop)  # the network thread ends after disconnect()
                    self.paused_for_spool = False
                    client.connect_async(
                        self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s
                    )
                    client.loop_start()
        finally:
            # Never unsubscribe: the persistent session keeps what arrives while we are away.
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
            log.info("%s: stopped after %.0f s", self.source, time.monotonic() - started)
