"""The embedded catalog's own history: SQLite files written by earlier releases are migrated in place."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from biopilot.records import Phase, Run
from storage.catalog import SCHEMA_VERSION, Catalog

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


# -- schema migration ----------------------------------------------------------------------------------
_V1_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, equipment TEXT NOT NULL, batch_id TEXT NOT NULL,
                   start_us INTEGER NOT NULL, end_us INTEGER);
CREATE INDEX runs_by_equipment ON runs (equipment, start_us);
CREATE TABLE run_kpis (run_id TEXT NOT NULL REFERENCES runs (id), name TEXT NOT NULL, value REAL,
    unit TEXT NOT NULL, coverage REAL NOT NULL, flags TEXT NOT NULL, final INTEGER NOT NULL,
    computed_us INTEGER NOT NULL, version TEXT NOT NULL, PRIMARY KEY (run_id, name));
CREATE TABLE cursors (name TEXT PRIMARY KEY, ts_us INTEGER NOT NULL);
"""


def _v1_file(path: Path) -> None:
    """A catalog exactly as the first release wrote it (schema 1, no version row), with one run and KPI."""
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    conn.execute("INSERT INTO runs VALUES ('F-101:B-1', 'F-101', 'B-1', ?, ?)", (1_709_280_000_000_000, None))
    conn.execute(
        "INSERT INTO run_kpis VALUES ('F-101:B-1', 'energy.total', 12.5, 'kWh', 0.9, '[\"incomplete\"]', 0,"
        " 1709280000000000, 'energy-1')"
    )
    conn.execute("INSERT INTO cursors VALUES ('runs:F-101.batch_id', 42)")
    conn.commit()
    conn.close()


def test_a_schema_1_file_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _v1_file(path)
    c = Catalog(path)
    try:
        assert c.schema_version() == SCHEMA_VERSION
        (run,) = c.runs()
        assert run == Run("F-101:B-1", "F-101", "B-1", datetime(2024, 3, 1, 8, 0, tzinfo=UTC), None)
        assert (run.kind, run.origin, run.trial_id, run.upstream_id) == ("other", "live", None, None)
        (kpi,) = c.kpis("F-101:B-1")
        assert (kpi.value, kpi.flags, kpi.final, kpi.inputs) == (12.5, ("incomplete",), False, {})
        assert c.cursor("runs:F-101.batch_id") == 42
        c.update_run("F-101:B-1", kind="baseline")  # the new columns work
        c.set_phases("F-101:B-1", [Phase("batch", at(0), at(1))])
    finally:
        c.close()
    # opening again (and again) is a no-op: the migration is idempotent
    for _ in range(2):
        c = Catalog(path)
        try:
            assert c.schema_version() == SCHEMA_VERSION
            run2 = c.run("F-101:B-1")
            assert run2 is not None and run2.kind == "baseline"
            assert c.phases("F-101:B-1") == [Phase("batch", at(0), at(1))]
        finally:
            c.close()


def test_a_half_migrated_file_is_completed(tmp_path: Path) -> None:
    # A file where an earlier attempt added one of the new columns but wrote no version row.
    path = tmp_path / "half.db"
    _v1_file(path)
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'other'")
    conn.commit()
    conn.close()
    c = Catalog(path)
    try:
        assert c.schema_version() == SCHEMA_VERSION
        assert c.runs()[0].origin == "live"
    finally:
        c.close()
