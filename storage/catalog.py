"""The catalog: runs and their KPIs, in the embedded database beside the time series.

A run is one batch on one piece of equipment, from the first to the last sample that carried its batch id.
Its id is "<equipment>:<batch id>", so the fermentation and the recovery run that processed its harvest
share the batch id and stay linked.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from biopilot.errors import StoreError
from biopilot.samples import from_us, to_us, utcnow
from storage.sqlite import connect

_SCHEMA = """
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


def run_id_for(equipment: str, batch_id: str) -> str:
    return f"{equipment}:{batch_id}"


@dataclass(frozen=True)
class Run:
    id: str
    equipment: str
    batch_id: str
    start: datetime
    end: datetime | None  # None while the run is live

    @property
    def is_open(self) -> bool:
        return self.end is None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "equipment": self.equipment,
            "batch_id": self.batch_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "status": "open" if self.is_open else "closed",
        }


@dataclass(frozen=True)
class KpiRecord:
    """One KPI of one run, as processing computed it."""

    name: str
    value: float | None
    unit: str
    coverage: float  # share of the run with usable data for the inputs, 0..1
    flags: tuple[str, ...] = ()  # e.g. "incomplete", "provisional"
    final: bool = False  # False while the run is live (a provisional value)
    version: str = ""
    computed: datetime = field(default_factory=utcnow)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "coverage": round(self.coverage, 4),
            "flags": list(self.flags),
            "final": self.final,
            "version": self.version,
            "computed": self.computed.isoformat(),
        }


class Catalog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()
        try:
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot create the catalog schema ({exc})") from None

    def _execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: catalog query failed ({exc})") from None

    # -- runs ------------------------------------------------------------------------------------------
    def open_run(self, equipment: str, batch_id: str, start: datetime) -> Run:
        """Record that a run started; a run that exists already is left as it is and returned."""
        run_id = run_id_for(equipment, batch_id)
        self._execute(
            "INSERT OR IGNORE INTO runs (id, equipment, batch_id, start_us) VALUES (?, ?, ?, ?)",
            (run_id, equipment, batch_id, to_us(start)),
        )
        run = self.run(run_id)
        assert run is not None
        return run

    def close_run(self, run_id: str, end: datetime) -> None:
        self._execute("UPDATE runs SET end_us = ? WHERE id = ?", (to_us(end), run_id))

    def reopen_run(self, run_id: str) -> None:
        self._execute("UPDATE runs SET end_us = NULL WHERE id = ?", (run_id,))

    def run(self, run_id: str) -> Run | None:
        rows = self._execute(
            "SELECT id, equipment, batch_id, start_us, end_us FROM runs WHERE id = ?", (run_id,)
        )
        return _run(rows[0]) if rows else None

    def runs(self, equipment: str | None = None, *, open_only: bool = False) -> list[Run]:
        sql = "SELECT id, equipment, batch_id, start_us, end_us FROM runs"
        where, params = [], []
        if equipment is not None:
            where.append("equipment = ?")
            params.append(equipment)
        if open_only:
            where.append("end_us IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_us DESC, id"
        return [_run(r) for r in self._execute(sql, tuple(params))]

    # -- KPIs ------------------------------------------------------------------------------------------
    def set_kpis(self, run_id: str, kpis: list[KpiRecord]) -> None:
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
            )
            for k in kpis
        ]
        with self._lock:
            try:
                with self._conn:
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO run_kpis VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot store KPIs of {run_id} ({exc})") from None

    def kpis(self, run_id: str) -> list[KpiRecord]:
        rows = self._execute(
            "SELECT name, value, unit, coverage, flags, final, version, computed_us FROM run_kpis"
            " WHERE run_id = ? ORDER BY name",
            (run_id,),
        )
        return [
            KpiRecord(
                name=str(r[0]),
                value=r[1],
                unit=str(r[2]),
                coverage=float(r[3]),  # type: ignore[arg-type]
                flags=tuple(json.loads(str(r[4]))),
                final=bool(r[5]),
                version=str(r[6]),
                computed=from_us(int(r[7])),  # type: ignore[call-overload]
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


def _run(row: tuple[object, ...]) -> Run:
    run_id, equipment, batch_id, start_us, end_us = row
    return Run(
        id=str(run_id),
        equipment=str(equipment),
        batch_id=str(batch_id),
        start=from_us(int(start_us)),  # type: ignore[call-overload]
        end=from_us(int(end_us)) if end_us is not None else None,  # type: ignore[call-overload]
    )
