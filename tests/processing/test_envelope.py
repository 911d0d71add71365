"""Golden-batch envelopes (processing/envelope.py) and deviation alarms (processing/deviation.py): values
worked out by hand (t quantiles from a printed table: t(0.975, 2) = 4.303, t(0.975, 9) = 2.262,
t(0.995, 9) = 3.250), the false-alarm formula against a Monte Carlo of independent points, and simulated
baseline and faulty runs."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from processing.alignment import Alignment, GridSeries
from processing.deviation import (
    alarm_band,
    consecutive_for,
    deviation_alarms,
    excursions,
    expected_false_alarms,
)
from processing.envelope import Envelope, EnvelopeError, golden_envelope, prediction_band
from tests.processing import simbatches as sb

T = datetime(2025, 1, 1, tzinfo=UTC)


def test_three_run_band_by_hand() -> None:
    """Point 0: runs 1, 2, 3 → mean 2, s 1, half-width 4.303·1·√(1 + 1/3) = 4.969 → [−2.969, 6.969].
    Point 1: two runs only → no band. Point 2: 5, 5, 5 → s = 0 → [5, 5]."""
    values = np.array([[1.0, 10.0, 5.0], [2.0, 12.0, 5.0], [3.0, np.nan, 5.0]])
    band = prediction_band(values, alpha=0.05)
    assert band.n.tolist() == [3, 2, 3]
    assert band.mean[0] == pytest.approx(2.0)
    assert band.lower[0] == pytest.approx(2 - 4.303 * math.sqrt(4 / 3), abs=1e-3)
    assert band.upper[0] == pytest.approx(6.969, abs=1e-3)
    assert math.isnan(band.mean[1]) and math.isnan(band.lower[1]) and math.isnan(band.upper[1])
    assert (band.lower[2], band.upper[2]) == (5.0, 5.0)


def _envelope(values: np.ndarray, runs: list[str]) -> Envelope:
    return golden_envelope(
        np.arange(values.shape[1], dtype=float) * 0.5, values, runs, equipment="F-101", product="enzyme A",
        tag="F-101.dissolved_oxygen", unit="%", alignment=Alignment(), computed=T,
    )  # fmt: skip


def test_fewer_than_three_runs_is_refused_with_a_reason() -> None:
    values = np.array([[1.0, 2.0], [2.0, 3.0], [np.nan, np.nan]])
    with pytest.raises(EnvelopeError) as err:
        _envelope(values, ["F-101:B1", "F-101:B2", "F-101:B3"])
    assert "2 baseline run(s) with data (F-101:B1, F-101:B2)" in err.value.reason
    assert "at least 3" in str(err.value)


def test_envelope_json_round_trip() -> None:
    values = np.array([[1.0, 10.0], [2.0, 12.0], [3.0, np.nan]])
    env = _envelope(values, ["B1", "B2", "B3"])
    doc = json.loads(json.dumps(env.to_json()))  # JSON-able: NaN is null
    assert doc["format"] == "biopilot-envelope-1"
    assert doc["upper"][1] is None and doc["n"] == [3, 2] and doc["runs"] == ["B1", "B2", "B3"]
    back = Envelope.from_json(doc)
    np.testing.assert_allclose(back.upper, env.upper)
    assert (back.tag, back.product, back.alpha, back.computed, back.alignment) == (
        env.tag, env.product, 0.05, T, env.alignment,
    )  # fmt: skip


def test_expected_false_alarms_by_hand() -> None:
    """N = 177 points (44 h on a 15 min grid), 95 % band, k = 3: 2 · 0.025³ · (1 + 174 · 0.975) = 5.333e-3;
    k = 2: 2 · 0.025² · (1 + 175 · 0.975) = 0.2145;
    99 % band, k = 3: 2 · 0.005³ · (1 + 174 · 0.995) = 4.35e-5."""
    assert expected_false_alarms(177, 0.05, 3) == pytest.approx(5.333e-3, rel=1e-3)
    assert expected_false_alarms(177, 0.05, 2) == pytest.approx(0.2145, rel=1e-3)
    assert expected_false_alarms(177, 0.01, 3) == pytest.approx(4.35e-5, rel=1e-3)
    assert consecutive_for(177, 0.05, per_batch=0.01) == 3
    assert consecutive_for(177, 0.01, per_batch=0.01) == 2


def test_the_formula_matches_a_monte_carlo_of_independent_points() -> None:
    """4000 batches of 40 independent points, each above with probability 0.1 and below with 0.1 (an 80 %
    band), k = 2: expected 2 · 0.01 · (1 + 38 · 0.9) = 0.704 alarms per batch; the Monte Carlo mean must be
    within 4 standard errors."""
    rng = np.random.default_rng(11)
    u = rng.random((4000, 40))
    side = np.where(u < 0.1, 1, np.where(u > 0.9, -1, 0)).astype(np.int8)
    counts = np.array([len(excursions(s, np.ones(40, dtype=bool), 2)) for s in side])
    expected = expected_false_alarms(40, 0.2, 2)
    assert expected == pytest.approx(0.704)
    assert abs(counts.mean() - expected) < 4 * counts.std() / math.sqrt(len(counts))


def _flat_envelope(k: int) -> Envelope:
    """mean 0, band ±1 at every point, n = 10, alpha 0.05."""
    return Envelope(
        "F-101", "", "F-101.ph", "pH", Alignment(), np.arange(k, dtype=float), np.zeros(k), -np.ones(k),
        np.ones(k), np.full(k, 10), tuple(f"B{i}" for i in range(10)), 0.05, T,
    )  # fmt: skip


def _live(env: Envelope, values: list[float]) -> GridSeries:
    x = np.full(len(env.grid), np.nan)
    x[: len(values)] = values
    ts = 1.7e15 + env.grid * 3.6e9
    return GridSeries(env.tag, env.alignment, env.grid, x, np.zeros(len(x), dtype=bool), ts)


def test_alarm_rule_by_hand_and_incremental() -> None:
    """Band ±1 (the envelope's own, alpha=None), k = 3, cleared after 3 points inside:
    points 0…12 = 0, 2, 2, 2.5, 2, 0, 0, 0, 3, 3, NaN, 3, −2 →
      an excursion above from 1, raised at 3 (size 2.5 − 1 = 1.5, in half-widths 1.5), peak 1.5 at 3, back
      inside at 5 (three points inside follow); a second above from 8, the NaN at 10 skipped, raised at 11
      (size 2), ended at 12 by a point below. The single point below raises nothing."""
    env = _flat_envelope(13)
    values = [0, 2, 2, 2.5, 2, 0, 0, 0, 3, 3, np.nan, 3, -2]
    alarms = deviation_alarms(env, _live(env, values), alpha=None)
    assert [(a.direction, a.start_t, a.t, a.end_t, a.points) for a in alarms] == [
        ("above", 1.0, 3.0, 5.0, 4),
        ("above", 8.0, 11.0, 12.0, 3),
    ]
    first = alarms[0]
    assert (first.size, first.size_halfwidths, first.peak, first.peak_t) == (1.5, 1.5, 1.5, 3.0)
    assert first.ts_us == round(1.7e15 + 3 * 3.6e9)
    # incremental: the points seen so far give the same alarm (same key) while the excursion lasts; it is
    # over once the third point back inside is seen (point 7), and then ended at the first of them (5)
    keys = []
    for upto in range(3, 9):
        seen = deviation_alarms(env, _live(env, values[: upto + 1]), alpha=None)
        keys.append(seen[0].key)
        assert seen[0].end_t == (None if upto < 7 else 5.0)
    assert len(set(keys)) == 1 and keys[0] == first.key
    assert deviation_alarms(env, _live(env, values[:3]), alpha=None) == []  # two points: no alarm yet


def test_a_chattering_excursion_is_one_alarm() -> None:
    """2, 2, 2, 0, 2, 0, 2, 2: back inside for single points only. Cleared after 3 inside: one alarm;
    cleared after 1: the first excursion ends at 3 and the later short ones never reach k = 3."""
    env = _flat_envelope(8)
    live = _live(env, [2, 2, 2, 0, 2, 0, 2, 2])
    (one,) = deviation_alarms(env, live, alpha=None)
    assert (one.start_t, one.end_t, one.points) == (0.0, None, 6)
    assert [a.end_t for a in deviation_alarms(env, live, alpha=None, clear_after=1)] == [3.0]


def test_alarm_band_at_another_coverage() -> None:
    """A 95 % band of n = 10 runs widened to 99 %: × t(0.995, 9) / t(0.975, 9) = 3.250 / 2.262 = 1.4368."""
    lo, hi = alarm_band(_flat_envelope(2), 0.01)
    np.testing.assert_allclose(hi, 3.250 / 2.262, rtol=2e-4)
    np.testing.assert_allclose(lo, -hi)
    (a,) = deviation_alarms(_flat_envelope(4), _live(_flat_envelope(4), [1.3, 1.5, 1.5, 1.5]), alpha=0.01)
    assert a.start_t == 1.0 and a.size == pytest.approx(1.5 - 1.43661, abs=1e-4)


def test_simulated_feed_failure_leaves_the_feed_envelope_and_normal_runs_mostly_stay() -> None:
    """Envelopes of the ten tags from 10 simulated baseline runs (seed 1, landmark alignment, 15 min grid);
    the run with the feed pump stopped for 2 h raises a feed-rate alarm, below, at the fault (within 1 h of
    its start), and the run with the temperature drift a temperature alarm above. The normal run left out
    of the envelopes raises none on the feed rate and the temperature (the tags at fault here)."""
    runs = sb.with_faults(1)
    ref = runs[: sb.REFERENCE]
    al = sb.landmark_alignment(ref)
    g = sb.model_grid(al)
    arrays = [sb.run_grid_array(r, al, g) for r in runs]
    x = np.stack([a for a, _ in arrays])
    envs = {
        role: golden_envelope(
            g, x[: sb.REFERENCE, :, v], [r.batch_id for r in ref], equipment=sb.EQUIPMENT, product="",
            tag=role, unit=sb.UNITS[v], alignment=al,
        )
        for v, role in enumerate(sb.ROLES)
    }  # fmt: skip

    def alarms(i: int, role: str) -> list:
        v = sb.ROLES.index(role)
        live = GridSeries(role, al, g, x[i][:, v], np.zeros(len(g), dtype=bool), arrays[i][1])
        return deviation_alarms(envs[role], live)

    names = list(sb.FAULTS)
    feed_run = sb.REFERENCE + 1 + names.index("feed")
    start = sb.fault_start_h(runs[feed_run], al)
    (feed,) = alarms(feed_run, "feed_rate")
    assert feed.direction == "below" and start <= feed.t <= start + 1.0
    assert feed.size > 5.0  # [L/h]: the pump delivers 0 of ~6 L/h
    drift_run = sb.REFERENCE + 1 + names.index("drift")
    start = sb.fault_start_h(runs[drift_run], al)
    drift = alarms(drift_run, "temperature")
    assert drift and drift[0].direction == "above" and drift[0].t >= start
    normal = sb.REFERENCE
    assert alarms(normal, "feed_rate") == [] and alarms(normal, "temperature") == []
