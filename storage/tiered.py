"""TieredStore: the embedded store with a columnar tier. Live data in SQLite, closed runs in Parquet.

When a run closes (processing/service.py) or an import finishes (biopilot import), `archive_run` writes the
run's series as Parquet with rollups (storage/archive.py has the layout) and records the run's span in a
small index in the same SQLite file. From then on every read of that span (raw, downsampled, count,
latest) comes from the Parquet files, and everything else from SQLite, behind the one TimeSeriesStore
interface. Reads of a closed 7-day, 50-tag, 1 s run go at tens of millions of points per second instead of
the ~1.5 M/s an SQLite fetch manages (benchmarks/store_read.py).

The index, in the time-series SQLite file (not the catalog, which may be on PostgreSQL; created by
storage/sqlite.py with the samples table, so every writer of the file keeps it):
  archive_runs    per run: the archived span [start_us, end_us) that reads take from Parquet; the tracked
                  span (⊇ archived) in which writes are late samples; version; when archived and pruned
  archive_series  the series of each archived run with rows and first/last time
  archive_delta   late samples: (series, time) keys written into a tracked span after its files were made
  archive_meta    a generation number, bumped at every change of the index, so each writer reloads it

Late samples (a write whose time falls in a tracked span: a lab result reported after the harvest, a
replayed spool, an import that replaces samples) are written to SQLite as always, and their keys go to
archive_delta in the same transaction (SqliteStore does this for any writer: TieredStore, a plain
SqliteStore, an import's publish_stage). Reads of an archived span overlay them on the Parquet rows, and
`read_buckets` computes such a span from raw points instead of rollups, so both tiers agree at once.
`compact` (called by `maintain`, which processing runs every pass) folds them into the run's files — a
rewrite of that run's files only — and deletes the folded keys. Deltas and a rewrite never race: a delta
is deleted only if its id is not newer than what the rewrite read, and a reader takes the deltas before it
opens the file (a file is renamed into place before the deltas it contains are deleted).

Raw rows stay in SQLite for `keep_raw_s` after a run is archived (default 7 days: a second copy while the
archive is young: a deleted samples file is rebuilt from them by the next `maintain`), then `prune` deletes
them in small transactions (the live writer is never held up for long); late samples are never
pruned. Reads never use those retained rows, so the store answers the same before and after pruning.

A span's samples belong to at most one archived run: a run whose span overlaps another archived run on the
same series stays in SQLite (archive_run says why), which is always correct.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from biopilot.errors import StoreError
from biopilot.records import Buckets, Latest, Run, SeriesData
from biopilot.samples import Sample, from_us, to_us, utcnow
from storage.archive import (
    ArchiveReader,
    Columns,
    RunWriter,
    concat,
    mixed,
    overlay,
    private_dirs,
    rollup_path,
    samples_path,
)
from storage.buckets import (
    BAD,
    ROLLUP_WIDTHS_S,
    Partials,
    bucket_width,
    combine,
    from_points,
    in_spans,
    span_index,
    split_free,
    to_buckets,
)
from storage.sqlite import SqliteStore, _empty, connect, rows_to_series

log = logging.getLogger(__name__)

__all__ = ["ArchiveResult", "ArchivedRun", "TieredStore"]

_PRUNE_CHUNK = 50_000  # raw rows deleted per transaction
_NAMES_PER_QUERY = 500


_SEGMENTS = (
    "SELECT r.run_id, r.equipment, r.batch_id, r.start_us, r.end_us, s.rows, s.first_us, s.last_us"
    " FROM archive_series s JOIN archive_runs r ON r.run_id = s.run_id"
    " WHERE s.series_id = ? AND r.start_us IS NOT NULL AND r.end_us > ? AND r.start_us < ?"
    " ORDER BY r.start_us"
)
_DELTAS = (
    "SELECT s.ts_us, s.value, s.text, s.status, s.server_us FROM archive_delta d"
    " JOIN samples s ON s.series_id = d.series_id AND s.ts_us = d.ts_us"
    " WHERE d.series_id = ? AND d.ts_us >= ? AND d.ts_us < ? ORDER BY d.ts_us"
)


def _rows(conn: sqlite3.Connection, sid: int, a: int, b: int) -> Columns:
    """Every column of the series' rows with a ≤ ts < b; text and server timestamps only fetched when some
    row has one (fewer Python objects: the fetch is what archiving a long run costs)."""
    where = " FROM samples WHERE series_id = ? AND ts_us >= ? AND ts_us < ?"
    n, n_text, n_server = conn.execute(
        f"SELECT COUNT(*), COUNT(text), COUNT(server_us){where}", (sid, a, b)
    ).fetchone()
    if n == 0:
        return Columns.empty()
    text = "text" if n_text else "NULL"
    server = "server_us" if n_server else "NULL"
    rows = conn.execute(
        f"SELECT ts_us, value, {text}, status, {server}{where} ORDER BY ts_us", (sid, a, b)
    ).fetchall()
    return Columns.from_rows(rows, text=n_text > 0, server=n_server > 0)


@dataclass(frozen=True)
class ArchivedRun:
    """A run in the archive index. start/end: the span reads take from Parquet ([start, end), None while
    the first archiving is under way); deltas: late samples not yet folded into the files."""

    run_id: str
    equipment: str
    batch_id: str
    start: datetime | None
    end: datetime | None
    version: int
    series: int
    rows: int
    deltas: int
    archived: datetime | None
    pruned: datetime | None

    def covers(self, run: Run) -> bool:
        """True when the archived span holds the whole of the (closed) run."""
        if self.start is None or self.end is None or run.end is None:
            return False
        return to_us(self.start) <= to_us(run.start) and to_us(self.end) > to_us(run.end)


@dataclass(frozen=True)
class ArchiveResult:
    run_id: str
    series: int
    rows: int
    seconds: float
    skipped: str | None = None  # why nothing was archived


@dataclass(frozen=True)
class _Segment:
    run_id: str
    equipment: str
    batch_id: str
    start_us: int
    end_us: int
    rows: int
    first_us: int | None
    last_us: int | None


def _pieces(segs: list[_Segment], t0: int, t1: int) -> list[tuple[int, int, _Segment | None]]:
    """[t0, t1) cut into disjoint pieces, each taken from one archived segment or (None) from SQLite."""
    out: list[tuple[int, int, _Segment | None]] = []
    cursor = t0
    for seg in segs:
        a, b = max(cursor, seg.start_us), min(t1, seg.end_us)
        if a >= b:
            continue
        if cursor < a:
            out.append((cursor, a, None))
        out.append((a, b, seg))
        cursor = b
    if cursor < t1:
        out.append((cursor, t1, None))
    return out


class TieredStore(SqliteStore):
    """TimeSeriesStore on an SQLite file (live data) and a Parquet archive of closed runs beside it.

    archive_dir: the archive root (default: a folder `archive` beside the SQLite file).
    keep_raw_s: how long raw rows of an archived run stay in SQLite (None: forever; 0: pruned at the next
    `maintain`). compact_after_s: late samples are folded into the files by `maintain` once the oldest of
    them is this old (a burst of late samples costs one rewrite). Thread-safe like SqliteStore; archive
    work of several processes is serialized by a lock file in the archive root."""

    def __init__(
        self,
        path: str | Path,
        archive_dir: str | Path | None = None,
        *,
        read_only: bool = False,
        keep_raw_s: float | None = 7 * 86400.0,
        compact_after_s: float = 60.0,
    ) -> None:
        super().__init__(path, read_only=read_only)
        self.read_only = read_only
        self.archive_dir = Path(archive_dir) if archive_dir is not None else self.path.parent / "archive"
        self.keep_raw_s = keep_raw_s
        self.compact_after_s = compact_after_s
        self.reader = ArchiveReader(self.archive_dir)
        self._mlock = threading.Lock()
        self._mconn: sqlite3.Connection | None = None

    # -- the read plan: which pieces of a range come from where (one SQLite snapshot) ----------------------
    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: the index, the deltas and the live rows read inside agree."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")

    def _segments(self, sid: int, t0: int, t1: int) -> list[_Segment]:
        return [_Segment(*row) for row in self._conn.execute(_SEGMENTS, (sid, t0, t1))]

    def _deltas(self, sid: int, a: int, b: int) -> Columns:
        return Columns.from_rows(self._conn.execute(_DELTAS, (sid, a, b)).fetchall())

    def _path(self, seg: _Segment) -> Path:
        return samples_path(self.archive_dir, seg.equipment, seg.batch_id)

    def _archived(self, series: str, seg: _Segment, a: int, b: int, deltas: Columns) -> Columns:
        return overlay(self.reader.samples(self._path(seg), series, a, b), deltas)

    # -- TimeSeriesStore -----------------------------------------------------------------------------------
    def read(self, series: str, start: datetime, end: datetime) -> SeriesData:
        t0, t1 = to_us(start), to_us(end)
        plan: list[tuple[int, int, _Segment | None, Columns]] = []
        with self._snapshot():
            sid = self._series_id(series, create=False)
            if sid is None:
                return _empty(series)
            segs = self._segments(sid, t0, t1)
            if not segs:
                return rows_to_series(series, self._fetch(sid, t0, t1))
            for a, b, seg in _pieces(segs, t0, t1):
                if seg is None:
                    plan.append((a, b, None, Columns.from_rows(self._fetch(sid, a, b))))
                else:
                    plan.append((a, b, seg, self._deltas(sid, a, b)))
        parts = [cols if seg is None else self._archived(series, seg, a, b, cols) for a, b, seg, cols in plan]
        parts = [p for p in parts if len(p)]
        if not parts:
            return _empty(series)
        if len(parts) == 1:
            p = parts[0]
            return SeriesData(series, p.ts, p.values(), p.status)
        if any(p.text is not None for p in parts):
            values = np.concatenate([mixed(p.value, p.text) for p in parts])
        else:
            values = np.concatenate([p.value for p in parts])
        return SeriesData(
            series, np.concatenate([p.ts for p in parts]), values, np.concatenate([p.status for p in parts])
        )

    def read_buckets(self, series: str, start: datetime, end: datetime, n: int) -> Buckets:
        """Like SqliteStore.read_buckets. An archived piece without late samples is answered from the
        rollups: each rollup bucket whose samples all fall in one requested bucket counts whole (the
        coarsest rollup not wider than the requested buckets first, then finer ones for the rollup buckets
        a requested edge splits); only samples in a finest (10 s) rollup bucket that an edge splits are read
        raw. Requests whose edges fall on multiples of a rollup width never touch raw points. Exact for
        min, max, count, first and last; the mean is the count-weighted mean of means.
        storage.buckets.aligned turns a request into one that needs no raw points."""
        t0, t1 = to_us(start), to_us(end)
        width = bucket_width(t0, t1, n)
        parts: list[Partials] = []
        plan: list[tuple[int, int, _Segment, Columns]] = []
        with self._snapshot():
            sid = self._series_id(series, create=False)
            if sid is None:
                return to_buckets(series, Partials.empty(), t0, width)
            for a, b, seg in _pieces(self._segments(sid, t0, t1), t0, t1):
                if seg is None:
                    parts.append(self._sql_partials(sid, a, b, t0, width))
                else:
                    plan.append((a, b, seg, self._deltas(sid, a, b)))
        for a, b, seg, deltas in plan:
            if len(deltas):
                cols = self._archived(series, seg, a, b, deltas)
                parts.append(from_points(cols.ts, cols.value, cols.status, t0, width))
            else:
                parts.append(self._rollup_partials(series, seg, a, b, t0, width))
        return to_buckets(series, combine(parts), t0, width)

    def _sql_partials(self, sid: int, a: int, b: int, t0: int, width: int) -> Partials:
        rows = self._conn.execute(
            "SELECT (ts_us - ?) / ? AS k, MIN(ts_us), MAX(ts_us), MIN(value), MAX(value), SUM(value),"
            " COUNT(*) FROM samples WHERE series_id = ? AND ts_us >= ? AND ts_us < ? AND status < ?"
            " AND value IS NOT NULL GROUP BY k ORDER BY k",
            (t0, width, sid, a, b, BAD),
        ).fetchall()
        if not rows:
            return Partials.empty()
        k, tf, tl, mn, mx, sm, cnt = zip(*rows, strict=True)
        i64, f64 = np.int64, np.float64
        return Partials(
            np.array(k, i64),
            np.array(tf, i64),
            np.array(tl, i64),
            np.array(mn, f64),
            np.array(mx, f64),
            np.array(sm, f64),
            np.array(cnt, i64),
        )

    def _rollup_partials(self, series: str, seg: _Segment, a: int, b: int, t0: int, width: int) -> Partials:
        levels = [w for w in reversed(ROLLUP_WIDTHS_S) if w * 1_000_000 <= width]
        if not levels:  # buckets finer than the finest rollup: from raw points
            cols = self.reader.samples(self._path(seg), series, a, b)
            return from_points(cols.ts, cols.value, cols.status, t0, width)
        k_lo, k_hi = -(-(a - t0) // width), (b - t0) // width
        cuts = np.unique(np.r_[a, t0 + np.arange(k_lo, k_hi + 1, dtype=np.int64) * width, b])
        parts: list[Partials] = []
        lo = hi = None  # spans (rollup buckets split by a cut) still to be covered by a finer level
        for w in levels:
            wus = w * 1_000_000
            p = self.reader.rollup(
                rollup_path(self.archive_dir, w, seg.equipment, seg.batch_id), series, w, a, b
            )
            if lo is not None and hi is not None:
                p = p.select(in_spans(p.k * wus, lo, hi))
            whole = split_free(p.t_first, p.t_last, cuts)
            inside = whole & (p.t_first >= a) & (p.t_last < b)
            kept = p.select(inside)
            parts.append(kept.rekey((kept.t_first - t0) // width))
            lo = p.k[~whole] * wus
            hi = lo + wus
            if len(lo) == 0:
                return combine(parts)
        assert lo is not None and hi is not None
        cols = self.reader.samples(self._path(seg), series, max(a, int(lo[0])), min(b, int(hi[-1])))
        cols = cols.take(span_index(cols.ts, lo, hi))
        parts.append(from_points(cols.ts, cols.value, cols.status, t0, width))
        return combine(parts)

    def count(self, series: str, start: datetime | None = None, end: datetime | None = None) -> int:
        t0 = to_us(start) if start is not None else -(2**62)
        t1 = to_us(end) if end is not None else 2**62
        n = 0
        plan: list[tuple[int, int, _Segment, np.ndarray]] = []
        with self._snapshot():
            sid = self._series_id(series, create=False)
            if sid is None:
                return 0
            for a, b, seg in _pieces(self._segments(sid, t0, t1), t0, t1):
                if seg is None:
                    n += self._conn.execute(
                        "SELECT COUNT(*) FROM samples WHERE series_id = ? AND ts_us >= ? AND ts_us < ?",
                        (sid, a, b),
                    ).fetchone()[0]
                else:
                    late = [
                        r[0]
                        for r in self._conn.execute(
                            "SELECT ts_us FROM archive_delta"
                            " WHERE series_id = ? AND ts_us >= ? AND ts_us < ?",
                            (sid, a, b),
                        )
                    ]
                    plan.append((a, b, seg, np.array(late, np.int64)))
        for a, b, seg, late in plan:
            if seg.rows == 0 or seg.first_us is None or seg.last_us is None:
                n += len(late)
            elif len(late) == 0 and a <= seg.first_us and seg.last_us < b:
                n += seg.rows
            else:
                n += len(np.union1d(self.reader.times(self._path(seg), series, a, b), late))
        return int(n)

    def latest(self, series: Sequence[str] | None = None) -> dict[str, Latest]:
        """Newest sample per series, from SQLite, or from the archive where its newest sample is newer than
        anything left in SQLite (raw rows pruned, no live data since)."""
        out: dict[str, Latest] = {}
        from_archive: list[tuple[str, _Segment, datetime | None]] = []
        with self._snapshot():
            known = self._conn.execute("SELECT id, name, last_received_us FROM series").fetchall()
            newest: dict[int, _Segment] = {}
            for row in self._conn.execute(
                "SELECT s.series_id, r.run_id, r.equipment, r.batch_id, r.start_us, r.end_us, s.rows,"
                " s.first_us, s.last_us FROM archive_series s JOIN archive_runs r ON r.run_id = s.run_id"
                " WHERE r.start_us IS NOT NULL AND s.rows > 0 ORDER BY s.last_us"
            ):
                newest[row[0]] = _Segment(*row[1:])
            wanted = None if series is None else set(series)
            for sid, name, received_us in known:
                if wanted is not None and name not in wanted:
                    continue
                received = from_us(received_us) if received_us is not None else None
                row = self._conn.execute(
                    "SELECT ts_us, value, text, status, server_us FROM samples"
                    " WHERE series_id = ? ORDER BY ts_us DESC LIMIT 1",
                    (sid,),
                ).fetchone()
                seg = newest.get(sid)
                if seg is not None and seg.last_us is not None and (row is None or row[0] < seg.last_us):
                    from_archive.append((name, seg, received))
                elif row is not None:
                    value = row[2] if row[2] is not None else row[1]
                    server = from_us(row[4]) if row[4] is not None else None
                    out[name] = Latest(Sample(name, from_us(row[0]), value, row[3], server), received)
        for name, seg, received in from_archive:
            last = self.reader.last(self._path(seg), name)
            if len(last):
                value = last.values()[0]
                value = value.item() if isinstance(value, np.generic) else value
                value = None if isinstance(value, float) and np.isnan(value) else value
                server = last.server_or_none(0)
                sample = Sample(
                    name,
                    from_us(int(last.ts[0])),
                    value,
                    int(last.status[0]),
                    from_us(server) if server is not None else None,
                )
                out[name] = Latest(sample, received)
        return out

    # -- the archive -----------------------------------------------------------------------------------
    def archived_runs(self) -> dict[str, ArchivedRun]:
        rows = self._query(
            "SELECT r.run_id, r.equipment, r.batch_id, r.start_us, r.end_us, r.version, r.archived_us,"
            " r.pruned_us, (SELECT COUNT(*) FROM archive_series s WHERE s.run_id = r.run_id),"
            " (SELECT COALESCE(SUM(rows), 0) FROM archive_series s WHERE s.run_id = r.run_id),"
            " (SELECT COUNT(*) FROM archive_delta d JOIN archive_series s ON s.series_id = d.series_id"
            "   WHERE s.run_id = r.run_id AND d.ts_us >= r.track_start_us AND d.ts_us < r.track_end_us)"
            " FROM archive_runs r ORDER BY r.run_id"
        )
        out = {}
        for rid, eq, batch, s, e, version, archived, pruned, n_series, n_rows, n_deltas in rows:
            out[rid] = ArchivedRun(
                rid,
                eq,
                batch,
                from_us(s) if s is not None else None,
                from_us(e) if e is not None else None,
                version,
                n_series,
                n_rows,
                n_deltas,
                from_us(archived) if archived is not None else None,
                from_us(pruned) if pruned is not None else None,
            )
        return out

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def _maintenance(self) -> Iterator[sqlite3.Connection]:
        """The archive's maintenance connection, held by one thread of one process at a time."""
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only; the archive cannot be changed")
        with self._mlock:
            private_dirs(self.archive_dir)
            with (self.archive_dir / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    if self._mconn is None:
                        self._mconn = connect(self.path)
                    yield self._mconn
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def archive_run(self, run: Run, series: Sequence[str]) -> ArchiveResult:
        """Write the closed run's samples of `series` in [run.start, run.end] (and every series archived
        with it before) as Parquet with rollups; from then on reads of that span come from there. Archiving
        a run again (it was resumed and closed later, or its samples changed) rewrites its files; the
        archived span only grows. Series without a row in the store are left out (they have no samples)."""
        if run.end is None:
            raise StoreError(f"run {run.id} is open: only a closed run is archived")
        t = time.perf_counter()
        start, end = to_us(run.start), to_us(run.end) + 1
        with self._maintenance() as conn:
            sids = self._ids_of(conn, series)
            conn.execute("BEGIN IMMEDIATE")
            try:
                old = conn.execute(
                    "SELECT track_start_us, track_end_us FROM archive_runs WHERE run_id = ?", (run.id,)
                ).fetchone()
                if old is not None:
                    start, end = min(start, old[0]), max(end, old[1])
                    sids |= {
                        r[0]
                        for r in conn.execute(
                            "SELECT series_id FROM archive_series WHERE run_id = ?", (run.id,)
                        )
                    }
                clash = self._overlapping(conn, run.id, sorted(sids), start, end)
                if clash is not None:
                    conn.execute("COMMIT")
                    why = f"its span overlaps run {clash}, archived on the same series; it stays in SQLite"
                    log.warning("run %s not archived: %s", run.id, why)
                    return ArchiveResult(run.id, 0, 0, time.perf_counter() - t, skipped=why)
                conn.execute(
                    "INSERT INTO archive_runs (run_id, equipment, batch_id, track_start_us, track_end_us)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET"
                    " track_start_us = excluded.track_start_us, track_end_us = excluded.track_end_us",
                    (run.id, run.equipment, run.batch_id, start, end),
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO archive_series (run_id, series_id) VALUES (?, ?)",
                    [(run.id, sid) for sid in sorted(sids)],
                )
                _bump(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            series_n, rows = self._build(conn, run.id)
        took = time.perf_counter() - t
        log.info("run %s archived: %d series, %d samples in %.1f s", run.id, series_n, rows, took)
        return ArchiveResult(run.id, series_n, rows, took)

    @staticmethod
    def _ids_of(conn: sqlite3.Connection, names: Sequence[str]) -> set[int]:
        out: set[int] = set()
        names = list(dict.fromkeys(names))
        for a in range(0, len(names), _NAMES_PER_QUERY):
            chunk = names[a : a + _NAMES_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            out |= {r[0] for r in conn.execute(f"SELECT id FROM series WHERE name IN ({marks})", chunk)}
        return out

    @staticmethod
    def _overlapping(
        conn: sqlite3.Connection, run_id: str, sids: list[int], start: int, end: int
    ) -> str | None:
        for a in range(0, len(sids), _NAMES_PER_QUERY):
            chunk = sids[a : a + _NAMES_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            row = conn.execute(
                "SELECT r.run_id FROM archive_series s JOIN archive_runs r ON r.run_id = s.run_id"
                f" WHERE s.series_id IN ({marks}) AND r.run_id != ?"
                " AND r.track_end_us > ? AND r.track_start_us < ? LIMIT 1",
                [*chunk, run_id, start, end],
            ).fetchone()
            if row is not None:
                return str(row[0])
        return None

    def _build(self, conn: sqlite3.Connection, run_id: str) -> tuple[int, int]:
        """(Re)write the run's files for its tracked span: the old files' samples, overlaid with SQLite's rows
        outside the old archived span and the late samples inside it, all read in one snapshot; then make
        the tracked span the archived one and delete the folded late samples."""
        eq, batch, start, end, old_start, old_end, pruned = conn.execute(
            "SELECT equipment, batch_id, track_start_us, track_end_us, start_us, end_us, pruned_us"
            " FROM archive_runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        old_path = samples_path(self.archive_dir, eq, batch)
        if old_start is not None and not old_path.exists():
            if pruned is not None:
                raise StoreError(
                    f"{old_path} is missing and the raw rows of run {run_id} were deleted from SQLite after"
                    " archiving: restore the archive folder from a backup"
                )
            log.warning("%s is missing: run %s is archived again from SQLite's raw rows", old_path, run_id)
            old_start = old_end = None
        members = conn.execute(
            "SELECT s.series_id, se.name FROM archive_series s JOIN series se ON se.id = s.series_id"
            " WHERE s.run_id = ? ORDER BY se.name",
            (run_id,),
        ).fetchall()
        stats = {}
        conn.execute("BEGIN")
        try:
            max_delta = conn.execute("SELECT COALESCE(MAX(id), 0) FROM archive_delta").fetchone()[0]
            with RunWriter(self.archive_dir, run_id, eq, batch, start, end) as writer:
                for sid, name in members:
                    if old_start is None:
                        cols = _rows(conn, sid, start, end)
                    else:
                        base = self.reader.samples(old_path, name, old_start, old_end, server=True)
                        late = Columns.from_rows(conn.execute(_DELTAS, (sid, old_start, old_end)).fetchall())
                        top = [_rows(conn, sid, start, old_start), late, _rows(conn, sid, old_end, end)]
                        cols = overlay(base, concat(top))
                    writer.add(name, cols)
                    stats[sid] = writer.stats[name]
                conn.execute("COMMIT")
                writer.commit()
        except BaseException:
            _rollback(conn)
            raise
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "DELETE FROM archive_delta WHERE series_id = ? AND ts_us >= ? AND ts_us < ? AND id <= ?",
                [(sid, start, end, max_delta) for sid in stats],
            )
            conn.execute(
                "UPDATE archive_runs SET start_us = ?, end_us = ?, version = version + 1,"
                " archived_us = COALESCE(archived_us, ?), pruned_us = NULL WHERE run_id = ?",
                (start, end, to_us(utcnow()), run_id),
            )
            conn.executemany(
                "UPDATE archive_series SET rows = ?, first_us = ?, last_us = ?"
                " WHERE run_id = ? AND series_id = ?",
                [(s.rows, s.first_us, s.last_us, run_id, sid) for sid, s in stats.items()],
            )
            _bump(conn)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return len(stats), sum(s.rows for s in stats.values())

    def compact(self, *, older_than_s: float = 0.0) -> list[str]:
        """Fold late samples into their runs' files (those whose oldest late sample is at least older_than_s
        old), finish archivings that were interrupted, and rebuild from SQLite's raw rows a samples file
        that went missing while they are kept. Returns the runs rewritten."""
        cutoff = to_us(utcnow()) - int(older_than_s * 1e6)
        done = []
        with self._maintenance() as conn:
            missing = [
                run_id
                for run_id, eq, batch in conn.execute(
                    "SELECT run_id, equipment, batch_id FROM archive_runs"
                    " WHERE start_us IS NOT NULL AND pruned_us IS NULL ORDER BY run_id"
                )
                if not samples_path(self.archive_dir, eq, batch).exists()
            ]
            due = missing + [
                r[0]
                for r in conn.execute(
                    "SELECT r.run_id FROM archive_runs r WHERE r.start_us IS NULL"
                    " OR r.start_us != r.track_start_us OR r.end_us != r.track_end_us"
                    " OR EXISTS (SELECT 1 FROM archive_series s"
                    "   JOIN archive_delta d ON d.series_id = s.series_id WHERE s.run_id = r.run_id"
                    "   AND d.ts_us >= r.track_start_us AND d.ts_us < r.track_end_us AND d.written_us <= ?)"
                    " ORDER BY r.run_id",
                    (cutoff,),
                )
            ]
            for run_id in dict.fromkeys(due):
                self._build(conn, run_id)
                done.append(run_id)
        if done:
            log.info("late samples folded into the archive of %s", ", ".join(done))
        return done

    def prune(self, *, max_rows: int | None = None) -> int:
        """Delete from SQLite the raw rows of runs archived more than keep_raw_s ago (late samples stay),
        _PRUNE_CHUNK rows per transaction; stop after about max_rows (None: all). Returns rows deleted."""
        if self.keep_raw_s is None:
            return 0
        cutoff = to_us(utcnow()) - int(self.keep_raw_s * 1e6)
        deleted = 0
        with self._maintenance() as conn:
            runs = conn.execute(
                "SELECT run_id, start_us, end_us FROM archive_runs WHERE start_us IS NOT NULL"
                " AND pruned_us IS NULL AND archived_us <= ? ORDER BY archived_us",
                (cutoff,),
            ).fetchall()
            for run_id, start, end in runs:
                sids = [
                    r[0]
                    for r in conn.execute("SELECT series_id FROM archive_series WHERE run_id = ?", (run_id,))
                ]
                for sid in sids:
                    lo = start
                    while lo < end:
                        if max_rows is not None and deleted >= max_rows:
                            return deleted
                        row = conn.execute(
                            "SELECT ts_us FROM samples WHERE series_id = ? AND ts_us >= ? AND ts_us < ?"
                            " ORDER BY ts_us LIMIT 1 OFFSET ?",
                            (sid, lo, end, _PRUNE_CHUNK),
                        ).fetchone()
                        hi = end if row is None else row[0]
                        conn.execute("BEGIN IMMEDIATE")
                        try:
                            cur = conn.execute(
                                "DELETE FROM samples WHERE series_id = ? AND ts_us >= ? AND ts_us < ? AND NOT"
                                " EXISTS (SELECT 1 FROM archive_delta d WHERE d.series_id = samples.series_id"
                                " AND d.ts_us = samples.ts_us)",
                                (sid, lo, hi),
                            )
                            deleted += cur.rowcount
                            conn.execute("COMMIT")
                        except BaseException:
                            _rollback(conn)
                            raise
                        lo = hi
                conn.execute(
                    "UPDATE archive_runs SET pruned_us = ? WHERE run_id = ?", (to_us(utcnow()), run_id)
                )
                log.info("raw rows of archived run %s deleted from SQLite", run_id)
        return deleted

    def maintain(self) -> None:
        """The archive's housekeeping, for processing to call every pass: fold late samples older than
        compact_after_s into their runs' files, and prune raw rows past keep_raw_s."""
        self.compact(older_than_s=self.compact_after_s)
        self.prune()

    def close(self) -> None:
        with self._mlock:
            if self._mconn is not None:
                self._mconn.close()
                self._mconn: sqlite3.Connection | None = None
        super().close()


def _bump(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE archive_meta SET value = value + 1 WHERE key = 'generation'")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
