"""Runs every configured collector against one store until stopped."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from biopilot.config import MqttSource, OpcUaSource, SiteConfig
from collectors.mqtt import MqttCollector
from collectors.opcua import OpcUaCollector
from collectors.sink import Counts, SampleSink
from storage.base import TimeSeriesStore

log = logging.getLogger(__name__)


@dataclass
class Collectors:
    """The collectors of one site, sharing one sink."""

    sink: SampleSink
    counts: Counts
    opcua: list[OpcUaCollector] = field(default_factory=list)
    mqtt: list[MqttCollector] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: SiteConfig, store: TimeSeriesStore) -> Collectors:
        sink, counts = SampleSink(store), Counts()
        out = cls(sink, counts)
        for name, server in config.opcua.servers.items():
            tags = [t for t in config.tags if isinstance(t.source, OpcUaSource) and t.source.server == name]
            if tags:
                out.opcua.append(OpcUaCollector(name, server, tags, sink, counts))
        tz = ZoneInfo(config.site.timezone)
        for name, broker in config.mqtt.brokers.items():
            tags = [t for t in config.tags if isinstance(t.source, MqttSource) and t.source.broker == name]
            if tags:
                out.mqtt.append(MqttCollector(name, broker, tags, sink, counts, tz))
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then stop the sources and flush what they delivered."""
        sources_stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(sources_stop)) for c in (*self.opcua, *self.mqtt)]
        sink_stop = asyncio.Event()
        sink_task = asyncio.create_task(self.sink.run(sink_stop))
        log.info("collecting: %d OPC UA server(s), %d MQTT broker(s)", len(self.opcua), len(self.mqtt))
        try:
            await stop.wait()
        finally:
            sources_stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            sink_stop.set()
            await sink_task
            log.info(
                "collectors stopped: %d samples received, %d stored", self.sink.received, self.sink.stored
            )

    async def wait_connected(self, timeout: float) -> bool:
        events = [c.connected.wait() for c in (*self.opcua, *self.mqtt)]
        try:
            await asyncio.wait_for(asyncio.gather(*events), timeout)
        except TimeoutError:
            return False
        return True
