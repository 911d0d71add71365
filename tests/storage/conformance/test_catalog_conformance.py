"""The catalog conformance suite: runs, phases, lab results, imports, KPIs and cursors, on every catalog
backend (conftest.py: a real SQLite file, and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from biopilot.errors import IdError, StoreError
from biopilot.records import ImportRecord, KpiRecord, LabResult, Phase, Run, run_id_for
from storage.catalog import SCHEMA_VERSION, Catalog

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


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


def test_runs_persist_across_reopening(catalog_target: str) -> None:
    path = catalog_target
    c = Catalog(path)
    c.open_run("F-101", "B-001", at(0))
    c.close_run("F-101:B-001", at(3))
    c.set_cursor("runs:F-101.batch_id", 123)
    c.close()
    c = Catalog(path)  # a second opening migrates nothing and sees the same rows
    try:
        assert c.schema_version() == SCHEMA_VERSION
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


def test_concurrent_openers_migrate_once(catalog_target: str) -> None:
    """Several processes may open a new (or old) catalog at once: the migration runs under the database's
    write lock, so every opener sees the newest schema and nothing fails."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_it() -> None:
        try:
            barrier.wait(10)
            c = Catalog(catalog_target)
            assert c.schema_version() == SCHEMA_VERSION
            c.close()
        except BaseException as exc:  # collected and re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


def test_the_site_config_chooses_the_catalog(catalog_target: str, tmp_path: Path) -> None:
    from biopilot.config import parse_config
    from storage import open_catalog

    storage = f'catalog = "{catalog_target}"' if catalog_target.startswith("postgresql") else ""
    config = parse_config(
        f'[site]\nname = "t"\n[storage]\n{storage}\n[[equipment]]\nid = "F-1"\nkind = "fermenter"\n'
    )
    c = open_catalog(config, tmp_path)
    try:
        c.open_run("F-1", "B-1", at(0))
        assert [r.id for r in c.runs()] == ["F-1:B-1"]
        assert (c.path is None) == catalog_target.startswith("postgresql")
    finally:
        c.close()


def test_a_migration_merged_later_with_a_lower_version_is_applied(catalog_target: str) -> None:
    """Parallel work takes versions from separate ranges; a database migrated with a higher version first
    still gets a lower one that arrives later, exactly once."""
    from storage.db import Migration, applied_migrations, migrate, open_database
    from storage.migrations import MIGRATIONS

    late = Migration(99_010, "a table from one branch", "CREATE TABLE t_late (k TEXT PRIMARY KEY)")
    early = Migration(99_030, "a table from another branch", "CREATE TABLE t_early (k TEXT PRIMARY KEY)")
    db = open_database(catalog_target)
    try:
        assert migrate(db, [*MIGRATIONS, early]) == 99_030
        assert migrate(db, [*MIGRATIONS, late, early]) == 99_030
        assert migrate(db, [*MIGRATIONS, late, early]) == 99_030  # nothing left to do
        assert {99_010, 99_030} <= applied_migrations(db)
        db.query("SELECT k FROM t_late")  # the late table exists
    finally:
        db.close()


# -- the import journal and what the catalog refuses (issue 8) -----------------------------------------
def test_an_import_journal_hides_its_run_until_it_is_finished(catalog: Catalog) -> None:
    other = catalog.create_run("F-101", "A", at(0), at(2))
    catalog.set_kpis(other.id, [KpiRecord("energy.total", 4.0, "kWh", 1.0, ("incomplete",), True, "v")])
    pending = catalog.begin_import("tok-1", "F-101:B", "F-101", "b.csv", "abc")
    assert catalog.pending_imports() == [pending] and pending.phase == "staging"
    run = Run("F-101:B", "F-101", "B", at(1), at(3), kind="baseline", origin="import", note="imported")
    catalog.start_publishing("tok-1", run, create=True, replaced=[other.id], rows=3, samples=6)
    publishing = catalog.pending_import("tok-1")
    assert publishing is not None and publishing.phase == "publishing"
    assert (publishing.created_run, publishing.replaced, publishing.samples) == (True, (other.id,), 6)
    # while it publishes, its run is neither found nor listed; the replaced run's KPIs say they are stale
    assert catalog.run("F-101:B") is None and [r.id for r in catalog.runs()] == [other.id]
    assert [k.flags for k in catalog.kpis(other.id)] == [("incomplete", "stale")]
    with pytest.raises(StoreError, match="exists already"):
        catalog.create_run("F-101", "B", at(1))
    catalog.finish_import("tok-1", ImportRecord("abc", "F-101:B", "b.csv", 3, 6, at(4)))
    assert catalog.run("F-101:B") == run
    assert catalog.pending_imports() == []
    assert [(i.rows, i.samples) for i in catalog.imports(run_id="F-101:B")] == [(3, 6)]
    catalog.begin_import("tok-2", "F-101:C", "F-101", "c.csv", "def")
    catalog.abandon_import("tok-2")
    assert catalog.pending_imports() == [] and catalog.run("F-101:C") is None


def test_the_catalog_refuses_bad_ids_loops_and_backward_phases(catalog: Catalog) -> None:
    with pytest.raises(IdError, match="batch id 'B/1' contains a path separator"):
        catalog.create_run("F-101", "B/1", at(0))
    with pytest.raises(IdError, match="trial id"):
        catalog.create_run("F-101", "B-1", at(0), trial_id="T\x1b[0m")
    a = catalog.create_run("F-101", "B-1", at(0))
    b = catalog.create_run("F-101", "B-2", at(0), upstream_id=a.id)
    with pytest.raises(StoreError, match="cannot be its own upstream"):
        catalog.update_run(a.id, upstream_id=a.id)
    with pytest.raises(StoreError, match="cannot be upstream of F-101:B-2"):
        catalog.update_run(a.id, upstream_id=b.id)
    with pytest.raises(StoreError, match=r"ends .* before it starts"):
        catalog.add_phase(a.id, Phase("batch", at(2), at(1)))
    with pytest.raises(StoreError, match="nothing stored"):
        catalog.add_lab_results([LabResult("F-101", at(1), "titer", float("inf"), "g/L")])
    assert catalog.phases(a.id) == [] and catalog.lab_results("F-101") == []
