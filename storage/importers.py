"""Importers: historian exports and lab results into the store and the catalog.

They live in storage/ because importing is a write path into storage (like the collectors' sink) and
processing stays pure; the parsing is vectorized (pandas) so a 10-day, 1-minute, 30-column export takes
seconds. Nothing of a file is written until all of it parsed: a bad row (unparsable time or number) stops
the import with its row number and column, unless the caller asks to skip bad rows.

Formats (detected by suffix and header):
- wide CSV: a time column and one column per tag;
- long CSV: time, tag, value[, status] (status: OPC UA code, decimal or 0x…, or good/uncertain/bad);
- Parquet, wide or long like the CSVs.
Times are ISO-8601 with or without a zone (a naive time is read in the site's zone, or the mapping's), or
elapsed hours from a given start. A tag's `scale` and `offset` turn the file's values into stored ones
(stored = raw × scale + offset: biopilot.units.Transform). Re-importing a file replaces its samples (the
store keys samples by series and source time), so nothing is duplicated.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from biopilot import units
from biopilot.config import HistorianMapping, SiteConfig, Tag, lab_unit_problem, process_spec
from biopilot.errors import BioPilotError
from biopilot.records import ImportRecord, LabResult, Run, RunKind, RunOrigin, run_id_for
from biopilot.samples import Sample, from_us, utcnow
from storage.base import TimeSeriesStore
from storage.catalog import Catalog

Progress = Callable[[str, int, int], None]  # (stage, done, total)

_TIME_NAMES = ("timestamp", "time", "ts", "datetime", "date", "elapsed_h", "hours")
_ZONE_RE = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)
_STATUS_WORDS = {"good": 0, "uncertain": 0x40000000, "bad": 0x80000000}
MAX_REPORTED = 10  # bad rows named in an error message


class HistorianImportError(BioPilotError):
    """A file cannot be imported (unreadable, unmapped, or with bad rows)."""


@dataclass(frozen=True)
class BadRow:
    row: int  # line number in the file (the header is line 1); for Parquet, the row index + 1
    column: str
    text: str
    problem: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column!r}: {self.text!r} {self.problem}"


@dataclass
class ImportResult:
    run: Run
    rows: int
    samples: int
    tags: list[str]
    bad_rows: list[BadRow] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    reimport: bool = False
    sha256: str = ""


@dataclass
class _Columns:
    """Parsed samples per tag: ts [µs], values (float64 or object), status (int64)."""

    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    rows: int = 0


def load_mapping(path: Path) -> HistorianMapping:
    """A mapping file: TOML with the keys of the site config's [historian] table."""
    import tomllib

    from pydantic import ValidationError

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HistorianImportError(f"{path}: mapping file not found") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise HistorianImportError(f"{path}: not a readable TOML mapping ({exc})") from None
    raw = raw.get("historian", raw)
    try:
        return HistorianMapping.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise HistorianImportError(f"{path}: {key}: {first['msg']}") from None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- reading ---------------------------------------------------------------------------------------------
def _read_frame(path: Path, progress: Progress | None) -> pd.DataFrame:
    """The whole file as a frame of strings (CSV) or native types (Parquet)."""
    if not path.exists():
        raise HistorianImportError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            if progress:
                progress("read", len(frame), len(frame))
            return frame
        total = path.stat().st_size
        chunks = []
        with path.open("rb") as f:
            for chunk in pd.read_csv(
                f,
                dtype=str,
                keep_default_na=False,
                skipinitialspace=True,
                chunksize=100_000,
                encoding="utf-8-sig",
            ):
                chunks.append(chunk)
                if progress:
                    progress("read", f.tell(), total)
        return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    except HistorianImportError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HistorianImportError(f"{path}: cannot read ({message})") from None
    except ImportError as exc:
        raise HistorianImportError(f"{path}: reading Parquet needs pyarrow ({exc})") from None


def _is_long(frame: pd.DataFrame) -> bool:
    cols = {str(c).strip().lower() for c in frame.columns}
    return "tag" in cols and "value" in cols


def _time_column(frame: pd.DataFrame, mapping: HistorianMapping, path: Path) -> str:
    if mapping.time_column is not None:
        if mapping.time_column not in frame.columns:
            raise HistorianImportError(
                f"{path}: no time column {mapping.time_column!r} (columns: {_names(frame)})"
            )
        return mapping.time_column
    for c in frame.columns:
        if str(c).strip().lower() in _TIME_NAMES:
            return str(c)
    if len(frame.columns) == 0:
        raise HistorianImportError(f"{path}: no columns")
    return str(frame.columns[0])


def _names(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns]
    return ", ".join(names[:8]) + (", …" if len(names) > 8 else "")


def parse_times(
    raw: pd.Series, fmt: str, zone: str, start: datetime | None, column: str, first_row: int
) -> tuple[np.ndarray, list[BadRow]]:
    """Source times [µs since epoch, UTC] of a column, and the rows that do not parse.

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
        ok = np.isfinite(hours)
        start_us = int(start.timestamp() * 1_000_000)
        out[ok] = start_us + np.round(hours[ok] * 3.6e9).astype(np.int64)
    else:
        text = raw.astype(str).str.strip()
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
    bad = [
        BadRow(first_row + int(i), column, str(raw.iloc[i]), "is not a time" + _time_hint(fmt))
        for i in np.flatnonzero(~ok)[: MAX_REPORTED * 10]
    ]
    return out, bad


def _time_hint(fmt: str) -> str:
    return " (hours since --start)" if fmt == "elapsed_h" else " (ISO-8601, e.g. 2024-03-01T08:00:00+01:00)"


def _numbers(raw: pd.Series, column: str, first_row: int) -> tuple[np.ndarray, np.ndarray, list[BadRow]]:
    """Values of a numeric column: (values, present mask, bad rows). Empty cells are no sample."""
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
        return values, np.isfinite(values), []
    text = raw.astype(str).str.strip()
    empty = (text == "") | text.str.lower().isin(("nan", "null", "none", "na", "n/a"))
    values = pd.to_numeric(text.str.replace(",", ".", regex=False).where(~empty), errors="coerce").to_numpy(
        dtype=np.float64
    )
    bad_mask = ~empty.to_numpy() & ~np.isfinite(values)
    bad = [
        BadRow(first_row + int(i), column, str(raw.iloc[i]), "is not a number")
        for i in np.flatnonzero(bad_mask)[: MAX_REPORTED * 10]
    ]
    return values, np.isfinite(values), bad


def _statuses(raw: pd.Series, first_row: int) -> tuple[np.ndarray, list[BadRow]]:
    text = raw.astype(str).str.strip().str.lower()
    out = np.zeros(len(raw), dtype=np.int64)
    bad = []
    for i, s in enumerate(text.tolist()):
        if s in ("", "nan"):
            continue
        if s in _STATUS_WORDS:
            out[i] = _STATUS_WORDS[s]
            continue
        try:
            out[i] = int(s, 16) if s.startswith("0x") else int(float(s))
        except ValueError:
            if len(bad) < MAX_REPORTED * 10:
                bad.append(BadRow(first_row + i, "status", s, "is not a status (code, good, uncertain, bad)"))
    return out, bad


def _tag_for(name: str, mapping: HistorianMapping, tags: dict[str, Tag]) -> Tag | None:
    target = mapping.columns.get(name, name)
    return tags.get(target)


def parse_historian(
    path: Path,
    config: SiteConfig,
    equipment: str,
    mapping: HistorianMapping | None = None,
    *,
    start: datetime | None = None,
    progress: Progress | None = None,
) -> tuple[_Columns, list[BadRow], list[str]]:
    """Parse a historian export into samples per configured tag of `equipment`.

    Returns the parsed columns, the bad rows, and the file's columns (or long-format tags) that map to no
    configured tag of the equipment (they are not imported)."""
    mapping = mapping or config.historian
    zone = mapping.timezone or config.site.timezone
    frame = _read_frame(path, progress)
    tags = {t.name: t for t in config.tags if t.equipment == equipment}
    if not tags:
        raise HistorianImportError(f"equipment {equipment!r} has no configured tags")
    first_row = 1 if path.suffix.lower() in (".parquet", ".pq") else 2
    tcol = _time_column(frame, mapping, path)
    ts, bad = parse_times(frame[tcol], mapping.time_format, zone, start, tcol, first_row)
    good_time = np.ones(len(frame), dtype=bool)
    good_time[[b.row - first_row for b in bad]] = False
    out = _Columns(rows=len(frame))
    ignored: list[str] = []
    if _is_long(frame):
        cols = {str(c).strip().lower(): c for c in frame.columns}
        names = frame[cols["tag"]].astype(str).str.strip()
        status, bad_status = (
            _statuses(frame[cols["status"]], first_row)
            if "status" in cols
            else (np.zeros(len(frame), np.int64), [])
        )
        bad += bad_status
        for name in sorted(set(names.tolist())):
            tag = _tag_for(name, mapping, tags)
            rows = np.flatnonzero((names == name).to_numpy())
            if tag is None:
                ignored.append(name)
                continue
            raw = frame[cols["value"]].iloc[rows]
            if tag.is_text:
                values = raw.astype(str).to_numpy(dtype=object)
                present = np.array([v.strip() != "" for v in values], dtype=bool)
            else:
                values, present, bad_v = _numbers(raw.reset_index(drop=True), tag.name, first_row)
                for b in bad_v:  # row numbers of the sub-frame → of the file
                    bad.append(BadRow(int(rows[b.row - first_row]) + first_row, name, b.text, b.problem))
            keep = present & good_time[rows]
            _add(out, tag.name, ts[rows][keep], tag.transform(values[keep]), status[rows][keep])
    else:
        for col in frame.columns:
            if str(col) == tcol:
                continue
            tag = _tag_for(str(col), mapping, tags)
            if tag is None:
                ignored.append(str(col))
                continue
            raw = frame[col]
            if tag.is_text:
                values = raw.astype(str).str.strip().to_numpy(dtype=object)
                present = values != ""
            else:
                values, present, bad_v = _numbers(raw, str(col), first_row)
                bad += bad_v
            keep = present & good_time
            _add(out, tag.name, ts[keep], tag.transform(values[keep]), np.zeros(int(keep.sum()), np.int64))
    bad.sort(key=lambda b: (b.row, b.column))
    return out, bad, ignored


def _add(out: _Columns, name: str, ts: np.ndarray, values: np.ndarray, status: np.ndarray) -> None:
    if name in out.series:  # two file columns map to one tag: keep both, later ones win on equal times
        t0, v0, s0 = out.series[name]
        ts, values, status = (
            np.concatenate([t0, ts]),
            np.concatenate([v0, values]),
            np.concatenate([s0, status]),
        )
    out.series[name] = (ts, values, status)


class _LazySamples(Sequence[Sample]):
    """Samples built while the store iterates them (one transaction, bounded memory, a progress hook)."""

    def __init__(self, columns: _Columns, progress: Progress | None) -> None:
        self._cols = columns
        self._n = sum(len(ts) for ts, _, _ in columns.series.values())
        self._progress = progress

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[no-untyped-def,override]
        raise TypeError("iterate the samples")

    def __iter__(self) -> Iterator[Sample]:
        done = 0
        for name, (ts, values, status) in self._cols.series.items():
            text = values.dtype == object
            vals = values.tolist()
            for t, v, s in zip(ts.tolist(), vals, status.tolist(), strict=True):
                yield Sample(name, from_us(t), v if text else float(v), int(s))
                done += 1
                if self._progress is not None and done % 200_000 == 0:
                    self._progress("write", done, self._n)
        if self._progress is not None:
            self._progress("write", self._n, self._n)


def import_historian(
    path: Path,
    config: SiteConfig,
    store: TimeSeriesStore,
    catalog: Catalog,
    *,
    equipment: str,
    run_id: str | None = None,
    kind: str = RunKind.BASELINE.value,
    trial_id: str | None = None,
    mapping: HistorianMapping | None = None,
    start: datetime | None = None,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Import one historian export as a run of `equipment` (or into the named run, which grows to cover it).

    The run id is "<equipment>:<batch>"; the batch is run_id (or its part after "<equipment>:") or the file's
    stem. Raises HistorianImportError (nothing written) on bad rows unless skip_bad_rows."""
    path = Path(path)
    try:
        config.equipment_by_id(equipment)
    except KeyError:
        known = ", ".join(eq.id for eq in config.equipment)
        raise HistorianImportError(
            f"{equipment!r} is not a configured equipment id (one of: {known})"
        ) from None
    columns, bad, ignored = parse_historian(path, config, equipment, mapping, start=start, progress=progress)
    if bad and not skip_bad_rows:
        shown = "; ".join(str(b) for b in bad[:MAX_REPORTED])
        more = f" (and {len(bad) - MAX_REPORTED} more)" if len(bad) > MAX_REPORTED else ""
        raise HistorianImportError(
            f"{path}: {len(bad)} bad value{'s' if len(bad) > 1 else ''}, nothing imported: {shown}{more}."
            " Fix the file, or pass --skip-bad-rows to import the rest"
        )
    if not columns.series or all(len(ts) == 0 for ts, _, _ in columns.series.values()):
        hint = f" (its columns: {', '.join(ignored[:8])})" if ignored else ""
        raise HistorianImportError(
            f"{path}: no column maps to a configured tag of {equipment}{hint}; name the columns after the"
            " tags or map them in [historian.columns] or --mapping"
        )
    t_min = min(int(ts.min()) for ts, _, _ in columns.series.values() if len(ts))
    t_max = max(int(ts.max()) for ts, _, _ in columns.series.values() if len(ts))
    batch = (run_id or path.stem).removeprefix(f"{equipment}:")
    rid = run_id_for(equipment, batch)
    sha = file_sha256(path)
    reimport = bool(catalog.imports(sha256=sha, run_id=rid))
    samples = _LazySamples(columns, progress)
    store.write(samples)
    run = catalog.run(rid)
    if run is None:
        run = catalog.create_run(
            equipment,
            batch,
            from_us(t_min),
            from_us(t_max),
            kind=kind,
            trial_id=trial_id,
            product=process_spec(config, equipment).product or None,
            origin=RunOrigin.IMPORT.value,
            note=f"imported from {path.name}",
        )
    else:
        changes: dict[str, object] = {}
        if from_us(t_min) < run.start:
            changes["start"] = from_us(t_min)
        if run.end is not None and from_us(t_max) > run.end:
            changes["end"] = from_us(t_max)
        if changes:
            run = catalog.update_run(rid, **changes)
    catalog.record_import(ImportRecord(sha, rid, path.name, columns.rows, len(samples), utcnow()))
    return ImportResult(run, columns.rows, len(samples), sorted(columns.series), bad, ignored, reimport, sha)


# -- lab results -----------------------------------------------------------------------------------------
_UNIT_IN_HEADER = re.compile(r"^\s*(?P<name>[^\[\(]+?)\s*[\[\(](?P<unit>[^\]\)]*)[\]\)]\s*$")


def parse_lab(
    path: Path, config: SiteConfig, equipment: str, *, start: datetime | None = None, time_format: str = "iso"
) -> tuple[list[LabResult], list[BadRow]]:
    """Lab results from a CSV (or Parquet): long (time, analyte, value, unit[, sample_volume_ml]) or wide
    (a time column, then one column per analyte with its unit in the header: "titer [g/L]")."""
    frame = _read_frame(path, None)
    first_row = 2
    cols = {str(c).strip().lower(): c for c in frame.columns}
    tcol = next((cols[n] for n in _TIME_NAMES if n in cols), frame.columns[0] if len(frame.columns) else None)
    if tcol is None:
        raise HistorianImportError(f"{path}: no columns")
    ts, bad = parse_times(frame[tcol], time_format, config.site.timezone, start, str(tcol), first_row)
    good_time = np.ones(len(frame), dtype=bool)
    good_time[[b.row - first_row for b in bad]] = False
    vol_col = cols.get("sample_volume_ml") or cols.get("sample_volume_l")
    vol_scale = units.factor("mL" if "sample_volume_ml" in cols else "L", "L")
    volumes = np.zeros(len(frame))
    if vol_col is not None:
        v, present, bad_v = _numbers(frame[vol_col], str(vol_col), first_row)
        volumes = np.where(present, v * vol_scale, 0.0)
        bad += bad_v
    results: list[LabResult] = []
    source = path.name
    if "analyte" in cols and "value" in cols:
        values, present, bad_v = _numbers(frame[cols["value"]], "value", first_row)
        bad += bad_v
        unit_col = (
            frame[cols["unit"]].astype(str).str.strip() if "unit" in cols else pd.Series([""] * len(frame))
        )
        analytes = frame[cols["analyte"]].astype(str).str.strip()
        refused = _refused_lab_units(config, analytes, unit_col)
        for i in np.flatnonzero(present & good_time):
            problem = refused.get((analytes.iloc[i], unit_col.iloc[i]))
            if problem is not None:
                bad.append(BadRow(first_row + int(i), "unit", unit_col.iloc[i], problem))
                continue
            results.append(
                LabResult(
                    equipment,
                    from_us(int(ts[i])),
                    analytes.iloc[i],
                    float(values[i]),
                    unit_col.iloc[i],
                    float(volumes[i]),
                    source,
                )
            )
    else:
        for col in frame.columns:
            if col in (tcol, vol_col):
                continue
            m = _UNIT_IN_HEADER.match(str(col))
            name, unit = (m.group("name"), m.group("unit")) if m else (str(col).strip(), "")
            values, present, bad_v = _numbers(frame[col], str(col), first_row)
            bad += bad_v
            problem = lab_unit_problem(config, name, unit)
            if problem is not None:  # the header says the unit: one bad "row" (the header, line 1)
                bad.append(
                    BadRow(
                        1, str(col), unit, f"is refused: {problem} (write it in the header: 'titer [g/L]')"
                    )
                )
                continue
            for i in np.flatnonzero(present & good_time):
                results.append(
                    LabResult(
                        equipment,
                        from_us(int(ts[i])),
                        name,
                        float(values[i]),
                        unit,
                        float(volumes[i]),
                        source,
                    )
                )
    results.sort(key=lambda r: (r.ts, r.analyte))
    bad.sort(key=lambda b: (b.row, b.column))
    return results, bad


def _refused_lab_units(
    config: SiteConfig, analytes: pd.Series, unit_col: pd.Series
) -> dict[tuple[str, str], str]:
    """(analyte, unit) pairs of a long lab file whose unit is refused, with why (config.lab_unit_problem)."""
    out = {}
    for analyte, unit in set(zip(analytes.tolist(), unit_col.tolist(), strict=True)):
        problem = lab_unit_problem(config, analyte, unit)
        if problem is not None:
            out[(analyte, unit)] = f"is refused: {problem}"
    return out


def import_lab(
    path: Path,
    config: SiteConfig,
    catalog: Catalog,
    *,
    equipment: str,
    skip_bad_rows: bool = False,
    start: datetime | None = None,
    time_format: str = "iso",
) -> list[LabResult]:
    results, bad = parse_lab(Path(path), config, equipment, start=start, time_format=time_format)
    if bad and not skip_bad_rows:
        shown = "; ".join(str(b) for b in bad[:MAX_REPORTED])
        raise HistorianImportError(
            f"{path}: {len(bad)} bad values, nothing imported: {shown}. Fix the file, or pass"
            " --skip-bad-rows to import the rest"
        )
    catalog.add_lab_results(results)
    return results
