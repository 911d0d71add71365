"""Importers: historian exports and lab results into the store and the catalog.

They live in storage/ because importing is a write path into storage (like the collectors' sink) and
processing stays pure. Reading and cell parsing are in storage/exports.py, the stage in storage/staging.py.

Formats (detected by suffix and header):
- wide CSV: a time column and one column per tag;
- long CSV: time, tag, value[, status] (status: OPC UA code, decimal or 0x…, or good/uncertain/bad);
- Parquet, wide or long like the CSVs.
Times are ISO-8601 with or without a zone (a naive time is read in the site's zone, or the mapping's), or
elapsed hours from a given start. A tag's `scale` and `offset` turn the file's values into stored ones
(stored = raw × scale + offset: biopilot.units.Transform), in `column_values`.

What an import refuses (HistorianImportError, nothing stored):
- bad values: text that is no number or time, NaN, ±inf, magnitudes beyond ±1e12 — named by row and
  column (at most 10, with the count); `skip_bad_rows` imports the rest and reports them;
- conflicting duplicates: one tag at one time with different values (the rows are named); identical
  duplicates are collapsed into one sample and counted (`ImportResult.duplicates`);
- a time window that overlaps another run of the same equipment: the run is named; with `replace` the
  file's samples replace that run's at the same tag and time, the run's stored KPIs are flagged `stale` in
  the same transaction that starts publishing, and the caller recomputes them (`ImportResult.replaced_runs`);
- a file too wide, with a line too long, or with no column for a configured tag of the equipment.
A column the mapping names for a tag of the equipment but the file lacks does not stop the import (the
file's other values are good); it is reported (`ImportResult.missing_columns`), and the KPIs that need the
tag say missing_input — no value is invented for it.

Memory is bounded (the file is read in chunks, see exports.py) and so is the time the store's write lock is
held: the whole file is staged in a scratch file beside the database first (no lock on the store at all),
then published in chunks of short transactions.

Atomicity: an import killed at any point leaves no samples without a run. It journals itself in the catalog
(`pending_imports`) and holds an OS lock on `<imports dir>/<token>.lock` while it runs:
1. phase 'staging': the journal row exists, the samples are in `<token>.stage.sqlite` only. An import that
   dies here is rolled back (journal row and stage file deleted): nothing of it was stored.
2. one catalog transaction creates its run, hidden as 'importing' (or widens the named run), flags replaced
   runs' KPIs stale and switches the journal to 'publishing'; then the samples are copied into the store.
   An import that dies here is finished: the copy is idempotent, so it is done again from the stage.
3. one catalog transaction makes the run 'ready' (listed), records the import and deletes the journal row.
`recover_imports` does 1's rollback or 2's finish for every journal row whose lock no process holds; the
next command that opens the catalog through `storage.open_catalog` (any CLI command) runs it, and so does
every import before it starts. Re-importing a file replaces its samples (the store keys samples by series
and source time), so nothing is duplicated.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from biopilot import units
from biopilot.config import HistorianMapping, SiteConfig, Tag, lab_unit_problem, process_spec
from biopilot.errors import BioPilotError
from biopilot.ids import check_batch_id, check_trial_id, shown
from biopilot.records import ImportRecord, LabResult, Run, RunKind, RunOrigin, run_id_for
from biopilot.samples import Sample, from_us, to_us, utcnow
from storage.base import TimeSeriesStore
from storage.catalog import Catalog, PendingImport
from storage.exports import (
    BadRow,
    BadRows,
    Chunk,
    Export,
    HistorianImportError,
    Progress,
    excerpt,
    numbers,
    parse_times,
    statuses,
    texts,
)
from storage.sqlite import SqliteStore
from storage.staging import Stage

__all__ = [
    "BadRow",
    "HistorianImportError",
    "ImportResult",
    "file_sha256",
    "import_dir",
    "import_historian",
    "import_lab",
    "load_mapping",
    "recover_imports",
]

log = logging.getLogger(__name__)

_TIME_NAMES = ("timestamp", "time", "ts", "datetime", "date", "elapsed_h", "hours")
MAX_REPORTED = 10  # bad rows and conflicts named in an error message
_MAX_IGNORED = 1000  # long files: tag values that map to no tag, remembered
_WRITE_CHUNK = 50_000  # samples per write, for a store without publish_stage


@dataclass
class ImportResult:
    run: Run
    rows: int  # data rows read
    samples: int  # samples stored: one per tag and time (what the store holds of this file)
    tags: list[str]
    bad_rows: list[BadRow] = field(default_factory=list)  # the first skipped ones (skip_bad_rows)
    ignored_columns: list[str] = field(default_factory=list)  # file columns (or long tags) mapping to no tag
    reimport: bool = False
    sha256: str = ""
    bad_count: int = 0  # bad values skipped in all
    duplicates: int = 0  # identical duplicate samples collapsed
    missing_columns: list[str] = field(
        default_factory=list
    )  # "COLUMN → tag" the mapping names, not in the file
    replaced_runs: list[str] = field(default_factory=list)  # overlapping runs whose samples were replaced


def load_mapping(path: Path) -> HistorianMapping:
    """A mapping file: TOML with the keys of the site config's [historian] table."""
    import tomllib

    from pydantic import ValidationError

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HistorianImportError(f"{path}: mapping file not found") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise HistorianImportError(f"{path}: not a readable TOML mapping ({type(exc).__name__})") from None
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


def import_dir(store: TimeSeriesStore, catalog: Catalog) -> Path:
    """Where imports keep their stage and lock files: beside the embedded database (the store's file, or
    the catalog's)."""
    for path in (getattr(store, "path", None), catalog.path):
        if isinstance(path, Path):
            return path.parent / "imports"
    raise HistorianImportError(
        "neither the store nor the catalog is a local file: give the import a work_dir"
    )


# -- how a file's columns map to tags ------------------------------------------------------------------
@dataclass
class _Layout:
    time_column: str
    long: bool
    wide: dict[str, Tag] = field(default_factory=dict)  # wide: file column -> tag
    tag_column: str = ""  # long: the columns
    value_column: str = ""
    status_column: str | None = None
    ignored: list[str] = field(default_factory=list)
    mapped: dict[str, Tag] = field(default_factory=dict)  # what the mapping names for this equipment's tags


def _layout(export: Export, mapping: HistorianMapping, tags: dict[str, Tag], equipment: str) -> _Layout:
    columns = export.columns
    lower = {c.strip().lower(): c for c in columns}
    if mapping.time_column is not None:
        if mapping.time_column not in columns:
            names = ", ".join(excerpt(c) for c in columns[:8]) + (", …" if len(columns) > 8 else "")
            raise HistorianImportError(
                f"{export.path}: no time column {mapping.time_column!r} (columns: {names})"
            )
        tcol = mapping.time_column
    else:
        tcol = next((c for c in columns if c.strip().lower() in _TIME_NAMES), columns[0])
    mapped = {col: tags[name] for col, name in mapping.columns.items() if name in tags}
    if "tag" in lower and "value" in lower:
        return _Layout(
            tcol,
            True,
            tag_column=lower["tag"],
            value_column=lower["value"],
            status_column=lower.get("status"),
            mapped=mapped,
        )
    out = _Layout(tcol, False, mapped=mapped)
    for col in columns:
        if col == tcol:
            continue
        tag = tags.get(mapping.columns.get(col, col))
        if tag is None:
            out.ignored.append(col)
        else:
            out.wide[col] = tag
    if not out.wide:
        hint = f" (its columns: {', '.join(excerpt(c) for c in out.ignored[:8])})" if out.ignored else ""
        if len(columns) == 1 and ";" in columns[0]:
            hint = " (its header has one column with ';' in it: BioPilot reads comma-separated files)"
        raise HistorianImportError(
            f"{export.path}: no column maps to a configured tag of {equipment}{hint}; name the columns after"
            " the tags or map them in [historian.columns] or --mapping"
        )
    return out


def column_values(
    tag: Tag, raw: pd.Series, column: str, first_row: int, nulls: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, BadRows]:
    """The values one column's cells give one tag: (values — float64, or object for a text tag —, which
    cells hold a sample, the bad cells). The one place where a raw cell becomes a stored value: a cell no
    sensor can produce is refused as it is in the file, then the tag's transform (scale, offset) applies."""
    if tag.is_text:
        values, present = texts(raw)
        return values, present, BadRows()
    values, present, bad = numbers(raw, column, first_row, nulls)
    return tag.transform(values), present, bad


class _Reader:
    """Streams a file's chunks into a stage: times, values per tag, bad values, rows, ignored tags."""

    def __init__(
        self,
        layout: _Layout,
        tags: dict[str, Tag],
        mapping: HistorianMapping,
        zone: str,
        start: datetime | None,
        stage: Stage,
    ) -> None:
        self.layout, self.tags, self.mapping, self.zone, self.start, self.stage = (
            layout, tags, mapping, zone, start, stage,
        )  # fmt: skip
        self.bad = BadRows()
        self.rows = 0
        self.ignored: set[str] = set()
        self.seen_tags: set[str] = set()

    def add(self, chunk: Chunk) -> None:
        frame, first = chunk.frame, chunk.first_row
        self.rows += len(frame)
        lay = self.layout
        ts, ok, bad = parse_times(
            frame[lay.time_column], self.mapping.time_format, self.zone, self.start, lay.time_column, first
        )
        self.bad.merge(bad)
        rows = first + np.arange(len(frame), dtype=np.int64)
        if not lay.long:
            status = np.zeros(len(frame), dtype=np.int64)
            for col, tag in lay.wide.items():
                values, present, bad = column_values(tag, frame[col], col, first, chunk.nulls.get(col))
                self.bad.merge(bad)
                self._stage(tag, ts, values, status, rows, present & ok)
            return
        names = (
            frame[lay.tag_column]
            .astype(object)
            .where(frame[lay.tag_column].notna(), "")
            .astype(str)
            .str.strip()
        )
        status = np.zeros(len(frame), dtype=np.int64)
        if lay.status_column is not None:
            status, bad = statuses(frame[lay.status_column], first)
            self.bad.merge(bad)
        for name, where in names.groupby(names, sort=True).indices.items():
            tag = self.tags.get(self.mapping.columns.get(name, name))
            if tag is None:
                if len(self.ignored) < _MAX_IGNORED:
                    self.ignored.add(name)
                continue
            raw = frame[lay.value_column].iloc[where].reset_index(drop=True)
            nulls = chunk.nulls.get(lay.value_column)
            values, present, bad = column_values(
                tag, raw, lay.value_column, 0, nulls[where] if nulls is not None else None
            )
            for b in bad.kept:  # rows of the tag's cells -> rows of the file
                b_row = BadRow(int(rows[where[b.row]]), f"{lay.value_column} ({name})", b.text, b.problem)
                self.bad.add(b_row)
            self.bad.count += bad.count - len(bad.kept)
            self._stage(tag, ts[where], values, status[where], rows[where], present & ok[where])

    def _stage(
        self,
        tag: Tag,
        ts: np.ndarray,
        values: np.ndarray,
        status: np.ndarray,
        rows: np.ndarray,
        keep: np.ndarray,
    ) -> None:
        if keep.any():
            self.seen_tags.add(tag.name)
            self.stage.add(tag.name, ts[keep], values[keep], status[keep], rows[keep])


# -- importing a historian export ----------------------------------------------------------------------
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
    replace: bool = False,
    progress: Progress | None = None,
    work_dir: Path | None = None,
) -> ImportResult:
    """Import one historian export as a run of `equipment` (or into the named run, which grows to cover it).

    The run id is "<equipment>:<batch>"; the batch is run_id (or its part after "<equipment>:") or the file's
    stem. Raises HistorianImportError (nothing stored) for what the module doc lists."""
    path = Path(path)
    try:
        config.equipment_by_id(equipment)
    except KeyError:
        known = ", ".join(eq.id for eq in config.equipment)
        raise HistorianImportError(
            f"{shown(equipment)} is not a configured equipment id (one of: {known})"
        ) from None
    rid, batch = _run_id(equipment, run_id, path)
    if trial_id is not None:
        check_trial_id(trial_id)
    mapping = mapping or config.historian
    tags = {t.name: t for t in config.tags if t.equipment == equipment}
    if not tags:
        raise HistorianImportError(f"equipment {equipment!r} has no configured tags")
    export = Export(path)
    layout = _layout(export, mapping, tags, equipment)
    if mapping.time_format == "elapsed_h" and start is None:
        raise HistorianImportError("elapsed hours need a start time (--start)")
    work = work_dir or import_dir(store, catalog)
    work.mkdir(parents=True, exist_ok=True)
    for message in recover_imports(store, catalog, work):
        log.warning("%s", message)
    busy = catalog.pending_imports(run_id=rid)
    if busy:
        raise HistorianImportError(
            f"run {rid} is being imported right now (from {busy[0].file}, since"
            f" {busy[0].started:%Y-%m-%d %H:%M:%S} UTC); wait for it, or import into another --run-id"
        )
    sha = file_sha256(path)
    reimport = bool(catalog.imports(sha256=sha, run_id=rid))
    token = secrets.token_hex(8)
    lock = _Lock.take(work / f"{token}.lock")
    assert lock is not None  # a new file nobody else knows
    pending = catalog.begin_import(token, rid, equipment, path.name, sha)
    stage = Stage(work / f"{token}.stage.sqlite")
    publishing = finished = False
    try:
        reader = _Reader(layout, tags, mapping, mapping.timezone or config.site.timezone, start, stage)
        text_columns = {layout.time_column} | {c for c, t in layout.wide.items() if t.is_text}
        if layout.long:
            text_columns |= {layout.tag_column, layout.value_column} | (
                {layout.status_column} if layout.status_column else set()
            )
        for chunk in export.chunks(text_columns, progress):
            reader.add(chunk)
        if reader.bad and not skip_bad_rows:
            raise HistorianImportError(_bad_message(path, reader.bad))
        summary = stage.summary()
        if summary.conflicts:
            raise HistorianImportError(_conflict_message(path, stage, summary.conflicts))
        if summary.samples == 0 or summary.t_min is None or summary.t_max is None:
            raise HistorianImportError(
                f"{path}: no values for the tags of {equipment} in the file; nothing imported"
            )
        existing = catalog.run(rid)
        overlaps = _overlaps(store, catalog, config, equipment, rid, summary.t_min, summary.t_max)
        if overlaps and not replace:
            raise HistorianImportError(_overlap_message(path, summary.t_min, summary.t_max, overlaps))
        run = _target_run(
            config, existing, equipment, batch, summary.t_min, summary.t_max, kind, trial_id, path
        )
        stage.sync()
        stage.close()
        replaced = [r.id for r, _ in overlaps]
        catalog.start_publishing(
            pending.token,
            run,
            create=existing is None,
            replaced=replaced,
            rows=reader.rows,
            samples=summary.samples,
        )
        publishing = True
        _publish(store, stage.path, summary.samples, progress)
        catalog.finish_import(
            pending.token, ImportRecord(sha, rid, path.name, reader.rows, summary.samples, utcnow())
        )
        finished = True
    finally:
        if not publishing:
            catalog.abandon_import(pending.token)
            stage.delete()
        elif finished:
            stage.path.unlink(missing_ok=True)
        # else: publishing failed half-way; the journal and the stage stay for recover_imports to finish
        lock.release()
    stored = catalog.run(rid)
    assert stored is not None
    in_file = reader.seen_tags if layout.long else {t.name for t in layout.wide.values()}
    missing = [f"{col} → {tag.name}" for col, tag in layout.mapped.items() if tag.name not in in_file]
    return ImportResult(
        run=stored,
        rows=reader.rows,
        samples=summary.samples,
        tags=sorted(summary.per_series),
        bad_rows=reader.bad.first(MAX_REPORTED),
        ignored_columns=layout.ignored if not layout.long else sorted(reader.ignored),
        reimport=reimport,
        sha256=sha,
        bad_count=reader.bad.count,
        duplicates=summary.duplicates,
        missing_columns=missing,
        replaced_runs=replaced,
    )


def _run_id(equipment: str, run_id: str | None, path: Path) -> tuple[str, str]:
    if run_id is not None and ":" in run_id and not run_id.startswith(f"{equipment}:"):
        other = run_id.split(":", 1)[0]
        raise HistorianImportError(f"run id {shown(run_id)} is a run of {shown(other)}, not of {equipment}")
    batch = (run_id or path.stem).removeprefix(f"{equipment}:")
    try:
        check_batch_id(batch)
    except BioPilotError as exc:
        how = "" if run_id else " (the file's name; give --run-id)"
        raise HistorianImportError(f"{exc}{how}") from None
    return run_id_for(equipment, batch), batch


def _target_run(
    config: SiteConfig,
    existing: Run | None,
    equipment: str,
    batch: str,
    t_min: int,
    t_max: int,
    kind: str,
    trial_id: str | None,
    path: Path,
) -> Run:
    """The run the import creates, or the named run widened to cover the file."""
    start, end = from_us(t_min), from_us(t_max)
    if existing is None:
        return Run(
            run_id_for(equipment, batch),
            equipment,
            batch,
            start,
            end,
            kind=kind,
            trial_id=trial_id,
            product=process_spec(config, equipment).product or None,
            origin=RunOrigin.IMPORT.value,
            note=f"imported from {path.name}",
        )
    new_start = min(existing.start, start)
    new_end = None if existing.end is None else max(existing.end, end)
    return dataclasses.replace(existing, start=new_start, end=new_end)


def _overlaps(
    store: TimeSeriesStore,
    catalog: Catalog,
    config: SiteConfig,
    equipment: str,
    rid: str,
    t_min: int,
    t_max: int,
) -> list[tuple[Run, int]]:
    """Other runs of the equipment whose window meets [t_min, t_max], with their samples in the overlap:
    an overlap of some duration, or a shared instant at which the other run has samples."""
    names = [t.name for t in config.tags_of(equipment)]
    out = []
    for run in catalog.runs(equipment):
        if run.id == rid:
            continue
        lo = max(t_min, to_us(run.start))
        hi = min(t_max, to_us(run.end) if run.end is not None else 2**62)
        if lo > hi:
            continue
        n = sum(store.count(name, from_us(lo), from_us(hi + 1)) for name in names)
        if lo < hi or n:
            out.append((run, n))
    return out


def _publish(store: TimeSeriesStore, stage_path: Path, total: int, progress: Progress | None) -> int:
    def report(done: int) -> None:
        if progress is not None:
            progress("write", done, total)

    if isinstance(store, SqliteStore):
        return store.publish_stage(stage_path, progress=report)
    stage = Stage(stage_path)
    done = 0
    try:
        for rows in stage.rows(_WRITE_CHUNK):
            done += store.write([Sample(s, from_us(t), v, st) for s, t, v, st, _ in rows])
            report(done)
    finally:
        stage.close()
    return done


def _bad_message(path: Path, bad: BadRows) -> str:
    shown_rows = "; ".join(str(b) for b in bad.first(MAX_REPORTED))
    more = f" (and {bad.count - MAX_REPORTED} more)" if bad.count > MAX_REPORTED else ""
    return (
        f"{path}: {bad.count} bad value{'s' if bad.count > 1 else ''}, nothing imported: {shown_rows}{more}."
        " Fix the file, or pass --skip-bad-rows to import the rest"
    )


def _conflict_message(path: Path, stage: Stage, count: int) -> str:
    items = [
        f"rows {c.row} and {c.other_row} give {c.series} at {from_us(c.ts_us).isoformat()} different values"
        f" ({excerpt(c.value, 20)} and {excerpt(c.other_value, 20)})"
        for c in stage.conflicts(MAX_REPORTED)
    ]
    more = f" (and {count - MAX_REPORTED} more)" if count > MAX_REPORTED else ""
    return (
        f"{path}: {count} conflicting duplicate{'s' if count > 1 else ''} (one tag, one time, two values),"
        f" nothing imported: {'; '.join(items)}{more}. Remove the wrong rows; the store keeps one value per"
        " tag and time"
    )


def _overlap_message(path: Path, t_min: int, t_max: int, overlaps: list[tuple[Run, int]]) -> str:
    def window(run: Run) -> str:
        return (
            f"{run.start:%Y-%m-%d %H:%M} → {run.end:%Y-%m-%d %H:%M}"
            if run.end
            else f"{run.start:%Y-%m-%d %H:%M} → open"
        )

    runs = "; ".join(
        f"run {r.id} ({window(r)} UTC, {n:,} of its samples in the overlap)" for r, n in overlaps[:5]
    )
    return (
        f"{path}: its samples ({from_us(t_min):%Y-%m-%d %H:%M} → {from_us(t_max):%Y-%m-%d %H:%M} UTC) overlap"
        f" {runs}; nothing imported. Import it into that run (--run-id), or pass --replace to let its samples"
        " replace the stored ones (the overlapped runs' KPIs are then recomputed)"
    )


# -- interrupted imports -------------------------------------------------------------------------------
class _Lock:
    """An exclusive OS lock on a file (flock): held by a running import, released by the kernel when its
    process dies, however it dies."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def take(cls, path: Path) -> _Lock | None:
        """The lock, or None if another process holds it."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(path, fd)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def recover_imports(store: TimeSeriesStore, catalog: Catalog, work_dir: Path | None = None) -> list[str]:
    """Roll back or finish the imports whose process died (see the module doc); what was done, one line each.
    Imports still running (their lock is held) are left alone."""
    work = work_dir or import_dir(store, catalog)
    done = []
    for pending in catalog.pending_imports():
        if not work.is_dir():
            work.mkdir(parents=True, exist_ok=True)
        lock = _Lock.take(work / f"{pending.token}.lock")
        if lock is None:
            continue
        try:
            now = catalog.pending_import(pending.token)  # it may have finished before we took the lock
            if now is not None:
                done.append(_recover(store, catalog, now, work / f"{pending.token}.stage.sqlite"))
        finally:
            lock.release()
    return done


def _recover(store: TimeSeriesStore, catalog: Catalog, pending: PendingImport, stage: Path) -> str:
    if pending.phase == "staging":
        catalog.abandon_import(pending.token)
        stage.unlink(missing_ok=True)
        return (
            f"rolled back an interrupted import of {pending.file} into {pending.run_id} (nothing was stored)"
        )
    lost = ""
    if stage.exists():
        _publish(store, stage, pending.samples, None)
    else:
        lost = " (its stage file is gone: the run may lack some of the file's samples; import it again)"
    catalog.finish_import(
        pending.token,
        ImportRecord(pending.sha256, pending.run_id, pending.file, pending.rows, pending.samples, utcnow()),
    )
    stage.unlink(missing_ok=True)
    stale = f"; the KPIs of {', '.join(pending.replaced)} are flagged stale" if pending.replaced else ""
    return (
        f"finished an interrupted import of {pending.file} into run {pending.run_id}{lost}; its KPIs are not"
        f" computed yet (`biopilot kpis --recompute {pending.run_id}`){stale}"
    )


# -- lab results ---------------------------------------------------------------------------------------
_UNIT_IN_HEADER = re.compile(r"^\s*(?P<name>[^\[\(]+?)\s*[\[\(](?P<unit>[^\]\)]*)[\]\)]\s*$")


def parse_lab(
    path: Path, config: SiteConfig, equipment: str, *, start: datetime | None = None, time_format: str = "iso"
) -> tuple[list[LabResult], BadRows]:
    """Lab results from a CSV (or Parquet): long (time, analyte, value, unit[, sample_volume_ml]) or wide
    (a time column, then one column per analyte with its unit in the header: "titer [g/L]")."""
    export = Export(path)
    cols = {c.strip().lower(): c for c in export.columns}
    tcol = next((cols[n] for n in _TIME_NAMES if n in cols), export.columns[0])
    vol_col = cols.get("sample_volume_ml") or cols.get("sample_volume_l")
    vol_scale = units.factor("mL" if "sample_volume_ml" in cols else "L", "L")
    long = "analyte" in cols and "value" in cols
    text_columns = {tcol} | ({cols["analyte"], cols.get("unit", "")} if long else set())
    results: list[LabResult] = []
    bad = BadRows()
    source = path.name
    for chunk in export.chunks(text_columns):
        frame, first = chunk.frame, chunk.first_row
        ts, ok, b = parse_times(frame[tcol], time_format, config.site.timezone, start, tcol, first)
        bad.merge(b)
        volumes = np.zeros(len(frame))
        if vol_col is not None:
            v, present, b = numbers(frame[vol_col], vol_col, first, chunk.nulls.get(vol_col))
            bad.merge(b)
            for i in np.flatnonzero(present & (v < 0)):
                bad.add(BadRow(first + int(i), vol_col, str(v[i]), "is negative (a sample takes broth out)"))
            volumes = np.where(present & (v >= 0), v * vol_scale, 0.0)
        if long:
            values, present, b = numbers(
                frame[cols["value"]], cols["value"], first, chunk.nulls.get(cols["value"])
            )
            bad.merge(b)
            unit_col = (
                texts(frame[cols["unit"]])[0] if "unit" in cols else np.full(len(frame), "", dtype=object)
            )
            analytes = texts(frame[cols["analyte"]])[0]
            refused = _refused_lab_units(config, analytes, unit_col)
            for i in np.flatnonzero(present & ok):
                problem = refused.get((analytes[i], unit_col[i]))
                if problem is not None:
                    bad.add(BadRow(first + int(i), "unit", str(unit_col[i]), problem))
                    continue
                results.append(
                    LabResult(
                        equipment,
                        from_us(int(ts[i])),
                        str(analytes[i]),
                        float(values[i]),
                        str(unit_col[i]),
                        float(volumes[i]),
                        source,
                    )
                )
            continue
        for col in export.columns:
            if col in (tcol, vol_col):
                continue
            m = _UNIT_IN_HEADER.match(col)
            name, unit = (m.group("name"), m.group("unit")) if m else (col.strip(), "")
            values, present, b = numbers(frame[col], col, first, chunk.nulls.get(col))
            bad.merge(b)
            problem = lab_unit_problem(config, name, unit)
            if problem is not None:  # the header says the unit: one bad "row" (the header, line 1)
                if first == export.first_row:
                    why = f"is refused: {problem} (write it in the header: 'titer [g/L]')"
                    bad.add(BadRow(1, col, unit, why))
                continue
            for i in np.flatnonzero(present & ok):
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
    return results, bad


def _refused_lab_units(
    config: SiteConfig, analytes: np.ndarray, unit_col: np.ndarray
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
    """Import lab results (one catalog transaction: all or nothing)."""
    results, bad = parse_lab(Path(path), config, equipment, start=start, time_format=time_format)
    if bad and not skip_bad_rows:
        raise HistorianImportError(_bad_message(Path(path), bad))
    catalog.add_lab_results(results)
    return results
