"""storage/catalog.py: runs, KPIs and cursors on a real SQLite file in tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from biopilot.errors import StoreError
from biopilot.records import ImportRecord, KpiRecord, LabResult, Phase, Run, run_id_for
from storage.catalog import SCHEMA_VERSION, Catalog

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(tmp_path / "catalog.db")
    yield c
    c.close()


def test_open_close_and_reopen_a_run(catalog: Catalog) -> None:
    run = catalog.open_run("F-101", "B-001", at(0))
    assert run == Run("F-101:B-001", "F-101", "B-001", at(0), None)
    assert run.id == run_id_for("F-101", "B-001")
    assert run.is_open

    catalog.close_run(run.id, at(10))
    closed = catalog.run(run.id)
    assert closed is not None
    assert closed.end == at(10)
    assert not closed.is_open

    catalog.reopen_run(run.id)
    reopened = catalog.run(run.id)
    assert reopened is not None
    assert reopened.is_open
    assert reopened.start == at(0)


def test_opening_an_existing_run_leaves_it_as_it_is(catalog: Catalog) -> None:
    catalog.open_run("F-101", "B-001", at(0))
    catalog.close_run("F-101:B-001", at(5))
    again = catalog.open_run("F-101", "B-001", at(7))
    assert again.start == at(0)
    assert again.end == at(5)
    assert len(catalog.runs()) == 1


def test_unknown_run_is_none(catalog: Catalog) -> None:
    assert catalog.run("F-101:nope") is None
    catalog.close_run("F-101:nope", at(1))  # no such run: nothing happens
    assert catalog.runs() == []


def test_runs_newest_first_and_filters(catalog: Catalog) -> None:
    catalog.open_run("F-101", "B-001", at(0))
    catalog.close_run("F-101:B-001", at(10))
    catalog.open_run("R-201", "B-001", at(11))
    catalog.open_run("F-101", "B-002", at(12))
    catalog.open_run("R-201", "B-000", at(11))  # same start as R-201:B-001: ties are ordered by id
    ids = [r.id for r in catalog.runs()]
    assert ids == ["F-101:B-002", "R-201:B-000", "R-201:B-001", "F-101:B-001"]
    assert [r.id for r in catalog.runs("F-101")] == ["F-101:B-002", "F-101:B-001"]
    assert [r.id for r in catalog.runs(open_only=True)] == ["F-101:B-002", "R-201:B-000", "R-201:B-001"]
    assert [r.id for r in catalog.runs("F-101", open_only=True)] == ["F-101:B-002"]
    assert catalog.runs("X-999") == []


def test_runs_persist_across_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    c = Catalog(path)
    c.open_run("F-101", "B-001", at(0))
    c.close_run("F-101:B-001", at(3))
    c.set_cursor("runs:F-101.batch_id", 123)
    c.close()
    c = Catalog(path)
    try:
        assert c.runs() == [Run("F-101:B-001", "F-101", "B-001", at(0), at(3))]
        assert c.cursor("runs:F-101.batch_id") == 123
    finally:
        c.close()


def test_kpis_roundtrip_with_flags_and_final(catalog: Catalog) -> None:
    catalog.open_run("F-101", "B-001", at(0))
    computed = datetime(2024, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)
    records = [
        KpiRecord(
            "energy.total", 12.3456, "kWh", 0.75, ("provisional", "incomplete"), False, "energy-1", computed
        ),
        KpiRecord("energy.agitator", None, "kWh", 0.0, (), True, "energy-1", computed),
    ]
    catalog.set_kpis("F-101:B-001", records)
    got = catalog.kpis("F-101:B-001")
    assert got == sorted(records, key=lambda k: k.name)  # ordered by name
    assert got[1].flags == ("provisional", "incomplete")
    assert got[1].final is False
    assert got[0].final is True
    assert got[0].value is None
    assert catalog.kpis("F-101:nope") == []


def test_set_kpis_replaces_a_kpi_of_the_same_name(catalog: Catalog) -> None:
    catalog.open_run("F-101", "B-001", at(0))
    catalog.set_kpis("F-101:B-001", [KpiRecord("energy.total", 1.0, "kWh", 0.5, ("provisional",), False)])
    catalog.set_kpis("F-101:B-001", [KpiRecord("energy.total", 2.0, "kWh", 1.0, (), True)])
    (kpi,) = catalog.kpis("F-101:B-001")
    assert (kpi.value, kpi.coverage, kpi.flags, kpi.final) == (2.0, 1.0, (), True)


def test_kpis_of_different_runs_are_separate(catalog: Catalog) -> None:
    catalog.open_run("F-101", "B-001", at(0))
    catalog.open_run("F-101", "B-002", at(5))
    catalog.set_kpis("F-101:B-001", [KpiRecord("energy.total", 1.0, "kWh", 1.0)])
    catalog.set_kpis("F-101:B-002", [KpiRecord("energy.total", 2.0, "kWh", 1.0)])
    assert [k.value for k in catalog.kpis("F-101:B-001")] == [1.0]
    assert [k.value for k in catalog.kpis("F-101:B-002")] == [2.0]


def test_kpi_to_json_and_run_to_json(catalog: Catalog) -> None:
    run = catalog.open_run("F-101", "B-001", at(0))
    assert run.to_json() == {
        "id": "F-101:B-001",
        "equipment": "F-101",
        "batch_id": "B-001",
        "start": "2024-03-01T08:00:00+00:00",
        "end": None,
        "status": "open",
        "kind": "other",
        "trial_id": None,
        "product": None,
        "upstream_id": None,
        "origin": "live",
        "note": "",
    }
    kpi = KpiRecord("energy.total", 3.0, "kWh", 0.123456, ("incomplete",), True, "v", at(1))
    assert kpi.to_json()["coverage"] == 0.1235
    assert kpi.to_json()["flags"] == ["incomplete"]
    assert kpi.to_json()["inputs"] == {}


def test_cursors(catalog: Catalog) -> None:
    assert catalog.cursor("runs:F-101.batch_id") is None
    catalog.set_cursor("runs:F-101.batch_id", 1_709_280_000_000_000)
    catalog.set_cursor("runs:R-201.batch_id", 5)
    assert catalog.cursor("runs:F-101.batch_id") == 1_709_280_000_000_000
    catalog.set_cursor("runs:F-101.batch_id", 1_709_280_000_000_001)  # moved on: replaced
    assert catalog.cursor("runs:F-101.batch_id") == 1_709_280_000_000_001
    assert catalog.cursor("runs:R-201.batch_id") == 5


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
        assert c.schema_version() == SCHEMA_VERSION == 3
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
            assert c.schema_version() == 3
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
        assert c.schema_version() == 3
        assert c.runs()[0].origin == "live"
    finally:
        c.close()


# -- runs created and edited by hand -------------------------------------------------------------------
def test_create_run_with_kind_trial_and_product(catalog: Catalog) -> None:
    run = catalog.create_run(
        "F-101", "H-17", at(0), at(48), kind="baseline", product="lipase", origin="import", note="PI export"
    )
    assert run == Run(
        "F-101:H-17", "F-101", "H-17", at(0), at(48), "baseline", None, "lipase", None, "import", "PI export"
    )
    assert run.duration_h == 48.0
    with pytest.raises(StoreError, match="exists already"):
        catalog.create_run("F-101", "H-17", at(0))
    with pytest.raises(StoreError, match="not a run kind"):
        catalog.create_run("F-101", "H-18", at(0), kind="golden")
    with pytest.raises(StoreError, match="before start"):
        catalog.create_run("F-101", "H-19", at(5), at(4))
    assert [r.id for r in catalog.runs(kind="baseline")] == ["F-101:H-17"]
    assert catalog.runs(kind="trial") == []


def test_update_run_and_upstream_links(catalog: Catalog) -> None:
    catalog.create_run("F-101", "B-1", at(0), at(40))
    catalog.create_run("R-201", "B-1", at(41), at(45))
    run = catalog.update_run("R-201:B-1", upstream_id="F-101:B-1", kind="trial", trial_id="T-9")
    assert (run.upstream_id, run.kind, run.trial_id) == ("F-101:B-1", "trial", "T-9")
    assert [r.id for r in catalog.downstream_runs("F-101:B-1")] == ["R-201:B-1"]
    assert [r.id for r in catalog.runs(trial_id="T-9")] == ["R-201:B-1"]
    assert catalog.update_run("R-201:B-1", trial_id=None, end=at(46)).trial_id is None
    assert catalog.run("R-201:B-1").end == at(46)  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="upstream run 'F-101:nope' is not in the catalog"):
        catalog.update_run("R-201:B-1", upstream_id="F-101:nope")
    with pytest.raises(StoreError, match="no run"):
        catalog.update_run("X:1", kind="trial")
    with pytest.raises(StoreError, match="cannot be edited"):
        catalog.update_run("R-201:B-1", equipment="F-101")
    with pytest.raises(StoreError, match="before start"):
        catalog.update_run("R-201:B-1", end=at(1))


# -- phases, lab results, imports ----------------------------------------------------------------------
def test_phases_are_replaced_as_a_whole_and_ordered(catalog: Catalog) -> None:
    catalog.open_run("F-101", "B-1", at(0))
    catalog.set_phases("F-101:B-1", [Phase("fed_batch", at(5), None), Phase("batch", at(1), at(5))])
    assert catalog.phases("F-101:B-1") == [Phase("batch", at(1), at(5)), Phase("fed_batch", at(5), None)]
    catalog.set_phases("F-101:B-1", [Phase("batch", at(1), at(6))])
    assert catalog.phases("F-101:B-1") == [Phase("batch", at(1), at(6))]
    catalog.add_phase("F-101:B-1", Phase("harvest", at(6), at(7)))
    assert [p.name for p in catalog.phases("F-101:B-1")] == ["batch", "harvest"]
    assert catalog.phases("F-101:nope") == []


def test_lab_results_attach_to_a_run_by_time_and_reimport_replaces(catalog: Catalog) -> None:
    run = catalog.create_run("F-101", "B-1", at(0), at(10))
    results = [
        LabResult("F-101", at(-1), "titer", 0.0, "g/L"),  # before the run: not its result
        LabResult("F-101", at(2), "titer", 1.5, "g/L", 0.05, "lab.csv"),
        LabResult("F-101", at(10), "titer", 4.0, "g/L", 0.0, "lab.csv"),  # at the end: included
        LabResult("R-201", at(5), "titer", 9.9, "g/L"),  # other equipment
    ]
    assert catalog.add_lab_results(results) == 4
    got = catalog.run_lab_results(run)
    got_rows = [(r.analyte, r.value, r.sample_volume_l) for r in got]
    assert got_rows == [("titer", 1.5, 0.05), ("titer", 4.0, 0.0)]
    catalog.add_lab_results([LabResult("F-101", at(2), "titer", 1.6, "g/L")])  # same time and analyte
    assert [r.value for r in catalog.run_lab_results(run)] == [1.6, 4.0]


def test_imports_are_recorded(catalog: Catalog) -> None:
    rec = ImportRecord("ab" * 32, "F-101:H-1", "h1.csv", 14400, 432000, at(0))
    catalog.record_import(rec)
    catalog.record_import(rec)  # idempotent
    assert catalog.imports(sha256="ab" * 32) == [rec]
    assert catalog.imports(run_id="F-101:H-2") == []


def test_set_kpis_replace_all_drops_kpis_no_longer_computed(catalog: Catalog) -> None:
    catalog.open_run("F-101", "B-001", at(0))
    catalog.set_kpis("F-101:B-001", [KpiRecord("a", 1.0, "g", 1.0), KpiRecord("b", 2.0, "g", 1.0)])
    catalog.set_kpis("F-101:B-001", [KpiRecord("a", 3.0, "g", 1.0, inputs={"F-101.volume": 0.5})])
    assert [k.name for k in catalog.kpis("F-101:B-001")] == ["a", "b"]
    catalog.set_kpis("F-101:B-001", [KpiRecord("a", 3.0, "g", 1.0, inputs={"x": 0.25})], replace_all=True)
    (k,) = catalog.kpis("F-101:B-001")
    assert (k.name, k.value, k.inputs) == ("a", 3.0, {"x": 0.25})
