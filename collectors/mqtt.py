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

Payload formats: JSON, plain numbers, InfluxDB line protocol, Sparkplug B (collectors/decoders.py). A tag
has a concrete topic, or a topic template of its broker ("hall3/{equipment}/{signal}") that is subscribed
once as a wildcard ("hall3/+/+"); incoming topic segments pick the equipment and the tag. Sparkplug DATA
topics come with their BIRTH topics, whose metrics map aliases to names for the DATA messages after them.

TLS and username/password: the TLS handshake happens inside paho's (blocking) connect, run in a thread;
after it the socket is non-blocking and watched by the loop like a plain one (an SSL socket may hold
decrypted bytes the loop cannot see: `_readable` drains them). A refused login or an untrusted broker
certificate is logged with what to check, and retried with backoff.
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
from biopilot.config import MqttBroker, MqttPayload, MqttSource, MqttTls, Tag, template_filter
from biopilot.errors import SourceError
from biopilot.samples import GOOD, Sample, utcnow
from biopilot.secrets import read_secret
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


NULL_STATUS = 0x80000000  # Bad: a Sparkplug metric sent as null (is_null) is stored as no value with it


@dataclass(frozen=True)
class _Field:
    tag: Tag
    fmt: MqttPayload  # the format and its keys: the tag's source, or its template
    field: str  # json key or influx field: the format's `field`, or the tag's signal in a template


class _Template:
    """A topic template of the broker, with the tags that use it by (equipment, signal segment)."""

    def __init__(self, name: str, topic: str) -> None:
        self.name = name
        self.segments = topic.split("/")
        self.equipment = self.segments.index("{equipment}")
        self.signal = self.segments.index("{signal}") if "{signal}" in self.segments else None
        self.filter = template_filter(topic)
        self.fields: dict[tuple[str, str | None], list[_Field]] = {}

    def match(self, parts: list[str]) -> tuple[bool, list[_Field] | None]:
        """(does the topic have the template's shape, the tags its segments map to)"""
        if len(parts) != len(self.segments):
            return False, None
        for pattern, part in zip(self.segments, parts, strict=True):
            if pattern != part and pattern != "+" and not pattern.startswith("{"):
                return False, None
        signal = parts[self.signal] if self.signal is not None else None
        return True, self.fields.get((parts[self.equipment], signal))


@dataclass
class _Birth:
    """What the last BIRTH of a Sparkplug edge node or device declared."""

    names: dict[int, str]  # alias -> metric name
    datatypes: dict[str, int]  # metric name -> datatype


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
        self.topics: dict[str, list[_Field]] = {}  # concrete topics (Sparkplug: DATA and BIRTH)
        self.templates: dict[str, _Template] = {}
        self._metrics: dict[str, dict[str, list[_Field]]] = {}  # Sparkplug topic -> metric name -> fields
        self._births: dict[tuple[str, ...], _Birth] = {}  # (group, edge node[, device]) -> its last BIRTH
        for tag in tags:
            src = tag.source
            assert isinstance(src, MqttSource)
            if src.template is None:
                assert src.topic is not None
                f = _Field(tag, src, src.metric if src.format == "sparkplug" else src.field)  # type: ignore[arg-type]
                topics = [src.topic]
                if src.format == "sparkplug":
                    assert src.metric is not None
                    parts = src.topic.split("/")
                    topics.append("/".join([*parts[:2], parts[2].replace("DATA", "BIRTH"), *parts[3:]]))
                    for topic in topics:
                        self._metrics.setdefault(topic, {}).setdefault(src.metric, []).append(f)
                for topic in topics:
                    self.topics.setdefault(topic, []).append(f)
                continue
            template = broker.templates[src.template]
            t = self.templates.get(src.template)
            if t is None:
                t = self.templates[src.template] = _Template(src.template, template.topic)
            assert src.signal is not None
            if t.signal is not None:
                f = _Field(tag, template, template.field)
                t.fields.setdefault((tag.equipment, src.signal), []).append(f)
            else:
                t.fields.setdefault((tag.equipment, None), []).append(_Field(tag, template, src.signal))
        filters = [t.filter for t in self.templates.values()]
        # a concrete topic a template's wildcard covers arrives through that subscription (twice otherwise)
        self.subscriptions = [
            topic for topic in self.topics if not any(mqtt.topic_matches_sub(f, topic) for f in filters)
        ] + filters
        self.last_error: str | None = None
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
        self._answered = False  # the broker answered the current connection attempt (CONNACK)

    # -- paho thread: hand over, nothing else ----------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        self._answered = True
        if getattr(rc, "is_failure", False):
            why = f"the broker refused the connection: {rc}"
            if str(rc) in ("Not authorized", "Bad user name or password"):
                who = self.broker.username
                env = self.broker.password_env
                why += (
                    f" (check the username {who!r} and the password in ${env})"
                    if who and env
                    else f" (check the username {who!r})"
                    if who
                    else " (the broker wants a username: set username and password_env)"
                )
            self.last_error = why
            log.warning("%s: %s; retrying with backoff", self.source, why)
            return
        if self.subscriptions:
            client.subscribe([(topic, 1) for topic in self.subscriptions])
        self.last_error = None
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
        if isinstance(sock, ssl.SSLSocket) and client.socket() is sock and sock.pending():
            # decrypted bytes wait in the SSL object: the socket will not wake the loop for them
            assert self._loop is not None
            self._loop.call_soon(self._readable, sock)

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
            fields, why = self._match(topic)
            if fields is None:
                self.counts.reject(self.source, "unknown_topic", why)
                self.counts.add(self.source, REJECTED + "unknown_topic")
                return []
        if topic in self._metrics:
            return self._sparkplug(topic, payload)
        samples: list[Sample] = []
        rejected: str | None = None
        obj: dict[str, object] | None = None
        points: dict[str, list[dec.LinePoint]] = {}  # precision -> the message's points
        for f in fields:
            fmt = f.fmt
            if fmt.format == "number":
                number = dec.parse_number(payload)
                if isinstance(number, dec.Rejected):
                    self.counts.reject(self.source, number.reason, f"{topic}: {number.detail}")
                    rejected = rejected or number.reason
                    continue
                samples.append(Sample(f.tag.name, utcnow(), number))
                continue
            if fmt.format == "influx":
                if fmt.precision not in points:
                    lines = dec.parse_line_protocol(payload, fmt.precision)
                    if isinstance(lines, dec.Rejected):
                        self.counts.reject(self.source, lines.reason, f"{topic}: {lines.detail}")
                        self.counts.add(self.source, REJECTED + lines.reason)
                        return []
                    bad = [line for line in lines if isinstance(line, dec.Rejected)]
                    if not points:  # count bad lines once, however many precisions read them
                        for line in bad:
                            self.counts.reject(self.source, line.reason, f"{topic}: {line.detail}")
                        if bad:
                            rejected = rejected or bad[0].reason
                    points[fmt.precision] = [p for p in lines if isinstance(p, dec.LinePoint)]
                for point in points[fmt.precision]:
                    if f.field not in point.fields or (
                        fmt.measurement is not None and point.measurement != fmt.measurement
                    ):
                        continue
                    if any(point.tags.get(k) != v for k, v in fmt.match_tags.items()):
                        continue
                    sample = self._line_field(f, point, topic)
                    if isinstance(sample, dec.Rejected):
                        rejected = rejected or sample.reason
                    else:
                        samples.append(sample)
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
        return self._outcome(samples, rejected)

    def _outcome(self, samples: list[Sample], rejected: str | None) -> list[Sample]:
        outcome = ACCEPTED if rejected is None else PARTIAL if samples else REJECTED + rejected
        self.counts.add(self.source, outcome)
        if samples:
            self.counts.add(self.source, "values", len(samples))
        elif rejected is None:  # well-formed, but nothing in it is configured (influx, Sparkplug)
            self.counts.add(self.source, "nothing_mapped")
        return samples

    def _match(self, topic: str) -> tuple[list[_Field] | None, str]:
        """The tags a topic maps to through a template, or None and why not."""
        parts = topic.split("/")
        why = f"{topic}: no tag has this topic"
        for t in self.templates.values():
            shaped, fields = t.match(parts)
            if fields is not None:
                return fields, ""
            if shaped:
                signal = f", signal {parts[t.signal]!r}" if t.signal is not None else ""
                why = f"{topic}: no tag of template {t.name!r} has equipment {parts[t.equipment]!r}{signal}"
        return None, why

    def _check(self, f: _Field, topic: str, parts: tuple[object, ...]) -> dec.Rejected | None:
        """The first Rejected among a sample's parts, counted."""
        for part in parts:
            if isinstance(part, dec.Rejected):
                self.counts.reject(self.source, part.reason, f"{topic}#{f.field}: {part.detail}")
                return part
        return None

    def _json_field(self, f: _Field, obj: dict[str, object], topic: str) -> Sample | dec.Rejected:
        fmt = f.fmt
        if f.field not in obj:
            self.counts.reject(self.source, "missing_field", f"{topic}: no {f.field!r}")
            return dec.Rejected("missing_field", f.field)
        raw = obj[f.field]
        value = dec.text_value(raw) if f.tag.is_text else dec.numeric_value(raw)
        now = utcnow()
        ts = dec.parse_time(obj[fmt.time_field], self.tz) if fmt.time_field in obj else now
        status = dec.parse_status(obj.get(fmt.status_field)) if fmt.status_field else 0
        window = self.window.check(ts, now) if isinstance(ts, datetime) else None
        bad = self._check(f, topic, (value, ts, status, window))
        return bad or Sample(f.tag.name, ts, value, status)  # type: ignore[arg-type]

    def _line_field(self, f: _Field, point: dec.LinePoint, topic: str) -> Sample | dec.Rejected:
        raw = point.fields[f.field]
        value = dec.text_value(raw) if f.tag.is_text else dec.numeric_value(raw)
        now = utcnow()
        ts = point.ts or now
        status: int | dec.Rejected = GOOD
        if f.fmt.status_field and f.fmt.status_field in point.fields:
            code = point.fields[f.fmt.status_field]
            if isinstance(code, float) and code.is_integer():  # status=0 is a float in line protocol
                code = int(code)
            status = dec.parse_status(code)
        bad = self._check(f, topic, (value, status, self.window.check(ts, now)))
        return bad or Sample(f.tag.name, ts, value, status)  # type: ignore[arg-type]

    def _sparkplug(self, topic: str, payload: bytes) -> list[Sample]:
        """A Sparkplug B message: a BIRTH records the node's or device's aliases and datatypes; the metrics
        of configured names become samples (a BIRTH carries values too). A metric sent by an alias that no
        BIRTH declared is counted as unknown_alias, not guessed."""
        parsed = dec.parse_sparkplug(payload)
        if isinstance(parsed, dec.Rejected):
            self.counts.reject(self.source, parsed.reason, f"{topic}: {parsed.detail}")
            self.counts.add(self.source, REJECTED + parsed.reason)
            return []
        parts = topic.split("/")  # spBv1.0/<group>/<type>/<edge node>[/<device>]
        node = (parts[1], *parts[3:])
        if parts[2] in dec.SP_BIRTH:
            birth = self._births[node] = _Birth(
                {m.alias: m.name for m in parsed.metrics if m.alias is not None and m.name},
                {m.name: m.datatype for m in parsed.metrics if m.name and m.datatype is not None},
            )
        else:
            birth = self._births.get(node)
        wanted = self._metrics[topic]
        now = utcnow()
        samples: list[Sample] = []
        rejected: str | None = None
        for m in parsed.metrics:
            name = m.name
            if name is None and birth is not None and m.alias is not None:
                name = birth.names.get(m.alias)
            if name is None:
                self.counts.reject(
                    self.source,
                    "unknown_alias",
                    f"{topic}: metric alias {m.alias} is in no BIRTH seen since the collector started "
                    "(it resolves after the edge node's next BIRTH)",
                )
                rejected = rejected or "unknown_alias"
                continue
            fields = wanted.get(name)
            if fields is None:
                continue
            datatype = m.datatype
            if datatype is None and birth is not None:
                datatype = birth.datatypes.get(name)
            for f in fields:
                sample = self._metric_sample(f, m, datatype, parsed.timestamp_ms, now, topic)
                if isinstance(sample, dec.Rejected):
                    rejected = rejected or sample.reason
                else:
                    samples.append(sample)
        return self._outcome(samples, rejected)

    def _metric_sample(
        self,
        f: _Field,
        m: dec.SparkplugMetric,
        datatype: int | None,
        payload_ms: int | None,
        now: datetime,
        topic: str,
    ) -> Sample | dec.Rejected:
        ms = m.timestamp_ms if m.timestamp_ms is not None else payload_ms
        ts = dec.sparkplug_time(ms) if ms is not None else now
        status = dec.sparkplug_status(m.quality)
        if m.is_null:
            value: object = None
            status = status if status != GOOD else NULL_STATUS
        else:
            raw = dec.sparkplug_value(m, datatype)
            if isinstance(raw, dec.Rejected):
                value = raw
            else:
                value = dec.text_value(raw) if f.tag.is_text else dec.numeric_value(raw)
        window = self.window.check(ts, now) if isinstance(ts, datetime) else None
        bad = self._check(f, topic, (value, ts, window))
        return bad or Sample(f.tag.name, ts, value, status)  # type: ignore[arg-type]

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

    def _new_client(self) -> mqtt.Client:
        """A paho client with our session, credentials and TLS (SourceError: what to fix)."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.broker.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if self.broker.username is not None:
            password = None
            if self.broker.password_env is not None:
                password = read_secret(
                    self.broker.password_env, what=f"mqtt.brokers.{self.name}.password_env"
                )
                if password is None:
                    raise SourceError(
                        f"mqtt.brokers.{self.name}.password_env: the environment variable "
                        f"{self.broker.password_env} (or {self.broker.password_env}_FILE) is not set "
                        f"(it holds the password of user {self.broker.username!r})"
                    )
            client.username_pw_set(self.broker.username, password)
        if self.broker.tls is not None:
            client.tls_set_context(tls_context(self.broker.tls, f"mqtt.brokers.{self.name}.tls"))
        return client

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stay connected (reconnecting with backoff), disconnect on stop."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        delay = 0.5
        while True:
            try:
                client = self._new_client()
                break
            except SourceError as exc:  # configuration: say what to fix, keep trying slowly
                self.last_error = str(exc)
                log.error("%s: %s (retrying in %.0f s)", self.source, exc, delay)
                if await wait_for_event(stop, delay):
                    return
                delay = min(max(delay * 2, 5.0), 30.0)
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
                    self._answered = False
                    await asyncio.wait_for(asyncio.to_thread(client.reconnect), timeout=15)
                except (OSError, TimeoutError, mqtt.WebsocketConnectionError) as exc:
                    self.last_error = f"cannot connect: {exc or type(exc).__name__}{_hint(exc, self)}"
                    log.warning(
                        "%s: cannot connect to %s:%d (%s)%s; retrying in %.1f s",
                        self.source,
                        self.broker.host,
                        self.broker.port,
                        exc or type(exc).__name__,
                        _hint(exc, self),
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
                if not self._answered and not stop.is_set() and not self.paused_for_spool:
                    self.last_error = "the connection closed before the broker answered"
                    log.warning(
                        "%s: the connection to %s:%d closed before the broker answered%s; retrying in %.1f s",
                        self.source,
                        self.broker.host,
                        self.broker.port,
                        " (is this a TLS port? then configure [tls] for the broker)"
                        if self.broker.tls is None
                        else "",
                        delay,
                    )
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


def tls_context(tls: MqttTls, key: str) -> ssl.SSLContext:
    """The TLS context of a broker: its CA (or the system's), the client certificate if any, and the
    host-name check unless `insecure`. The certificate chain is always verified."""
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise SourceError(f"{key}: cannot load the TLS files ({exc})") from None
    if tls.insecure:
        context.check_hostname = False
    return context


def _hint(exc: BaseException, collector: MqttCollector) -> str:
    """What to check after a failed connect (TLS problems above all)."""
    key = f"mqtt.brokers.{collector.name}.tls"
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "hostname" in str(exc) or "IP address mismatch" in str(exc):
            return (
                f"; the broker's certificate does not name {collector.broker.host!r}: connect by a name it "
                f"has, or set {key}.insecure = true (tests only)"
            )
        return f"; the broker's certificate is not trusted: is {key}.ca_file the CA that signed it?"
    if isinstance(exc, ssl.SSLError):
        if collector.broker.tls is not None and "WRONG_VERSION_NUMBER" in str(exc).upper():
            return "; is this port a TLS listener? (without TLS, remove [tls])"
        return "; TLS failed: check the broker's TLS settings and ours"
    return ""


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
