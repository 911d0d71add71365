"""processing/signals.py: alignment never bridges a gap or a bad sample (hand-built cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE
from processing.signals import align, covered_hours, last_usable_before, value_at


def test_align_interpolates_between_usable_samples() -> None:
    # 0 h → 10, 1 h → 20: at 0.25 h 12.5; on a sample its value; outside the span NaN
    a = align(
        np.array([-0.5, 0.0, 0.25, 1.0, 1.5]),
        np.array([0.0, 1.0]),
        np.array([10.0, 20.0]),
        np.zeros(2, np.int64),
    )
    assert a.values[1:4].tolist() == [10.0, 12.5, 20.0]
    assert math.isnan(a.values[0]) and math.isnan(a.values[4])
    assert a.covered.tolist() == [False, True, True, True, False]


def test_align_does_not_bridge_a_gap() -> None:
    # samples at 0, 1, 5 h with max_gap 2 h: 3 h lies in the 4 h gap → NaN; 0.5 h is fine
    a = align(
        np.array([0.5, 3.0]), np.array([0.0, 1.0, 5.0]), np.array([1.0, 1.0, 1.0]), np.zeros(3, np.int64), 2.0
    )
    assert a.values[0] == 1.0 and math.isnan(a.values[1])


def test_align_does_not_interpolate_across_a_bad_sample() -> None:
    # 0 h good, 1 h bad, 2 h good: 0.5 h and 1.5 h both sit next to the bad sample → NaN even though the
    # usable neighbours 0 h and 2 h are within max_gap (3 h)
    t = np.array([0.0, 1.0, 2.0])
    a = align(
        np.array([0.5, 1.5, 2.0]),
        t,
        np.array([1.0, 99.0, 3.0]),
        np.array([GOOD, BAD_SENSOR_FAILURE, GOOD]),
        3.0,
    )
    assert math.isnan(a.values[0]) and math.isnan(a.values[1])
    assert a.values[2] == 3.0


def test_align_reports_uncertain_inputs() -> None:
    t = np.array([0.0, 1.0, 2.0])
    a = align(np.array([0.5, 1.5]), t, np.ones(3), np.array([GOOD, GOOD, UNCERTAIN_LAST_USABLE_VALUE]), 2.0)
    assert a.uncertain.tolist() == [False, True]


def test_value_at_and_last_usable_before() -> None:
    t = np.array([0.0, 1.0, 2.0])
    v = np.array([5.0, 7.0, np.nan])
    s = np.zeros(3, np.int64)
    assert value_at(t, v, s, 0.5, 2.0) == pytest.approx(6.0)
    assert last_usable_before(t, v, s, 5.0) == 7.0  # the NaN at 2 h is not usable
    assert math.isnan(last_usable_before(t, v, s, -1.0))


def test_covered_hours() -> None:
    # points 0, 1, 2, 3, 10 h; 2 h not covered; max gap 2 h: [0,1] only (and [3,10] is a gap) → 1 h
    t = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    assert covered_hours(t, np.array([True, True, False, True, True]), 2.0) == pytest.approx(1.0)
    assert covered_hours(np.array([0.0]), np.array([True])) == 0.0
