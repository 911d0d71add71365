"""Where collectors hand their samples: a buffer that writes to the store in batches.

Collectors call `put` from the event loop (never blocking); a flush task writes a batch every
`flush_interval` seconds or as soon as `batch_size` samples wait. A failed write keeps the batch and
retries with backoff, in order, so a short store outage loses nothing that reached the sink.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable

from biopilot.aio import wait_for_event
from biopilot.errors import StoreError
from biopilot.samples import Sample
from storage.base import TimeSeriesStore

log = logging.getLogger(__name__)


class Counts:
    """Counts by (source, outcome), and a log line per reason at most every `every_s` seconds."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.by: Counter[tuple[str, str]] = Counter()
        self._every = every_s
        self._last_log: dict[tuple[str, str], float] = {}

    def add(self, source: str, outcome: str, n: int = 1) -> None:
        self.by[(source, outcome)] += n

    def reject(self, source: str, reason: str, detail: str) -> None:
        """Count a rejected input by reason and log it, rate-limited per reason."""
        key = (source, reason)
        self.by[key] += 1
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= self._every:
            self._last_log[key] = now
            log.warning("%s: %s (%d so far): %s", source, reason, self.by[key], detail[:300])

    def of(self, source: str) -> dict[str, int]:
        return {outcome: n for (src, outcome), n in self.by.items() if src == source}


class SampleSink:
    def __init__(
        self, store: TimeSeriesStore, *, batch_size: int = 5000, flush_interval: float = 0.2
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._buffer: list[Sample] = []
        self._wake = asyncio.Event()
        self.received = 0
        self.stored = 0
        self.write_failures = 0

    def put(self, samples: Iterable[Sample]) -> None:
        before = len(self._buffer)
        self._buffer.extend(samples)
        self.received += len(self._buffer) - before
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until `stop` is set, then flush what is left (retrying while the store refuses)."""
        while not stop.is_set():
            await wait_for_event(self._wake, self.flush_interval)
            self._wake.clear()
            await self.flush()
        await self.flush(final=True)

    async def flush(self, *, final: bool = False) -> None:
        delay = 0.2
        while self._buffer:
            batch, self._buffer = self._buffer, []
            try:
                await asyncio.to_thread(self.store.write, batch)
            except StoreError as exc:
                self.write_failures += 1
                self._buffer[:0] = batch  # keep order: the failed batch goes back in front
                log.error("store write failed, %d samples kept for retry: %s", len(self._buffer), exc)
                if final and self.write_failures > 50:
                    log.error("giving up at shutdown with %d samples not stored", len(self._buffer))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.stored += len(batch)
            if not final:
                return
