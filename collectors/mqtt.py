"""The MQTT collector: one broker connection, its subscriptions, its whole life.

QoS 1, a fixed client id and a persistent session (clean_session=False), so the broker keeps messages for
us while we are away; subscriptions are made in the connect callback, so every reconnect restores them;
shutdown disconnects without unsubscribing, which would throw the session away.

paho runs inside the asyncio event loop (its socket is watched by the loop; no network thread): a paho
thread and the loop would hand the interpreter lock back and forth on every message and every syscall.
The message callback only queues the message; after each read of the socket the loop decodes what was
queued, spools the samples as one frame, and only then acknowledges the messages (manual acks), so an
acknowledged message is on disk. Rejected messages are acknowledged too (counted and quarantined), or the
broker would redeliver garbage forever. When the spool is full or the file system refuses to write (a full
disk, a read-only spool), the collector disconnects (the broker keeps the session and the unacknowledged
messages) and reconnects by itself once the spool takes writes again.

Payload formats: JSON, plain numbers, InfluxDB line protocol, Sparkplug B (collectors/decoders.py). A tag
has a concrete topic, or a topic template of its broker ("hall3/{equipment}/{signal}") that is subscribed
once as a wildcard ("hall3/+/+"); incoming topic segments pick the equipment and the tag.

Sparkplug B: BioPilot is a host application. Every message of a configured edge node is subscribed
(spBv1.0/<group>/+/<edge node>/#): BIRTHs map aliases to names and datatypes (kept on disk, so a restarted
collector resolves what its session held), DATA becomes samples, NDEATH/DDEATH mark the node's or device's
tags source-down with a Bad_NoCommunication sample and a gap, and sequence numbers are checked
(collectors/sparkplug.py). DATA that no BIRTH resolves is kept with its raw payload and replayed when the
BIRTH comes, never acknowledged and lost. Optionally ([mqtt.brokers.B.sparkplug] rebirth_requests) the
collector asks such an edge node for a BIRTH (NCMD Node Control/Rebirth): off by default, since it is the
one message BioPilot would send to the plant.

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
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import paho.mqtt.client as mqtt

from biopilot.aio import wait_for_any, wait_for_event
from biopilot.config import MqttBroker, MqttPayload, MqttSource, MqttTls, Tag, template_filter
from biopilot.errors import SourceError
from biopilot.samples import BAD_NO_COMMUNICATION, GOOD, Sample, utcnow
from biopilot.secrets import read_secret
from collectors import decoders as dec
from collectors import sparkplug_b_pb2 as spb
from collectors.sink import Counts, GapEvent, SampleSink
from collectors.sparkplug import Birth, HostState, Key
from collectors.spool import SpoolError, SpoolFullError, SpoolWriteError

log = logging.getLogger(__name__)

READ_BATCH = 2000  # packets read from the socket per wake-up of the loop, before handling them
RESUME_FILL = 0.5  # after a full spool, reconnect once it is this empty again
# Every message gets exactly one outcome: msg_accepted (every mapped field gave a sample), msg_partial
# (some did), or msg_rejected:<reason of the first rejection>. Rejections are also counted by reason.
ACCEPTED = "msg_accepted"
PARTIAL = "msg_partial"
REJECTED = "msg_rejected:"
PARKED = "msg_parked"  # Sparkplug DATA kept until a BIRTH resolves its aliases
ONE_US = timedelta(microseconds=1)


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
        state_dir: Path | None = None,
    ) -> None:
        """state_dir: where this broker's Sparkplug births and parked messages are kept (None: in memory)."""
        self.name = name
        self.broker = broker
        self.sink = sink
        self.counts = counts
        self.source = f"mqtt:{name}"
        self.tz = site_tz
        self.window = window or dec.TimeWindow()
        self.topics: dict[str, list[_Field]] = {}  # concrete topics
        self.templates: dict[str, _Template] = {}
        self._sp_fields: dict[Key, dict[str, list[_Field]]] = {}  # node or device -> metric name -> fields
        self._sp_nodes: set[Key] = set()  # (group, edge node) with a configured metric
        self._sp_last_ts: dict[str, datetime] = {}  # Sparkplug tag -> its newest source time
        self._sp_awaiting_first: set[Key] = set()  # reborn, the first value after the gap not yet seen
        self.sparkplug = HostState(state_dir)
        self.events: list[GapEvent] = []  # drained by the runner into the health store
        for tag in tags:
            src = tag.source
            assert isinstance(src, MqttSource)
            if src.template is None:
                assert src.topic is not None
                if src.format == "sparkplug":
                    assert src.metric is not None
                    parts = src.topic.split("/")  # spBv1.0/<group>/<NDATA|DDATA>/<edge node>[/<device>]
                    key = (parts[1], *parts[3:])
                    self._sp_nodes.add(key[:2])
                    f = _Field(tag, src, src.metric)
                    self._sp_fields.setdefault(key, {}).setdefault(src.metric, []).append(f)
                    continue
                self.topics.setdefault(src.topic, []).append(_Field(tag, src, src.field))
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
        self.subscriptions = (
            [topic for topic in self.topics if not any(mqtt.topic_matches_sub(f, topic) for f in filters)]
            + filters
            + [f"spBv1.0/{group}/+/{edge}/#" for group, edge in sorted(self._sp_nodes)]
        )
        self.last_error: str | None = None
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()  # the broker confirmed the subscriptions of this connection
        self.connects = 0
        self.messages = 0  # messages taken (spooled, then acknowledged)
        self.last_message: float | None = None  # wall clock of the newest message taken
        self.last_received: float | None = None  # wall clock of the newest message that arrived
        self.last_spooled: float | None = None  # wall clock of the newest samples spooled
        self.paused_for_spool = False
        self.spool_error: str | None = None  # why the collector paused: the spool's error or fill
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
        else:
            self.subscribed.set()
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
        self.subscribed.clear()
        self._lost.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reason_codes: object, props: object
    ) -> None:
        failed = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]  # type: ignore[attr-defined]
        if failed:
            self.last_error = f"the broker refused a subscription: {', '.join(failed)}"
            log.error("%s: %s", self.source, self.last_error)
        self.subscribed.set()

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
        """Decode queued messages, spool their samples as one frame (and keep what Sparkplug must remember),
        then acknowledge them. If any of it fails, nothing is acknowledged and the collector pauses."""
        if self.paused_for_spool:
            self._inbox.clear()  # not acknowledged: sent again later (never acknowledged on a new connection)
            return
        if not self._inbox:
            return
        batch = list(self._inbox)
        self._inbox.clear()
        self.last_received = time.time()
        samples: list[Sample] = []
        try:
            for msg in batch:
                samples.extend(self.decode(msg.topic, msg.payload))
            self.sink.put(samples)
            self.sparkplug.commit()
        except SpoolError as exc:
            self.sparkplug.forget_replays()
            self._pause(exc)  # not acknowledged: the broker redelivers them after we reconnect
            return
        except OSError as exc:  # the Sparkplug births or parked messages could not be written
            self.sparkplug.forget_replays()
            self._pause(SpoolWriteError(f"cannot keep Sparkplug state: {exc.strerror or exc}"))
            return
        client = self._client
        if client is not None:
            for msg in batch:
                if msg.qos > 0:
                    client.ack(msg.mid, msg.qos)
        self.messages += len(batch)
        self.last_message = time.time()
        if samples:
            self.last_spooled = self.last_message

    def handle(self, topic: str, payload: bytes) -> None:
        """Decode one message and spool its samples (no acknowledgement: for messages not from paho)."""
        self.sink.put(self.decode(topic, payload))
        self.sparkplug.commit()

    def decode(self, topic: str, payload: bytes) -> list[Sample]:
        """Samples for every tag mapped to the topic; counts the message's outcome (exactly one) and
        every rejected field by reason."""
        fields = self.topics.get(topic)
        if fields is None:
            if topic.startswith("spBv1.0/") and self._sp_nodes:
                parts = topic.split("/")
                if len(parts) in (4, 5) and (parts[1], parts[3]) in self._sp_nodes:
                    return self._sparkplug(topic, parts, payload)
            fields, why = self._match(topic)
            if fields is None:
                self.counts.reject(self.source, "unknown_topic", why)
                self.counts.add(self.source, REJECTED + "unknown_topic")
                return []
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
                self.counts.reject(self.source, part.reason, f"{topic}#{f.field}: {part.detail}", f.tag.name)
                return part
        return None

    def _json_field(self, f: _Field, obj: dict[str, object], topic: str) -> Sample | dec.Rejected:
        fmt = f.fmt
        if f.field not in obj:
            self.counts.reject(self.source, "missing_field", f"{topic}: no {f.field!r}", f.tag.name)
            return dec.Rejected("missing_field", f.field)
        raw = obj[f.field]
        value = self._value(f, raw)
        now = utcnow()
        ts = dec.parse_time(obj[fmt.time_field], self.tz, fmt.epoch_unit) if fmt.time_field in obj else now
        status = dec.parse_status(obj.get(fmt.status_field)) if fmt.status_field else 0
        window = self.window.check(ts, now) if isinstance(ts, datetime) else None
        bad = self._check(f, topic, (value, ts, status, window))
        return bad or Sample(f.tag.name, ts, value, status)  # type: ignore[arg-type]

    def _value(self, f: _Field, raw: object) -> float | str | dec.Rejected:
        """A tag's value from what the payload holds (rounding of large integers is counted)."""
        if f.tag.is_text:
            return dec.text_value(raw)
        value = dec.numeric_value(raw, strings=f.fmt.numeric_strings)
        if dec.rounded(raw, value):
            self.counts.add(self.source, "rounded_integer")
        return value

    def _line_field(self, f: _Field, point: dec.LinePoint, topic: str) -> Sample | dec.Rejected:
        raw = point.fields[f.field]
        value = self._value(f, raw)
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

    def _sparkplug(self, topic: str, parts: list[str], payload: bytes, replay: bool = False) -> list[Sample]:
        """A Sparkplug B message of a configured edge node (see the module's docstring)."""
        kind = parts[2]
        if kind not in dec.SP_BIRTH and kind not in dec.SP_DATA and kind not in dec.SP_DEATH:
            self.counts.add(self.source, "sp_ignored")  # commands (NCMD, DCMD) to the node, not from it
            return []
        parsed = dec.parse_sparkplug(payload)
        if isinstance(parsed, dec.Rejected):
            self.counts.reject(self.source, parsed.reason, f"{topic}: {parsed.detail}")
            self.counts.add(self.source, REJECTED + parsed.reason)
            return []
        key: Key = (parts[1], *parts[3:])
        node: Key = key[:2]
        if not replay and kind != "NDEATH":
            missing = self.sparkplug.check_seq(node, kind, parsed.seq)
            if missing:
                self.counts.add(self.source, "seq_missing", missing)
                self.counts.reject(
                    self.source,
                    "seq_gap",
                    f"{topic}: seq {parsed.seq} after a gap of {missing} message(s) from {'/'.join(node)}",
                )
        if kind in dec.SP_DEATH:
            return self._sparkplug_death(topic, kind, key, parsed)
        samples: list[Sample] = []
        if kind in dec.SP_BIRTH:
            bd_seq = parsed.metric("bdSeq")
            birth = Birth(
                {m.alias: m.name for m in parsed.metrics if m.alias is not None and m.name},
                {m.name: m.datatype for m in parsed.metrics if m.name and m.datatype is not None},
                bd_seq.raw if bd_seq is not None and isinstance(bd_seq.raw, int) else None,
            )
            previous = self.sparkplug.births.get(key)
            self.sparkplug.birth(key, birth)
            if previous is not None and not previous.alive:
                self._sp_back(key)
        else:
            birth = self.sparkplug.births.get(key)
        samples, rejected, unresolved = self._sparkplug_samples(topic, key, parsed, birth, replay)
        if unresolved and not replay:
            self._park(topic, key, payload)
            self.counts.add(self.source, PARKED)
            if samples:
                self.counts.add(self.source, "values", len(samples))
        elif replay:
            self.counts.add(self.source, "sp_replayed")
            if samples:
                self.counts.add(self.source, "values", len(samples))
        else:
            samples = self._outcome(samples, rejected)
        if kind in dec.SP_BIRTH and not replay and self.sparkplug.has_parked(key):
            replayed = self.sparkplug.parked(key)
            log.info(
                "%s: replaying %d message(s) kept until this BIRTH of %s", self.source, len(replayed), topic
            )
            older: list[Sample] = []
            for old_topic, old_payload in replayed:
                older.extend(self._sparkplug(old_topic, old_topic.split("/"), old_payload, replay=True))
            samples = (
                older + samples
            )  # sent before the BIRTH: at an equal source time, the BIRTH's value wins
        if samples and key in self._sp_awaiting_first:
            self._sp_awaiting_first.discard(key)
            first = min(s.ts for s in samples)
            self.events.append(GapEvent(self._sp_source(key), first_ts_after=first))
        return samples

    def _sparkplug_samples(
        self, topic: str, key: Key, parsed: dec.SparkplugPayload, birth: Birth | None, replay: bool
    ) -> tuple[list[Sample], str | None, bool]:
        """(samples of the configured metrics, the first rejection, whether an alias was unresolved)."""
        wanted = self._sp_fields.get(key, {})
        now = utcnow()
        samples: list[Sample] = []
        rejected: str | None = None
        unresolved = False
        for m in parsed.metrics:
            name = m.name
            if name is None and birth is not None and m.alias is not None:
                name = birth.names.get(m.alias)
            if name is None:
                if not replay:
                    unresolved = True  # the whole message is kept until a BIRTH resolves it
                    continue
                self.counts.reject(
                    self.source,
                    "unknown_alias",
                    f"{topic}: metric alias {m.alias} is not in the BIRTH that came after this message",
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
                    last = self._sp_last_ts.get(f.tag.name)
                    if last is None or sample.ts > last:
                        self._sp_last_ts[f.tag.name] = sample.ts
        return samples, rejected, unresolved

    def _park(self, topic: str, key: Key, payload: bytes) -> None:
        """Keep a message no BIRTH resolves; ask for a BIRTH if allowed. SpoolFullError past the limit."""
        settings = self.broker.sparkplug
        if self.sparkplug.parked_bytes > settings.parked_max_mb << 20:
            raise SpoolFullError(
                f"Sparkplug messages waiting for a BIRTH fill {self.sparkplug.parked_bytes >> 20} MB "
                f"(mqtt.brokers.{self.name}.sparkplug.parked_max_mb); the broker keeps the rest"
            )
        self.sparkplug.park(key, topic, payload)
        self.counts.reject(
            self.source,
            "waiting_for_birth",
            f"{topic}: an alias that no BIRTH seen declares; kept, and replayed after the next BIRTH "
            + (
                "(a rebirth is requested)"
                if settings.rebirth_requests
                else f"(or set mqtt.brokers.{self.name}.sparkplug.rebirth_requests = true to ask for one)"
            ),
        )
        if settings.rebirth_requests and self.sparkplug.may_ask_rebirth(key[:2], settings.rebirth_interval_s):
            self._ask_rebirth(key[:2])

    def _ask_rebirth(self, node: Key) -> None:
        """NCMD Node Control/Rebirth = true to an edge node (only with rebirth_requests)."""
        client = self._client
        if client is None or not self.connected.is_set():
            return
        payload = spb.Payload(timestamp=int(time.time() * 1000))
        payload.metrics.add(name="Node Control/Rebirth", datatype=spb.Boolean, boolean_value=True)
        topic = f"spBv1.0/{node[0]}/NCMD/{node[1]}"
        client.publish(topic, payload.SerializeToString(), qos=0)
        self.counts.add(self.source, "sp_rebirth_requests")
        log.warning("%s: asked %s for a rebirth (%s)", self.source, "/".join(node), topic)

    def _sparkplug_death(self, topic: str, kind: str, key: Key, parsed: dec.SparkplugPayload) -> list[Sample]:
        """NDEATH (the node and its devices) or DDEATH: their tags are source-down from now, with a
        Bad_NoCommunication sample and a gap each."""
        if kind == "NDEATH":
            birth = self.sparkplug.births.get(key)
            bd_seq = parsed.metric("bdSeq")
            if (
                birth is not None
                and birth.bd_seq is not None
                and bd_seq is not None
                and bd_seq.raw != birth.bd_seq
            ):
                self.counts.add(self.source, "sp_stale_death")  # the will of an earlier session
                log.info("%s: %s with bdSeq %s of an earlier session ignored", self.source, topic, bd_seq.raw)
                return []
        now = utcnow()
        if kind == "DDEATH" and parsed.timestamp_ms is not None:
            died = dec.sparkplug_time(parsed.timestamp_ms)
            when = died if isinstance(died, datetime) else now
        else:
            when = now  # an NDEATH is the node's will, stamped when it connected: the broker sends it now
        keys = self.sparkplug.death(key, f"{kind} at {when.isoformat()}")
        self.counts.add(self.source, "sp_deaths")
        markers = []
        for k in keys:
            tags = [f.tag.name for fields in self._sp_fields.get(k, {}).values() for f in fields]
            last = max((self._sp_last_ts[t] for t in tags if t in self._sp_last_ts), default=None)
            self.events.append(GapEvent(self._sp_source(k), lost=now, last_ts_before=last, reason=f"{kind}"))
            for t in tags:
                previous = self._sp_last_ts.get(t)
                ts = when if previous is None or when > previous else previous + ONE_US
                markers.append(Sample(t, ts, None, BAD_NO_COMMUNICATION))
            log.warning("%s: %s: %s is down (%d tags)", self.source, topic, "/".join(k), len(tags))
        self.counts.add(self.source, ACCEPTED)
        return markers

    def _sp_back(self, key: Key) -> None:
        self.events.append(GapEvent(self._sp_source(key), back=utcnow(), reason="BIRTH"))
        self._sp_awaiting_first.add(key)

    def _sp_source(self, key: Key) -> str:
        return f"{self.source}/{'/'.join(key)}"

    def down_tags(self) -> dict[str, str]:
        """Tags whose Sparkplug edge node or device is dead (an NDEATH or DDEATH since its BIRTH): why."""
        out = {}
        for key, metrics in self._sp_fields.items():
            birth = self.sparkplug.births.get(key)
            if birth is None or birth.alive:
                continue
            for fields in metrics.values():
                for f in fields:
                    out[f.tag.name] = f"{'/'.join(key)}: {birth.died_why}"
        return out

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
            value = raw if isinstance(raw, dec.Rejected) else self._value(f, raw)
        window = self.window.check(ts, now) if isinstance(ts, datetime) else None
        bad = self._check(f, topic, (value, ts, window))
        return bad or Sample(f.tag.name, ts, value, status)  # type: ignore[arg-type]

    def _pause(self, exc: SpoolError) -> None:
        self.spool_error = str(exc)
        if self.paused_for_spool:
            return
        log.error(
            "%s: %s; disconnecting until the spool takes samples again (the broker keeps our messages)",
            self.source,
            exc,
        )
        self.paused_for_spool = True
        self._inbox.clear()
        if self._client is not None:
            self._client.disconnect()

    def _may_resume(self) -> bool:
        """After a pause: does the spool take samples again (room, no write error, parked below limit)?"""
        spool = self.sink.spool
        why = None
        if spool is not None:
            why = spool.probe()
            if why is None:
                spool.refresh()
                if spool.fill > RESUME_FILL:
                    why = f"spool {spool.directory} is {100 * spool.fill:.0f} % full"
        if why is None and self.sparkplug.parked_bytes > (self.broker.sparkplug.parked_max_mb << 20) // 2:
            why = f"{self.sparkplug.parked_bytes >> 20} MB of Sparkplug messages wait for a BIRTH"
        if why is None:
            try:
                self.sparkplug.commit()
            except OSError as exc:
                why = f"cannot keep Sparkplug state: {exc.strerror or exc}"
        self.spool_error = why
        return why is None

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
        client.on_subscribe = self._on_subscribe
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
                if spool is not None and spool.error is not None and not self.paused_for_spool:
                    self._pause(
                        SpoolWriteError(spool.error)
                    )  # before connecting: take nothing we cannot keep
                if self.paused_for_spool:
                    if not self._may_resume():
                        await wait_for_event(stop, 0.5)
                        continue
                    log.warning("%s: the spool takes samples again; reconnecting", self.source)
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
