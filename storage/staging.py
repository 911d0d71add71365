"""The stage of one import: its samples on disk, in a scratch SQLite file of their own, before any of them
reaches the store.

An import writes its whole file here first, in short transactions of one chunk each, without touching the
store's database (so collectors, processing and `kpis --recompute` are never locked out while a large file
is parsed). The stage keys samples by (tag, time) as the store does, which is how it finds duplicates in
bounded memory: a sample at a tag and time the file already gave is counted, and if its value (or status)
differs, the two rows are a conflict. Only a file without conflicts (and without bad values, unless they are
skipped) is published: copied into the store in chunks (SqliteStore.publish_stage, or `write` for another
backend), which is idempotent, so an interrupted publish is finished by copying again.

The file is scratch: no journal, no fsync per transaction; `sync` makes it durable once, before the import
starts publishing (from then on a crash is repaired by finishing the publish from it).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from biopilot.errors import StoreError
from biopilot.records import Row

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS staged (
    sid INTEGER NOT NULL,
    ts_us INTEGER NOT NULL,
    value REAL,
    text TEXT,
    status INTEGER NOT NULL,
    row INTEGER NOT NULL,
    dups INTEGER NOT NULL DEFAULT 0,
    conflict_row INTEGER,
    conflict_value TEXT,
    PRIMARY KEY (sid, ts_us)
) WITHOUT ROWID;
"""

# A second sample at a staged (tag, time): counted; a different value or status is a conflict (the first
# such row is kept to name it). The first sample's value stays.
_SAME = "staged.value IS excluded.value AND staged.text IS excluded.text AND staged.status = excluded.status"
_UPSERT = f"""
INSERT INTO staged (sid, ts_us, value, text, status, row) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (sid, ts_us) DO UPDATE SET
    dups = dups + 1,
    conflict_row = COALESCE(conflict_row, CASE WHEN {_SAME} THEN NULL ELSE excluded.row END),
    conflict_value = COALESCE(conflict_value, CASE WHEN {_SAME} THEN NULL
        ELSE COALESCE(excluded.text, CAST(excluded.value AS TEXT)) END)
"""


@dataclass(frozen=True)
class Conflict:
    """Two rows of a file that give one tag at one time different values."""

    series: str
    ts_us: int
    row: int
    value: str
    other_row: int
    other_value: str


@dataclass(frozen=True)
class StageSummary:
    samples: int  # distinct (tag, time): what publishing stores
    duplicates: int  # samples repeated with the same value and status (collapsed into one)
    conflicts: int  # (tag, time) given different values
    t_min: int | None  # [µs] first and last sample time
    t_max: int | None
    per_series: dict[str, int]  # samples per tag


class Stage:
    """One import's scratch file (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=OFF")
            self._conn.execute("PRAGMA synchronous=OFF")
            self._conn.execute("PRAGMA cache_size=-32768")  # 32 MiB
            self._conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: cannot open the import's stage file ({exc})") from None
        self._ids: dict[str, int] = {}

    def series_id(self, name: str) -> int:
        sid = self._ids.get(name)
        if sid is None:
            row = self._conn.execute("SELECT id FROM series WHERE name = ?", (name,)).fetchone()
            if row is None:
                row = self._conn.execute(
                    "INSERT INTO series (name) VALUES (?) RETURNING id", (name,)
                ).fetchone()
            sid = self._ids[name] = int(row[0])
        return sid

    def add(
        self, name: str, ts: np.ndarray, values: np.ndarray, status: np.ndarray, rows: np.ndarray
    ) -> None:
        """Stage samples of one tag: times [µs], values (float64, or object: text), status, file rows."""
        if len(ts) == 0:
            return
        sid = self.series_id(name)
        vals = values.tolist()
        if values.dtype == object:
            params = zip(repeat(sid), ts.tolist(), repeat(None), vals, status.tolist(), rows.tolist())
        else:
            params = zip(repeat(sid), ts.tolist(), vals, repeat(None), status.tolist(), rows.tolist())
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany(_UPSERT, params)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise StoreError(f"{self.path}: cannot stage samples of {name} ({exc})") from None

    def summary(self) -> StageSummary:
        total, dups, conflicts, t_min, t_max = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(dups), 0), COUNT(conflict_row), MIN(ts_us), MAX(ts_us) FROM staged"
        ).fetchone()
        per = self._conn.execute(
            "SELECT s.name, COUNT(*) FROM staged JOIN series s ON s.id = staged.sid"
            " GROUP BY s.name ORDER BY s.name"
        ).fetchall()
        return StageSummary(int(total), int(dups), int(conflicts), t_min, t_max, {n: int(c) for n, c in per})

    def conflicts(self, limit: int) -> list[Conflict]:
        rows = self._conn.execute(
            "SELECT s.name, ts_us, row, COALESCE(text, CAST(value AS TEXT)), conflict_row, conflict_value"
            " FROM staged JOIN series s ON s.id = staged.sid WHERE conflict_row IS NOT NULL"
            " ORDER BY row LIMIT ?",
            (limit,),
        ).fetchall()
        return [Conflict(str(n), int(t), int(r), str(v), int(cr), str(cv)) for n, t, r, v, cr, cv in rows]

    def series(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM series ORDER BY id")]

    def rows(self, chunk: int) -> Iterator[list[Row]]:
        """The staged samples as store rows, `chunk` at a time (for a store without publish_stage)."""
        cur = self._conn.execute(
            "SELECT s.name, ts_us, COALESCE(text, value), status"
            " FROM staged JOIN series s ON s.id = staged.sid ORDER BY sid, ts_us"
        )
        while batch := cur.fetchmany(chunk):
            yield [(name, ts, value, status, None) for name, ts, value, status in batch]

    def sync(self) -> None:
        """Make the stage durable (once, before the import starts publishing from it)."""
        with self.path.open("rb") as f:
            os.fsync(f.fileno())

    def close(self) -> None:
        self._conn.close()

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
