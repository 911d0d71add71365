"""Alignment (processing/alignment.py): hand-made series whose aligned times and resampled values are worked
out by hand in each test, and the simulator's runs aligned by their phase landmarks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from biopilot.records import Phase, SeriesData
from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE, to_us
from processing.alignment import (
    Alignment,
    AlignmentError,
    Axis,
    align_series,
    grid,
    landmark_times_h,
    maturity_from_rate,
    maturity_from_total,
    o2_uptake_rate,
    reference_landmarks,
    resample,
)
from tests.processing import simbatches as sb

T0 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)  # the fill starts
INOC = T0 + timedelta(hours=2)  # inoculation: the batch phase starts


def at(h: float) -> datetime:
    """h hours after inoculation."""
    return INOC + timedelta(hours=h)


def phases(fed_h: float | None = 2.0, harvest_h: float | None = 8.0) -> list[Phase]:
    """fill (−2 h), batch from inoculation, fed_batch and harvest at the given hours after inoculation."""
    out = [Phase("fill", T0, INOC), Phase("batch", INOC, at(fed_h) if fed_h is not None else None)]
    if fed_h is not None:
        out.append(Phase("fed_batch", at(fed_h), at(harvest_h) if harvest_h is not None else None))
    if harvest_h is not None:
        out.append(Phase("harvest", at(harvest_h), None))
    return out


def series(hours: list[float] | np.ndarray, values=None, status=None) -> SeriesData:
    hours = np.asarray(hours, dtype=np.float64)
    ts = np.asarray([to_us(at(float(h))) for h in hours], dtype=np.int64)
    v = hours.copy() if values is None else np.asarray(values, dtype=np.float64)
    st = np.full(len(ts), GOOD, dtype=np.int64) if status is None else np.asarray(status, dtype=np.int64)
    return SeriesData("F-101.x", ts, v, st)


LANDMARKS = Alignment(axis=Axis.LANDMARKS.value, landmarks=("fed_batch", "harvest"), reference_h=(4.0, 7.0))


def test_time_since_inoculation_is_a_shift() -> None:
    a = align_series(series([-1.0, 0.0, 2.5]), phases())
    np.testing.assert_allclose(a.t, [-1.0, 0.0, 2.5])
    assert a.origin_us == to_us(INOC)
    assert a.flags == ()


def test_without_an_inoculation_phase_the_run_start_stands_in_and_says_so() -> None:
    a = align_series(series([0.0, 1.0]), [], run_start=at(-0.5))
    np.testing.assert_allclose(a.t, [0.5, 1.5])
    assert a.flags == ("assumed:inoculation=run_start",)
    with pytest.raises(AlignmentError, match="no 'batch' phase"):
        align_series(series([0.0]), [])


def test_two_landmarks_scale_each_phase_linearly() -> None:
    """Run: fed_batch 2 h, harvest 8 h after inoculation; reference: 4 h and 7 h. By hand:
    batch [0, 2] h → [0, 4] (×2): 1 h → 2.0; fed_batch [2, 8] → [4, 7] (×0.5): 5 h → 4 + 3·0.5 = 5.5;
    after the last landmark, slope 1: 9 h → 7 + 1 = 8; before inoculation, slope 1: −1 h → −1."""
    a = align_series(series([-1.0, 0.0, 1.0, 2.0, 5.0, 8.0, 9.0]), phases(), LANDMARKS)
    np.testing.assert_allclose(a.t, [-1.0, 0.0, 2.0, 4.0, 5.5, 7.0, 8.0])
    # and back: the aligned 5.5 is 5 h after inoculation
    back = a.warp.inverse(np.array([5.5]))
    assert back[0] == pytest.approx(to_us(at(5.0)))


def test_a_live_run_before_a_landmark_runs_at_its_own_pace() -> None:
    """Still in fed_batch, harvest not reached: the fed_batch phase is not stretched by a harvest it has not
    seen: after the fed_batch landmark (2 h → 4.0), slope 1: 5 h → 7.0."""
    a = align_series(series([1.0, 5.0]), phases(harvest_h=None), LANDMARKS)
    np.testing.assert_allclose(a.t, [2.0, 7.0])
    assert a.flags == ("missing_landmark:harvest",)


def test_reference_landmarks_are_medians() -> None:
    """fed_batch at 2, 3, 10 h and harvest at 8, 9, 12 h → medians 3 and 9."""
    runs = [phases(2.0, 8.0), phases(3.0, 9.0), phases(10.0, 12.0)]
    assert reference_landmarks(runs, ("fed_batch", "harvest")) == (3.0, 9.0)
    assert landmark_times_h(phases(harvest_h=None), ("fed_batch", "harvest")) == [2.0, None]
    with pytest.raises(AlignmentError, match="no run reached landmark phase 'induction'"):
        reference_landmarks(runs, ("induction",))


def test_resampling_never_bridges_a_gap_or_a_bad_sample() -> None:
    """Samples every 0.1 h from 0 to 8 h of v = hours since inoculation, none in (3, 4) h (a gap: 10 × the
    nominal interval), a bad sample at 6.0 h and an uncertain one at 1.0 h, landmark-aligned as above.
    Grid (aligned) → run time → value, by hand:
      2.0 → 1.0 h (the uncertain sample itself) → 1.0, uncertain;  4.5 → 3.0 h (last sample before the gap)
      → 3.0;  4.75 → 3.5 h (in the gap) → NaN;  5.0 → 4.0 h → 4.0;  5.975 → 5.95 h (between 5.9 and 6.1,
      with the bad 6.0 between) → NaN;  6.05 → 6.1 h → 6.1."""
    hours = np.round(np.concatenate([np.arange(0, 3.05, 0.1), np.arange(4.0, 8.05, 0.1)]), 10)
    status = np.full(len(hours), GOOD)
    status[np.isclose(hours, 6.0)] = BAD_SENSOR_FAILURE
    status[np.isclose(hours, 1.0)] = UNCERTAIN_LAST_USABLE_VALUE
    a = align_series(series(hours, status=status), phases(), LANDMARKS)
    # statuses are kept: bad stays bad (severity 2), uncertain stays uncertain (1)
    assert a.severity[np.isclose(hours, 6.0)].tolist() == [2]
    assert a.severity[np.isclose(hours, 1.0)].tolist() == [1]
    assert int(a.status[np.isclose(hours, 6.0)][0]) == BAD_SENSOR_FAILURE
    # a line is not drawn into the sample after the gap, into or out of the bad sample
    breaks = dict(zip(np.round(hours, 1).tolist(), a.breaks.tolist(), strict=True))
    assert breaks[4.0] and breaks[6.0] and breaks[6.1]
    assert not breaks[3.0] and not breaks[5.9] and not breaks[0.1]
    g = np.array([2.0, 4.5, 4.75, 5.0, 5.975, 6.05])
    r = resample(a, g)
    np.testing.assert_allclose(r.values, [1.0, 3.0, np.nan, 4.0, np.nan, 6.1], atol=1e-9)
    assert r.uncertain.tolist() == [True, False, False, False, False, False]
    np.testing.assert_allclose(r.ts_us[3], to_us(at(4.0)))


def test_maturity_from_a_rate_with_a_gap() -> None:
    """A feed of 2 L/h read every 0.5 h from inoculation to 4 h, no readings in (2, 3) h (a gap: twice the
    nominal interval with max_gap_h = 0.75). Cumulative feed [L]: 0 at 0 h … 4 at 2 h, the gap not
    integrated, 4 at 3 h, 5 at 3.5 h, 6 at 4 h; every value after the gap uncertain (a lower bound).
    A series v = hours, resampled on the maturity grid 0, 1, 2, 3, 4, 4.5, 5 L: each maturity is first
    reached at 0, 0.5, 1, 1.5, 2, 3.25, 3.5 h → those values; 4.5 and 5 L rest on the gap → uncertain."""
    hours = [0, 0.5, 1.0, 1.5, 2.0, 3.0, 3.5, 4.0]
    m = maturity_from_rate(
        series(hours, values=[2.0] * 8), start_us=to_us(INOC), name="feed", unit="L", max_gap_h=0.75
    )
    np.testing.assert_allclose(m.cumulative, [0, 1, 2, 3, 4, 4, 5, 6])
    assert m.uncertain.tolist() == [False] * 5 + [True] * 3
    mat = Alignment(axis=Axis.MATURITY.value, maturity="feed", unit="L")
    a = align_series(series([1.0, 2.5, 3.5], values=[1.0, 2.5, 3.5]), phases(), mat, maturity=m)
    np.testing.assert_allclose(a.t, [2.0, np.nan, 5.0])
    assert a.breaks.tolist()[1] and a.coord_uncertain.tolist() == [False, False, True]
    assert a.severity.tolist() == [0, 0, 1]
    v = series(np.arange(0, 4.01, 0.25))
    r = resample(align_series(v, phases(), mat, maturity=m), np.array([0, 1, 2, 3, 4, 4.5, 5.0]))
    np.testing.assert_allclose(r.values, [0, 0.5, 1.0, 1.5, 2.0, 3.25, 3.5])
    assert r.uncertain.tolist() == [False] * 5 + [True] * 2


def test_maturity_from_a_totalizer() -> None:
    """Totalizer readings 100, 101, 103, bad, 106 L at 0, 1, 2, 3, 4 h → 0, 1, 3, 6 L; the interval over
    the bad reading is a gap (not interpolated), the readings after it are exact."""
    tot = series([0, 1, 2, 3, 4], values=[100, 101, 103, 999, 106], status=[0, 0, 0, BAD_SENSOR_FAILURE, 0])
    m = maturity_from_total(tot, start_us=to_us(INOC), name="feed", unit="L")
    np.testing.assert_allclose(m.cumulative, [0, 1, 3, 6])
    assert m.gap_before.tolist() == [False, False, False, True]
    assert not m.uncertain.any()


def test_alignment_travels_as_json_and_checks_itself() -> None:
    doc = json.loads(json.dumps(LANDMARKS.to_json()))
    assert Alignment.from_json(doc) == LANDMARKS
    with pytest.raises(AlignmentError, match="must increase"):
        Alignment(axis="phase_landmarks", landmarks=("a", "b"), reference_h=(5.0, 3.0))
    with pytest.raises(AlignmentError, match="axis 'wall'"):
        Alignment(axis="wall")


def test_grid() -> None:
    np.testing.assert_allclose(grid(1.0, 0.25), [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(grid(1.1, 0.25), [0, 0.25, 0.5, 0.75, 1.0])
    with pytest.raises(AlignmentError):
        grid(1.0, 0.0)


def test_simulated_runs_meet_at_their_landmarks() -> None:
    """Three baseline runs of the simulator (different batch-phase lengths: inoculum and μ_max vary): aligned
    by landmarks, each run's feed start lands on the reference's (the feed rate leaves 0 at the same aligned
    time within one grid step), whereas by time since inoculation it does not."""
    runs = sb.simulate(7, 3)
    starts = [landmark_times_h(r.phases, ("fed_batch",))[0] for r in runs]
    assert max(starts) - min(starts) > 0.25  # the runs differ by more than a grid step
    al = sb.landmark_alignment(runs)
    g = sb.model_grid(al)
    by_landmark, by_time = [], []
    for r in runs:
        for alignment, out in ((al, by_landmark), (Alignment(), by_time)):
            x = resample(align_series(r.series["feed_rate"], r.phases, alignment), g).values
            out.append(float(g[np.argmax(x > 0.01)]))
    assert max(by_landmark) - min(by_landmark) <= sb.GRID_STEP_H + 1e-9
    assert max(by_time) - min(by_time) > sb.GRID_STEP_H


def test_cumulative_o2_of_a_simulated_run_matches_its_truth() -> None:
    """The maturity axis 'cumulative O2 consumed' of a simulated run: OUR·V from its air flow and off-gas
    (o2_uptake_rate) integrated from inoculation (maturity_from_rate) reaches, at harvest start, the O2 the
    model consumed (truth o2_consumed_mol, summed at every model step) within 2 % (the off-gas KPIs'
    tolerance, tests/processing/test_simulator_truth.py); it is monotone, so every run can be put on it."""
    (run,) = sb.simulate(7, 1)
    inoc = next(p for p in run.phases if p.name == "batch")
    harvest = next(p for p in run.phases if p.name == "harvest")
    rate = o2_uptake_rate(run.series["air_flow"], run.series["offgas_o2"], run.series["offgas_co2"])
    m = maturity_from_rate(rate, start_us=to_us(inoc.start), name="o2_consumed", unit="mol")
    assert np.all(np.diff(m.cumulative) >= 0) and not m.uncertain.any()
    at_harvest = float(np.interp(to_us(harvest.start), m.ts_us, m.cumulative))
    truth = run.truth["fermentation"]["kpis"]["o2_consumed_mol"]
    assert at_harvest == pytest.approx(truth, rel=0.02)
    mat = Alignment(axis=Axis.MATURITY.value, maturity="o2_consumed", unit="mol")
    aligned = align_series(run.series["dissolved_oxygen"], run.phases, mat, maturity=m)
    assert np.nanmax(aligned.t) == pytest.approx(float(m.cumulative[-1]))
