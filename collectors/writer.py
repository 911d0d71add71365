"""The store writer: tails the spool into the store, in order, committing only what the store accepted.

It runs as an asyncio task beside the collectors (tests, small sites) or as a process of its own, which
`biopilot collect` starts so that the store's work never competes with the collectors for the
interpreter (`biopilot write-store`). A refused write (the store is down, locked, full) is retried with
backoff from the same position: an outage of the store loses nothing; the spool grows meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from biopilot.aio import wait_for_event
from biopilot.errors import StoreError
from biopilot.samples import utcnow
from collectors.spool import SpoolReader
from storage.health import HealthStore

log = logging.getLogger(__name__)


class StoreWriter:
    def __init__(
        self,
        spool_dir: Path,
        store: Any,  # a store with write_rows (storage.sqlite.SqliteStore)
        *,
        batch_rows: int = 20_000,
        poll_s: float = 0.02,
        health: HealthStore | None = None,
        health_interval_s: float = 2.0,
    ) -> None:
        self.reader = SpoolReader(spool_dir)
        self.store = store
        self.batch_rows = batch_rows
        self.poll_s = poll_s
        self.health = health
        self.health_interval_s = health_interval_s
        self.position = self.reader.committed
        self.stored = 0
        self.write_failures = 0
        self.store_ok = True

    async def run(self, stop: asyncio.Event, drain_s: float = 5.0) -> None:
        """Write until `stop` is set, then keep writing what is complete in the spool for up to drain_s."""
        backoff = 0.2
        last_health = 0.0
        start_lag = self.reader.end() - self.position
        if start_lag:
            log.warning("replaying %d bytes from the spool into the store", start_lag)
        try:
            while not stop.is_set():
                written = await self.step()
                if written < 0:
                    await wait_for_event(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                if written == 0:
                    await wait_for_event(stop, self.poll_s)
                if self.health is not None and time.monotonic() - last_health >= self.health_interval_s:
                    last_health = time.monotonic()
                    await asyncio.to_thread(self.publish_health)
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline:
                written = await self.step()
                if written == 0:
                    break
                if written < 0:
                    await asyncio.sleep(0.2)
            if self.reader.end() > self.position:
                log.warning(
                    "stopping with %d bytes of the spool not yet in the store; they are written at the "
                    "next start",
                    self.reader.end() - self.position,
                )
        finally:
            if self.health is not None:
                await asyncio.to_thread(self.publish_health)
            self.reader.close()

    async def step(self) -> int:
        """Write the next batch: rows written, 0 if nothing is waiting, -1 if the store refused."""
        frames = await asyncio.to_thread(self.reader.read, self.position, self.batch_rows)
        if not frames:
            return 0
        rows = [row for _, frame_rows in frames for row in frame_rows]
        try:
            await asyncio.to_thread(self.store.write_rows, rows)
        except StoreError as exc:
            self.write_failures += 1
            if self.store_ok:
                log.error("store write failed; the samples stay in the spool and are retried: %s", exc)
            self.store_ok = False
            return -1
        if not self.store_ok:
            log.warning("store writes succeed again; catching up from the spool")
        self.store_ok = True
        self.position = frames[-1][0]
        self.reader.commit(self.position)
        self.stored += len(rows)
        return len(rows)

    @property
    def lag_bytes(self) -> int:
        return max(self.reader.end() - self.position, 0)

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "writer",
            "state": "ok" if self.store_ok else "store refusing writes",
            "stored": self.stored,
            "store_ok": self.store_ok,
            "write_failures": self.write_failures,
            "lag_bytes": self.lag_bytes,
        }
        stats = getattr(self.store, "stats", None)  # the InfluxDB store counts retries and rejected points
        if callable(stats):
            doc["store"] = stats()
        return doc

    def publish_health(self) -> None:
        if self.health is None:
            return
        try:
            self.health.publish(utcnow(), {"writer": self.doc()}, [], [])
        except StoreError as exc:
            log.warning("cannot write health: %s", exc)
