"""Where collectors hand their samples.

`SpoolSink` (every deployment): `put` appends the samples to the on-disk spool and returns once they are
there, so a caller may acknowledge its source (an MQTT PUBACK) right after; the store writer
(collectors/writer.py) takes them from the spool into the store. `SampleSink` keeps samples in memory and
writes them to the store itself: for tests and tools that need no durability. Both retry a refused store
write from where they were: an outage of the store loses nothing that reached them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from biopilot.aio import wait_for_event
from biopilot.errors import StoreError
from biopilot.samples import Sample
from biopilot.units import Transform, transform_samples
from collectors.spool import Spool
from storage.base import TimeSeriesStore

log = logging.getLogger(__name__)

FULL_ALARM = 0.8  # the spool is "nearly full" from here on: logged as an error, shown in health


@dataclass(frozen=True)
class GapEvent:
    """A source went away (lost), came back (back), or gave its first value after a gap (first_ts_after
    alone). Collectors queue them; the runner writes them to the health store."""

    source: str
    lost: datetime | None = None  # wall clock
    back: datetime | None = None
    last_ts_before: datetime | None = None  # source time of the newest value before the loss
    first_ts_after: datetime | None = None  # source time of the first value after it
    reason: str = ""


@dataclass
class TagRejects:
    """The rejected inputs of one tag: how many, and the newest (wall clock, reason)."""

    total: int = 0
    last: float = 0.0
    reason: str = ""


class Counts:
    """Counts by (source, outcome), rejections per tag, and a log line per reason at most every `every_s`
    seconds."""

    def __init__(self, every_s: float = 10.0, quarantine_size: int = 50) -> None:
        self.by: Counter[tuple[str, str]] = Counter()
        self._every = every_s
        self._last_log: dict[tuple[str, str], float] = {}
        self.quarantine: deque[tuple[float, str, str, str]] = deque(maxlen=quarantine_size)
        self.tags: dict[str, TagRejects] = {}  # tag -> its rejections

    def add(self, source: str, outcome: str, n: int = 1) -> None:
        self.by[(source, outcome)] += n

    def reject(self, source: str, reason: str, detail: str, tag: str | None = None) -> None:
        """Count a rejected input by reason (and for its tag, when it has one), keep it in the quarantine and
        log it, rate-limited per reason."""
        key = (source, reason)
        self.by[key] += 1
        now = time.time()
        if tag is not None:
            rejects = self.tags.get(tag)
            if rejects is None:
                rejects = self.tags[tag] = TagRejects()
            rejects.total += 1
            rejects.last = now
            rejects.reason = f"{reason}: {detail[:200]}"
        self.quarantine.append((now, source, reason, detail[:500]))
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= self._every:
            self._last_log[key] = now
            log.warning("%s: %s (%d so far): %s", source, reason, self.by[key], detail[:300])

    def of(self, source: str) -> dict[str, int]:
        return {outcome: n for (src, outcome), n in self.by.items() if src == source}


class SpoolSink:
    """Samples go to the spool; the store writer takes them from there."""

    def __init__(
        self,
        spool: Spool,
        *,
        observe: Callable[[list[Sample]], None] | None = None,
        transforms: Mapping[str, Transform] | None = None,
    ) -> None:
        self.spool = spool
        self.observe = observe  # told of every batch the sink took (health tracking)
        self.transforms = dict(transforms or {})  # tag → raw value to stored value (tags' scale, offset)
        self.received = 0
        self._last_alarm = 0.0

    def put(self, samples: Sequence[Sample]) -> None:
        """Spool the samples; SpoolError (full, or the file system refused) when nothing was taken."""
        if not samples:
            return
        samples = transform_samples(samples, self.transforms)
        self.spool.append(samples)
        if self.spool.fill >= FULL_ALARM:
            self._alarm()
        self.received += len(samples)
        if self.observe is not None:
            self.observe(samples)

    def _alarm(self) -> None:
        now = time.monotonic()
        if now - self._last_alarm >= 10.0:
            self._last_alarm = now
            log.error(
                "SPOOL NEARLY FULL: %.0f %% of %d MB holds samples not yet in the store (%s); "
                "when it is full, MQTT is paused and OPC UA values are dropped and counted",
                100 * self.spool.fill,
                self.spool.max_bytes >> 20,
                self.spool.directory,
            )


class SampleSink:
    """Samples wait in memory and this sink writes them to the store (no spool: not crash-safe)."""

    spool = None
    last_commit: float | None = None  # wall clock of the last batch written to the store

    def __init__(
        self,
        store: TimeSeriesStore,
        *,
        batch_size: int = 5000,
        flush_interval: float = 0.05,
        observe: Callable[[list[Sample]], None] | None = None,
        transforms: Mapping[str, Transform] | None = None,
    ) -> None:
        self.store = store
        self.transforms = dict(transforms or {})  # tag → raw value to stored value (tags' scale, offset)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.observe = observe
        self._buffer: list[Sample] = []
        self._wake = asyncio.Event()
        self.received = 0
        self.stored = 0
        self.write_failures = 0
        self.store_ok = True

    def put(self, samples: Sequence[Sample]) -> None:
        samples = transform_samples(samples, self.transforms)
        self._buffer.extend(samples)
        self.received += len(samples)
        if self.observe is not None:
            self.observe(samples)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    @property
    def caught_up(self) -> bool:
        return not self._buffer

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until `stop` is set, then flush what is left (retrying a while if the store refuses)."""
        delay = 0.2
        while not stop.is_set():
            await wait_for_event(self._wake, self.flush_interval)
            self._wake.clear()
            if await self.flush():
                delay = 0.2
            else:
                await wait_for_event(stop, delay)
                delay = min(delay * 2, 5.0)
        deadline = time.monotonic() + 3.0
        while not self.caught_up and time.monotonic() < deadline:
            if not await self.flush():
                await asyncio.sleep(0.2)
        if not self.caught_up:
            log.error("stopping with %d samples not stored (no spool)", len(self._buffer))

    async def flush(self) -> bool:
        """Write everything buffered, batch by batch. False if the store refused a batch."""
        while self._buffer:
            batch = self._buffer[: self.batch_size]
            try:
                await asyncio.to_thread(self.store.write, batch)
            except StoreError as exc:
                self.write_failures += 1
                if self.store_ok:
                    log.error("store write failed; samples stay in memory and are retried: %s", exc)
                self.store_ok = False
                return False
            self.store_ok = True
            del self._buffer[: len(batch)]
            self.stored += len(batch)
            self.last_commit = time.time()
        return True
