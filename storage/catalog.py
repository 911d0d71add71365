"""The catalog: runs, their phases, lab results, imports and KPIs — in the embedded SQLite file beside the
time series, or in PostgreSQL (`[storage] catalog = "postgresql://…"`), through storage/db.py.

A run is one batch on one piece of equipment. Its id is "<equipment>:<batch id>", so the fermentation and
the recovery run that processed its harvest share the batch id; the downstream run also names the upstream
run it processed (`upstream_id`), which is how a yield waterfall runs from the fermenter to purified product.

Live runs are detected from batch-id samples (origin "live"); imported historian runs (origin "import") and
runs created by hand (origin "manual") come from the CLI. A run's kind says what a trial verdict may use it
for: "baseline", "trial" or "other".

The schema is the ordered list in storage/migrations.py, applied when a Catalog opens its database.

Ids are checked (biopilot.ids) before a run is written: equipment and batch ids, trial ids and upstream
links (a run is not its own upstream, nor upstream of a run upstream of it); phases do not end before they
start; lab values are measurements (finite, within ±1e12). A run an import is creating stays 'importing'
(not listed, not found by `run`) until the import is complete; `pending_imports` is the journal of the
imports under way (storage/importers.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from biopilot.errors import StoreError
from biopilot.ids import check_batch_id, check_equipment_id, check_run_id, check_trial_id
from biopilot.records import ImportRecord, KpiRecord, LabResult, Phase, Run, RunKind, RunOrigin, run_id_for
from biopilot.samples import from_us, to_us, utcnow, value_problem
from storage.audit import AuditLog
from storage.charters import ChartersMixin
from storage.db import Database, SqliteDatabase, migrate, open_database, schema_version
from storage.migrations import MIGRATIONS
from storage.trials import TrialsMixin
from storage.users import UsersMixin

SCHEMA_VERSION = MIGRATIONS[-1].version

_UPSERT_PHASE = (
    "INSERT INTO phases (run_id, start_us, end_us, name) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (run_id, start_us) DO UPDATE SET end_us = excluded.end_us, name = excluded.name"
)
_UPSERT_LAB = (
    "INSERT INTO lab_results (equipment, ts_us, analyte, value, unit, sample_volume_l, source)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (equipment, ts_us, analyte) DO UPDATE SET"
    " value = excluded.value, unit = excluded.unit, sample_volume_l = excluded.sample_volume_l,"
    " source = excluded.source"
)
_UPSERT_IMPORT = (
    "INSERT INTO imports (sha256, run_id, file, rows, samples, imported_us) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (sha256, run_id) DO UPDATE SET file = excluded.file, rows = excluded.rows,"
    " samples = excluded.samples, imported_us = excluded.imported_us"
)
_UPSERT_KPI = (
    "INSERT INTO run_kpis (run_id, name, value, unit, coverage, flags, final, computed_us, version, inputs)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value,"
    " unit = excluded.unit, coverage = excluded.coverage, flags = excluded.flags, final = excluded.final,"
    " computed_us = excluded.computed_us, version = excluded.version, inputs = excluded.inputs"
)
_RUN_COLUMNS = "id, equipment, batch_id, start_us, end_us, kind, trial_id, product, upstream_id, origin, note"
_RUN_PARAMS = ", ".join("?" * len(_RUN_COLUMNS.split(", ")))
_READY = "state = 'ready'"


class Catalog(UsersMixin, TrialsMixin, ChartersMixin):
    """Runs, phases, lab results, imports, KPIs and processing cursors; users, sessions, trials and trial
    invitations (storage/users.py, storage/trials.py); trial charters, members and exclusions
    (storage/charters.py); the audit log as `catalog.audit` (storage/audit.py).
    `target`: the SQLite file, a postgresql:// URL (password from `password_env`), or an open Database."""

    def __init__(self, target: str | Path | Database, *, password_env: str | None = None) -> None:
        self.db = (
            target if not isinstance(target, str | Path) else open_database(target, password_env=password_env)
        )
        self.path = self.db.path if isinstance(self.db, SqliteDatabase) else None
        try:
            migrate(self.db, MIGRATIONS)
        except StoreError:
            self.db.close()
            raise
        self.audit = AuditLog(self.db)

    # -- schema ----------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        return schema_version(self.db)

    def _execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.db.query(sql, params)

    def _transaction(self, what: str, statements: Iterable[tuple[str, object]]) -> None:
        """Run (sql, params) or (sql, [params…]) statements in one write transaction."""
        with self.db.transaction(what) as cur:
            for sql, params in statements:
                if isinstance(params, list):
                    cur.executemany(sql, params)
                else:
                    cur.execute(sql, params)  # type: ignore[arg-type]

    # -- runs ------------------------------------------------------------------------------------------
    def open_run(self, equipment: str, batch_id: str, start: datetime) -> Run:
        """Record that a live run started; a run that exists already is left as it is and returned.
        IdError (nothing written) for an equipment or batch id that is not a valid id."""
        run_id = run_id_for(check_equipment_id(equipment), check_batch_id(batch_id))
        self._execute(
            "INSERT INTO runs (id, equipment, batch_id, start_us) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
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
        with self.db.transaction(f"create run {run_id}") as cur:
            if cur.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)):
                raise StoreError(f"run {run_id} exists already")
            cur.execute(f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({_RUN_PARAMS})", row)
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
                (_UPSERT_PHASE, rows),
            ],
        )

    def add_phase(self, run_id: str, phase: Phase) -> None:
        _check_phase(run_id, phase)
        self._execute(
            _UPSERT_PHASE,
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
            [(_UPSERT_LAB, rows)],
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
            _UPSERT_IMPORT,
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
        self._execute(
            "INSERT INTO pending_imports (token, run_id, equipment, file, sha256, phase, started_us)"
            " VALUES (?, ?, ?, ?, ?, 'staging', ?)",
            (token, run_id, equipment, file, sha256, to_us(utcnow())),
        )
        pending = self.pending_import(token)
        assert pending is not None
        return pending

    def pending_imports(self, run_id: str | None = None) -> list[PendingImport]:
        sql = f"SELECT {_PENDING_COLUMNS} FROM pending_imports"
        params: tuple[object, ...] = ()
        if run_id is not None:
            sql, params = sql + " WHERE run_id = ?", (run_id,)
        return [_pending(r) for r in self._execute(sql + " ORDER BY started_us, token", params)]

    def pending_import(self, token: str) -> PendingImport | None:
        rows = self._execute(f"SELECT {_PENDING_COLUMNS} FROM pending_imports WHERE token = ?", (token,))
        return _pending(rows[0]) if rows else None

    def start_publishing(
        self,
        token: str,
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
        with self.db.transaction(f"start publishing the samples of run {run.id}") as cur:
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
                if cur.execute("SELECT 1 FROM runs WHERE id = ?", (run.id,)):
                    raise StoreError(f"run {run.id} exists already")
                cur.execute(
                    f"INSERT INTO runs ({_RUN_COLUMNS}, state) VALUES ({_RUN_PARAMS}, 'importing')", row
                )
            else:
                end = to_us(run.end) if run.end is not None else None
                cur.execute(
                    "UPDATE runs SET start_us = ?, end_us = ? WHERE id = ?", (to_us(run.start), end, run.id)
                )
            for other in replaced:  # a KPI computed before samples of its run were replaced says so
                for name, flags in cur.execute("SELECT name, flags FROM run_kpis WHERE run_id = ?", (other,)):
                    listed = json.loads(str(flags))
                    if "stale" not in listed:
                        cur.execute(
                            "UPDATE run_kpis SET flags = ? WHERE run_id = ? AND name = ?",
                            (json.dumps([*listed, "stale"]), other, name),
                        )
            cur.execute(
                "UPDATE pending_imports SET phase = 'publishing', created_run = ?, replaced = ?, rows = ?,"
                " samples = ? WHERE token = ? AND phase = 'staging'",
                (int(create), json.dumps(replaced), rows, samples, token),
            )

    def finish_import(self, token: str, record: ImportRecord) -> None:
        """In one transaction: the run is 'ready' (listed), the import recorded, its journal entry gone."""
        self._transaction(
            f"finish the import into {record.run_id}",
            [
                ("UPDATE runs SET state = 'ready' WHERE id = ?", (record.run_id,)),
                (
                    _UPSERT_IMPORT,
                    (
                        record.sha256,
                        record.run_id,
                        record.file,
                        record.rows,
                        record.samples,
                        to_us(record.imported),
                    ),
                ),
                ("DELETE FROM pending_imports WHERE token = ?", (token,)),
            ],
        )

    def abandon_import(self, token: str) -> None:
        """Forget an import that never started publishing (nothing of it is in the store or the runs)."""
        self._execute("DELETE FROM pending_imports WHERE token = ? AND phase = 'staging'", (token,))

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
                _UPSERT_KPI,
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
        self._execute(
            "INSERT INTO cursors (name, ts_us) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET ts_us = excluded.ts_us",
            (name, ts_us),
        )

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class PendingImport:
    """An import under way (or interrupted): phase 'staging' (its samples are in its stage file only) or
    'publishing' (its run exists and its samples are going into the store)."""

    token: str  # names the import's journal entry, stage file and lock file
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
    "token, run_id, equipment, file, sha256, phase, created_run, rows, samples, replaced, started_us"
)


def _pending(row: tuple[object, ...]) -> PendingImport:
    token, run_id, eq, file, sha, phase, created, rows, samples, replaced, started = row
    return PendingImport(
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
