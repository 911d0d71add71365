"""The catalog: runs, their phases, lab results, imports and KPIs, in the embedded database beside the
time series.

A run is one batch on one piece of equipment. Its id is "<equipment>:<batch id>", so the fermentation and
the recovery run that processed its harvest share the batch id; the downstream run also names the upstream
run it processed (`upstream_id`), which is how a yield waterfall runs from the fermenter to purified product.

Live runs are detected from batch-id samples (origin "live"); imported historian runs (origin "import") and
runs created by hand (origin "manual") come from the CLI. A run's kind says what a trial verdict may use it
for: "baseline", "trial" or "other".

Schema versions (table catalog_meta, key "schema_version"); migrations are idempotent, so any number of
processes may open an old file at once and the newest schema results:
  1  runs (id, equipment, batch_id, start_us, end_us), run_kpis, cursors  (the first release; no version row)
  2  runs gain kind, trial_id, product, upstream_id, origin, note; run_kpis gains inputs (per-input coverage);
     new tables phases, lab_results, imports
  3  runs gain state ('ready', or 'importing' while an import that created the run publishes its samples:
     such a run is not listed); new table pending_imports (the journal of imports under way, see
     storage/importers.py)

Ids are checked (biopilot.ids) before a run is written: equipment and batch ids, trial ids and upstream
links (a run is not its own upstream, nor upstream of a run upstream of it); phases do not end before they
start; lab values are measurements (finite, within ±1e12).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from biopilot.errors import StoreError
from biopilot.ids import check_batch_id, check_equipment_id, check_run_id, check_trial_id
from biopilot.records import ImportRecord, KpiRecord, LabResult, Phase, Run, RunKind, RunOrigin, run_id_for
from biopilot.samples import from_us, to_us, utcnow, value_problem
from storage.sqlite import connect

SCHEMA_VERSION = 3

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    equipment TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_equipment ON runs (equipment, start_us);
CREATE TABLE IF NOT EXISTS run_kpis (
    run_id TEXT NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    value REAL,
    unit TEXT NOT NULL,
    coverage REAL NOT NULL,
    flags TEXT NOT NULL,
    final INTEGER NOT NULL,
    computed_us INTEGER NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    ts_us INTEGER NOT NULL
);
"""

_SCHEMA_V2_TABLES = """
CREATE TABLE IF NOT EXISTS catalog_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS phases (
    run_id TEXT NOT NULL REFERENCES runs (id),
    start_us INTEGER NOT NULL,
    end_us INTEGER,
    name TEXT NOT NULL,
    PRIMARY KEY (run_id, start_us)
);
CREATE TABLE IF NOT EXISTS lab_results (
    equipment TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    analyte TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    sample_volume_l REAL NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (equipment, ts_us, analyte)
);
CREATE TABLE IF NOT EXISTS imports (
    sha256 TEXT NOT NULL,
    run_id TEXT NOT NULL,
    file TEXT NOT NULL,
    rows INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    imported_us INTEGER NOT NULL,
    PRIMARY KEY (sha256, run_id)
);
"""

_SCHEMA_V3_TABLES = """
CREATE TABLE IF NOT EXISTS pending_imports (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    equipment TEXT NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    phase TEXT NOT NULL,
    created_run INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0,
    samples INTEGER NOT NULL DEFAULT 0,
    replaced TEXT NOT NULL DEFAULT '[]',
    started_us INTEGER NOT NULL
);
"""

_V2_COLUMNS = {
    "runs": [
        ("kind", "TEXT NOT NULL DEFAULT 'other'"),
        ("trial_id", "TEXT"),
        ("product", "TEXT"),
        ("upstream_id", "TEXT"),
        ("origin", "TEXT NOT NULL DEFAULT 'live'"),
        ("note", "TEXT NOT NULL DEFAULT ''"),
    ],
    "run_kpis": [("inputs", "TEXT NOT NULL DEFAULT '{}'")],
}
_V3_COLUMNS = {"runs": [("state", "TEXT NOT NULL DEFAULT 'ready'")]}
_READY = "state = 'ready'"

_RUN_COLUMNS = "id, equipment, batch_id, start_us, end_us, kind, trial_id, product, upstream_id, origin, note"


class Catalog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()
        self._migrate()

    # -- schema ----------------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION. Idempotent, in one transaction, safe with concurrent openers."""
        try:
            self._conn.executescript(_SCHEMA_V1 + _SCHEMA_V2_TABLES + _SCHEMA_V3_TABLES)
            if self.schema_version() >= SCHEMA_VERSION:
                return
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                for table, columns in (*_V2_COLUMNS.items(), *_V3_COLUMNS.items()):
                    have = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
                    for name, decl in columns:
                        if name not in have:
                            self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                self._conn.execute("CREATE INDEX IF NOT EXISTS runs_by_upstream ON runs (upstream_id)")
                self._conn.execute(
                    "INSERT OR REPLACE INTO catalog_meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot create or migrate the catalog schema ({exc})") from None

    def schema_version(self) -> int:
        row = self._conn.execute("SELECT value FROM catalog_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 1

    def _execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: catalog query failed ({exc})") from None

    def _transaction(self, what: str, statements: Iterable[tuple[str, object]]) -> None:
        """Run (sql, params) or (sql, [params…]) statements in one write transaction."""
        with self._lock:
            try:
                with self._conn:
                    self._conn.execute("BEGIN IMMEDIATE")
                    for sql, params in statements:
                        if isinstance(params, list):
                            self._conn.executemany(sql, params)
                        else:
                            self._conn.execute(sql, params)  # type: ignore[arg-type]
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot {what} ({exc})") from None

    # -- runs ------------------------------------------------------------------------------------------
    def open_run(self, equipment: str, batch_id: str, start: datetime) -> Run:
        """Record that a live run started; a run that exists already is left as it is and returned.
        IdError (nothing written) for an equipment or batch id that is not a valid id."""
        run_id = run_id_for(check_equipment_id(equipment), check_batch_id(batch_id))
        self._execute(
            "INSERT OR IGNORE INTO runs (id, equipment, batch_id, start_us) VALUES (?, ?, ?, ?)",
            (run_id, equipment, batch_id, to_us(start)),
        )
        run = self._any_run(run_id)
        assert run is not None
        return run

    def create_run(
        self,
        equipment: str,
        batch_id: str,
        start: datetime,
        end: datetime | None = None,
        *,
        kind: str = RunKind.OTHER.value,
        trial_id: str | None = None,
        product: str | None = None,
        upstream_id: str | None = None,
        origin: str = RunOrigin.MANUAL.value,
        note: str = "",
    ) -> Run:
        """Create a run (imported or manual); StoreError if its id exists, IdError for a bad id."""
        row = _new_run_row(
            equipment, batch_id, start, end, kind, trial_id, product, upstream_id, origin, note
        )
        run_id = str(row[0])
        try:
            with self._lock, self._conn:
                self._conn.execute(f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({_RUN_PARAMS})", row)
        except sqlite3.IntegrityError:
            raise StoreError(f"run {run_id} exists already") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot create run {run_id} ({exc})") from None
        run = self.run(run_id)
        assert run is not None
        return run

    _EDITABLE = frozenset({"kind", "trial_id", "product", "upstream_id", "note", "start", "end"})

    def update_run(self, run_id: str, **changes: object) -> Run:
        """Change a run's kind, trial_id, product, upstream_id, note, start or end (None clears a value)."""
        run = self.run(run_id)
        if run is None:
            raise StoreError(f"no run {run_id!r} in the catalog")
        unknown = set(changes) - self._EDITABLE
        if unknown:
            raise StoreError(f"run fields cannot be edited: {', '.join(sorted(unknown))}")
        sets, params = [], []
        for key, value in changes.items():
            if key == "kind":
                value = _kind(str(value))
            if key == "trial_id" and value is not None:
                check_trial_id(value)
            if key in ("start", "end"):
                if key == "start" and value is None:
                    raise StoreError(f"run {run_id}: a run always has a start")
                sets.append(f"{key}_us = ?")
                params.append(to_us(value) if isinstance(value, datetime) else None)
            else:
                sets.append(f"{key} = ?")
                params.append(value)
        new_start = changes.get("start", run.start)
        new_end = changes.get("end", run.end)
        if isinstance(new_start, datetime) and isinstance(new_end, datetime) and new_end < new_start:
            raise StoreError(
                f"run {run_id}: end {new_end.isoformat()} is before start {new_start.isoformat()}"
            )
        upstream = changes.get("upstream_id")
        if upstream is not None:
            if self.run(str(upstream)) is None:
                raise StoreError(f"run {run_id}: upstream run {upstream!r} is not in the catalog")
            chain = self._upstream_chain(str(upstream))
            if run_id in chain:
                what = (
                    "its own upstream"
                    if upstream == run_id
                    else f"upstream of {upstream} (its upstream chain: {' → '.join(chain)})"
                )
                raise StoreError(f"run {run_id} cannot be {what}")
        if sets:
            self._execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*params, run_id))
        updated = self.run(run_id)
        assert updated is not None
        return updated

    def _upstream_chain(self, run_id: str) -> list[str]:
        """run_id and the runs upstream of it, nearest first (stops at a loop)."""
        chain = [run_id]
        while True:
            rows = self._execute("SELECT upstream_id FROM runs WHERE id = ?", (chain[-1],))
            if not rows or rows[0][0] is None or str(rows[0][0]) in chain:
                return chain
            chain.append(str(rows[0][0]))

    def close_run(self, run_id: str, end: datetime) -> None:
        self._execute("UPDATE runs SET end_us = ? WHERE id = ?", (to_us(end), run_id))

    def reopen_run(self, run_id: str) -> None:
        self._execute("UPDATE runs SET end_us = NULL WHERE id = ?", (run_id,))

    def run(self, run_id: str) -> Run | None:
        """The run, or None (also while an import that creates it is under way)."""
        rows = self._execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ? AND {_READY}", (run_id,))
        return _run(rows[0]) if rows else None

    def _any_run(self, run_id: str) -> Run | None:
        rows = self._execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def runs(
        self,
        equipment: str | None = None,
        *,
        open_only: bool = False,
        kind: str | None = None,
        trial_id: str | None = None,
    ) -> list[Run]:
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        where, params = [_READY], []
        for column, value in (("equipment", equipment), ("kind", kind), ("trial_id", trial_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if open_only:
            where.append("end_us IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_us DESC, id"
        return [_run(r) for r in self._execute(sql, tuple(params))]

    def downstream_runs(self, run_id: str) -> list[Run]:
        rows = self._execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE upstream_id = ? AND {_READY} ORDER BY start_us, id",
            (run_id,),
        )
        return [_run(r) for r in rows]

    # -- phases ----------------------------------------------------------------------------------------
    def set_phases(self, run_id: str, phases: Iterable[Phase]) -> None:
        """Replace the run's phases."""
        phases = list(phases)
        for phase in phases:
            _check_phase(run_id, phase)
        rows = [(run_id, to_us(p.start), to_us(p.end) if p.end is not None else None, p.name) for p in phases]
        self._transaction(
            f"store the phases of {run_id}",
            [
                ("DELETE FROM phases WHERE run_id = ?", (run_id,)),
                ("INSERT OR REPLACE INTO phases (run_id, start_us, end_us, name) VALUES (?, ?, ?, ?)", rows),
            ],
        )

    def add_phase(self, run_id: str, phase: Phase) -> None:
        _check_phase(run_id, phase)
        self._execute(
            "INSERT OR REPLACE INTO phases (run_id, start_us, end_us, name) VALUES (?, ?, ?, ?)",
            (run_id, to_us(phase.start), to_us(phase.end) if phase.end is not None else None, phase.name),
        )

    def phases(self, run_id: str) -> list[Phase]:
        rows = self._execute(
            "SELECT name, start_us, end_us FROM phases WHERE run_id = ? ORDER BY start_us", (run_id,)
        )
        return [
            Phase(str(n), from_us(int(s)), from_us(int(e)) if e is not None else None)  # type: ignore[call-overload]
            for n, s, e in rows
        ]

    # -- lab results -----------------------------------------------------------------------------------
    def add_lab_results(self, results: Iterable[LabResult]) -> int:
        """Store lab results; one of the same equipment, time and analyte is replaced (re-import is safe).
        StoreError (nothing stored) for a value that is no measurement (NaN, ±inf, beyond ±1e12)."""
        results = list(results)
        for r in results:
            for what, number in (("value", r.value), ("sample volume", r.sample_volume_l)):
                problem = value_problem(float(number))
                if problem is not None:
                    raise StoreError(
                        f"lab result {r.analyte!r} of {r.equipment} at {r.ts.isoformat()}: {what} {number!r}"
                        f" {problem}; nothing stored"
                    )
        rows = [
            (r.equipment, to_us(r.ts), r.analyte, float(r.value), r.unit, float(r.sample_volume_l), r.source)
            for r in results
        ]
        self._transaction(
            "store lab results",
            [("INSERT OR REPLACE INTO lab_results VALUES (?, ?, ?, ?, ?, ?, ?)", rows)],
        )
        return len(rows)

    def lab_results(
        self, equipment: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[LabResult]:
        """Lab results of an equipment with start ≤ time ≤ end, in time order."""
        t0 = to_us(start) if start is not None else -(2**62)
        t1 = to_us(end) if end is not None else 2**62
        rows = self._execute(
            "SELECT equipment, ts_us, analyte, value, unit, sample_volume_l, source FROM lab_results"
            " WHERE equipment = ? AND ts_us >= ? AND ts_us <= ? ORDER BY ts_us, analyte",
            (equipment, t0, t1),
        )
        return [
            LabResult(str(e), from_us(int(t)), str(a), float(v), str(u), float(vol), str(src))  # type: ignore[arg-type,call-overload]
            for e, t, a, v, u, vol, src in rows
        ]

    def run_lab_results(self, run: Run) -> list[LabResult]:
        """The lab results attached to a run: those of its equipment taken between its start and end."""
        return self.lab_results(run.equipment, run.start, run.end)

    # -- imports ---------------------------------------------------------------------------------------
    def record_import(self, record: ImportRecord) -> None:
        self._execute(
            "INSERT OR REPLACE INTO imports VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.sha256,
                record.run_id,
                record.file,
                record.rows,
                record.samples,
                to_us(record.imported),
            ),
        )

    def imports(self, sha256: str | None = None, run_id: str | None = None) -> list[ImportRecord]:
        sql = "SELECT sha256, run_id, file, rows, samples, imported_us FROM imports"
        where, params = [], []
        for column, value in (("sha256", sha256), ("run_id", run_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY imported_us"
        return [
            ImportRecord(str(h), str(r), str(f), int(n), int(s), from_us(int(t)))  # type: ignore[call-overload]
            for h, r, f, n, s, t in self._execute(sql, tuple(params))
        ]

    # -- imports under way (the journal storage/importers.py keeps; see its module doc) ------------------
    def begin_import(self, token: str, run_id: str, equipment: str, file: str, sha256: str) -> PendingImport:
        """Journal an import that starts staging its file (nothing of it is in the store yet)."""
        started = utcnow()
        rows = self._execute(
            "INSERT INTO pending_imports (token, run_id, equipment, file, sha256, phase, started_us)"
            " VALUES (?, ?, ?, ?, ?, 'staging', ?) RETURNING id",
            (token, run_id, equipment, file, sha256, to_us(started)),
        )
        pending = self.pending_import(int(rows[0][0]))  # type: ignore[call-overload]
        assert pending is not None
        return pending

    def pending_imports(self, run_id: str | None = None) -> list[PendingImport]:
        sql = f"SELECT {_PENDING_COLUMNS} FROM pending_imports"
        params: tuple[object, ...] = ()
        if run_id is not None:
            sql, params = sql + " WHERE run_id = ?", (run_id,)
        return [_pending(r) for r in self._execute(sql + " ORDER BY id", params)]

    def pending_import(self, pending_id: int) -> PendingImport | None:
        rows = self._execute(f"SELECT {_PENDING_COLUMNS} FROM pending_imports WHERE id = ?", (pending_id,))
        return _pending(rows[0]) if rows else None

    def start_publishing(
        self,
        pending_id: int,
        run: Run,
        *,
        create: bool,
        replaced: Iterable[str] = (),
        rows: int = 0,
        samples: int = 0,
    ) -> None:
        """In one transaction: create the import's run, hidden while it is 'importing' (create=True), or
        set the existing run's start and end to run's; flag the KPIs of the `replaced` runs 'stale'; and
        journal that the import now publishes its samples (from here on it is finished, not rolled back)."""
        replaced = sorted(set(replaced))
        if create:
            row = _new_run_row(
                run.equipment,
                run.batch_id,
                run.start,
                run.end,
                run.kind,
                run.trial_id,
                run.product,
                run.upstream_id,
                run.origin,
                run.note,
            )
            statements: list[tuple[str, object]] = [
                (f"INSERT INTO runs ({_RUN_COLUMNS}, state) VALUES ({_RUN_PARAMS}, 'importing')", row)
            ]
        else:
            end = to_us(run.end) if run.end is not None else None
            statements = [
                ("UPDATE runs SET start_us = ?, end_us = ? WHERE id = ?", (to_us(run.start), end, run.id))
            ]
        statements += [(_MARK_STALE, (r,)) for r in replaced]
        statements.append(
            (
                "UPDATE pending_imports SET phase = 'publishing', created_run = ?, replaced = ?, rows = ?,"
                " samples = ? WHERE id = ? AND phase = 'staging'",
                (int(create), json.dumps(replaced), rows, samples, pending_id),
            )
        )
        try:
            self._transaction(f"start publishing the samples of run {run.id}", statements)
        except StoreError as exc:
            if "UNIQUE constraint failed: runs.id" in str(exc):
                raise StoreError(f"run {run.id} exists already") from None
            raise

    def finish_import(self, pending_id: int, record: ImportRecord) -> None:
        """In one transaction: the run is 'ready' (listed), the import recorded, its journal entry gone."""
        self._transaction(
            f"finish the import into {record.run_id}",
            [
                ("UPDATE runs SET state = 'ready' WHERE id = ?", (record.run_id,)),
                (
                    "INSERT OR REPLACE INTO imports VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.sha256,
                        record.run_id,
                        record.file,
                        record.rows,
                        record.samples,
                        to_us(record.imported),
                    ),
                ),
                ("DELETE FROM pending_imports WHERE id = ?", (pending_id,)),
            ],
        )

    def abandon_import(self, pending_id: int) -> None:
        """Forget an import that never started publishing (nothing of it is in the store or the runs)."""
        self._execute("DELETE FROM pending_imports WHERE id = ? AND phase = 'staging'", (pending_id,))

    # -- KPIs ------------------------------------------------------------------------------------------
    def set_kpis(self, run_id: str, kpis: list[KpiRecord], *, replace_all: bool = False) -> None:
        """Store KPIs of a run; replace_all also removes the run's KPIs that are not in `kpis`
        (a recomputation with another KPI version or other inputs)."""
        rows = [
            (
                run_id,
                k.name,
                k.value,
                k.unit,
                k.coverage,
                json.dumps(list(k.flags)),
                int(k.final),
                to_us(k.computed),
                k.version,
                json.dumps(dict(k.inputs), sort_keys=True),
            )
            for k in kpis
        ]
        statements: list[tuple[str, object]] = []
        if replace_all:
            statements.append(("DELETE FROM run_kpis WHERE run_id = ?", (run_id,)))
        statements.append(
            (
                "INSERT OR REPLACE INTO run_kpis (run_id, name, value, unit, coverage, flags, final,"
                " computed_us, version, inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        )
        self._transaction(f"store KPIs of {run_id}", statements)

    def kpis(self, run_id: str) -> list[KpiRecord]:
        rows = self._execute(
            "SELECT name, value, unit, coverage, flags, final, version, computed_us, inputs FROM run_kpis"
            " WHERE run_id = ? ORDER BY name",
            (run_id,),
        )
        return [
            KpiRecord(
                name=str(r[0]),
                value=r[1],  # type: ignore[arg-type]
                unit=str(r[2]),
                coverage=float(r[3]),  # type: ignore[arg-type]
                flags=tuple(json.loads(str(r[4]))),
                final=bool(r[5]),
                version=str(r[6]),
                computed=from_us(int(r[7])),  # type: ignore[call-overload]
                inputs=json.loads(str(r[8])),
            )
            for r in rows
        ]

    # -- processing cursors ----------------------------------------------------------------------------
    def cursor(self, name: str) -> int | None:
        rows = self._execute("SELECT ts_us FROM cursors WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else None  # type: ignore[call-overload]

    def set_cursor(self, name: str, ts_us: int) -> None:
        self._execute("INSERT OR REPLACE INTO cursors (name, ts_us) VALUES (?, ?)", (name, ts_us))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass(frozen=True)
class PendingImport:
    """An import under way (or interrupted): phase 'staging' (its samples are in its stage file only) or
    'publishing' (its run exists and its samples are going into the store)."""

    id: int
    token: str  # names the import's stage and lock files
    run_id: str
    equipment: str
    file: str
    sha256: str
    phase: str
    created_run: bool
    rows: int
    samples: int
    replaced: tuple[str, ...]  # runs whose samples it replaces (their KPIs are flagged stale)
    started: datetime


_PENDING_COLUMNS = (
    "id, token, run_id, equipment, file, sha256, phase, created_run, rows, samples, replaced, started_us"
)
# A KPI computed before an import replaced some of its run's samples says so until it is recomputed.
_MARK_STALE = (
    "UPDATE run_kpis SET flags = json_insert(flags, '$[#]', 'stale') WHERE run_id = ?"
    " AND NOT EXISTS (SELECT 1 FROM json_each(run_kpis.flags) WHERE value = 'stale')"
)


def _pending(row: tuple[object, ...]) -> PendingImport:
    pid, token, run_id, eq, file, sha, phase, created, rows, samples, replaced, started = row
    return PendingImport(
        int(pid),  # type: ignore[call-overload]
        str(token),
        str(run_id),
        str(eq),
        str(file),
        str(sha),
        str(phase),
        bool(created),
        int(rows),  # type: ignore[call-overload]
        int(samples),  # type: ignore[call-overload]
        tuple(json.loads(str(replaced))),
        from_us(int(started)),  # type: ignore[call-overload]
    )


def _check_phase(run_id: str, phase: Phase) -> None:
    if phase.end is not None and phase.end < phase.start:
        raise StoreError(
            f"run {run_id}: phase {phase.name!r} ends ({phase.end.isoformat()}) before it starts"
            f" ({phase.start.isoformat()})"
        )


_RUN_PARAMS = ", ".join("?" * len(_RUN_COLUMNS.split(", ")))


def _new_run_row(
    equipment: str,
    batch_id: str,
    start: datetime,
    end: datetime | None,
    kind: str,
    trial_id: str | None,
    product: str | None,
    upstream_id: str | None,
    origin: str,
    note: str,
) -> tuple[object, ...]:
    """The row of a new run in _RUN_COLUMNS order, its ids and times checked."""
    run_id = run_id_for(check_equipment_id(equipment), check_batch_id(batch_id))
    if trial_id is not None:
        check_trial_id(trial_id)
    if upstream_id is not None:
        check_run_id(upstream_id)
        if upstream_id == run_id:
            raise StoreError(f"run {run_id} cannot be its own upstream")
    if end is not None and end < start:
        raise StoreError(f"run {run_id}: end {end.isoformat()} is before start {start.isoformat()}")
    return (
        run_id,
        equipment,
        batch_id,
        to_us(start),
        to_us(end) if end is not None else None,
        _kind(kind),
        trial_id,
        product,
        upstream_id,
        RunOrigin(origin).value,
        note,
    )


def _kind(value: str) -> str:
    try:
        return RunKind(value).value
    except ValueError:
        raise StoreError(
            f"{value!r} is not a run kind; expected one of: {', '.join(k.value for k in RunKind)}"
        ) from None


def _run(row: tuple[object, ...]) -> Run:
    run_id, equipment, batch_id, start_us, end_us, kind, trial, product, upstream, origin, note = row
    return Run(
        id=str(run_id),
        equipment=str(equipment),
        batch_id=str(batch_id),
        start=from_us(int(start_us)),  # type: ignore[call-overload]
        end=from_us(int(end_us)) if end_us is not None else None,  # type: ignore[call-overload]
        kind=str(kind),
        trial_id=str(trial) if trial is not None else None,
        product=str(product) if product is not None else None,
        upstream_id=str(upstream) if upstream is not None else None,
        origin=str(origin),
        note=str(note or ""),
    )
