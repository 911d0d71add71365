"""The embedded time-series store: one SQLite file in WAL mode.

WAL lets a collector process write while the dashboard process reads. Samples live in one table
clustered by (series, source timestamp), so a range read of one series is one index range scan and a
rewrite of the same sample (a replay, a redelivered MQTT message) replaces it instead of duplicating it.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import repeat
from pathlib import Path
from typing import TypeVar

import numpy as np

from biopilot.errors import StoreError
from biopilot.records import Buckets, Latest, Row, SeriesData
from biopilot.samples import GOOD, Sample, from_us, to_us, utcnow
from storage.buckets import in_spans

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    last_received_us INTEGER
);
CREATE TABLE IF NOT EXISTS samples (
    series_id INTEGER NOT NULL,
    ts_us INTEGER NOT NULL,
    value REAL,
    text TEXT,
    status INTEGER NOT NULL DEFAULT 0,
    server_us INTEGER,
    PRIMARY KEY (series_id, ts_us)
) WITHOUT ROWID;
"""

_BAD = 0x80000000
_MIN = -(2**63)

# The index of the Parquet archive of closed runs (storage/tiered.py has the whole story). It lives in every
# SQLite store file, so that any writer of the file — a TieredStore, or a plain SqliteStore (tests, tools) —
# records a sample written into an archived span as a late sample, in the same transaction.
_ARCHIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS archive_runs (
    run_id TEXT PRIMARY KEY,
    equipment TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    start_us INTEGER,
    end_us INTEGER,
    track_start_us INTEGER NOT NULL,
    track_end_us INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    archived_us INTEGER,
    pruned_us INTEGER
);
CREATE TABLE IF NOT EXISTS archive_series (
    run_id TEXT NOT NULL,
    series_id INTEGER NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0,
    first_us INTEGER,
    last_us INTEGER,
    PRIMARY KEY (run_id, series_id)
);
CREATE INDEX IF NOT EXISTS archive_series_by_series ON archive_series (series_id);
CREATE TABLE IF NOT EXISTS archive_delta (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_id INTEGER NOT NULL,
    ts_us INTEGER NOT NULL,
    written_us INTEGER NOT NULL,
    UNIQUE (series_id, ts_us)
);
CREATE TABLE IF NOT EXISTS archive_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO archive_meta (key, value) VALUES ('generation', 0);
"""
ARRAY_CHUNK = 262_144  # write_arrays commits this many samples per transaction

_INSERT = (
    "INSERT OR REPLACE INTO samples (series_id, ts_us, value, text, status, server_us)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_T = TypeVar("_T")


def create_private(path: Path) -> None:
    """Create the database file readable and writable by its owner only (0600, whatever the umask; its
    folder 0700 when new). SQLite gives the -wal and -shm files the database file's permissions. An existing
    file keeps the permissions its admin gave it."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.chmod(0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


WAL_SWITCH_S = 10.0  # how long an opener retries switching a new database to WAL while others do the same


def _journal_wal(conn: sqlite3.Connection) -> None:
    """PRAGMA journal_mode=WAL, retried with backoff while the database is locked. Switching a new database to
    WAL needs its exclusive lock, and SQLite answers "database is locked" at once instead of calling the busy
    handler when waiting could deadlock (several processes opening a new catalog at the same moment: seen in
    CI on a loaded machine, tests/storage/conformance/test_catalog_conformance.py)."""
    deadline, delay = time.monotonic() + WAL_SWITCH_S, 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the pragmas every BioPilot connection to the embedded database uses."""
    try:
        create_private(path)
        conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False, isolation_level=None)
        _journal_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot open the embedded database ({exc})") from None
    return conn


class SqliteStore:
    """TimeSeriesStore on an SQLite file. Thread-safe (one connection, one lock)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()
        try:
            self._conn.executescript(_SCHEMA + _ARCHIVE_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(samples)")}
            if "server_us" not in columns:  # a database from before server timestamps were kept
                self._conn.execute("ALTER TABLE samples ADD COLUMN server_us INTEGER")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot create the schema ({exc})") from None
        if read_only:
            self._conn.execute("PRAGMA query_only=ON")
        self._ids: dict[str, int] = {}
        self._gen: int | None = None
        self._track: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._track_max: dict[int, int] = {}

    # -- writing ---------------------------------------------------------------------------------------
    def write(self, samples: Sequence[Sample]) -> int:
        return self.write_rows(
            [
                (
                    s.series,
                    to_us(s.ts),
                    s.value,
                    s.status,
                    to_us(s.server_ts) if s.server_ts is not None else None,
                )
                for s in samples
            ]
        )

    def write_rows(self, rows: Sequence[Row]) -> int:
        """The fast path of `write`: rows of (series, source µs, value, status, server µs or None), as the
        spool keeps them. Idempotent per (series, source timestamp), like `write`."""
        if not rows:
            return 0
        now = to_us(utcnow())
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                out = []
                ids = self._ids
                for series, ts_us, value, status, server_us in rows:
                    sid = ids.get(series)
                    if sid is None:
                        sid = self._series_id(series, create=True)
                    if isinstance(value, str):
                        out.append((sid, ts_us, None, value, status, server_us))
                    else:
                        out.append((sid, ts_us, value, None, status, server_us))
                touched = {row[0] for row in out}
                self._conn.executemany(_INSERT, out)
                self._conn.executemany(
                    "UPDATE series SET last_received_us = ? WHERE id = ?", [(now, sid) for sid in touched]
                )
                self._wrote_rows(out)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"{self.path}: write of {len(rows)} samples failed ({exc})") from None
            except BaseException:  # e.g. a naive timestamp (ValueError): never leave the transaction open
                self._rollback()
                raise
        return len(rows)

    def write_arrays(
        self,
        series: str,
        ts_us: np.ndarray,
        values: np.ndarray,
        status: np.ndarray | int = GOOD,
        server_us: np.ndarray | None = None,
    ) -> int:
        """Samples of one series from arrays, as imports and the simulator's historical mode have them:
        ts_us source timestamps [µs] (int64); values float64 (NaN: no value) or object (str for text
        samples, numbers, None); status OPC UA codes (one per sample, or one for all); server_us server
        timestamps [µs] or None. Idempotent like `write`. Committed ARRAY_CHUNK samples per transaction, so a
        long import does not hold the write lock against the live writer; a failure leaves the chunks
        before it stored (writing the same arrays again is harmless)."""
        ts, vals, st, srv = _check_arrays(ts_us, values, status, server_us)
        n = len(ts)
        if n == 0:
            return 0
        for a in range(0, n, ARRAY_CHUNK):
            b = min(a + ARRAY_CHUNK, n)
            self._write_chunk(series, ts[a:b], vals[a:b], st[a:b], None if srv is None else srv[a:b])
        return n

    def _write_chunk(
        self, series: str, ts: np.ndarray, vals: np.ndarray, st: np.ndarray, srv: np.ndarray | None
    ) -> None:
        n = len(ts)
        if vals.dtype == object:
            text = [v if isinstance(v, str) else None for v in vals.tolist()]
            nums = [None if isinstance(v, str) else v for v in vals.tolist()]
        else:
            text, nums = repeat(None, n), vals.tolist()  # NaN is stored as NULL by SQLite
        servers: Iterable[int | None] = repeat(None, n) if srv is None else srv.tolist()
        now = to_us(utcnow())
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                sid = self._series_id(series, create=True)
                assert sid is not None
                self._conn.executemany(
                    _INSERT, zip(repeat(sid, n), ts.tolist(), nums, text, st.tolist(), servers, strict=False)
                )
                self._conn.execute("UPDATE series SET last_received_us = ? WHERE id = ?", (now, sid))
                self._wrote_arrays(sid, ts)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"{self.path}: write of {n} samples of {series!r} failed ({exc})") from None
            except BaseException:
                self._rollback()
                raise

    # -- late samples of archived spans: recorded inside the write transaction ---------------------------
    def _tracking(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per series id, the sorted, disjoint spans [lo, hi) the archive tracks (read again when the index's
        generation changed: another process archived a run). Called inside the write transaction, so a
        span tracked before this write commits is always seen."""
        gen = self._conn.execute("SELECT value FROM archive_meta WHERE key = 'generation'").fetchone()[0]
        if gen != self._gen:
            spans: dict[int, list[tuple[int, int]]] = {}
            for sid, lo, hi in self._conn.execute(
                "SELECT s.series_id, r.track_start_us, r.track_end_us FROM archive_series s"
                " JOIN archive_runs r ON r.run_id = s.run_id ORDER BY 1, 2"
            ):
                merged = spans.setdefault(sid, [])
                if merged and lo <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
                else:
                    merged.append((lo, hi))
            self._track = {
                sid: (np.array([a for a, _ in v], np.int64), np.array([b for _, b in v], np.int64))
                for sid, v in spans.items()
            }
            self._track_max = {sid: int(hi[-1]) for sid, (_, hi) in self._track.items()}
            self._gen = gen
        return self._track

    def _mark_late(self, keys: list[tuple[int, int]]) -> None:
        if keys:
            now = to_us(utcnow())
            self._conn.executemany(
                "INSERT OR REPLACE INTO archive_delta (series_id, ts_us, written_us) VALUES (?, ?, ?)",
                [(sid, ts, now) for sid, ts in keys],
            )

    def _wrote_rows(self, rows: list[tuple[int, int, float | None, str | None, int, int | None]]) -> None:
        """The rows just stored (series id, source µs first) that fall in a tracked span are late samples."""
        track = self._tracking()
        if not track:
            return
        top = self._track_max
        late = [(r[0], r[1]) for r in rows if r[1] < top.get(r[0], _MIN)]
        keys = []
        for sid, ts in late:
            lo, hi = track[sid]
            i = int(np.searchsorted(lo, ts, side="right")) - 1
            if i >= 0 and ts < hi[i]:
                keys.append((sid, ts))
        self._mark_late(keys)

    def _wrote_arrays(self, sid: int, ts: np.ndarray) -> None:
        """Like _wrote_rows, for write_arrays: the series id and the source timestamps [µs] just stored."""
        spans = self._tracking().get(sid)
        if spans is not None:
            late = ts[in_spans(ts, *spans)]
            self._mark_late([(sid, t) for t in late.tolist()])

    def _wrote_span(self, sid: int, start_us: int, end_us: int) -> None:
        """Like _wrote_rows, for a copy in SQL (publish_stage): samples of the series were written somewhere
        in [start_us, end_us)."""
        spans = self._tracking().get(sid)
        if spans is None:
            return
        now = to_us(utcnow())
        for lo, hi in zip(*spans, strict=True):
            a, b = max(int(lo), start_us), min(int(hi), end_us)
            if a < b:  # every row of the series there (a superset of those just written: harmless)
                self._conn.execute(
                    "INSERT OR REPLACE INTO archive_delta (series_id, ts_us, written_us)"
                    " SELECT series_id, ts_us, ? FROM main.samples"
                    " WHERE series_id = ? AND ts_us >= ? AND ts_us < ?",
                    (now, sid, a, b),
                )

    def publish_stage(
        self,
        stage: Path,
        *,
        chunk: int = 20_000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Copy an import's stage file (storage/staging.py) into the store, `chunk` samples per write
        transaction, so other writers (collectors, KPI writes) get the database between chunks. Idempotent
        (a sample at a series and time is replaced), so an interrupted publish is finished by calling it
        again. Returns the samples copied; `progress` gets the running count after each chunk."""
        done = 0
        with self._lock:
            try:
                self._conn.execute("ATTACH DATABASE ? AS stage", (str(stage),))
            except sqlite3.Error as exc:
                raise StoreError(f"{stage}: cannot open the import's stage file ({exc})") from None
        try:
            staged = self._locked(lambda: self._conn.execute("SELECT id, name FROM stage.series").fetchall())
            for stage_sid, name in staged:
                last = -(2**63)
                while True:
                    started = time.monotonic()
                    copied, last = self._publish_chunk(stage_sid, name, last, chunk)
                    done += copied
                    if progress is not None:
                        progress(done)
                    if copied < chunk:
                        break
                    # Between chunks, leave the database to the writers that waited for it: SQLite has no
                    # queue, a waiting writer retries with sleeps, and an importer that begins its next
                    # transaction at once would win nearly every race.
                    time.sleep(min(0.05, max(0.002, 0.3 * (time.monotonic() - started))))
        finally:
            with self._lock:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._conn.execute("DETACH DATABASE stage")
        return done

    def _locked(self, fn: Callable[[], _T]) -> _T:
        with self._lock:
            try:
                return fn()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: reading an import's stage failed ({exc})") from None

    def _publish_chunk(self, stage_sid: int, name: str, after: int, chunk: int) -> tuple[int, int]:
        """Copy up to `chunk` staged samples of one series with time > after; (copied, last time)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                sid = self._series_id(name, create=True)
                n, last = self._conn.execute(
                    "SELECT COUNT(*), MAX(ts_us) FROM (SELECT ts_us FROM stage.staged"
                    " WHERE sid = ? AND ts_us > ? ORDER BY ts_us LIMIT ?)",
                    (stage_sid, after, chunk),
                ).fetchone()
                if n:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO main.samples"
                        " (series_id, ts_us, value, text, status, server_us)"
                        " SELECT ?, ts_us, value, text, status, NULL FROM stage.staged"
                        " WHERE sid = ? AND ts_us > ? AND ts_us <= ?",
                        (sid, stage_sid, after, last),
                    )
                    self._conn.execute(
                        "UPDATE main.series SET last_received_us = ? WHERE id = ?", (to_us(utcnow()), sid)
                    )
                    self._wrote_span(sid, after + 1, last + 1)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"{self.path}: publishing an import's samples failed ({exc})") from None
        return int(n), int(last) if last is not None else after

    def _rollback(self) -> None:
        """End a failed write; series ids created inside it are gone, so forget the cached ones."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._ids.clear()

    def _series_id(self, name: str, *, create: bool) -> int | None:
        sid = self._ids.get(name)
        if sid is not None:
            return sid
        row = self._conn.execute("SELECT id FROM series WHERE name = ?", (name,)).fetchone()
        if row is None:
            if not create:
                return None
            row = self._conn.execute("INSERT INTO series (name) VALUES (?) RETURNING id", (name,)).fetchone()
        self._ids[name] = row[0]
        return row[0]

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, series: str, start: datetime, end: datetime) -> SeriesData:
        t0, t1 = to_us(start), to_us(end)
        with self._lock:
            sid = self._series_id(series, create=False)
            if sid is None:
                return _empty(series)
            rows = self._fetch(sid, t0, t1)
        return rows_to_series(series, rows)

    def _fetch(self, sid: int, t0: int, t1: int) -> list[tuple[int, float | None, str | None, int]]:
        """(ts µs, value, text, status) of the series' samples with t0 ≤ ts < t1, in time order."""
        return self._conn.execute(
            "SELECT ts_us, value, text, status FROM samples"
            " WHERE series_id = ? AND ts_us >= ? AND ts_us < ?"
            " ORDER BY ts_us",
            (sid, t0, t1),
        ).fetchall()

    def read_buckets(self, series: str, start: datetime, end: datetime, n: int) -> Buckets:
        if n <= 0:
            raise ValueError("n must be positive")
        t0, t1 = to_us(start), to_us(end)
        width = max((t1 - t0 + n - 1) // n, 1)
        with self._lock:
            sid = self._series_id(series, create=False)
            rows = (
                []
                if sid is None
                else self._conn.execute(
                    "SELECT (ts_us - ?) / ? AS b, MIN(ts_us), MAX(ts_us),"
                    " MIN(value), MAX(value), AVG(value), COUNT(*)"
                    " FROM samples WHERE series_id = ? AND ts_us >= ? AND ts_us < ? AND status < ?"
                    " AND value IS NOT NULL GROUP BY b ORDER BY b",
                    (t0, width, sid, t0, t1, _BAD),
                ).fetchall()
            )
        cols = list(zip(*rows, strict=True)) if rows else [()] * 7
        return Buckets(
            series=series,
            start=t0 + np.asarray(cols[0], dtype=np.int64) * width,
            t_first=np.asarray(cols[1], dtype=np.int64),
            t_last=np.asarray(cols[2], dtype=np.int64),
            min=np.asarray(cols[3], dtype=np.float64),
            max=np.asarray(cols[4], dtype=np.float64),
            mean=np.asarray(cols[5], dtype=np.float64),
            count=np.asarray(cols[6], dtype=np.int64),
        )

    def latest(self, series: Sequence[str] | None = None) -> dict[str, Latest]:
        out: dict[str, Latest] = {}
        with self._lock:
            known = self._conn.execute("SELECT id, name, last_received_us FROM series").fetchall()
            wanted = None if series is None else set(series)
            for sid, name, received in known:
                if wanted is not None and name not in wanted:
                    continue
                row = self._conn.execute(
                    "SELECT ts_us, value, text, status, server_us FROM samples"
                    " WHERE series_id = ? ORDER BY ts_us DESC LIMIT 1",
                    (sid,),
                ).fetchone()
                if row is None:
                    continue
                value = row[2] if row[2] is not None else row[1]
                server = from_us(row[4]) if row[4] is not None else None
                sample = Sample(name, from_us(row[0]), value, row[3], server)
                out[name] = Latest(sample, from_us(received) if received is not None else None)
        return out

    def list_series(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT name FROM series ORDER BY name")]

    def count(self, series: str, start: datetime | None = None, end: datetime | None = None) -> int:
        t0 = to_us(start) if start is not None else -(2**62)
        t1 = to_us(end) if end is not None else 2**62
        with self._lock:
            sid = self._series_id(series, create=False)
            if sid is None:
                return 0
            row = self._conn.execute(
                "SELECT COUNT(*) FROM samples WHERE series_id = ? AND ts_us >= ? AND ts_us < ?", (sid, t0, t1)
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def rows_to_series(series: str, rows: Sequence[tuple[int, float | None, str | None, int]]) -> SeriesData:
    """SeriesData of (ts µs, value, text, status) rows: float64 values (NaN for none) unless a sample is
    text, then object values (the text, else the number, else None)."""
    if not rows:
        return _empty(series)
    ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    status = np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows))
    if any(r[2] is not None for r in rows):
        values = np.array([r[2] if r[2] is not None else r[1] for r in rows], dtype=object)
    else:
        values = np.fromiter(
            (math.nan if r[1] is None else r[1] for r in rows), dtype=np.float64, count=len(rows)
        )
    return SeriesData(series, ts, values, status)


def _check_arrays(
    ts_us: np.ndarray, values: np.ndarray, status: np.ndarray | int, server_us: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    ts = np.asarray(ts_us)
    if ts.ndim != 1 or ts.dtype.kind not in "iu":
        raise ValueError("ts_us must be a one-dimensional array of integer microseconds")
    vals = np.asarray(values)
    if vals.dtype != object:
        vals = vals.astype(np.float64, copy=False)
    st = np.full(len(ts), status, dtype=np.int64) if np.isscalar(status) else np.asarray(status, np.int64)
    srv = None if server_us is None else np.asarray(server_us, np.int64)
    for name, arr in (("values", vals), ("status", st), ("server_us", srv)):
        if arr is not None and arr.shape != ts.shape:
            raise ValueError(f"{name} has {len(arr)} elements, ts_us {len(ts)}")
    return ts.astype(np.int64, copy=False), vals, st, srv


def _empty(series: str) -> SeriesData:
    return SeriesData(series, np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int64))
