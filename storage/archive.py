"""The Parquet archive of closed runs: where a run's files live, how they are written, how they are read.

Layout under the archive root (by default <data-dir>/archive), Hive-partitioned so DuckDB, pandas, pyarrow
and Spark read it as one table:

  samples/equipment=<EQ>/run=<BATCH>/part-0.parquet             every sample of the run's tags
  rollups/width_s=<W>/equipment=<EQ>/run=<BATCH>/part-0.parquet  aggregates per bucket, W in 10, 60, 600, 3600

Partition values are percent-encoded (urllib.parse.quote, as pyarrow's Hive partitioning decodes them);
ordinary ids (letters, digits, '-', '_', '.') appear as they are.

samples columns (rows sorted by series, then ts; each series in row groups of its own, ≤ 262,144 rows):
  series     dictionary<int32, string>   the tag name
  ts         timestamp[µs, UTC]           source timestamp
  value      float64                      null when the sample has no numeric value (text, or bad without one)
  text       string                       text samples (batch id, phase); null otherwise
  status     int64                        OPC UA status code (an unsigned 32-bit value; ≥ 0x80000000 is bad)
  server_ts  timestamp[µs, UTC]           the OPC UA server timestamp when the source sent one, else null

rollups columns (one row per series and non-empty bucket; buckets aligned to the Unix epoch):
  series, bucket (bucket start, timestamp[µs, UTC]), t_first, t_last (first and last sample in it),
  count (int64), min, max, mean (float64) — of the good and uncertain numeric samples only.

Files are zstd-compressed; timestamps are delta-encoded, values byte-stream-split (BYTE_STREAM_SPLIT: each
byte of the float64 in a stream of its own, which zstd compresses well and decodes twice as fast as plain
floats here). Each file's key-value metadata holds
`biopilot.layout` (1), `biopilot.run` (the run id), `biopilot.range_us` (the archived [start, end) in µs) and
`biopilot.series` (JSON: per series its row groups with first/last time and rows), which the store uses to
read one series without scanning the others. A file is written beside its final name and renamed over it
(atomic), so a reader sees either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from biopilot.errors import StoreError
from storage.buckets import ROLLUP_WIDTHS_S, Partials, coarsen, from_points

LAYOUT = 1
ROW_GROUP_ROWS = 262_144
PART = "part-0.parquet"

_TS = pa.timestamp("us", tz="UTC")
_SERIES = pa.dictionary(pa.int32(), pa.string())
SAMPLES_SCHEMA = pa.schema(
    [
        ("series", _SERIES),
        ("ts", _TS),
        ("value", pa.float64()),
        ("text", pa.string()),
        ("status", pa.int64()),
        ("server_ts", _TS),
    ]
)
ROLLUP_SCHEMA = pa.schema(
    [
        ("series", _SERIES),
        ("bucket", _TS),
        ("t_first", _TS),
        ("t_last", _TS),
        ("count", pa.int64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("mean", pa.float64()),
    ]
)
_WRITE_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "write_statistics": True,
}


def partition_value(value: str) -> str:
    """A partition directory value: percent-encoded, and never '.', '..' or hidden."""
    out = quote(value, safe="")
    return "%2E" + out[1:] if out.startswith(".") else out


def samples_path(root: Path, equipment: str, batch_id: str) -> Path:
    return (
        root
        / "samples"
        / f"equipment={partition_value(equipment)}"
        / f"run={partition_value(batch_id)}"
        / PART
    )


def rollup_path(root: Path, width_s: int, equipment: str, batch_id: str) -> Path:
    return (
        root
        / "rollups"
        / f"width_s={width_s}"
        / f"equipment={partition_value(equipment)}"
        / f"run={partition_value(batch_id)}"
        / PART
    )


# -- one series' samples as arrays ----------------------------------------------------------------------
@dataclass(frozen=True)
class Columns:
    """Samples of one series in time order: ts [µs] int64; value float64 (NaN: none); text object (str or
    None) or None when the series has no text; status int64; server [µs] int64 with server_ok marking the
    samples that have one (None: no sample has one)."""

    ts: np.ndarray
    value: np.ndarray
    text: np.ndarray | None
    status: np.ndarray
    server: np.ndarray | None = None
    server_ok: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ts)

    @staticmethod
    def empty() -> Columns:
        return Columns(np.empty(0, np.int64), np.empty(0, np.float64), None, np.empty(0, np.int64))

    @staticmethod
    def from_rows(rows: Sequence[tuple], *, text: bool | None = None, server: bool | None = None) -> Columns:
        """From (ts µs, value, text, status[, server µs]) rows as SQLite returns them. text/server: whether
        any row has a text value or a server timestamp (None: look)."""
        n = len(rows)
        if n == 0:
            return Columns.empty()
        nan = math.nan
        ts = np.fromiter((r[0] for r in rows), np.int64, n)
        values = np.fromiter((nan if r[1] is None else r[1] for r in rows), np.float64, n)
        status = np.fromiter((r[3] for r in rows), np.int64, n)
        texts = None
        if text if text is not None else any(r[2] is not None for r in rows):
            texts = np.empty(n, dtype=object)
            texts[:] = [r[2] for r in rows]
        servers = has = None
        if len(rows[0]) > 4 and (server if server is not None else any(r[4] is not None for r in rows)):
            has = np.fromiter((r[4] is not None for r in rows), bool, n)
            servers = np.fromiter((r[4] or 0 for r in rows), np.int64, n)
        return Columns(ts, values, texts, status, servers, has)

    def take(self, index: np.ndarray | slice) -> Columns:
        return Columns(
            self.ts[index],
            self.value[index],
            None if self.text is None else self.text[index],
            self.status[index],
            None if self.server is None else self.server[index],
            None if self.server_ok is None else self.server_ok[index],
        )

    def between(self, lo: int, hi: int) -> Columns:
        a, b = np.searchsorted(self.ts, [lo, hi])
        return self if a == 0 and b == len(self.ts) else self.take(slice(a, b))

    def values(self) -> np.ndarray:
        """float64 for a numeric series; object (text, or the number, or None) when any sample is text —
        the form SeriesData carries."""
        if self.text is None:
            return self.value
        return mixed(self.value, self.text)

    def server_or_none(self, i: int) -> int | None:
        if self.server is None or self.server_ok is None or not self.server_ok[i]:
            return None
        return int(self.server[i])


def mixed(value: np.ndarray, text: np.ndarray | None) -> np.ndarray:
    """The object array of a series with text samples: the text, else the number, else None."""
    out = value.astype(object)
    out[np.isnan(value)] = None
    if text is not None:
        has = np.not_equal(text, None)
        out[has] = text[has]
    return out


def concat(parts: Sequence[Columns]) -> Columns:
    """Columns of consecutive, disjoint time ranges, in order."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Columns.empty()
    if len(parts) == 1:
        return parts[0]
    any_text = any(p.text is not None for p in parts)
    any_server = any(p.server is not None for p in parts)
    return Columns(
        np.concatenate([p.ts for p in parts]),
        np.concatenate([p.value for p in parts]),
        np.concatenate([p.text if p.text is not None else np.full(len(p), None, object) for p in parts])
        if any_text
        else None,
        np.concatenate([p.status for p in parts]),
        np.concatenate([p.server if p.server is not None else np.zeros(len(p), np.int64) for p in parts])
        if any_server
        else None,
        np.concatenate([p.server_ok if p.server_ok is not None else np.zeros(len(p), bool) for p in parts])
        if any_server
        else None,
    )


def overlay(base: Columns, top: Columns) -> Columns:
    """The samples of base with those of top added, a sample of top replacing base's at the same time."""
    if len(top) == 0:
        return base
    if len(base) == 0:
        return top
    both = concat([base.take(~np.isin(base.ts, top.ts)), top])
    return both.take(np.argsort(both.ts, kind="stable"))


def rollups(cols: Columns) -> dict[int, Partials]:
    """The run's rollups of one series at every width of ROLLUP_WIDTHS_S, k = bucket start / width."""
    out: dict[int, Partials] = {}
    finer: tuple[int, Partials] | None = None
    for w in ROLLUP_WIDTHS_S:
        if finer is None:
            p = from_points(cols.ts, cols.value, cols.status, 0, w * 1_000_000)
        else:
            p = coarsen(finer[1], w // finer[0])
        out[w] = p
        finer = (w, p)
    return out


# -- writing ---------------------------------------------------------------------------------------------
def _series_array(name: str, n: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([name], pa.string())
    )


def _ts_array(us: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    return pa.array(us, type=pa.int64(), mask=missing).cast(_TS)


class _FileWriter:
    """One Parquet file being written beside its final name; `commit` renames it into place."""

    def __init__(
        self, path: Path, schema: pa.Schema, dictionary: list[str], encoding: dict[str, str], meta: dict
    ) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        private_dirs(path.parent)
        self.writer = pq.ParquetWriter(
            self.tmp,
            schema,
            use_dictionary=dictionary,
            column_encoding=encoding,
            **_WRITE_OPTIONS,
        )
        self.meta = meta
        self.index: dict[str, list[list[int]]] = {}
        self.row_groups = 0

    def add(self, series: str, table: pa.Table, times: np.ndarray) -> None:
        entries = self.index.setdefault(series, [])
        for a in range(0, table.num_rows, ROW_GROUP_ROWS):
            b = min(a + ROW_GROUP_ROWS, table.num_rows)
            self.writer.write_table(table.slice(a, b - a), row_group_size=ROW_GROUP_ROWS)
            entries.append([self.row_groups, int(times[a]), int(times[b - 1]), b - a])
            self.row_groups += 1

    def commit(self) -> None:
        self.writer.add_key_value_metadata({**self.meta, "biopilot.series": json.dumps(self.index)})
        self.writer.close()
        self.tmp.chmod(0o600)  # the plant's process data: its owner only, like the SQLite file
        _fsync(self.tmp)
        self.tmp.replace(self.path)
        _fsync(self.path.parent)

    def abort(self) -> None:
        with suppress(Exception):
            self.writer.close()
        with suppress(OSError):
            self.tmp.unlink()


def private_dirs(path: Path) -> None:
    """Create the folder and its missing parents readable by their owner only (0700, whatever the umask)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SeriesStats:
    rows: int
    first_us: int | None
    last_us: int | None
    text: bool


class RunWriter:
    """Writes one run's samples file and its rollup files, a series at a time; nothing is visible under
    the final names until `commit`. Use as a context manager (an exception discards the new files)."""

    def __init__(
        self, root: Path, run_id: str, equipment: str, batch_id: str, start_us: int, end_us: int
    ) -> None:
        meta = {
            "biopilot.layout": str(LAYOUT),
            "biopilot.run": run_id,
            "biopilot.range_us": f"{start_us},{end_us}",
        }
        self.samples = _FileWriter(
            samples_path(root, equipment, batch_id),
            SAMPLES_SCHEMA,
            ["series", "text", "status"],
            {"ts": "DELTA_BINARY_PACKED", "server_ts": "DELTA_BINARY_PACKED", "value": "BYTE_STREAM_SPLIT"},
            meta,
        )
        self.rollups = {
            w: _FileWriter(
                rollup_path(root, w, equipment, batch_id),
                ROLLUP_SCHEMA,
                ["series"],
                dict.fromkeys(["bucket", "t_first", "t_last"], "DELTA_BINARY_PACKED"),
                {**meta, "biopilot.width_s": str(w)},
            )
            for w in ROLLUP_WIDTHS_S
        }
        self.stats: dict[str, SeriesStats] = {}

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, series: str, cols: Columns) -> None:
        n = len(cols)
        self.stats[series] = SeriesStats(
            n, int(cols.ts[0]) if n else None, int(cols.ts[-1]) if n else None, cols.text is not None
        )
        if n == 0:
            return
        missing_value = np.isnan(cols.value)
        table = pa.Table.from_arrays(
            [
                _series_array(series, n),
                _ts_array(cols.ts),
                pa.array(cols.value, mask=missing_value if missing_value.any() else None),
                pa.array(cols.text, type=pa.string()) if cols.text is not None else pa.nulls(n, pa.string()),
                pa.array(cols.status, type=pa.int64()),
                _ts_array(cols.server, ~cols.server_ok)
                if cols.server is not None and cols.server_ok is not None
                else pa.nulls(n, _TS),
            ],
            schema=SAMPLES_SCHEMA,
        )
        self.samples.add(series, table, cols.ts)
        for w, p in rollups(cols).items():
            m = len(p)
            if m == 0:
                continue
            starts = p.k * (w * 1_000_000)
            table = pa.Table.from_arrays(
                [
                    _series_array(series, m),
                    _ts_array(starts),
                    _ts_array(p.t_first),
                    _ts_array(p.t_last),
                    pa.array(p.count, type=pa.int64()),
                    pa.array(p.min),
                    pa.array(p.max),
                    pa.array(p.sum / p.count),
                ],
                schema=ROLLUP_SCHEMA,
            )
            self.rollups[w].add(series, table, starts)

    def commit(self) -> None:
        """Rename the rollups, then the samples file, into place (each atomically)."""
        for f in [*self.rollups.values(), self.samples]:
            f.commit()

    def abort(self) -> None:
        for f in [self.samples, *self.rollups.values()]:
            f.abort()


# -- reading ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Opened:
    key: tuple[int, int, int]
    metadata: pq.FileMetaData
    index: dict[str, list[list[int]]]


class ArchiveReader:
    """Reads one series out of archive files, using the row-group index in each file's metadata. The parsed
    footers are cached per file and dropped when the file is replaced (another inode or mtime)."""

    def __init__(self, root: Path, cache_files: int = 256) -> None:
        self.root = root
        self._cache: dict[Path, _Opened] = {}
        self._cache_files = cache_files
        self._lock = threading.Lock()

    def _open(self, path: Path) -> tuple[pq.ParquetFile, _Opened]:
        """The file and its parsed footer. The file is stat-ed before and after it is opened: if it was
        replaced in between, it is opened again, so a cached footer never describes another file."""
        for _ in range(5):
            try:
                before = path.stat()
                source = pa.memory_map(str(path))
                after = path.stat()
            except FileNotFoundError:
                raise StoreError(
                    f"{path}: an archive file is missing (restore the archive folder from a backup; while the"
                    " run's raw rows are still in SQLite, processing rebuilds it)"
                ) from None
            except (OSError, pa.ArrowException) as exc:
                raise StoreError(f"{path}: cannot open the archive file ({exc})") from None
            key = (after.st_ino, after.st_mtime_ns, after.st_size)
            if (before.st_ino, before.st_mtime_ns, before.st_size) != key:
                source.close()
                continue
            with self._lock:
                opened = self._cache.get(path)
            try:
                if opened is not None and opened.key == key:
                    return pq.ParquetFile(source, metadata=opened.metadata), opened
                f = pq.ParquetFile(source)
                meta = f.metadata.metadata or {}
                opened = _Opened(key, f.metadata, json.loads(meta.get(b"biopilot.series", b"{}")))
            except (OSError, pa.ArrowException, ValueError) as exc:
                raise StoreError(f"{path}: cannot read the archive file ({exc})") from None
            with self._lock:
                if len(self._cache) >= self._cache_files:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[path] = opened
            return f, opened
        raise StoreError(f"{path}: the archive file keeps being replaced; try again")

    def _groups(self, path: Path, series: str, lo: int, hi: int) -> tuple[pq.ParquetFile, list[int]] | None:
        f, o = self._open(path)
        groups = [e[0] for e in o.index.get(series, ()) if e[2] >= lo and e[1] < hi]
        return (f, groups) if groups else None

    def samples(self, path: Path, series: str, lo: int, hi: int, *, server: bool = False) -> Columns:
        """The series' samples with lo ≤ ts < hi."""
        found = self._groups(path, series, lo, hi)
        if found is None:
            return Columns.empty()
        f, groups = found
        names = ["ts", "value", "status"]
        text_needed = any(
            f.metadata.row_group(g).column(3).statistics is None
            or f.metadata.row_group(g).column(3).statistics.null_count != f.metadata.row_group(g).num_rows
            for g in groups
        )
        if text_needed:
            names.append("text")
        if server:
            names.append("server_ts")
        try:
            table = f.read_row_groups(groups, columns=names)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"{path}: cannot read the archive file ({exc})") from None
        ts = _int64(table.column("ts"))
        a, b = np.searchsorted(ts, [lo, hi])
        sl = slice(a, b)
        text = None
        if text_needed:
            text = table.column("text").to_numpy(zero_copy_only=False)[sl]
            if not np.not_equal(text, None).any():
                text = None
        srv = ok = None
        if server:
            col = table.column("server_ts")
            if col.null_count < len(col):
                ok = ~col.is_null().to_numpy(zero_copy_only=False)[sl]
                srv = _int64(col.fill_null(0))[sl]
        return Columns(
            ts[sl],
            _numbers(table.column("value"))[sl],
            text,
            _numbers(table.column("status"))[sl],
            srv,
            ok,
        )

    def times(self, path: Path, series: str, lo: int, hi: int) -> np.ndarray:
        """Only the source timestamps of the series' samples with lo ≤ ts < hi."""
        found = self._groups(path, series, lo, hi)
        if found is None:
            return np.empty(0, np.int64)
        f, groups = found
        ts = _int64(f.read_row_groups(groups, columns=["ts"]).column("ts"))
        a, b = np.searchsorted(ts, [lo, hi])
        return ts[a:b]

    def last(self, path: Path, series: str) -> Columns:
        """The series' newest sample in the file (empty if none)."""
        entries = self._open(path)[1].index.get(series)
        if not entries:
            return Columns.empty()
        g = entries[-1]
        return self.samples(path, series, g[2], g[2] + 1, server=True)

    def rollup(self, path: Path, series: str, width_s: int, lo: int, hi: int) -> Partials:
        """Rollup buckets of the series whose start lies in [lo − width, hi), k = bucket start / width."""
        width = width_s * 1_000_000
        found = self._groups(path, series, lo - width, hi)
        if found is None:
            return Partials.empty()
        f, groups = found
        t = f.read_row_groups(groups, columns=["bucket", "t_first", "t_last", "count", "min", "max", "mean"])
        start = _int64(t.column("bucket"))
        a, b = np.searchsorted(start, [lo - width + 1, hi])
        count = _numbers(t.column("count"))[a:b]
        return Partials(
            start[a:b] // width,
            _int64(t.column("t_first"))[a:b],
            _int64(t.column("t_last"))[a:b],
            _numbers(t.column("min"))[a:b],
            _numbers(t.column("max"))[a:b],
            _numbers(t.column("mean"))[a:b] * count,
            count,
        )


def _int64(col: pa.ChunkedArray) -> np.ndarray:
    """A timestamp (or int64) column without nulls as int64 [µs]."""
    if col.type != pa.int64():
        col = col.cast(pa.int64())
    return _numbers(col)


_PLAIN = {pa.int64(): np.dtype(np.int64), pa.float64(): np.dtype(np.float64)}


def _numbers(col: pa.ChunkedArray) -> np.ndarray:
    """An int64 or float64 column as numpy, straight from its Arrow buffers (no copy for one chunk without
    nulls; a null float is NaN, as to_numpy gives it): pyarrow's own to_numpy imports pandas on first use,
    about 0.5 s of every process that reads the archive. Another type, or a null int: to_numpy."""
    dtype = _PLAIN.get(col.type)
    if dtype is None or (col.null_count and dtype.kind != "f"):
        return col.to_numpy(zero_copy_only=False)
    parts = []
    for c in col.chunks:
        if len(c) == 0:
            continue
        values = np.frombuffer(c.buffers()[1], dtype, len(c), c.offset * dtype.itemsize)
        if c.null_count:  # the validity bitmap, least significant bit first (Arrow's layout)
            bits = np.unpackbits(np.frombuffer(c.buffers()[0], np.uint8), bitorder="little")
            values = np.where(bits[c.offset : c.offset + len(c)].astype(bool), values, np.nan)
        parts.append(values)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, dtype)
