"""processing/service.py: Processing.process_once against a real SqliteStore and Catalog in tmp_path.

The plant (times in hours after T0, all source timestamps):
- F-1.batch_id every 0.5 h: "" at 0–0.5, "B-1" at 1.0–4.5 (with one bad-status blank at 3.0 that must not
  end the run), "" at 5.0–5.5, "B-2" from 6.0; after the first pass "B-2" to 8.5 and "B-3" from 9.0 to 10.0.
- F-1.agitator_power [kW] every 0.25 h, a linear ramp P(t) = 4·t kW; the trapezoid is exact for a line, so
  the energy over [a, b] is ∫ 4t dt = 2·(b² − a²) kWh.
- F-1.compressor_power [W] every 0.25 h, 2000 W = 2 kW constant, with no samples strictly between 2 h and 4 h:
  that 2 h interval is more than 5 × the 0.25 h nominal interval, so it is a gap and is not bridged.
- F-1.titer: a lab tag (lab results published by a LIMS), written only by the late-lab test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from biopilot.config import parse_config
from biopilot.records import KpiRecord, Run
from biopilot.samples import BAD_NO_COMMUNICATION, GOOD, Sample, to_us
from processing.service import KPI_VERSION, Processing
from storage.catalog import Catalog
from storage.sqlite import SqliteStore
from storage.tiered import TieredStore

T0 = datetime(2024, 3, 1, tzinfo=UTC)

CONFIG = """
[site]
name = "Test hall"

[opcua.servers.plc]
endpoint = "opc.tcp://127.0.0.1:4840/"

[[equipment]]
id = "F-1"
kind = "fermenter"

[[equipment]]
id = "R-1"
kind = "recovery"

[[tags]]
name = "F-1.batch_id"
equipment = "F-1"
role = "batch_id"
source = { protocol = "opcua", server = "plc", node_id = "ns=2;s=F-1.BatchId" }

[[tags]]
name = "F-1.agitator_power"
equipment = "F-1"
role = "power"
unit = "kW"
source = { protocol = "opcua", server = "plc", node_id = "ns=2;s=F-1.AgitatorPower" }

[[tags]]
name = "F-1.compressor_power"
equipment = "F-1"
role = "power"
unit = "W"
source = { protocol = "opcua", server = "plc", node_id = "ns=2;s=F-1.CompressorPower" }

[[tags]]
name = "F-1.titer"
equipment = "F-1"
role = "concentration"
unit = "g/L"
lab = { analyte = "titer" }
source = { protocol = "opcua", server = "plc", node_id = "ns=2;s=F-1.Titer" }

[[tags]]
name = "R-1.batch_id"
equipment = "R-1"
role = "batch_id"
source = { protocol = "opcua", server = "plc", node_id = "ns=2;s=R-1.BatchId" }
"""


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def grid(start_h: float, end_h: float, step_h: float) -> list[float]:
    """start, start + step, …, end (inclusive), without float drift."""
    n = round((end_h - start_h) / step_h)
    return [start_h + i * step_h for i in range(n + 1)]


def batch_samples(start_h: float, end_h: float) -> list[Sample]:
    out = []
    for h in grid(start_h, end_h, 0.5):
        if h < 1.0 or 5.0 <= h < 6.0:
            batch = ""
        elif h < 5.0:
            batch = "B-1"
        elif h < 9.0:
            batch = "B-2"
        else:
            batch = "B-3"
        out.append(Sample("F-1.batch_id", at(h), batch))
    return out


def power_samples(start_h: float, end_h: float) -> list[Sample]:
    out = []
    for h in grid(start_h, end_h, 0.25):
        out.append(Sample("F-1.agitator_power", at(h), 4.0 * h))
        if not 2.0 < h < 4.0:
            out.append(Sample("F-1.compressor_power", at(h), 2000.0))
    return out


@dataclass
class Site:
    store: SqliteStore
    catalog: Catalog
    processing: Processing


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    config = parse_config(CONFIG, "test.toml")
    store = SqliteStore(tmp_path / "biopilot.db")
    catalog = Catalog(tmp_path / "biopilot.db")
    # every pass recomputes the open run here (the throttle of live runs has tests of its own below)
    yield Site(store, catalog, Processing(config, store, catalog, provisional_interval_s=0.0))
    catalog.close()
    store.close()


def kpis(catalog: Catalog, run_id: str) -> dict[str, KpiRecord]:
    return {k.name: k for k in catalog.kpis(run_id)}


def assert_kpi(k: KpiRecord, value: float, coverage: float, flags: tuple[str, ...], final: bool) -> None:
    assert k.value == pytest.approx(value, abs=1e-4), k
    assert k.coverage == pytest.approx(coverage), k
    assert k.flags == flags, k
    assert k.final is final, k
    assert k.unit == "kWh"
    assert k.version == KPI_VERSION


def first_pass(site: Site) -> list[Run]:
    site.store.write(batch_samples(0.0, 7.0))
    site.store.write([Sample("F-1.batch_id", at(3.0), "", BAD_NO_COMMUNICATION)])  # replaces the 3.0 h sample
    site.store.write(power_samples(0.0, 7.0))
    return site.processing.process_once()


def test_first_pass_opens_and_closes_runs_at_source_timestamps(site: Site) -> None:
    touched = first_pass(site)
    assert sorted(r.id for r in touched) == ["F-1:B-1", "F-1:B-2"]
    # Newest first. B-1 starts at its first sample (1.0 h), survives the bad blank at 3.0 h, and ends at the
    # first good blank (5.0 h); B-2 starts at 6.0 h and is still open.
    assert site.catalog.runs() == [
        Run("F-1:B-2", "F-1", "B-2", at(6.0), None),
        Run("F-1:B-1", "F-1", "B-1", at(1.0), at(5.0)),
    ]
    assert site.catalog.runs("R-1") == []
    assert site.catalog.cursor("runs:F-1.batch_id") == to_us(at(7.0))  # the last batch-id sample read


def test_first_pass_energy_kpis(site: Site) -> None:
    first_pass(site)
    b1 = kpis(site.catalog, "F-1:B-1")
    assert set(b1) == {
        "energy.F-1.agitator_power",
        "energy.F-1.compressor_power",
        "energy.total",
        "batch_duration",  # every fermenter run has its durations …
        "growth_duration",
    }  # … and nothing else: F-1 has no volume, feed, off-gas or lab data to compute more from
    # B-1 lasted 1.0 h → 5.0 h = 4 h; without phases, growth is taken from run start to run end (and says so)
    assert (b1["batch_duration"].value, b1["batch_duration"].unit, b1["batch_duration"].final) == (
        4.0,
        "h",
        True,
    )
    assert b1["growth_duration"].value == 4.0
    assert b1["growth_duration"].flags == ("assumed:inoculation=run_start", "assumed:harvest=run_end")
    # B-1, closed, 1.0 h → 5.0 h (run 4 h):
    #   agitator: 2·(5² − 1²) = 48 kWh, samples over the whole run → coverage 1, final, no flags
    #   compressor: 2 kW over [1, 2] and [4, 5] only = 4 kWh; covered 2 h of 4 h → coverage 0.5, incomplete
    #   total: 48 + 4 = 52 kWh, coverage = the lowest of its inputs = 0.5, incomplete
    assert_kpi(b1["energy.F-1.agitator_power"], 48.0, 1.0, (), final=True)
    assert_kpi(b1["energy.F-1.compressor_power"], 4.0, 0.5, ("incomplete",), final=True)
    assert_kpi(b1["energy.total"], 52.0, 0.5, ("incomplete",), final=True)

    b2 = kpis(site.catalog, "F-1:B-2")
    # B-2, open, 6.0 h → the newest sample of F-1 (7.0 h), run 1 h so far:
    #   agitator: 2·(7² − 6²) = 26 kWh; compressor: 2 kW · 1 h = 2 kWh; total 28 kWh; all provisional
    assert_kpi(b2["energy.F-1.agitator_power"], 26.0, 1.0, ("provisional",), final=False)
    assert_kpi(b2["energy.F-1.compressor_power"], 2.0, 1.0, ("provisional",), final=False)
    assert_kpi(b2["energy.total"], 28.0, 1.0, ("provisional",), final=False)


def test_second_pass_continues_from_the_cursor_without_duplicating_runs(site: Site) -> None:
    first_pass(site)
    site.store.write(batch_samples(7.5, 10.0))
    site.store.write(power_samples(7.25, 10.0))
    touched = site.processing.process_once()
    assert sorted(r.id for r in touched) == ["F-1:B-2", "F-1:B-3"]  # B-1 was final already
    assert site.catalog.runs() == [
        Run("F-1:B-3", "F-1", "B-3", at(9.0), None),
        Run("F-1:B-2", "F-1", "B-2", at(6.0), at(9.0)),
        Run("F-1:B-1", "F-1", "B-1", at(1.0), at(5.0)),
    ]
    assert site.catalog.cursor("runs:F-1.batch_id") == to_us(at(10.0))

    b2 = kpis(site.catalog, "F-1:B-2")
    # B-2, now closed, 6.0 h → 9.0 h: agitator 2·(9² − 6²) = 90 kWh; compressor 2 kW · 3 h = 6 kWh; total 96
    assert_kpi(b2["energy.F-1.agitator_power"], 90.0, 1.0, (), final=True)
    assert_kpi(b2["energy.F-1.compressor_power"], 6.0, 1.0, (), final=True)
    assert_kpi(b2["energy.total"], 96.0, 1.0, (), final=True)
    b3 = kpis(site.catalog, "F-1:B-3")
    # B-3, open, 9.0 h → 10.0 h: agitator 2·(10² − 9²) = 38 kWh; compressor 2 kWh; total 40 kWh, provisional
    assert_kpi(b3["energy.total"], 40.0, 1.0, ("provisional",), final=False)
    # B-1 is untouched by the second pass
    assert_kpi(kpis(site.catalog, "F-1:B-1")["energy.total"], 52.0, 0.5, ("incomplete",), final=True)


def test_a_pass_without_new_data_changes_nothing(site: Site) -> None:
    first_pass(site)
    before_runs = site.catalog.runs()
    before = {
        r.id: [(k.name, k.value, k.coverage, k.flags) for k in site.catalog.kpis(r.id)] for r in before_runs
    }
    touched = site.processing.process_once()
    assert [r.id for r in touched] == ["F-1:B-2"]  # only the open run is recomputed
    assert site.catalog.runs() == before_runs
    after = {
        r.id: [(k.name, k.value, k.coverage, k.flags) for k in site.catalog.kpis(r.id)] for r in before_runs
    }
    assert after == before
    assert site.processing.passes == 2


def test_redelivered_samples_do_not_duplicate_runs(site: Site) -> None:
    first_pass(site)
    site.store.write(batch_samples(0.0, 7.0))  # the same samples again (a replay): same (series, ts)
    site.processing.process_once()
    assert [r.id for r in site.catalog.runs()] == ["F-1:B-2", "F-1:B-1"]


def test_uncertain_power_is_flagged(site: Site) -> None:
    first_pass(site)
    # An uncertain compressor sample inside open run B-2: its KPI is flagged, the value is used as is.
    site.store.write([Sample("F-1.compressor_power", at(6.5), 2000.0, 0x40900000)])
    site.processing.process_once()
    k = kpis(site.catalog, "F-1:B-2")["energy.F-1.compressor_power"]
    assert_kpi(k, 2.0, 1.0, ("provisional", "uncertain_inputs"), final=False)


def test_a_run_without_power_tags_has_no_kpis(site: Site) -> None:
    site.store.write([Sample("R-1.batch_id", at(h), "B-1", GOOD) for h in (1.0, 2.0)])
    site.processing.process_once()
    assert site.catalog.runs("R-1") == [Run("R-1:B-1", "R-1", "B-1", at(1.0), None)]
    assert site.catalog.kpis("R-1:B-1") == []


class FakeClock:
    """The wall clock the throttle measures (a fake: the test needs seconds to pass without waiting)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_live_runs_are_recomputed_at_most_every_provisional_interval(tmp_path: Path) -> None:
    config = parse_config(CONFIG, "test.toml")
    assert config.processing.provisional_interval_s == 30.0  # the default
    store = SqliteStore(tmp_path / "biopilot.db")
    catalog = Catalog(tmp_path / "biopilot.db")
    clock = FakeClock()
    processing = Processing(config, store, catalog, clock=clock)
    site = Site(store, catalog, processing)
    try:
        first_pass(site)  # B-1 closed and B-2 opened in this pass: both computed
        assert processing.computed == 2
        assert kpis(catalog, "F-1:B-2")["energy.total"].value == pytest.approx(28.0)  # 6 → 7 h
        # 10 s later, an hour more of B-2: not due yet, its KPIs stay as they were
        clock.now = 10.0
        store.write(batch_samples(7.5, 8.0))
        store.write(power_samples(7.25, 8.0))
        processing.process_once()
        assert processing.computed == 2
        assert kpis(catalog, "F-1:B-2")["energy.total"].value == pytest.approx(28.0)
        # 30 s after its last computation it is due: 6 → 8 h, agitator 2·(8² − 6²) = 56 + compressor 4 kWh
        clock.now = 30.0
        processing.process_once()
        assert processing.computed == 3
        assert kpis(catalog, "F-1:B-2")["energy.total"].value == pytest.approx(60.0)
        # a run that closes is computed in that pass, due or not (final, 6 → 9 h = 96 kWh); B-3 starts
        clock.now = 31.0
        store.write(batch_samples(8.5, 10.0))
        store.write(power_samples(8.25, 10.0))
        processing.process_once()
        assert processing.computed == 5
        b2 = kpis(catalog, "F-1:B-2")["energy.total"]
        assert (b2.value, b2.final) == (pytest.approx(96.0), True)
    finally:
        catalog.close()
        store.close()


def test_the_config_sets_the_throttle() -> None:
    config = parse_config(CONFIG + "\n[processing]\ninterval_s = 1.0\nprovisional_interval_s = 5.0\n")
    assert (config.processing.interval_s, config.processing.provisional_interval_s) == (1.0, 5.0)


def test_lab_results_that_arrive_after_a_run_closed_recompute_it(site: Site) -> None:
    """B-1 (1.0 → 5.0 h) closed in the first pass without lab results; the LIMS then publishes a titer of
    3.2 g/L sampled at 4.5 h: the next pass recomputes B-1 (final), the pass after leaves it alone."""
    first_pass(site)
    assert "titer" not in kpis(site.catalog, "F-1:B-1")
    site.store.write([Sample("F-1.titer", at(4.5), 3.2)])
    site.processing.process_once()
    titer = kpis(site.catalog, "F-1:B-1")["titer"]
    assert (titer.value, titer.final, titer.inputs) == (3.2, True, {"lab:titer": 1.0})
    before = site.processing.computed
    site.processing.process_once()
    assert site.processing.computed == before + 1  # only the open run B-2 (recomputed on every pass here)


def test_closed_runs_are_archived_after_a_grace_period_and_keep_their_kpis(tmp_path: Path) -> None:
    """With a RunArchive store, a run closed in a pass is archived after_s (here 30 s of the fake clock)
    later, with its equipment's tags; its KPIs recomputed from the archive are the same; the open run is
    not archived; a late lab result lands in both tiers and still recomputes the closed run."""
    config = parse_config(CONFIG, "test.toml")
    assert config.storage.archive.after_s == 30.0  # the default
    store = TieredStore(tmp_path / "biopilot.db", tmp_path / "archive", compact_after_s=0.0)
    catalog = Catalog(tmp_path / "biopilot.db")
    clock = FakeClock()
    processing = Processing(config, store, catalog, clock=clock, provisional_interval_s=0.0, archive=store)
    site = Site(store, catalog, processing)  # type: ignore[arg-type]
    try:
        store.write([Sample("F-1.titer", at(2.0), 1.0)])  # a first lab result, in time
        first_pass(site)  # B-1 (1 → 5 h) closes, B-2 opens
        assert store.archived_runs() == {}
        clock.now = 29.0
        processing.process_once()
        assert store.archived_runs() == {}  # not yet: samples may still be on their way
        clock.now = 30.0
        processing.process_once()
        archived = store.archived_runs()
        assert set(archived) == {"F-1:B-1"} and processing.archived == 1
        b1 = catalog.run("F-1:B-1")
        assert b1 is not None and archived["F-1:B-1"].covers(b1)
        assert archived["F-1:B-1"].series == 4  # every F-1 tag: batch id, both powers, titer
        kpis_before = [(k.name, k.value, k.coverage, k.flags) for k in catalog.kpis("F-1:B-1")]
        processing.update_run(b1)  # computed again, now reading the archive
        assert [(k.name, k.value, k.coverage, k.flags) for k in catalog.kpis("F-1:B-1")] == kpis_before
        # a late lab result (titer 3.2 g/L at 4.5 h): recomputed, and folded into the files by `maintain`
        assert kpis(catalog, "F-1:B-1")["titer"].value == 1.0
        store.write([Sample("F-1.titer", at(4.5), 3.2)])
        assert store.archived_runs()["F-1:B-1"].deltas == 1
        processing.process_once()
        assert kpis(catalog, "F-1:B-1")["titer"].value == 3.2  # the last titer of the run
        assert store.archived_runs()["F-1:B-1"].deltas == 0  # folded into the files
        assert store.read("F-1.titer", at(1.0), at(5.0)).values.tolist() == [1.0, 3.2]
        assert processing.archived == 1  # B-1 once; B-2 is open
    finally:
        catalog.close()
        store.close()
