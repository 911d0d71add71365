"""Faults in historical data: config/scenarios/faults.toml generated with and without its faults (same seed,
so the same readings): every fault shows in its window, as simulators/faults.py specifies, and nowhere else.
The live protocol faults (OPC UA restart, MQTT disconnect, malformed payloads) are in test_live.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD
from simulators import historical as hi
from simulators.engine import UnitSpec
from simulators.scenario import Fault, FaultKind, load_scenario

REPO = Path(__file__).resolve().parents[2]
UNITS = [UnitSpec("F-101", "fermenter"), UnitSpec("R-201", "centrifuge", "F-101")]
EXTRA = Fault(kind=FaultKind.DROPOUT, signal="F-101/OffgasO2", run=1, at_h=42.0, duration_h=0.5)


@pytest.fixture(scope="module")
def pair() -> tuple[hi.History, hi.History]:
    sc = load_scenario(REPO / "config" / "scenarios" / "faults.toml")
    sc = sc.model_copy(
        update={
            "scenario": sc.scenario.model_copy(update={"model_step_s": 30.0}),
            "faults": [*sc.faults, EXTRA],
        }
    )
    faulty = hi.generate(sc, UNITS, runs=1)
    clean = hi.generate(sc.model_copy(update={"faults": []}), UNITS, runs=1)
    return faulty, clean


def at_same_times(col: hi.Column, ref: hi.Column) -> np.ndarray:
    """The clean readings at the faulty column's times (protocol faults removed some samples)."""
    idx = np.searchsorted(ref.t_h, col.t_h)
    assert np.array_equal(ref.t_h[idx], col.t_h)
    return ref.values[idx]


def window(col: hi.Column, start: float, end: float) -> np.ndarray:
    return (col.t_h >= start - 1e-9) & (col.t_h < end - 1e-9)


def test_dropout_marks_the_window_bad_and_only_it(pair: tuple[hi.History, hi.History]) -> None:
    faulty, clean = pair
    do, ref = faulty.column("F-101/DissolvedOxygen"), clean.column("F-101/DissolvedOxygen")
    w = window(do, 20.0, 20.5)  # run 1 starts at the simulation start
    assert w.sum() == 30  # 30 one-minute samples
    assert set(do.status[w].tolist()) == {BAD_SENSOR_FAILURE}
    assert set(do.status[~w].tolist()) == {GOOD}
    assert np.array_equal(
        do.values, at_same_times(do, ref)
    )  # the reading is there; its status says: unusable


def test_dropout_of_an_analyser_field_marks_its_whole_message(pair: tuple[hi.History, hi.History]) -> None:
    faulty, _ = pair
    o2, co2 = faulty.column("F-101/OffgasO2"), faulty.column("F-101/OffgasCO2")
    w = window(o2, 42.0, 42.5)
    assert set(o2.status[w].tolist()) == {BAD_SENSOR_FAILURE}
    assert np.array_equal(co2.status, o2.status)


def test_flatline_repeats_the_last_reading_with_good_status(pair: tuple[hi.History, hi.History]) -> None:
    faulty, clean = pair
    ph, ref_col = faulty.column("F-101/pH"), clean.column("F-101/pH")
    ref = at_same_times(ph, ref_col)
    w = window(ph, 24.0, 25.0)
    first = int(np.argmax(w))
    assert set(ph.values[w].tolist()) == {ref[first - 1]}
    assert set(ph.status.tolist()) == {GOOD}
    assert np.array_equal(ph.values[~w], ref[~w])
    assert len(set(ref[w].tolist())) > 10  # the real pH moved meanwhile


def test_drift_offsets_the_reading_linearly(pair: tuple[hi.History, hi.History]) -> None:
    faulty, clean = pair
    t, ref = faulty.column("F-101/Temperature"), clean.column("F-101/Temperature")
    w = window(t, 26.0, 30.0)
    offset = t.values - at_same_times(t, ref)
    assert offset[w] == pytest.approx(
        0.25 * (t.t_h[w] - 26.0), abs=1.5e-3
    )  # 0.25 K/h; readings rounded to mK
    assert offset[w].max() == pytest.approx(0.25 * 4, abs=0.01)
    assert np.all(offset[~w] == 0)


def test_spikes_hit_single_samples(pair: tuple[hi.History, hi.History]) -> None:
    faulty, clean = pair
    co2, ref = faulty.column("F-101/OffgasCO2"), clean.column("F-101/OffgasCO2")
    diff = co2.values - at_same_times(co2, ref)
    hit = np.flatnonzero(np.abs(diff) > 1e-9)
    assert diff[hit] == pytest.approx([1.0] * 4, abs=1e-9)
    # the first sample at or after 30, 30.5, 31 and 31.5 h
    assert co2.t_h[hit] == pytest.approx([30.0, 30.5, 31.0, 31.5], abs=1e-6)


def test_protocol_faults_shape_the_data_a_collector_would_store(pair: tuple[hi.History, hi.History]) -> None:
    faulty, clean = pair
    temp, ref_t = faulty.column("F-101/Temperature"), clean.column("F-101/Temperature")
    o2, ref_o2 = faulty.column("F-101/OffgasO2"), clean.column("F-101/OffgasO2")
    state = faulty.column("R-201/power")
    # OPC UA server down 32–32.25 h: no OPC UA samples there, MQTT unaffected
    assert not window(temp, 32.0, 32.25).any() and window(ref_t, 32.0, 32.25).sum() == 15
    assert window(o2, 32.0, 32.25).sum() == 15
    # MQTT publisher away 34–34.5 h without buffer: no MQTT samples; 36–36.25 h with buffer: all there
    assert not window(o2, 34.0, 34.5).any() and not window(state, 34.0, 34.5).any()
    assert window(temp, 34.0, 34.5).sum() == 30
    assert window(o2, 36.0, 36.25).sum() == 15
    assert len(ref_o2.t_h) - len(o2.t_h) == 30
    # the analyser's clock 120 s ahead from 38 to 44 h: its timestamps shift, nobody else's
    start_us = int(faulty.start.timestamp() * 1e6)
    nominal = start_us + np.round(o2.t_h * 3.6e9).astype(np.int64)
    skew = (o2.ts_us - nominal) / 1e6
    w = window(o2, 38.0, 44.0)
    assert set(skew[w].tolist()) == {120.0} and set(skew[~w].tolist()) == {0.0}
    assert np.array_equal(temp.ts_us, start_us + np.round(temp.t_h * 3.6e9).astype(np.int64))


def test_process_faults_change_the_process_and_are_in_the_truth() -> None:
    """Two runs of the baseline recipe; run 2 has its feed pump stopped for 2 h from 30 h after its fill,
    then kLa cut to half for 4 h from 36 h (foaming). Against the same run without faults (same seed, same
    draws): the feed reads 0 in the pump's window and the culture, starved, respires less (off-gas CO2 down,
    DO up, agitation down); in the kLa window the cascade drives the agitator to its maximum and DO dips
    below its set point (oxygen-limited, solved consistently: it stays between 0 and 30 %, no step-to-step
    swing); before the faults the readings are identical; run 1 is untouched. The truth lists both faults
    with their windows and the signals they show on."""
    base = load_scenario(REPO / "config" / "scenarios" / "baseline.toml")
    faults = [
        Fault(kind=FaultKind.FEED_PUMP, equipment="F-101", run=2, at_h=30.0, duration_h=2.0, factor=0.0),
        Fault(kind=FaultKind.OXYGEN_TRANSFER, equipment="F-101", run=2, at_h=36, duration_h=4, factor=0.5),
    ]
    sc = base.model_copy(
        update={
            "scenario": base.scenario.model_copy(update={"model_step_s": 30.0, "sample_interval_s": 300.0}),
            "campaigns": [base.campaigns[0].model_copy(update={"runs": 2})],
        }
    )
    units = [UnitSpec("F-101", "fermenter")]
    faulty = hi.generate(sc.model_copy(update={"faults": faults}), units, runs=2)
    clean = hi.generate(sc, units, runs=2)
    (doc,) = [d for d in faulty.truths.values() if d["run"] == 2]
    assert [(f["kind"], f["signals"]) for f in doc["faults"]] == [
        ("feed_pump", ["FeedRate"]),
        ("oxygen_transfer", ["DissolvedOxygen", "AgitatorSpeed", "AirFlow"]),
    ]
    assert all(not d["faults"] for d in faulty.truths.values() if d["run"] == 1)
    batch = faulty.column("F-101/BatchId")
    t0 = batch.t_h[np.flatnonzero(batch.values == doc["batch_id"])[0]]  # run 2's fill starts

    def col(h: hi.History, name: str) -> np.ndarray:
        return h.column(f"F-101/{name}").values.astype(float)

    t = faulty.column("F-101/FeedRate").t_h - t0
    pump = (t >= 30.0 + 0.1) & (t < 32.0)
    kla = (t >= 36.0 + 0.1) & (t < 40.0)
    before = t < 30.0
    for name in ("FeedRate", "DissolvedOxygen", "AgitatorSpeed", "OffgasCO2"):
        assert np.array_equal(col(faulty, name)[before], col(clean, name)[before]), name
    assert np.all(col(faulty, "FeedRate")[pump] == 0) and np.all(col(clean, "FeedRate")[pump] > 5)
    assert col(faulty, "OffgasCO2")[pump].mean() < 0.5 * col(clean, "OffgasCO2")[pump].mean()
    assert col(faulty, "DissolvedOxygen")[pump].mean() > 45
    assert col(faulty, "AgitatorSpeed")[pump].mean() < col(clean, "AgitatorSpeed")[pump].mean() - 50
    do, speed = col(faulty, "DissolvedOxygen")[kla], col(faulty, "AgitatorSpeed")[kla]
    assert do.min() < 10 and do.max() < 33  # a dip, and never above the set point by more than noise
    assert speed.max() > 475  # the agitator at its maximum (480 rpm)
    assert col(faulty, "AirFlow")[kla].max() > 850  # then the air flow
