"""Runs every configured collector of a site against one store until stopped, with the spool between
them and the store, and writes the collection's health every few seconds."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from biopilot.aio import wait_for_event
from biopilot.config import MqttSource, OpcUaSource, SiteConfig
from biopilot.errors import StoreError
from biopilot.samples import Sample, utcnow
from biopilot.secrets import redact
from collectors.decoders import TimeWindow
from collectors.mqtt import MqttCollector
from collectors.opcua import OpcUaCollector
from collectors.security import Pki
from collectors.sink import Counts, SampleSink, SpoolSink
from collectors.spool import Spool
from collectors.writer import StoreWriter
from storage.base import TimeSeriesStore
from storage.health import HealthStore, TagHealth

log = logging.getLogger(__name__)


class TagTracker:
    """Per tag: when it was last seen (wall clock), its newest source time, how many values arrived, and
    (from the counts) its rejected inputs."""

    def __init__(self, sources: dict[str, str], counts: Counts | None = None) -> None:
        self.sources = sources  # tag -> collector source name
        self.counts = counts
        self.last_seen: dict[str, float] = {}
        self.last_ts: dict[str, datetime] = {}
        self.total: dict[str, int] = dict.fromkeys(sources, 0)
        self._at_snapshot: dict[str, int] = dict.fromkeys(sources, 0)
        self._snapshot_time = time.monotonic()

    def observe(self, samples: list[Sample]) -> None:
        now = time.time()
        last_ts, total, seen = self.last_ts, self.total, self.last_seen
        for s in samples:
            seen[s.series] = now
            previous = last_ts.get(s.series)
            if previous is None or s.ts > previous:
                last_ts[s.series] = s.ts
            total[s.series] = total.get(s.series, 0) + 1

    def snapshot(self) -> list[TagHealth]:
        now, elapsed = utcnow(), max(time.monotonic() - self._snapshot_time, 1e-3)
        self._snapshot_time = time.monotonic()
        out = []
        for tag, source in self.sources.items():
            total = self.total.get(tag, 0)
            rate = (total - self._at_snapshot.get(tag, 0)) * 60.0 / elapsed
            self._at_snapshot[tag] = total
            seen = self.last_seen.get(tag)
            rejects = self.counts.tags.get(tag) if self.counts is not None else None
            out.append(
                TagHealth(
                    tag,
                    source,
                    datetime.fromtimestamp(seen, now.tzinfo) if seen else None,
                    self.last_ts.get(tag),
                    total,
                    round(rate, 2),
                    now,
                    rejects.total if rejects else 0,
                    datetime.fromtimestamp(rejects.last, now.tzinfo) if rejects else None,
                    rejects.reason if rejects else None,
                )
            )
        return out


@dataclass
class Collectors:
    """The collectors of one site, sharing one sink: the spool (with a store writer beside it, as a task
    here or as a process of its own) or, without a spool, memory."""

    sink: SpoolSink | SampleSink
    counts: Counts
    tracker: TagTracker
    health: HealthStore | None = None
    health_interval_s: float = 2.0
    fsync_interval_s: float = 1.0
    opcua: list[OpcUaCollector] = field(default_factory=list)
    mqtt: list[MqttCollector] = field(default_factory=list)
    writer: StoreWriter | None = None  # the in-process store writer, if the spool has one here

    @classmethod
    def from_config(
        cls,
        config: SiteConfig,
        store: TimeSeriesStore,
        *,
        spool_dir: Path | None = None,
        health: HealthStore | None = None,
        writer: bool = True,
        pki_dir: Path | None = None,
        state_dir: Path | None = None,
    ) -> Collectors:
        """Collectors for every server and broker with tags. With spool_dir, samples go to the spool and,
        with writer=True, a store writer task takes them into the store (writer=False: a store-writer
        process does, as `biopilot collect` arranges). Without spool_dir, samples wait in memory only
        (tests and tools). state_dir keeps what the collectors must remember across restarts (Sparkplug
        births and the messages waiting for one), one folder per broker."""
        settings = config.collector
        pki = Pki(pki_dir) if pki_dir is not None else None
        sources: dict[str, str] = {}
        for t in config.tags:
            if t.source is None:  # import-only tags are never collected
                continue
            src = t.source
            sources[t.name] = f"opcua:{src.server}" if isinstance(src, OpcUaSource) else f"mqtt:{src.broker}"
        counts = Counts()
        tracker = TagTracker(sources, counts)
        sink: SpoolSink | SampleSink
        store_writer = None
        transforms = config.transforms()
        if spool_dir is not None:
            spool = Spool(spool_dir, max_bytes=settings.spool_max_mb << 20)
            sink = SpoolSink(spool, observe=tracker.observe, transforms=transforms)
            if writer:
                store_writer = StoreWriter(spool_dir, store)
        else:
            sink = SampleSink(store, observe=tracker.observe, transforms=transforms)
        out = cls(sink, counts, tracker, health, settings.health_interval_s, settings.fsync_interval_s)
        out.writer = store_writer
        window = TimeWindow(timedelta(seconds=settings.max_future_s), timedelta(days=settings.max_past_days))
        for name, server in config.opcua.servers.items():
            tags = [t for t in config.tags if isinstance(t.source, OpcUaSource) and t.source.server == name]
            if tags:
                out.opcua.append(OpcUaCollector(name, server, tags, sink, counts, window, pki))
        tz = ZoneInfo(config.site.timezone)
        for name, broker in config.mqtt.brokers.items():
            tags = [t for t in config.tags if isinstance(t.source, MqttSource) and t.source.broker == name]
            if tags:
                where = state_dir / f"mqtt-{name}" if state_dir is not None else None
                out.mqtt.append(MqttCollector(name, broker, tags, sink, counts, tz, window, where))
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then stop the sources and flush what they delivered."""
        sources_stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(sources_stop)) for c in (*self.opcua, *self.mqtt)]
        sink_stop = asyncio.Event()
        if isinstance(self.sink, SampleSink):
            sink_task = asyncio.create_task(self.sink.run(sink_stop))
        elif self.writer is not None:
            sink_task = asyncio.create_task(self.writer.run(sink_stop))
        else:
            sink_task = None
        housekeeping = asyncio.create_task(self._housekeeping(sources_stop))
        log.info("collecting: %d OPC UA server(s), %d MQTT broker(s)", len(self.opcua), len(self.mqtt))
        try:
            await stop.wait()
        finally:
            sources_stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await housekeeping
            spool = self.sink.spool
            if spool is not None:
                spool.sync()
            sink_stop.set()
            if sink_task is not None:
                await sink_task
            self.publish_health()
            if spool is not None:
                spool.close()
            log.info("collectors stopped: %d samples received", self.sink.received)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Sync the spool to disk and write health, each at its interval."""
        last_sync = last_health = time.monotonic()
        while not await wait_for_event(stop, min(self.health_interval_s, self.fsync_interval_s) / 2):
            now = time.monotonic()
            spool = self.sink.spool
            if spool is not None and now - last_sync >= self.fsync_interval_s:
                await asyncio.to_thread(spool.sync)
                spool.refresh()
                last_sync = now
            if now - last_health >= self.health_interval_s:
                await asyncio.to_thread(self.publish_health)
                last_health = now

    def components(self) -> dict[str, dict[str, Any]]:
        """Health documents of every connection and of the sink: what each did last (wall clock) and what
        keeps it from working, so that "ok" can be judged from what happened (storage.health)."""
        docs: dict[str, dict[str, Any]] = {}
        spool = self.sink.spool
        spool_error = spool.error if spool is not None else None
        for c in self.opcua:
            docs[c.source] = {
                "kind": "opcua",
                "endpoint": c.server.endpoint,
                "state": "connected" if c.connected.is_set() else "disconnected",
                "connects": c.connects,
                "reconnects": max(c.connects - 1, 0),
                "last_heartbeat": c.last_heartbeat.isoformat() if c.last_heartbeat else None,
                "monitored": len(c.monitored),
                "failed": dict(c.failed),
                "backfilled": c.backfilled,
                "last_error": redact(c.last_error) if c.last_error else None,
                "last_received": _iso(c.last_received),
                "last_spooled": _iso(c.last_spooled),
                "spool_error": c.spool_error or spool_error,
                "counts": self.counts.of(c.source),
            }
        for m in self.mqtt:
            docs[m.source] = {
                "kind": "mqtt",
                "broker": f"{m.broker.host}:{m.broker.port}",
                "state": "paused (spool)"
                if m.paused_for_spool
                else "connected"
                if m.connected.is_set()
                else "disconnected",
                "connects": m.connects,
                "reconnects": max(m.connects - 1, 0),
                "messages": m.messages,
                "last_message": _iso(m.last_message),
                "last_received": _iso(m.last_received),
                "last_spooled": _iso(m.last_spooled),
                "last_error": redact(m.last_error) if m.last_error else None,
                "spool_error": m.spool_error or spool_error,
                "down": m.down_tags(),
                "sparkplug_parked_bytes": m.sparkplug.parked_bytes,
                "counts": self.counts.of(m.source),
            }
        docs["sink"] = {
            "kind": "sink",
            "received": self.sink.received,
            "spool_dir": str(spool.directory) if spool else None,
            "spool_depth_bytes": spool.depth if spool else 0,
            "spool_fill": round(spool.fill, 4) if spool else 0.0,
            "spool_max_bytes": spool.max_bytes if spool else 0,
            "spool_error": spool_error,
            "spool_error_since": _iso(spool.error_since) if spool else None,
            "spool_write_errors": spool.write_errors if spool else 0,
            "last_append": _iso(spool.last_append) if spool else None,
        }
        if isinstance(self.sink, SampleSink):
            docs["writer"] = {
                "kind": "writer",
                "state": "ok" if self.sink.store_ok else "store refusing writes",
                "error": None,
                "stored": self.sink.stored,
                "store_ok": self.sink.store_ok,
                "write_failures": self.sink.write_failures,
                "lag_bytes": 0,
                "last_commit": _iso(self.sink.last_commit),
            }
        elif self.writer is not None:
            docs["writer"] = self.writer.doc()
        return docs

    def publish_health(self) -> None:
        """Write health and gap events to the health store (never fatal: health is advisory)."""
        if self.health is None:
            return
        events = [e for c in (*self.opcua, *self.mqtt) for e in c.events]
        for c in (*self.opcua, *self.mqtt):
            c.events.clear()
        quarantine = list(self.counts.quarantine)
        self.counts.quarantine.clear()
        try:
            for e in events:
                if e.lost is not None:
                    self.health.open_gap(e.source, e.lost, e.last_ts_before, e.reason)
                elif e.back is not None:
                    self.health.close_gap(e.source, e.back, e.first_ts_after)
                elif e.first_ts_after is not None:
                    self.health.set_first_after(e.source, e.first_ts_after)
            self.health.publish(utcnow(), self.components(), self.tracker.snapshot(), quarantine)
        except StoreError as exc:
            log.warning("cannot write health: %s", exc)

    async def wait_subscribed(self, timeout: float) -> bool:
        """Connected, and every broker confirmed the subscriptions (SUBACK): messages published now arrive."""
        events = [c.connected.wait() for c in self.opcua] + [m.subscribed.wait() for m in self.mqtt]
        try:
            await asyncio.wait_for(asyncio.gather(*events), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_connected(self, timeout: float) -> bool:
        events = [c.connected.wait() for c in (*self.opcua, *self.mqtt)]
        try:
            await asyncio.wait_for(asyncio.gather(*events), timeout)
        except TimeoutError:
            return False
        return True


def _iso(wall: float | None) -> str | None:
    return datetime.fromtimestamp(wall, UTC).isoformat() if wall is not None else None
