"""simulators/historical.py: complete runs as published data, checked against their truth the way a KPI
engine would check them (kpis.md formulas on the published, noisy, 1-minute signals)."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from biopilot.samples import GOOD, from_us
from biopilot.units import Transform
from processing.runs import Change, detect_runs
from simulators import historical as hi
from simulators.engine import UnitSpec
from simulators.fermenter import offgas
from simulators.scenario import default_scenario
from storage import SqliteStore
from tests.simulators.test_fermenter import our_cer_from_offgas

LINE = [
    UnitSpec("F-101", "fermenter"),
    UnitSpec("R-201", "centrifuge", "F-101"),
    UnitSpec("R-202", "uf_df", "R-201"),
    UnitSpec("R-203", "capture", "R-202"),
    UnitSpec("R-204", "polish", "R-203"),
]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> hi.History:
    out = tmp_path_factory.mktemp("hist")
    return hi.generate(default_scenario(), LINE, runs=1, truth_dir=out / "truth", keep_traces=True)


@pytest.fixture(scope="module")
def truth(history: hi.History) -> dict:
    (doc,) = history.truths.values()
    return doc


def trapezoid(t_h: np.ndarray, v: np.ndarray) -> float:
    return float(np.sum((v[1:] + v[:-1]) / 2 * np.diff(t_h)))


def test_one_run_and_its_recovery_are_in_the_data(history: hi.History, truth: dict) -> None:
    batch = truth["batch_id"]
    for eq in ("F-101", "R-201", "R-202", "R-203", "R-204"):
        col = history.column(f"{eq}/{'BatchId' if eq == 'F-101' else 'batch_id'}")
        events, open_batch = detect_runs(
            zip(col.ts_us.tolist(), col.values.tolist(), col.status.tolist(), strict=True), None
        )
        # every unit shows the fermentation's batch id once, and blank after it: one closed run each
        assert [(e.change, e.batch_id) for e in events] == [(Change.START, batch), (Change.END, batch)], eq
        assert open_batch is None
    assert truth["overall"]["complete"]
    assert [u["position"] for u in truth["recovery"].values()] == [1, 2, 3, 4]


def test_feed_and_volume_from_the_published_signals(history: hi.History, truth: dict) -> None:
    k = truth["fermentation"]["kpis"]
    feed = history.column("F-101/FeedRate")
    fed_l = trapezoid(feed.t_h, feed.values)
    assert fed_l == pytest.approx(k["feed_l"], rel=0.005)
    assert 500.0 * fed_l == pytest.approx(k["substrate_fed_g"], rel=0.005)
    base = history.column("F-101/BaseFlow")
    assert trapezoid(base.t_h, base.values) == pytest.approx(k["base_l"], rel=0.005)
    # the volume at harvest start: the last reading before the phase says harvest
    vol, phase = history.column("F-101/Volume"), history.column("F-101/Phase")
    i = int(np.argmax(phase.values == "harvest"))
    assert vol.values[i - 1] == pytest.approx(k["final_volume_l"], rel=0.005)


def test_product_and_substrate_balances_from_signals_and_samples(history: hi.History, truth: dict) -> None:
    """kpis.md: m_P = V_end·P_end + Σ samples V_i·P_i + ∫F_out·P dt, with the published discharge flow and
    the samples' true titers (P between samples interpolated); likewise the glucose consumed."""
    k = truth["fermentation"]["kpis"]
    samples = truth["samples"]
    t0 = history.start.timestamp()
    t_s = np.array([(datetime.fromisoformat(s["sampled_at"]).timestamp() - t0) / 3600 for s in samples])
    titer = np.array([s["true"]["titer"] for s in samples])
    glucose = np.array([s["true"]["glucose"] for s in samples])
    final = samples[-1]
    assert final["final"]
    dis = history.column("F-101/DischargeFlow")
    p_out = dis.values * np.interp(dis.t_h, t_s, titer)
    s_out = dis.values * np.interp(dis.t_h, t_s, glucose)
    v_end = k["final_volume_l"]
    in_samples_p = sum(s["volume_l"] * s["true"]["titer"] for s in samples[:-1])
    product = v_end * final["true"]["titer"] + in_samples_p + trapezoid(dis.t_h, p_out)
    assert product == pytest.approx(k["product_formed_g"], rel=0.005)
    assert k["product_discharged_g"] > 0.02 * k["product_formed_g"]  # the discharge term matters here
    feed = history.column("F-101/FeedRate")
    v0 = k["initial_volume_l"]
    in_samples_s = sum(s["volume_l"] * s["true"]["glucose"] for s in samples[:-1])
    consumed = (
        v0 * samples[0]["true"]["glucose"]
        + 500.0 * trapezoid(feed.t_h, feed.values)
        - v_end * final["true"]["glucose"]
        - in_samples_s
        - trapezoid(dis.t_h, s_out)
    )
    assert consumed == pytest.approx(k["substrate_consumed_g"], rel=0.005)


def test_our_from_the_offgas_signals_equals_the_models_our(history: hi.History, truth: dict) -> None:
    """The inert balance on the published O2, CO2, air flow and volume gives the model's OUR: exactly from
    noise-free values, within 1 % per sample from the noisy readings once respiration is substantial,
    and O2 consumed (∫OUR·V dt) within 1 %."""
    traces = history.traces["F-101"]
    t_tr = np.array([t for t, _ in traces])
    true_our = np.array([s.our for _, s in traces])
    o2, co2 = history.column("F-101/OffgasO2"), history.column("F-101/OffgasCO2")
    air, vol = history.column("F-101/AirFlow"), history.column("F-101/Volume")
    at = np.searchsorted(o2.t_h, t_tr)  # the readings at the traced times (all but the very first)
    assert np.array_equal(o2.t_h[at], t_tr) and np.array_equal(air.t_h[at], t_tr)
    y_o2, y_co2, v, gas = o2.values[at] / 100, co2.values[at] / 100, vol.values[at], air.values[at]
    on = gas > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        our, cer = our_cer_from_offgas(y_o2, y_co2, v, gas)
    # noise-free: the published signals before noise are the exact inverse
    for _, s in traces[:: max(len(traces) // 200, 1)]:
        if s.air > 0:
            y_o2, y_co2 = offgas(s.our, s.cer, s.v, s.air)
            assert our_cer_from_offgas(y_o2, y_co2, s.v, s.air)[0] == pytest.approx(
                s.our, rel=1e-9, abs=1e-12
            )
    # per reading the analyser and flow-meter noise is about 0.4 % of OUR; hourly means are within 1 %
    strong = on & (true_our > 0.03)
    assert strong.sum() > 1500
    ratio = our[strong] / true_our[strong]
    hours = np.floor(t_tr[strong]).astype(int)
    hourly = [ratio[hours == h].mean() for h in np.unique(hours) if (hours == h).sum() >= 30]
    assert len(hourly) > 25
    assert max(abs(r - 1) for r in hourly) < 0.01
    assert abs(np.mean(ratio) - 1) < 0.001
    k = truth["fermentation"]["kpis"]
    o2_mol = trapezoid(t_tr[on], (our * v)[on])
    co2_mol = trapezoid(t_tr[on], (cer * v)[on])
    assert o2_mol == pytest.approx(k["o2_consumed_mol"], rel=0.01)
    assert co2_mol == pytest.approx(k["co2_produced_mol"], rel=0.01)


@pytest.mark.parametrize(
    ("signal", "key"),
    [
        ("F-101/AgitatorPower", "agitator"),
        ("F-101/CompressorPower", "compressor"),
        ("F-101/ChillerPower", "chiller"),
    ],
)
def test_fermenter_energy_is_the_integral_of_the_published_power(
    history: hi.History, truth: dict, signal: str, key: str
) -> None:
    col = history.column(signal)
    assert trapezoid(col.t_h, col.values) == pytest.approx(
        truth["fermentation"]["kpis"]["energy_kwh"][key], rel=0.005
    )


@pytest.mark.parametrize("eq", ["R-201", "R-202", "R-203", "R-204"])
def test_recovery_energy_volumes_and_yield_from_the_published_signals(
    history: hi.History, truth: dict, eq: str
) -> None:
    k = truth["recovery"][eq]["kpis"]
    power = history.column(f"{eq}/power")
    # phases of a few minutes start and end between samples: 1 % for the shortest (chromatography cycles)
    assert trapezoid(power.t_h, power.values) == pytest.approx(k["energy_kwh"], rel=0.01)
    # totalizers: exact at the end of the run
    assert history.column(f"{eq}/feed_total").values.max() == pytest.approx(k["volume_in_l"], abs=0.05)
    assert history.column(f"{eq}/outlet_total").values.max() == pytest.approx(k["volume_out_l"], abs=0.05)
    # step yield = outlet volume · outlet concentration / (feed volume · feed concentration)
    c_out = np.median([v for v in history.column(f"{eq}/product").values if v > 0])
    c_in = np.median([v for v in history.column(f"{eq}/product_in").values if v > 0])
    step_yield = k["volume_out_l"] * c_out / (k["volume_in_l"] * c_in)
    assert step_yield == pytest.approx(k["step_yield"], rel=0.01)


def test_the_truth_file_is_written_with_units(
    history: hi.History, truth: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = next(Path(p) for p in tmp_path_factory.getbasetemp().glob("hist*/truth/*.json"))
    on_disk = json.loads(path.read_text())
    assert on_disk["batch_id"] == truth["batch_id"] and path.stem == truth["batch_id"]
    assert on_disk["format"] == "biopilot-truth-1"
    assert on_disk["units"]["product_formed_g"] == "g"
    assert on_disk["units"]["energy_kwh.agitator"] == "kWh"
    k = on_disk["fermentation"]["kpis"]
    assert k["carbon_closure"] == pytest.approx(1.0, abs=1e-9)
    assert k["product_yield_g_per_g"] == pytest.approx(k["product_formed_g"] / k["substrate_consumed_g"])
    overall = on_disk["overall"]
    steps = [u["kpis"]["step_yield"] for u in on_disk["recovery"].values()]
    assert overall["recovery_yield"] == pytest.approx(float(np.prod(steps)), rel=1e-9)
    assert overall["product_purified_g"] == pytest.approx(k["product_harvested_g"] * np.prod(steps), rel=1e-9)


def _fast(seed: int = 42) -> hi.History:
    """One run at 30 s model steps, sampled every 10 minutes (cheap, for comparisons)."""
    sc = default_scenario(seed=seed)
    header = sc.scenario.model_copy(update={"model_step_s": 30.0, "sample_interval_s": 600.0})
    return hi.generate(sc.model_copy(update={"scenario": header}), LINE, runs=1)


def test_runs_are_reproducible_by_seed() -> None:
    one, again, other = _fast(), _fast(), _fast(seed=7)
    for c in one.columns:
        assert np.array_equal(c.values, again.column(c.key).values), c.key
        assert np.array_equal(c.ts_us, again.column(c.key).ts_us), c.key
    (t1,), (t2,), (t3,) = one.truths.values(), again.truths.values(), other.truths.values()
    assert t1["fermentation"] == t2["fermentation"] and t1["recovery"] == t2["recovery"]
    assert t1["samples"] == t2["samples"]
    assert t3["fermentation"]["kpis"]["product_formed_g"] != t1["fermentation"]["kpis"]["product_formed_g"]
    do_one, do_other = (
        one.column("F-101/DissolvedOxygen").values,
        other.column("F-101/DissolvedOxygen").values,
    )
    assert len(do_one) != len(do_other) or not np.array_equal(do_one, do_other)


def _tags(history: hi.History) -> dict[tuple[str, str], str]:
    return {(c.equipment, c.signal.name): f"{c.equipment}.{c.signal.name}" for c in history.columns}


def test_into_the_store_through_the_store_api(history: hi.History, tmp_path: Path) -> None:
    keys = ("F-101/DissolvedOxygen", "F-101/BatchId", "R-201/batch_id")
    tags = {k: v for k, v in _tags(history).items() if f"{k[0]}/{k[1]}" in keys}
    store = SqliteStore(tmp_path / "h.db")
    try:
        n = hi.write_store(history, store, tags, batch=5_000)
        assert n == sum(len(history.column(k).t_h) for k in keys)
        do = history.column("F-101/DissolvedOxygen")
        stored = store.read(
            "F-101.DissolvedOxygen", from_us(int(do.ts_us[0])), from_us(int(do.ts_us[-1]) + 1)
        )
        assert np.array_equal(stored.ts, do.ts_us)
        assert np.allclose(stored.values, do.values)
        assert set(stored.status.tolist()) == {GOOD}
        batch = store.read("R-201.batch_id", history.start, history.end + timedelta(hours=1))
        assert set(batch.values.tolist()) == {"", next(iter(history.truths))}
    finally:
        store.close()


@pytest.mark.parametrize("fmt", ["wide", "long"])
def test_historian_csv_export(history: hi.History, tmp_path: Path, fmt: str) -> None:
    tags = {k: v for k, v in _tags(history).items() if k[0] in ("F-101", "R-201")}
    paths = hi.write_csv(history, tmp_path, tags, fmt=fmt)
    assert sorted(p.name for p in paths) == ["F-101.csv", "R-201.csv"]
    rows = list(csv.reader((tmp_path / "historian" / "F-101.csv").open()))
    do = history.column("F-101/DissolvedOxygen")
    if fmt == "wide":
        header = rows[0]
        assert header[0] == "timestamp" and "F-101.DissolvedOxygen" in header and "F-101.titer" in header
        # one row per distinct sample time: the minute grid, and the lab's sampling times
        times = np.unique(np.concatenate([c.ts_us for c in history.columns if c.equipment == "F-101"]))
        assert len(rows) - 1 == len(times)
        assert rows[1][0] == "2025-01-06T06:00:00.000000Z"
        j = header.index("F-101.DissolvedOxygen")
        assert [float(r[j]) for r in rows[1:] if r[j] != ""] == pytest.approx(do.values.tolist())
        batch = header.index("F-101.BatchId")
        assert {r[batch] for r in rows[1:]} == {"", next(iter(history.truths))}
        titer = header.index("F-101.titer")
        assert sum(1 for r in rows[1:] if r[titer] != "") == len(history.lab)
    else:
        assert rows[0] == ["timestamp", "tag", "value", "status"]
        mine = [r for r in rows[1:] if r[1] == "F-101.DissolvedOxygen"]
        assert [float(r[2]) for r in mine] == pytest.approx(do.values.tolist())
        assert {r[3] for r in mine} == {"0"}


def test_the_store_gets_the_tags_transforms_as_the_collectors_would_apply_them(
    history: hi.History, tmp_path: Path
) -> None:
    """A config that stores the discharge with scale = -1 gets, written directly, what a collector stores."""
    tags = {("F-101", "DischargeFlow"): "F-101.discharge"}
    store = SqliteStore(tmp_path / "h.db")
    try:
        hi.write_store(history, store, tags, transforms={"F-101.discharge": Transform(-1.0)})
        raw = history.column("F-101/DischargeFlow")
        stored = store.read("F-101.discharge", history.start, history.end + timedelta(hours=1))
        assert raw.values.max() > 0 and np.array_equal(stored.values, -raw.values)
    finally:
        store.close()
