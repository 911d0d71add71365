"""Aggregates of a group of runs that reveal no single run: a KPI's mean with its confidence interval, and
the envelope of a signal over time since the start of the run. What partners (and startups) see of the host
plant's baseline; the query layer (processing/queries/) computes them on the server and hands out nothing
else.

Pure: numpy in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    sd: float  # sample standard deviation (n − 1)
    low: float
    high: float
    level: float


def mean_ci(values: np.ndarray, level: float = 0.95) -> MeanCI:
    """Mean of `values` with its two-sided Student-t confidence interval, mean ± t(1−α/2, n−1)·s/√n.

    Reference: Student (W. S. Gosset), "The probable error of a mean", Biometrika 6 (1908) 1–25; the
    interval as in NIST/SEMATECH e-Handbook of Statistical Methods, 7.2.2.1. NaN values are ignored. Fewer
    than two values: the interval is NaN (no spread can be estimated)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(0, float("nan"), float("nan"), float("nan"), float("nan"), level)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(n, mean, float("nan"), float("nan"), float("nan"), level)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / np.sqrt(n)
    return MeanCI(n, mean, sd, mean - half, mean + half, level)


@dataclass(frozen=True)
class Envelope:
    hours: np.ndarray  # grid [h since run start]
    mean: np.ndarray
    lower: np.ndarray  # mean − k·sd (NaN where fewer than min_runs runs cover the point)
    upper: np.ndarray  # mean + k·sd
    count: np.ndarray  # runs covering each grid point


def envelope(
    runs: list[tuple[np.ndarray, np.ndarray]], grid_h: np.ndarray, k: float = 2.0, min_runs: int = 3
) -> Envelope:
    """The mean ± k·sd band of a signal across runs on a common grid of hours since each run's start.

    runs: (hours since start [h], values) per run, hours increasing. Each run is linearly interpolated onto
    the grid inside its own span and missing outside it; a grid point covered by fewer than `min_runs` runs
    is NaN in mean, lower and upper (so no point ever shows one run's value). k = 2: about 95 % of a normal
    population (the usual ±2σ batch envelope, e.g. Nomikos & MacGregor, AIChE J. 40 (1994) 1361–1375, for the
    unaligned case)."""
    grid = np.asarray(grid_h, dtype=float)
    table = np.full((len(runs), grid.size), np.nan)
    for i, (t, v) in enumerate(runs):
        t = np.asarray(t, dtype=float)
        v = np.asarray(v, dtype=float)
        ok = np.isfinite(t) & np.isfinite(v)
        t, v = t[ok], v[ok]
        if t.size < 2:
            continue
        inside = (grid >= t[0]) & (grid <= t[-1])
        table[i, inside] = np.interp(grid[inside], t, v)
    count = np.sum(np.isfinite(table), axis=0)
    enough = count >= max(min_runs, 2)
    mean = np.full(grid.size, np.nan)
    sd = np.full(grid.size, np.nan)
    if enough.any():
        mean[enough] = np.nanmean(table[:, enough], axis=0)
        sd[enough] = np.nanstd(table[:, enough], axis=0, ddof=1)
    return Envelope(grid, mean, mean - k * sd, mean + k * sd, count)
