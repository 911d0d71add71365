"""Reading historian exports and lab files in bounded memory, and turning their cells into values.

CSV is read in chunks of rows (pandas' C parser, `chunksize` chosen so a chunk holds about CELLS_PER_CHUNK
cells, whatever the width of the file); Parquet by record batches of the same size. What no export needs
is refused before it costs memory or time: more than MAX_COLUMNS columns, a line longer than
MAX_LINE_BYTES (checked as the bytes stream in, so a 50 MB line is refused after its first MiB), a
header that names a column twice. Messages quote at most EXCERPT characters of a cell.

Cells become values here (`numbers`, `texts`, `statuses`, `parse_times`): an empty cell (or null, none, na,
n/a) is no sample; a number a sensor cannot produce — NaN, ±inf, beyond ±1e12 — is a bad value, like text
that is no number, named with its row and column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from biopilot.errors import BioPilotError
from biopilot.samples import MAX_ABS_VALUE

MAX_COLUMNS = 10_000
MAX_LINE_BYTES = 1 << 20  # 1 MiB: a row of 10,000 numbers is ~150 kB
CELLS_PER_CHUNK = 500_000
EXCERPT = 40  # characters of a cell quoted in a message
MAX_BAD_KEPT = 100  # bad values remembered (the count goes on)

_NO_VALUE = ("", "null", "none", "na", "n/a")
_NAN_WORDS = ("nan", "+nan", "-nan")
_ZONE_RE = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)
_STATUS_WORDS = {"good": 0, "uncertain": 0x40000000, "bad": 0x80000000}

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class HistorianImportError(BioPilotError):
    """A file cannot be imported (unreadable, unmapped, too wide, or with bad rows)."""


def excerpt(text: object, limit: int = EXCERPT) -> str:
    """repr of a cell (control characters made visible), cut to `limit` characters."""
    s = str(text)
    return repr(s[:limit]) + ("…" if len(s) > limit else "")


@dataclass(frozen=True)
class BadRow:
    row: int  # line number in the file (the header is line 1); for Parquet, the row index + 1
    column: str
    text: str
    problem: str

    def __str__(self) -> str:
        return f"row {self.row}, column {excerpt(self.column)}: {excerpt(self.text)} {self.problem}"


@dataclass
class BadRows:
    """Bad values: the first MAX_BAD_KEPT kept (reported in row order), all of them counted."""

    kept: list[BadRow] = field(default_factory=list)
    count: int = 0

    def add(self, row: BadRow) -> None:
        self.count += 1
        if len(self.kept) < MAX_BAD_KEPT:
            self.kept.append(row)

    def merge(self, other: BadRows) -> None:
        self.count += other.count
        self.kept.extend(other.kept[: max(0, MAX_BAD_KEPT - len(self.kept))])

    def first(self, n: int) -> list[BadRow]:
        return sorted(self.kept, key=lambda b: (b.row, b.column))[:n]

    def __bool__(self) -> bool:
        return self.count > 0

    def __len__(self) -> int:
        return self.count

    @classmethod
    def of(cls, rows: list[BadRow], count: int) -> BadRows:
        return cls(rows[:MAX_BAD_KEPT], count)


@dataclass
class Chunk:
    """Rows of a file: `frame` (CSV cells as pandas read them; the columns named in `text_columns` of
    `chunks` as str), `first_row` the file row of its first row, `nulls` for Parquet numeric columns (null
    cells, told apart from NaN values)."""

    frame: pd.DataFrame
    first_row: int
    nulls: dict[str, np.ndarray] = field(default_factory=dict)


class Export:
    """A historian export or lab file, checked and ready to be read in chunks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise HistorianImportError(f"{path}: file not found")
        if not path.is_file():
            raise HistorianImportError(f"{path}: not a file")
        self.parquet = path.suffix.lower() in (".parquet", ".pq")
        self.columns = self._parquet_columns() if self.parquet else self._csv_header()
        if not self.columns:
            raise HistorianImportError(f"{path}: no columns")
        if len(self.columns) > MAX_COLUMNS:
            raise HistorianImportError(
                f"{path}: {len(self.columns):,} columns; an export has at most {MAX_COLUMNS:,}"
                " (one per tag): is this the file you meant?"
            )
        seen: set[str] = set()
        for c in self.columns:
            if c in seen:
                raise HistorianImportError(f"{path}: column {excerpt(c)} appears twice in the header")
            seen.add(c)
        self.first_row = 1 if self.parquet else 2
        self.size = path.stat().st_size

    def _csv_header(self) -> list[str]:
        with self.path.open("rb") as f:
            line = f.readline(MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            raise HistorianImportError(
                f"{self.path}: line 1 (the header) is longer than {MAX_LINE_BYTES >> 20} MiB: not an export"
                f" this importer reads (at most {MAX_COLUMNS:,} columns)"
            )
        try:
            text = line.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise HistorianImportError(
                f"{self.path}: line 1: not UTF-8 text; save the file as UTF-8"
            ) from None
        if not text.strip():
            return []
        header = next(csv.reader([text]))
        return [h.strip() for h in header]

    def _parquet_columns(self) -> list[str]:
        try:
            import pyarrow.parquet as pq

            return [str(n) for n in pq.ParquetFile(self.path).schema_arrow.names]
        except ImportError as exc:
            raise HistorianImportError(f"{self.path}: reading Parquet needs pyarrow ({exc})") from None
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError… for a file that is no Parquet
            raise HistorianImportError(
                f"{self.path}: not a readable Parquet file ({_first_line(exc)})"
            ) from None

    def chunks(self, text_columns: set[str], progress: Progress | None = None) -> Iterator[Chunk]:
        """The file's rows, about CELLS_PER_CHUNK cells at a time."""
        rows = max(1, CELLS_PER_CHUNK // len(self.columns))
        if self.parquet:
            yield from self._parquet_chunks(rows, text_columns, progress)
        else:
            yield from self._csv_chunks(rows, text_columns, progress)

    def _csv_chunks(self, rows: int, text_columns: set[str], progress: Progress | None) -> Iterator[Chunk]:
        first = 2
        try:
            with self.path.open("rb") as raw:
                guard = _LineGuard(raw, self.path)
                reader = pd.read_csv(
                    io.BufferedReader(guard, buffer_size=1 << 16),
                    dtype=dict.fromkeys(text_columns & set(self.columns), str),
                    keep_default_na=False,
                    na_values=[""],
                    skipinitialspace=True,
                    chunksize=rows,
                    encoding="utf-8-sig",
                    names=self.columns,
                    header=0,
                )
                for frame in reader:
                    yield Chunk(frame, first)
                    first += len(frame)
                    if progress is not None:
                        progress("read", guard.position, self.size)
        except HistorianImportError:
            raise
        except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise HistorianImportError(
                f"{self.path}: cannot read near row {first} ({_first_line(exc)})"
            ) from None

    def _parquet_chunks(
        self, rows: int, text_columns: set[str], progress: Progress | None
    ) -> Iterator[Chunk]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        first = 1
        try:
            pf = pq.ParquetFile(self.path)
            total = pf.metadata.num_rows
            for batch in pf.iter_batches(batch_size=rows):
                data: dict[str, object] = {}
                nulls: dict[str, np.ndarray] = {}
                for name, column in zip(batch.schema.names, batch.columns, strict=True):
                    kind = column.type
                    if name not in text_columns and (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
                        nulls[name] = column.is_null().to_numpy(zero_copy_only=False)
                        data[name] = column.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
                    elif pa.types.is_timestamp(kind) or pa.types.is_date(kind):
                        data[name] = column.to_pandas()
                    else:
                        data[name] = column.cast(pa.string()).to_pandas()
                yield Chunk(pd.DataFrame(data), first, nulls)
                first += batch.num_rows
                if progress is not None:
                    progress("read", first - 1, total)
        except HistorianImportError:
            raise
        except Exception as exc:  # ArrowInvalid, ArrowTypeError, OSError…
            raise HistorianImportError(
                f"{self.path}: cannot read near row {first} ({_first_line(exc)})"
            ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "…"


class _LineGuard(io.RawIOBase):
    """A binary file that refuses a line longer than MAX_LINE_BYTES as its bytes are read."""

    def __init__(self, raw: BinaryIO, path: Path) -> None:
        self._raw = raw
        self._path = path
        self._run = 0  # bytes of the current line read so far
        self._line = 1  # number of the current line
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer)
        if not n:
            return 0
        data = bytes(buffer[:n])
        self.position += n
        first = data.find(b"\n")
        if first < 0:
            self._run += n
        elif n <= MAX_LINE_BYTES:  # a line that starts and ends in this block is short enough
            if self._run + first > MAX_LINE_BYTES:
                self._refuse(self._line)
            self._line += data.count(b"\n")
            self._run = n - data.rfind(b"\n") - 1
        else:
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                if self._run + end - start > MAX_LINE_BYTES:
                    self._refuse(self._line)
                self._line += 1
                self._run = 0
                start = end + 1
            self._run = n - start
        if self._run > MAX_LINE_BYTES:
            self._refuse(self._line)
        return n

    def _refuse(self, line: int) -> None:
        raise HistorianImportError(
            f"{self._path}: line {line} is longer than {MAX_LINE_BYTES >> 20} MiB; a row of an export is"
            " a few kB: is this the file you meant?"
        )


# -- cells to values -----------------------------------------------------------------------------------
def parse_times(
    raw: pd.Series, fmt: str, zone: str, start: datetime | None, column: str, first_row: int
) -> tuple[np.ndarray, np.ndarray, BadRows]:
    """Source times [µs since epoch, UTC] of a column, which of them parsed, and the rows that did not.

    iso: ISO-8601; a value without a zone is local time in `zone` (an hour that does not exist or occurs
    twice at a DST change is a bad row unless the order of the rows resolves it). elapsed_h: hours since
    `start`."""
    n = len(raw)
    out = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    if pd.api.types.is_datetime64_any_dtype(raw):  # Parquet timestamps
        s = raw
        if s.dt.tz is None:
            s = s.dt.tz_localize(ZoneInfo(zone), ambiguous="NaT", nonexistent="NaT")
        ok = s.notna().to_numpy()
        out[ok] = s[ok].dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy()
    elif fmt == "elapsed_h":
        if start is None:
            raise HistorianImportError("elapsed hours need a start time (--start)")
        hours = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(hours) & (np.abs(hours) < 1e6)
        start_us = int(start.timestamp() * 1_000_000)
        out[ok] = start_us + np.round(hours[ok] * 3.6e9).astype(np.int64)
    else:
        text = _text(raw)
        has_zone = text.str.contains(_ZONE_RE) & text.str.contains(r"\d[T ]\d", regex=True)
        aware = pd.to_datetime(text.where(has_zone), format="ISO8601", utc=True, errors="coerce")
        naive_text = text.where(~has_zone)
        naive = pd.to_datetime(naive_text, format="ISO8601", errors="coerce")
        if naive.notna().any():
            try:
                local = naive.dt.tz_localize(ZoneInfo(zone), ambiguous="infer", nonexistent="NaT")
            except Exception:  # ambiguous times the order cannot resolve
                local = naive.dt.tz_localize(ZoneInfo(zone), ambiguous="NaT", nonexistent="NaT")
            local = local.dt.tz_convert("UTC")
        else:
            local = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
        merged = aware.where(has_zone, local)
        ok = merged.notna().to_numpy()
        out[ok] = merged[ok].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    hint = " (hours since --start)" if fmt == "elapsed_h" else " (ISO-8601, e.g. 2024-03-01T08:00:00+01:00)"
    cells = _text(raw) if not pd.api.types.is_datetime64_any_dtype(raw) else raw.astype(str)
    bad = [
        BadRow(first_row + int(i), column, cells.iloc[i], "is not a time" + hint)
        for i in np.flatnonzero(~ok)[:MAX_BAD_KEPT]
    ]
    return out, ok, BadRows.of(bad, int((~ok).sum()))


def numbers(
    raw: pd.Series, column: str, first_row: int, nulls: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, BadRows]:
    """Values of a numeric column: (values float64, present mask, bad rows). An empty cell is no sample;
    text that is no number, NaN, ±inf and magnitudes beyond ±1e12 are bad values. `nulls`: the null cells
    of a Parquet column (then NaN in the others is a value, and bad)."""
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        empty = np.isnan(values) if nulls is None else nulls
        text = None
    else:
        text = _text(raw)
        lower = text.str.lower()
        empty = lower.isin(_NO_VALUE).to_numpy()
        values = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(dtype=np.float64, copy=True)
        retry = ~empty & np.isnan(values) & ~lower.isin(_NAN_WORDS).to_numpy()
        if retry.any():  # decimal commas
            again = pd.to_numeric(text[retry].str.replace(",", ".", regex=False), errors="coerce")
            values[retry] = again.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        absurd = np.abs(values) > MAX_ABS_VALUE
    bad_mask = ~empty & (~np.isfinite(values) | absurd)
    present = ~empty & ~bad_mask
    bad = []
    for i in np.flatnonzero(bad_mask)[:MAX_BAD_KEPT]:
        v = values[i]
        cell = text.iloc[i] if text is not None else f"{v:.6g}"
        if np.isnan(v):
            is_nan = text is None or cell.strip().lower() in _NAN_WORDS
            problem = "is NaN, which no sensor or assay produces" if is_nan else "is not a number"
        elif np.isinf(v):
            problem = "is infinite (or too large to be a number)"
        else:
            problem = f"is beyond ±{MAX_ABS_VALUE:.0e}, which no sensor or assay reads"
        bad.append(BadRow(first_row + int(i), column, cell, problem))
    return values, present, BadRows.of(bad, int(bad_mask.sum()))


def texts(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values of a text column (batch ids, phases): (values object, present mask); blank is no sample."""
    values = _text(raw).to_numpy(dtype=object)
    return values, values != ""


def statuses(raw: pd.Series, first_row: int) -> tuple[np.ndarray, BadRows]:
    """OPC UA status codes of a status column: a code (decimal or 0x…) or good/uncertain/bad; empty: good."""
    text = _text(raw).str.lower()
    out = np.zeros(len(raw), dtype=np.int64)
    words = text.map(_STATUS_WORDS)
    is_word = words.notna().to_numpy()
    out[is_word] = words[is_word].to_numpy(dtype=np.int64)
    hexa = text.str.startswith("0x").to_numpy() & ~is_word
    dec = pd.to_numeric(text.where(~hexa & ~is_word), errors="coerce").to_numpy(dtype=np.float64)
    ok = is_word | (text == "").to_numpy() | (np.isfinite(dec) & (dec >= 0) & (dec < 2**32))
    out[np.isfinite(dec) & ok & ~is_word] = dec[np.isfinite(dec) & ok & ~is_word].astype(np.int64)
    for i in np.flatnonzero(hexa):
        try:
            code = int(text.iloc[i], 16)
        except ValueError:
            continue
        if 0 <= code < 2**32:
            out[i] = code
            ok[i] = True
    bad = [
        BadRow(first_row + int(i), "status", text.iloc[i], "is not a status (code, good, uncertain, bad)")
        for i in np.flatnonzero(~ok)[:MAX_BAD_KEPT]
    ]
    return out, BadRows.of(bad, int((~ok).sum()))


def _text(raw: pd.Series) -> pd.Series:
    """Cells as stripped str; a missing cell (NaN, None) is ''."""
    return raw.astype(object).where(raw.notna(), "").astype(str).str.strip()
