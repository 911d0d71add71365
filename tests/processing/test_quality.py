"""processing.quality: gaps, flatlines, spikes — values worked out by hand in each test's comment."""

from __future__ import annotations

import numpy as np
import pytest

from processing.quality import assess, flatline_h, gaps, hampel_spikes

BAD = 0x808C0000  # Bad_SensorFailure
UNCERTAIN = 0x40900000  # Uncertain_LastUsableValue


def test_one_gap_of_an_hour_in_ten_minute_sampling() -> None:
    # every 0.1 h from 0 to 1.0 h, then from 2.1 h to 3.1 h: the 1.1 h interval is > 5 × 0.1 h
    t = np.concatenate([np.arange(11) * 0.1, 2.1 + np.arange(11) * 0.1])
    g = gaps(t)
    assert g.count == 1
    assert g.hours == pytest.approx(1.1)
    assert g.longest_h == pytest.approx(1.1)


def test_regular_sampling_and_a_change_of_rate_are_no_gap() -> None:
    assert gaps(np.arange(50) * 0.1).count == 0
    # 0.1 h × 10 then 1 h × 10: the rate changed (processing.energy.gap_limits_h's own example)
    t = np.concatenate([np.arange(11) * 0.1, 1.0 + np.arange(1, 11) * 1.0])
    assert gaps(t).count == 0


def test_flatline_of_a_stuck_value() -> None:
    # 5.0 at 0, 0.5, 1.0, 1.5 h, then 5.2 at 2 h: flat for 1.5 h (≥ 1 h)
    t = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    v = np.array([5.0, 5.0, 5.0, 5.0, 5.2])
    assert flatline_h(t, v) == pytest.approx(1.5)
    assert flatline_h(t, v, min_h=2.0) == 0.0  # shorter than asked: not flagged
    # noise of ±0.01 within a tolerance of 0.05 is still flat; a slow ramp of 0.04 per step is not (range)
    assert flatline_h(t, v + np.array([0.01, -0.01, 0.01, -0.01, 0.0]), tolerance=0.05) == pytest.approx(1.5)
    assert flatline_h(t, np.arange(5) * 0.04, tolerance=0.05) == 0.0


def test_hampel_finds_the_one_spike() -> None:
    # median 10, MAD 0.1 → 30 is 20 / (1.4826 · 0.1) = 135 scaled MADs from the median
    v = np.array([10, 10.1, 9.9, 10, 10.1, 30, 9.9, 10, 10.1, 9.9, 10])
    assert np.flatnonzero(hampel_spikes(v, half_window=5)).tolist() == [5]
    assert not hampel_spikes(np.full(20, 3.0)).any()  # constant: MAD 0, nothing tested
    assert not hampel_spikes(np.sin(np.arange(200) / 10)).any()  # a smooth signal has no spike
    # Gaussian noise: at the defaults (half window 15, k 8) 1 false spike in 200 000 samples (seed 0)
    assert hampel_spikes(np.random.default_rng(0).normal(0, 1, 200_000)).sum() <= 2


def test_assess_counts_bad_and_uncertain_and_ignores_bad_values() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(100) * 0.05
    v = 20 + rng.normal(0, 0.1, 100)
    status = np.zeros(100, dtype=np.int64)
    v[40] = 1e6  # a bad-status reading: unusable, so no spike
    status[40] = BAD
    status[60:63] = UNCERTAIN
    v[80] = 25.0  # 5 K off in noise of 0.1 K: a spike
    q = assess(t, v, status)
    assert (q.samples, q.bad, q.uncertain, q.spikes, q.gaps.count) == (100, 1, 3, 1, 0)
    assert q.flags == ("spikes", "bad", "uncertain")
    empty = assess(np.empty(0), np.empty(0), np.empty(0, dtype=np.int64))
    assert empty.flags == ("missing",)


def test_hampel_matches_a_plain_loop_with_numpy_median() -> None:
    # reference: the textbook loop, one window at a time with np.median (ends use the nearest full window)
    rng = np.random.default_rng(3)
    v = rng.normal(0, 1, 400)
    v[[50, 200, 399]] += [9.0, -12.0, 15.0]
    h, k = 5, 5.0
    ref = np.zeros(len(v), dtype=bool)
    for i in range(len(v)):
        c = min(max(i, h), len(v) - 1 - h)
        window = v[c - h : c + h + 1]
        med = np.median(window)
        mad = np.median(np.abs(window - med))
        ref[i] = mad > 0 and abs(v[i] - med) > k * 1.4826 * mad
    assert np.array_equal(hampel_spikes(v, h, k), ref)
    assert ref[[50, 200, 399]].all()


def test_flatline_only_inside_active_stretches() -> None:
    # 0.0 held for 3 h while idle (samples 0–6), then a run with a value stuck for 1.5 h (samples 7–10)
    # and a moving one: only the run's 1.5 h count when active marks the run
    t = np.arange(14) * 0.5
    v = np.array([0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7, 8, 9, 10], dtype=float)
    status = np.zeros(14, dtype=np.int64)
    assert assess(t, v, status).flatline_h == pytest.approx(3.0)  # the idle stretch
    active = np.arange(14) >= 7
    assert assess(t, v, status, active=active).flatline_h == pytest.approx(1.5)
    assert assess(t, v, status, active=np.zeros(14, dtype=bool)).flatline_h == 0.0
