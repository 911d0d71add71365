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
    updated_us INTEGER NOT NULL,
    rejected_total INTEGER NOT NULL DEFAULT 0,
    last_rejected_us INTEGER,
    reject_reason TEXT
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
_ADDED_TAG_COLUMNS = {
    "rejected_total": "INTEGER NOT NULL DEFAULT 0",
    "last_rejected_us": "INTEGER",
    "reject_reason": "TEXT",
}


@dataclass(frozen=True)
class TagHealth:
    tag: str
    source: str
    last_seen: datetime | None  # wall clock
    last_ts: datetime | None  # source time of the newest value
    values_total: int
    rate_per_min: float
    updated: datetime
    rejected_total: int = 0  # inputs for this tag that were rejected
    last_rejected: datetime | None = None  # wall clock of the newest rejection
    reject_reason: str | None = None  # and its reason


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
            if not read_only:
                columns = {r[1] for r in self._conn.execute("PRAGMA table_info(health_tags)")}
                for column, kind in _ADDED_TAG_COLUMNS.items():  # a store made by an earlier version
                    if column not in columns:
                        self._conn.execute(f"ALTER TABLE health_tags ADD COLUMN {column} {kind}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot create the health schema ({exc})") from None
        if read_only:
            self._conn.execute("PRAGMA query_only=ON")
        try:
            self._tag_columns = {r[1] for r in self._conn.execute("PRAGMA table_info(health_tags)")}
        except sqlite3.Error:
            self._tag_columns = set()

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
                    "INSERT OR REPLACE INTO health_tags (tag, source, last_seen_us, last_ts_us, values_total,"
                    " rate_per_min, updated_us, rejected_total, last_rejected_us, reject_reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            t.tag,
                            t.source,
                            _us(t.last_seen),
                            _us(t.last_ts),
                            t.values_total,
                            t.rate_per_min,
                            now_us,
                            t.rejected_total,
                            _us(t.last_rejected),
                            t.reject_reason,
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
        added = (
            "rejected_total, last_rejected_us, reject_reason"
            if "reject_reason" in self._tag_columns
            else "0, NULL, NULL"  # a store of an earlier version that no collector has written to since
        )
        rows = self._read(
            "SELECT tag, source, last_seen_us, last_ts_us, values_total, rate_per_min, updated_us,"
            f" {added} FROM health_tags ORDER BY tag"
        )
        return {
            r[0]: TagHealth(
                r[0],
                r[1],
                _dt(r[2]),
                _dt(r[3]),
                int(r[4]),
                float(r[5]),
                from_us(r[6]),
                int(r[7]),
                _dt(r[8]),
                r[9],
            )
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


COLLECTOR_SILENT_S = 10.0  # health older than this: the collector (or the store writer) is not running
HEARTBEAT_LATE_S = 5.0  # an OPC UA heartbeat older than this (at the collector's last report): server gone
NOT_SPOOLING_S = 10.0  # data arrived this much later than the last spool append: it is not being kept
STORE_STALLED_S = 30.0  # a spool backlog with no store commit for this long: the store writer is stuck
REJECTED_AFTER_S = 30.0  # a tag whose newest input was rejected, with no value for this long: "rejected"


def _age(iso: str | None, now: datetime) -> float | None:
    return (now - datetime.fromisoformat(iso)).total_seconds() if iso else None


def connection_verdict(
    doc: dict[str, Any] | None, updated: datetime | None, now: datetime
) -> tuple[bool, str]:
    """(ok, why) of a collector connection, from what it reported it did: ok only when it reported recently,
    is connected, its spool takes its samples, and what arrived was spooled (an OPC UA server's heartbeat
    answered lately, too)."""
    if doc is None or updated is None:
        return False, "no report from the collector"
    silent = (now - updated).total_seconds()
    if silent > COLLECTOR_SILENT_S:
        return False, f"no report from the collector for {silent:.0f} s (is it running?)"
    if doc.get("spool_error"):
        return False, f"spool error: {doc['spool_error']}"
    if doc.get("state") != "connected":
        return False, f"{doc.get('state')}: {doc.get('last_error') or 'no reason given'}"
    if doc.get("kind") == "opcua":
        beat = doc.get("last_heartbeat")
        if beat is None or (updated - datetime.fromisoformat(beat)).total_seconds() > HEARTBEAT_LATE_S:
            return False, "the server stopped answering its heartbeat"
    received, spooled = doc.get("last_received"), doc.get("last_spooled")
    if received and (
        spooled is None
        or (datetime.fromisoformat(received) - datetime.fromisoformat(spooled)).total_seconds()
        > NOT_SPOOLING_S
    ):
        return False, f"data arrives but is not spooled (last spooled: {spooled or 'never'})"
    return True, "ok"


def source_alive(doc: dict[str, Any] | None, updated: datetime | None, now: datetime) -> bool:
    """Is a collector connection alive: reported recently, connected, storing, its heartbeat fresh?"""
    return connection_verdict(doc, updated, now)[0]


def store_verdict(
    sink: dict[str, Any] | None,
    writer: dict[str, Any] | None,
    writer_updated: datetime | None,
    now: datetime,
) -> tuple[bool, str]:
    """(ok, why) of the way from the collectors to the store: the spool takes samples, the store writer runs
    and commits what waits in the spool."""
    sink = sink or {}
    if sink.get("spool_error"):
        return False, f"SPOOL ERROR: {sink['spool_error']}"
    if not writer:
        return False, "the store writer has not reported (is it running?)"
    if writer_updated is not None and (now - writer_updated).total_seconds() > COLLECTOR_SILENT_S:
        return False, f"the store writer has not reported for {(now - writer_updated).total_seconds():.0f} s"
    state = writer.get("state", "ok")
    if state != "ok":
        return False, f"store writer: {state}: {writer.get('error') or 'no reason given'}"
    lag = writer.get("lag_bytes", 0) or sink.get("spool_depth_bytes", 0)
    idle = _age(writer.get("last_commit"), now)
    if lag and (idle is None or idle > STORE_STALLED_S):
        return False, f"store writer stalled: {lag} bytes wait in the spool, no commit for {idle or 0:.0f} s"
    return True, "ok"


def tag_state(
    tag: str,
    th: TagHealth | None,
    source_doc: dict[str, Any] | None,
    source_is_alive: bool,
    max_age_s: float | None,
    now: datetime,
) -> tuple[str, str]:
    """(state, why) of a tag: failed (its node cannot be monitored), source-down (its Sparkplug edge node
    or device died), dead (its connection is not alive), rejected (what arrives for it is refused), stale
    (silent longer than max_age_s), or live."""
    doc = source_doc or {}
    if tag in doc.get("failed", {}):
        return "failed", doc["failed"][tag]
    if tag in doc.get("down", {}):
        return "source-down", doc["down"][tag]
    if not source_is_alive:
        return "dead", "its connection is not alive"
    seen = th.last_seen if th else None
    if th is not None and th.last_rejected is not None and (seen is None or seen < th.last_rejected):
        silent = (now - seen).total_seconds() if seen else None
        if silent is None or silent > REJECTED_AFTER_S:
            return "rejected", th.reject_reason or "rejected"
    age = (now - seen).total_seconds() if seen else None
    state = liveness(True, age, max_age_s)
    return state, "" if state == "live" else f"silent for more than {max_age_s} s"


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
