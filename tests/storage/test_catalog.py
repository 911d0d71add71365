"""storage/catalog.py: runs, KPIs and cursors on a real SQLite file in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.catalog import Catalog, KpiRecord, Run, run_id_for

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
    }
    kpi = KpiRecord("energy.total", 3.0, "kWh", 0.123456, ("incomplete",), True, "v", at(1))
    assert kpi.to_json()["coverage"] == 0.1235
    assert kpi.to_json()["flags"] == ["incomplete"]


def test_cursors(catalog: Catalog) -> None:
    assert catalog.cursor("runs:F-101.batch_id") is None
    catalog.set_cursor("runs:F-101.batch_id", 1_709_280_000_000_000)
    catalog.set_cursor("runs:R-201.batch_id", 5)
    assert catalog.cursor("runs:F-101.batch_id") == 1_709_280_000_000_000
    catalog.set_cursor("runs:F-101.batch_id", 1_709_280_000_000_001)  # moved on: replaced
    assert catalog.cursor("runs:F-101.batch_id") == 1_709_280_000_000_001
    assert catalog.cursor("runs:R-201.batch_id") == 5
