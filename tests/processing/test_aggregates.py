"""Baseline aggregates against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from processing.aggregates import envelope, mean_ci


def test_mean_ci_of_one_to_five() -> None:
    """x = 1..5: mean 3, s = √2.5 = 1.5811; t(0.975, 4) = 2.776445 (Student's t table, e.g. NIST/SEMATECH
    e-Handbook 1.3.6.7.2); half width 2.776445 · 1.5811 / √5 = 1.9632."""
    ci = mean_ci(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert (ci.n, ci.mean) == (5, 3.0)
    assert ci.sd == pytest.approx(1.5811388, rel=1e-6)
    assert ci.low == pytest.approx(3 - 1.9632, abs=1e-4) and ci.high == pytest.approx(3 + 1.9632, abs=1e-4)


def test_mean_ci_ignores_nan_and_has_no_interval_for_one_value() -> None:
    ci = mean_ci(np.array([2.0, np.nan]))
    assert ci.n == 1 and ci.mean == 2.0 and np.isnan(ci.low) and np.isnan(ci.sd)
    assert mean_ci(np.array([])).n == 0


def test_envelope_by_hand() -> None:
    """Three runs on [0, 2] h: values 1, 2, 3 (constant) → mean 2, sd 1, band 0..4 with k = 2; the third run
    ends at 1 h, so from there only two runs cover the grid: below min_runs = 3, NaN."""
    t = np.array([0.0, 2.0])
    runs = [
        (t, np.array([1.0, 1.0])),
        (t, np.array([2.0, 2.0])),
        (np.array([0.0, 1.0]), np.array([3.0, 3.0])),
    ]
    env = envelope(runs, np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
    assert list(env.count) == [3, 3, 3, 2, 2]
    assert env.mean[:3] == pytest.approx([2.0, 2.0, 2.0])
    assert env.lower[:3] == pytest.approx([0.0, 0.0, 0.0]) and env.upper[:3] == pytest.approx([4.0] * 3)
    assert np.isnan(env.mean[3:]).all() and np.isnan(env.upper[3:]).all()


def test_envelope_interpolates_each_run_linearly() -> None:
    """A ramp 0→10 over 0..10 h at 2.5 h is 2.5; three identical runs: mean 2.5, sd 0."""
    runs = [(np.array([0.0, 10.0]), np.array([0.0, 10.0]))] * 3
    env = envelope(runs, np.array([2.5]))
    assert env.mean[0] == pytest.approx(2.5) and env.lower[0] == pytest.approx(2.5)
