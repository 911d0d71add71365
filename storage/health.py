"""Health of the collection, stored beside the data so the dashboard and `biopilot status` can show it.

- components: one JSON document per collector connection (state, reconnects, counts by outcome, spool
  depth), replaced every few seconds by the collector;
- tags: per tag the wall-clock time it was last seen, its newest source timestamp, values in the last
  health interval and in total;
- gaps: outages of a source (from the loss of the connection to its return), with the source timestamps
  of the last value before and the first after, so a KPI knows what it missed;
- quarantine: the last rejected inputs with their reason.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from biopilot.errors import StoreError
from biopilot.samples import from_us, to_us
from storage.sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS health_components (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS health_tags (
    tag TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    last_seen_us INTEGER,
    last_ts_us INTEGER,
    values_total INTEGER NOT NULL,
    rate_per_min REAL NOT NULL,
    updated_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gaps (
    source TEXT NOT NULL,
    lost_us INTEGER NOT NULL,
    back_us INTEGER,
    last_ts_before_us INTEGER,
    first_ts_after_us INTEGER,
    reason TEXT NOT NULL,
    PRIMARY KEY (source, lost_us)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    time_us INTEGER NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""

QUARANTINE_KEEP = 500


@dataclass(frozen=True)
class TagHealth:
    tag: str
    source: str
    last_seen: datetime | None  # wall clock
    last_ts: datetime | None  # source time of the newest value
    values_total: int
    rate_per_min: float
    updated: datetime


@dataclass(frozen=True)
class Gap:
    source: str
    lost: datetime  # wall clock
    back: datetime | None  # None while the source is still gone
    last_ts_before: datetime | None  # source time of the last value before the loss
    first_ts_after: datetime | None
    reason: str


class HealthStore:
    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()
        try:
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot create the health schema ({exc})") from None
        if read_only:
            self._conn.execute("PRAGMA query_only=ON")

    def _write(self, statements: Iterable[tuple[str, Any]]) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    if isinstance(params, list):
                        self._conn.executemany(sql, params)
                    else:
                        self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreError(f"{self.path}: cannot write health ({exc})") from None

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot read health ({exc})") from None

    # -- writing (collectors) --------------------------------------------------------------------------
    def publish(
        self,
        now: datetime,
        components: dict[str, dict[str, Any]],
        tags: list[TagHealth],
        quarantine: list[tuple[float, str, str, str]],
    ) -> None:
        """Replace the component documents and tag rows; append quarantine entries (keeping the newest)."""
        now_us = to_us(now)
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO health_components VALUES (?, ?, ?)",
                    [(name, json.dumps(doc, sort_keys=True), now_us) for name, doc in components.items()],
                ),
                (
                    "INSERT OR REPLACE INTO health_tags VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            t.tag,
                            t.source,
                            _us(t.last_seen),
                            _us(t.last_ts),
                            t.values_total,
                            t.rate_per_min,
                            now_us,
                        )
                        for t in tags
                    ],
                ),
                (
                    "INSERT INTO quarantine (time_us, source, reason, detail) VALUES (?, ?, ?, ?)",
                    [(int(t * 1e6), src, reason, detail) for t, src, reason, detail in quarantine],
                ),
                (
                    "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?",
                    (QUARANTINE_KEEP,),
                ),
            ]
        )

    def open_gap(self, source: str, lost: datetime, last_ts_before: datetime | None, reason: str) -> None:
        self._write(
            [
                (
                    "INSERT OR IGNORE INTO gaps VALUES (?, ?, NULL, ?, NULL, ?)",
                    (source, to_us(lost), _us(last_ts_before), reason),
                )
            ]
        )

    def close_gap(self, source: str, back: datetime, first_ts_after: datetime | None = None) -> None:
        """Close the source's open gap (if any): it is back."""
        self._write(
            [
                (
                    "UPDATE gaps SET back_us = ?, first_ts_after_us = ? WHERE source = ? AND back_us IS NULL",
                    (to_us(back), _us(first_ts_after), source),
                )
            ]
        )

    def set_first_after(self, source: str, first_ts_after: datetime) -> None:
        """Record the source time of the first value after the newest closed gap that lacks one."""
        self._write(
            [
                (
                    "UPDATE gaps SET first_ts_after_us = ? WHERE source = ? AND back_us IS NOT NULL"
                    " AND first_ts_after_us IS NULL",
                    (to_us(first_ts_after), source),
                )
            ]
        )

    # -- reading (dashboard, status) -------------------------------------------------------------------
    def components(self) -> dict[str, tuple[dict[str, Any], datetime]]:
        return {
            name: (json.loads(doc), from_us(updated))
            for name, doc, updated in self._read(
                "SELECT name, doc, updated_us FROM health_components ORDER BY name"
            )
        }

    def tags(self) -> dict[str, TagHealth]:
        rows = self._read("SELECT * FROM health_tags ORDER BY tag")
        return {
            r[0]: TagHealth(r[0], r[1], _dt(r[2]), _dt(r[3]), int(r[4]), float(r[5]), from_us(r[6]))
            for r in rows
        }

    def gaps(self, source: str | None = None) -> list[Gap]:
        sql = "SELECT * FROM gaps" + (" WHERE source = ?" if source else "") + " ORDER BY lost_us"
        rows = self._read(sql, (source,) if source else ())
        return [Gap(r[0], from_us(r[1]), _dt(r[2]), _dt(r[3]), _dt(r[4]), r[5]) for r in rows]

    def quarantine(self, limit: int = 50) -> list[tuple[datetime, str, str, str]]:
        rows = self._read(
            "SELECT time_us, source, reason, detail FROM quarantine ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [(from_us(t), src, reason, detail) for t, src, reason, detail in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _us(ts: datetime | None) -> int | None:
    return to_us(ts) if ts is not None else None


def _dt(us: int | None) -> datetime | None:
    return from_us(us) if us is not None else None


COLLECTOR_SILENT_S = 10.0  # health older than this: the collector is not running
HEARTBEAT_LATE_S = 5.0  # an OPC UA heartbeat older than this (at the collector's last report): server gone


def source_alive(doc: dict[str, Any] | None, updated: datetime | None, now: datetime) -> bool:
    """Is a collector connection alive: reported recently, connected, and (OPC UA) its heartbeat fresh?"""
    if doc is None or updated is None or (now - updated).total_seconds() > COLLECTOR_SILENT_S:
        return False
    if doc.get("state") != "connected":
        return False
    if doc.get("kind") == "opcua":
        beat = doc.get("last_heartbeat")
        if beat is None:
            return False
        return (updated - datetime.fromisoformat(beat)).total_seconds() <= HEARTBEAT_LATE_S
    return True


def liveness(source_is_alive: bool, age_s: float | None, max_age_s: float | None) -> str:
    """'live', 'stale' or 'dead' for a tag.

    A report-by-exception tag keeps its value while unchanged: an old value from a live source is not stale.
    dead: its source (connection, server heartbeat, or the collector itself) is gone.
    stale: the source is alive but the tag has been silent longer than its configured max_age_s."""
    if not source_is_alive:
        return "dead"
    if max_age_s is not None and (age_s is None or age_s > max_age_s):
        return "stale"
    return "live"
