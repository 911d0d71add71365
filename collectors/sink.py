"""Where collectors hand their samples: the spool first, then the store, in order.

`put` appends the samples to the on-disk spool (when there is one) and returns once they are there, so
a caller may acknowledge its source (an MQTT PUBACK) right after. A flush task writes to the store in
batches: from memory while it keeps up, from the spool files when it fell behind (a store outage, a
restart after a crash); only what the store accepted is committed in the spool. A failed store write keeps
everything and retries with backoff: an outage of the store loses nothing that reached the sink.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence

from biopilot.aio import wait_for_event
from biopilot.errors import StoreError
from biopilot.samples import Sample
from collectors.spool import Spool
from storage.base import TimeSeriesStore

log = logging.getLogger(__name__)

MEMORY_LIMIT = 500_000  # samples held in memory for the store writer; beyond, it reads the spool files
FULL_ALARM = 0.8  # the spool is "nearly full" from here on: logged as an error, shown in health


class Counts:
    """Counts by (source, outcome), and a log line per reason at most every `every_s` seconds."""

    def __init__(self, every_s: float = 10.0, quarantine_size: int = 50) -> None:
        self.by: Counter[tuple[str, str]] = Counter()
        self._every = every_s
        self._last_log: dict[tuple[str, str], float] = {}
        self.quarantine: deque[tuple[float, str, str, str]] = deque(maxlen=quarantine_size)

    def add(self, source: str, outcome: str, n: int = 1) -> None:
        self.by[(source, outcome)] += n

    def reject(self, source: str, reason: str, detail: str) -> None:
        """Count a rejected input by reason, keep it in the quarantine and log it, rate-limited per reason."""
        key = (source, reason)
        self.by[key] += 1
        self.quarantine.append((time.time(), source, reason, detail[:500]))
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= self._every:
            self._last_log[key] = now
            log.warning("%s: %s (%d so far): %s", source, reason, self.by[key], detail[:300])

    def of(self, source: str) -> dict[str, int]:
        return {outcome: n for (src, outcome), n in self.by.items() if src == source}


class SampleSink:
    def __init__(
        self,
        store: TimeSeriesStore,
        spool: Spool | None = None,
        *,
        batch_size: int = 5000,
        flush_interval: float = 0.2,
        observe: Callable[[list[Sample]], None] | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
        self.observe = observe  # told of every batch the sink took (health tracking)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._memory: deque[tuple[int, int, list[Sample]]] = deque()  # (start, end, samples) of spool frames
        self._in_memory = 0
        self._position = spool.end if spool is not None else 0  # where the next frame starts
        self._read = spool.committed if spool is not None else 0  # handed to the store up to here
        self._wake = asyncio.Event()
        self._last_alarm = 0.0
        self.received = 0
        self.stored = 0
        self.write_failures = 0
        self.store_ok = True

    def put(self, samples: Sequence[Sample]) -> None:
        """Spool the samples (raises SpoolFullError when the spool is full: nothing was taken)."""
        if not samples:
            return
        samples = list(samples)
        start = self._position
        if self.spool is not None:
            self._position = self.spool.append(samples)
            if self.spool.fill >= FULL_ALARM:
                self._alarm()
        else:
            self._position += len(samples)
        if self._in_memory < MEMORY_LIMIT or self.spool is None:
            self._memory.append((start, self._position, samples))
            self._in_memory += len(samples)
        self.received += len(samples)
        if self.observe is not None:
            self.observe(samples)
        if self._in_memory >= self.batch_size:
            self._wake.set()

    @property
    def pending_in_memory(self) -> int:
        """Samples held in memory for the store (the spool's depth tells the whole backlog)."""
        return self._in_memory

    @property
    def caught_up(self) -> bool:
        return self._read >= self._position

    def _alarm(self) -> None:
        now = time.monotonic()
        if now - self._last_alarm >= 10.0 and self.spool is not None:
            self._last_alarm = now
            log.error(
                "SPOOL NEARLY FULL: %.0f %% of %d MB holds samples not yet in the store (%s); "
                "when it is full, MQTT is paused and OPC UA values are dropped and counted",
                100 * self.spool.fill,
                self.spool.max_bytes >> 20,
                self.spool.directory,
            )

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
            log.error("stopping with samples not yet in the store; they are in the spool and replay at start")

    async def flush(self) -> bool:
        """Write everything pending to the store, batch by batch. False if the store refused a batch."""
        while not self.caught_up:
            end, batch = await self._next_batch()
            if not batch:
                self._read = end
                continue
            try:
                await asyncio.to_thread(self.store.write, batch)
            except StoreError as exc:
                self.write_failures += 1
                if self.store_ok:
                    log.error(
                        "store write failed; samples stay in the %s and are retried: %s",
                        "spool" if self.spool is not None else "memory",
                        exc,
                    )
                self.store_ok = False
                return False
            if not self.store_ok:
                log.warning("store writes succeed again; catching up")
            self.store_ok = True
            self.stored += len(batch)
            self._read = end
            while self._memory and self._memory[0][1] <= end:
                self._in_memory -= len(self._memory.popleft()[2])
            if self.spool is not None:
                self.spool.commit(end)
        return True

    async def _next_batch(self) -> tuple[int, list[Sample]]:
        """The next samples to store and the position after them: from memory when it holds the next
        frame, from the spool files otherwise."""
        if self._memory and self._memory[0][0] == self._read:
            batch: list[Sample] = []
            end = self._read
            for start, frame_end, samples in self._memory:
                if start != end or (batch and len(batch) + len(samples) > self.batch_size):
                    break
                batch.extend(samples)
                end = frame_end
            return end, batch
        assert self.spool is not None, "memory holds every frame when there is no spool"
        spool = self.spool
        read = self._read
        frames = await asyncio.to_thread(lambda: list(spool.read(read, self.batch_size)))
        if not frames:
            return self._position, []  # nothing readable up to the end: skip (logged by the spool)
        return frames[-1][0], [s for _, samples in frames for s in samples]
