"""The MQTT collector: one broker connection, its subscriptions, its whole life.

QoS 1, a fixed client id and a persistent session (clean_session=False), so the broker keeps messages
for us while we are away; subscriptions are made in the connect callback, so every reconnect restores
them; shutdown disconnects without unsubscribing, which would throw the session away. The paho callback
does nothing but hand the message to the event loop; decoding and mapping happen there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import tzinfo

import paho.mqtt.client as mqtt

from biopilot.config import MqttBroker, MqttSource, Tag
from biopilot.samples import Sample, utcnow
from collectors import decoders as dec
from collectors.sink import Counts, SampleSink

log = logging.getLogger(__name__)


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
    ) -> None:
        self.name = name
        self.broker = broker
        self.sink = sink
        self.counts = counts
        self.source = f"mqtt:{name}"
        self.tz = site_tz
        self.topics: dict[str, list[_Field]] = {}
        for tag in tags:
            assert isinstance(tag.source, MqttSource)
            self.topics.setdefault(tag.source.topic, []).append(_Field(tag, tag.source))
        self.connected = asyncio.Event()
        self.connects = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None

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
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.handle, msg.topic, msg.payload)

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
        if self.connected.is_set():
            log.warning("%s: disconnected (%s); paho reconnects with backoff", self.source, reason)
        self.connected.clear()

    def handle(self, topic: str, payload: bytes) -> None:
        """Decode one message into samples for every tag mapped to its topic."""
        fields = self.topics.get(topic)
        if fields is None:
            self.counts.reject(self.source, "unknown_topic", topic)
            return
        obj: dict[str, object] | None = None
        samples: list[Sample] = []
        for f in fields:
            src = f.source
            if src.format == "number":
                value = dec.parse_number(payload)
                if isinstance(value, dec.Rejected):
                    self.counts.reject(self.source, value.reason, f"{topic}: {value.detail}")
                    continue
                samples.append(Sample(f.tag.name, utcnow(), value))
                continue
            if obj is None:
                parsed = dec.parse_json_object(payload)
                if isinstance(parsed, dec.Rejected):
                    self.counts.reject(self.source, parsed.reason, f"{topic}: {parsed.detail}")
                    return
                obj = parsed
            if src.field not in obj:
                self.counts.reject(self.source, "missing_field", f"{topic}: no {src.field!r}")
                continue
            value = dec.text_value(obj[src.field]) if f.tag.is_text else dec.numeric_value(obj[src.field])
            ts = dec.parse_time(obj.get(src.time_field), self.tz) if src.time_field in obj else utcnow()
            status = dec.parse_status(obj.get(src.status_field)) if src.status_field else 0
            for part in (value, ts, status):
                if isinstance(part, dec.Rejected):
                    self.counts.reject(self.source, part.reason, f"{topic}#{src.field}: {part.detail}")
                    break
            else:
                samples.append(Sample(f.tag.name, ts, value, status))  # type: ignore[arg-type]
        if samples:
            self.counts.add(self.source, "values", len(samples))
            self.sink.put(samples)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, keep connected (paho reconnects with backoff), disconnect on stop."""
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.broker.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
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
            await stop.wait()
        finally:
            # Never unsubscribe: the persistent session keeps what arrives while we are away.
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
            log.info("%s: stopped after %.0f s", self.source, time.monotonic() - started)
