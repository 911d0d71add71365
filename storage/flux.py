"""Flux queries for the InfluxDB 2 store, and the annotated CSV they answer with: pure, no I/O.

Names go into Flux string literals escaped as the Flux scanner reads them (flux: internal/scanner,
`escaped_char = "\\" ("n" | "r" | "t" | "\\" | '"' | "${")`): a backslash, a double quote and the
interpolation opener ``${`` are escaped, and line breaks and tabs are written as \\n, \\r, \\t. Times are
RFC 3339 literals with microseconds, clamped to the range InfluxDB stores (1677-09-21 to 2262-04-11).

Downsampling is done by the server with ``aggregateWindow`` (min, max, mean, count, and the first and last
sample time as min/max of the time as an integer), one ``yield`` per aggregate, in windows of
``ceil((end - start) / n)`` µs aligned on `start` (``offset`` = start mod width) — the same buckets as the
embedded store. Bad-status samples (status ≥ 0x80000000) and samples without a numeric value are left out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from biopilot.errors import StoreError

# InfluxDB's time range: int64 nanoseconds, less one at each end (line-protocol reference).
MIN_US = -9_223_372_036_854_775 + 1
MAX_US = 9_223_372_036_854_775 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BAD = 0x80000000

AGGREGATES = ("min", "max", "mean", "count", "t_first", "t_last")


def flux_string(text: str) -> str:
    """`text` as a Flux string literal, quotes included."""
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "$" and i + 1 < n and text[i + 1] == "{":
            out.append("\\${")
            i += 1
        else:
            out.append(ch)
        i += 1
    return '"' + "".join(out) + '"'


def flux_time(us: int) -> str:
    """A Flux date-time literal for µs since the Unix epoch (clamped to InfluxDB's range)."""
    us = min(max(int(us), MIN_US), MAX_US)
    dt = _EPOCH + timedelta(microseconds=us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def flux_duration_us(us: int) -> str:
    return f"{int(us)}us"


def _source(bucket: str, measurement: str, start_us: int, stop_us: int) -> str:
    return (
        f"from(bucket: {flux_string(bucket)})\n"
        f"  |> range(start: {flux_time(start_us)}, stop: {flux_time(stop_us)})\n"
        f"  |> filter(fn: (r) => r._measurement == {flux_string(measurement)}"
    )


def read_query(bucket: str, measurement: str, series: str, start_us: int, stop_us: int) -> str:
    """Raw samples of one series with start ≤ time < stop, one row per sample."""
    return (
        _source(bucket, measurement, start_us, stop_us) + f" and r.series == {flux_string(series)})\n"
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        '  |> keep(fn: (column) => column == "_time" or column == "value" or column == "text"'
        ' or column == "status")\n'
    )


def bucket_width_us(start_us: int, stop_us: int, n: int) -> int:
    """The width of each of n equal buckets covering [start, stop) [µs], as the embedded store cuts them."""
    if n <= 0:
        raise ValueError("n must be positive")
    return max((stop_us - start_us + n - 1) // n, 1)


def buckets_query(bucket: str, measurement: str, series: str, start_us: int, stop_us: int, n: int) -> str:
    """min/max/mean/count and the first and last sample time per bucket, each a `yield` of its own."""
    width = bucket_width_us(start_us, stop_us, n)
    window = (
        f"every: {flux_duration_us(width)}, offset: {flux_duration_us(start_us % width)},"
        ' createEmpty: false, timeSrc: "_start"'
    )
    head = (
        "data = "
        + _source(bucket, measurement, start_us, stop_us)
        + f' and r.series == {flux_string(series)} and (r._field == "value" or r._field == "status"))\n'
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        f"  |> filter(fn: (r) => exists r.value and exists r.status and r.status < {_BAD})\n"
        "  |> map(fn: (r) => ({r with _value: r.value}))\n"
        '  |> keep(columns: ["_start", "_stop", "_time", "_value"])\n'
        "times = data |> map(fn: (r) => ({r with _value: int(v: r._time)}))\n"
    )
    parts = [head]
    for name, source, fn in (
        ("min", "data", "min"),
        ("max", "data", "max"),
        ("mean", "data", "mean"),
        ("count", "data", "count"),
        ("t_first", "times", "min"),
        ("t_last", "times", "max"),
    ):
        parts.append(f'{source} |> aggregateWindow({window}, fn: {fn}) |> yield(name: "{name}")\n')
    return "".join(parts)


def latest_query(bucket: str, measurement: str, series: Sequence[str] | None) -> str:
    """The newest point of each field of each series (pushed down to storage as a bare last())."""
    where = ""
    if series is not None:
        where = " and (" + " or ".join(f"r.series == {flux_string(s)}" for s in series) + ")"
    return (
        _source(bucket, measurement, MIN_US, MAX_US) + where + ")\n"
        "  |> last()\n"
        '  |> keep(columns: ["_time", "_value", "_field", "series"])\n'
    )


def count_query(bucket: str, measurement: str, series: str, start_us: int, stop_us: int) -> str:
    """Samples of one series with start ≤ time < stop (every point has a status field)."""
    return (
        _source(bucket, measurement, start_us, stop_us)
        + f' and r.series == {flux_string(series)} and r._field == "status")\n'
        "  |> count()\n"
    )


def series_query(bucket: str, measurement: str) -> str:
    """Every series name of the measurement (a tag-values lookup, answered from the index)."""
    return (
        'import "influxdata/influxdb/schema"\n'
        f'schema.tagValues(bucket: {flux_string(bucket)}, tag: "series",'
        f" predicate: (r) => r._measurement == {flux_string(measurement)}, start: {flux_time(0)})\n"
    )


# -- annotated CSV ------------------------------------------------------------------------------------


@dataclass
class FluxTable:
    """One table of an annotated-CSV answer: its result (yield) name, columns, their types, and rows."""

    result: str
    columns: list[str]
    datatypes: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> list[str] | None:
        try:
            i = self.columns.index(name)
        except ValueError:
            return None
        return [row[i] for row in self.rows]


def parse_annotated_csv(text: str) -> list[FluxTable]:
    """Tables of an annotated CSV answer (annotations datatype, group, default; header on).

    A new annotation block starts a new schema; a change in the `table` column starts a new table. An
    error table (columns error, reference) raises StoreError with the server's message."""
    tables: list[FluxTable] = []
    datatypes: list[str] = []
    defaults: list[str] = []
    columns: list[str] | None = None
    current: FluxTable | None = None
    current_key: tuple[str, str] | None = None
    annotating = False
    for row in csv.reader(io.StringIO(text)):
        if not row or row == [""]:
            columns, current, current_key, annotating = None, None, None, False
            continue
        first = row[0]
        if first.startswith("#"):
            if not annotating:  # the first annotation row of a block: a new schema follows
                datatypes, defaults, columns, current, current_key = [], [], None, None, None
                annotating = True
            if first == "#datatype":
                datatypes = row[1:]
            elif first == "#default":
                defaults = row[1:]
            continue
        annotating = False
        cells = row[1:]
        if columns is None:
            columns = cells
            continue
        if columns[:1] == ["error"]:
            raise StoreError(f"InfluxDB could not run the query: {cells[0] if cells else '(no message)'}")
        if defaults:
            cells = [c if c != "" or i >= len(defaults) else defaults[i] for i, c in enumerate(cells)]
        result = cells[columns.index("result")] if "result" in columns else ""
        table_id = cells[columns.index("table")] if "table" in columns else ""
        key = (result, table_id)
        if current is None or key != current_key:
            current = FluxTable(result, list(columns), list(datatypes), [])
            current_key = key
            tables.append(current)
        current.rows.append(cells)
    return tables


def rfc3339_to_us(values: Sequence[str]) -> np.ndarray:
    """RFC 3339 UTC times ('2024-03-01T08:00:00.123456789Z', fraction optional) as int64 µs (floored)."""
    if not values:
        return np.empty(0, dtype=np.int64)
    if not all(v.endswith("Z") for v in values):
        bad = next(v for v in values if not v.endswith("Z"))
        raise StoreError(f"InfluxDB answered a time that is not UTC RFC 3339: {bad!r}")
    try:
        ns = np.array([v[:-1] for v in values], dtype="datetime64[ns]").astype(np.int64)
    except ValueError as exc:
        raise StoreError(f"InfluxDB answered a time that is not RFC 3339 ({exc})") from None
    return ns // 1000


def tables_by_result(tables: Sequence[FluxTable]) -> dict[str, list[FluxTable]]:
    out: dict[str, list[FluxTable]] = {}
    for t in tables:
        out.setdefault(t.result, []).append(t)
    return out


def iter_rows(tables: Sequence[FluxTable], *names: str) -> Iterator[tuple[str | None, ...]]:
    """The given columns of every row of every table (None where a table lacks the column)."""
    for t in tables:
        idx = [t.columns.index(n) if n in t.columns else None for n in names]
        for row in t.rows:
            yield tuple(row[i] if i is not None else None for i in idx)
