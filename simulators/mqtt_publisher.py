"""The MQTT shell of the simulated plant: publishes at QoS 1 and counts what the broker acknowledged.

A JSON message is {"ts": ISO-8601 source time, "status": OPC UA status code, <field>: value, ...}; it is
counted per field ("<topic>#<field>"). A plain-number message (`publish_number`) carries only the
value as text (the collector stamps it with its arrival time); it is counted as "<topic>#value".
Malformed payloads (`publish_raw`, fault injection) are counted apart, in `malformed`, per topic.
paho's network loop runs in its own thread; this shell only hands messages to it and caps the messages in
flight (paho with more than 65,535 unacknowledged QoS 1 messages never completes). `disconnect` and
`reconnect` take the publisher off the broker and back (the MQTT disconnect fault).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import Counter
from datetime import datetime

import paho.mqtt.client as mqtt

from biopilot.samples import GOOD

log = logging.getLogger(__name__)

MAX_UNACKED = 10_000


class MqttPlantPublisher:
    def __init__(
        self, host: str, port: int, client_id: str, username: str | None = None, password: str | None = None
    ) -> None:
        self.host, self.port = host, port
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if username is not None:  # a broker that requires login (the docker-compose deployment's Mosquitto)
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(200)
        self._client.reconnect_delay_set(0.2, 5)
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[str, tuple[str, ...]]] = {}
        self._early_acks: set[int] = set()
        self.published: Counter[str] = Counter()  # "topic#field" -> values acknowledged by the broker
        self.malformed: Counter[str] = Counter()  # topic -> malformed payloads acknowledged
        self.connected = threading.Event()
        self.away = False  # disconnected on purpose

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        if not getattr(rc, "is_failure", False):
            self.connected.set()
            log.info("simulator connected to MQTT broker %s:%d", self.host, self.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        self.connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        with self._lock:
            entry = self._pending.pop(mid, None)
            if entry is None:  # acknowledged before publish() registered it
                self._early_acks.add(mid)
                return
            self._count(entry)

    def _count(self, entry: tuple[str, tuple[str, ...]]) -> None:
        topic, fields = entry
        if not fields:
            self.malformed[topic] += 1
            return
        for f in fields:
            self.published[f"{topic}#{f}"] += 1

    async def __aenter__(self) -> MqttPlantPublisher:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        return self

    async def wait_connected(self, timeout: float) -> bool:
        return await asyncio.to_thread(self.connected.wait, timeout)

    async def _send(self, topic: str, payload: bytes | str, fields: tuple[str, ...]) -> None:
        while self.unacked > MAX_UNACKED:
            await asyncio.sleep(0.01)
        # Never hold self._lock while calling into paho: its network thread holds paho's own locks while
        # it runs on_publish, which takes self._lock.
        info = self._client.publish(topic, payload, qos=1)
        entry = (topic, fields)
        with self._lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                self._count(entry)
            else:
                self._pending[info.mid] = entry

    async def publish(
        self, topic: str, values: dict[str, float | str], ts: datetime, status: int = GOOD
    ) -> None:
        payload = json.dumps({"ts": ts.isoformat(), "status": status, **values})
        await self._send(topic, payload, tuple(values))

    async def publish_number(self, topic: str, value: float | str) -> None:
        """A plain payload: the number (or text) alone, no timestamp, no status."""
        await self._send(topic, str(value), ("value",))

    async def publish_raw(self, topic: str, payload: bytes) -> None:
        """A payload as given (malformed on purpose); counted in `malformed`."""
        await self._send(topic, payload, ())

    @property
    def unacked(self) -> int:
        with self._lock:
            return len(self._pending)

    async def drain(self, timeout: float) -> bool:
        """Wait until the broker acknowledged everything published (or the timeout passes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.unacked and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.unacked == 0

    async def disconnect(self) -> None:
        """Leave the broker (after what is in flight was acknowledged); publish nothing until reconnect."""
        await self.drain(5.0)
        self.away = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self.connected.clear()
        log.info("simulator disconnected from the MQTT broker (fault)")

    async def reconnect(self, timeout: float = 10.0) -> bool:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self.away = False
        return await self.wait_connected(timeout)

    async def __aexit__(self, *exc: object) -> None:
        if not self.away:
            self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
