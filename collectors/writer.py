"""The store writer: tails the spool into the store, in order, committing only what the store accepted.

It runs as an asyncio task beside the collectors (tests, small sites) or as a process of its own, which
`biopilot collect` starts so that the store's work never competes with the collectors for the
interpreter (`biopilot write-store`). A refused write (the store is down, locked, full) is retried with
backoff from the same position: an outage of the store loses nothing; the spool grows meanwhile. A spool it
cannot open (a read-only or missing file system) or cannot checkpoint is retried with backoff too, and said
in its health document (`state`, `error`), never hidden behind "ok".
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from biopilot.aio import wait_for_event
from biopilot.errors import BioPilotError, StoreError
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
        self.spool_dir = spool_dir
        self.reader: SpoolReader | None = None
        self.store = store
        self.batch_rows = batch_rows
        self.poll_s = poll_s
        self.health = health
        self.health_interval_s = health_interval_s
        self.position = 0
        self.stored = 0
        self.write_failures = 0
        self.store_ok = True
        self.store_error: str | None = None
        self.spool_error: str | None = None  # cannot open the spool, or cannot checkpoint in it
        self.last_commit: float | None = None  # wall clock of the last batch written to the store
        self.backoff_s = 0.0
        self._open_reader()

    def _open_reader(self) -> bool:
        if self.reader is not None:
            return True
        try:
            self.reader = SpoolReader(self.spool_dir)
        except (OSError, BioPilotError) as exc:
            why = f"cannot open the spool {self.spool_dir}: {getattr(exc, 'strerror', None) or exc}"
            if why != self.spool_error:
                log.error("store writer: %s; retrying with backoff", why)
            self.spool_error = why
            return False
        self.position = self.reader.committed
        if self.spool_error is not None:
            log.warning("store writer: the spool opens again")
        self.spool_error = None
        return True

    async def run(self, stop: asyncio.Event, drain_s: float = 5.0) -> None:
        """Write until `stop` is set, then keep writing what is complete in the spool for up to drain_s."""
        backoff = 0.2
        last_health = 0.0
        started = False
        try:
            while not stop.is_set():
                written = await self.step()
                if not started and self.reader is not None:
                    started = True
                    start_lag = self.reader.end() - self.position
                    if start_lag:
                        log.warning("replaying %d bytes from the spool into the store", start_lag)
                if self.health is not None and time.monotonic() - last_health >= self.health_interval_s:
                    last_health = time.monotonic()
                    await asyncio.to_thread(self.publish_health)
                if written < 0:
                    self.backoff_s = backoff
                    await wait_for_event(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                self.backoff_s = 0.0
                if written == 0:
                    await wait_for_event(stop, self.poll_s)
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline and self.reader is not None:
                written = await self.step()
                if written == 0:
                    break
                if written < 0:
                    await asyncio.sleep(0.2)
            if self.reader is not None and self.reader.end() > self.position:
                log.warning(
                    "stopping with %d bytes of the spool not yet in the store; they are written at the "
                    "next start",
                    self.reader.end() - self.position,
                )
        finally:
            if self.health is not None:
                await asyncio.to_thread(self.publish_health)
            if self.reader is not None:
                self.reader.close()

    async def step(self) -> int:
        """Write the next batch: rows written, 0 if nothing waits, -1 if the store or the spool refused."""
        if not self._open_reader():
            return -1
        reader = self.reader
        assert reader is not None
        try:
            frames = await asyncio.to_thread(reader.read, self.position, self.batch_rows)
        except OSError as exc:
            self.spool_error = f"cannot read the spool: {exc.strerror or exc}"
            return -1
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
            self.store_error = str(exc)
            return -1
        if not self.store_ok:
            log.warning("store writes succeed again; catching up from the spool")
        self.store_ok = True
        self.store_error = None
        self.position = frames[-1][0]
        self.stored += len(rows)
        self.last_commit = time.time()
        try:
            reader.commit(
                self.position
            )  # rewriting after a crash is harmless: the store's writes are idempotent
        except OSError as exc:
            why = f"cannot checkpoint in the spool: {exc.strerror or exc}"
            if why != self.spool_error:
                log.error("store writer: %s (the samples are in the store; retried with the next batch)", why)
            self.spool_error = why
        else:
            self.spool_error = None
        return len(rows)

    @property
    def lag_bytes(self) -> int:
        if self.reader is None:
            return 0
        try:
            return max(self.reader.end() - self.position, 0)
        except OSError:
            return 0

    def doc(self) -> dict[str, Any]:
        """The writer's health: what it did (stored, last_commit) and what keeps it from working."""
        if self.reader is None:
            state = "cannot start"
        elif not self.store_ok:
            state = "store refusing writes"
        elif self.spool_error is not None:
            state = "spool error"
        else:
            state = "ok"
        doc: dict[str, Any] = {
            "kind": "writer",
            "state": state,
            "error": self.spool_error if self.store_ok else self.store_error,
            "stored": self.stored,
            "store_ok": self.store_ok,
            "write_failures": self.write_failures,
            "lag_bytes": self.lag_bytes,
            "last_commit": _iso(self.last_commit),
            "backoff_s": self.backoff_s,
        }
        stats = getattr(self.store, "stats", None)  # the InfluxDB store counts retries and rejected points
        if callable(stats):
            doc["backend"] = stats()
        return doc

    def publish_health(self) -> None:
        if self.health is None:
            return
        try:
            self.health.publish(utcnow(), {"writer": self.doc()}, [], [])
        except StoreError as exc:
            log.warning("cannot write health: %s", exc)


def _iso(wall: float | None) -> str | None:
    return datetime.fromtimestamp(wall, UTC).isoformat() if wall is not None else None
