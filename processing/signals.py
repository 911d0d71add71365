"""Signal helpers shared by the KPI modules (pure): usable samples, alignment without bridging gaps,
values at a time, coverage.

A sample is usable when its OPC UA severity is not bad (the top bit of the status is clear) and its value is
finite (../shared/domain/kpis.md, "Sensor data quality"). Uncertain samples are used and reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processing.energy import gap_limits_h

_BAD = 0x80000000
_SEVERITY = 0xC0000000
_UNCERTAIN = 0x40000000


def usable(values: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Boolean mask of usable samples: status not bad and value finite."""
    values = np.asarray(values, dtype=np.float64)
    status = np.asarray(status, dtype=np.int64)
    return ((status & _BAD) == 0) & np.isfinite(values)


def uncertain(status: np.ndarray) -> np.ndarray:
    """Boolean mask of samples whose severity is uncertain."""
    return (np.asarray(status, dtype=np.int64) & _SEVERITY) == _UNCERTAIN


def default_max_gap_h(t_h: np.ndarray) -> np.ndarray:
    """Per interval of t_h, the longest it may be without being a gap [h] (processing.energy.gap_limits_h:
    DEFAULT_GAP_FACTOR × the local nominal sampling interval)."""
    return gap_limits_h(np.asarray(t_h, dtype=np.float64))


@dataclass(frozen=True)
class Aligned:
    """A signal resampled onto target times: NaN where the target time is not covered."""

    values: np.ndarray  # float64, NaN where not covered
    uncertain: np.ndarray  # bool, an uncertain sample entered the value

    @property
    def covered(self) -> np.ndarray:
        return np.isfinite(self.values)


def align(
    t_target_h: np.ndarray,
    t_h: np.ndarray,
    values: np.ndarray,
    status: np.ndarray,
    max_gap_h: float | None = None,
    *,
    gap_limits: np.ndarray | None = None,
) -> Aligned:
    """Linear interpolation of a signal (t_h [h], values, status) at t_target_h [h], never across a gap.

    A target time is covered when it lies between two consecutive usable samples no more than max_gap_h
    apart (default: per interval of the usable samples, DEFAULT_GAP_FACTOR × the local nominal interval,
    processing.energy.gap_limits_h), or on a usable sample. Outside the signal's usable span, and inside a
    gap, the result is NaN. gap_limits: those default limits when the caller has them already (one per
    interval of the usable samples)."""
    t_target_h = np.asarray(t_target_h, dtype=np.float64)
    t_h = np.asarray(t_h, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    status = np.asarray(status, dtype=np.int64)
    ok = usable(values, status)
    unc_all = uncertain(status)
    out = np.full(len(t_target_h), np.nan)
    unc = np.zeros(len(t_target_h), dtype=bool)
    t, v, u = t_h[ok], values[ok], unc_all[ok]
    if len(t) == 0 or len(t_target_h) == 0:
        return Aligned(out, unc)
    if len(t) == len(t_target_h) and np.array_equal(t, t_target_h):
        # on its own usable times (signals of one clock): every target is a sample, taken as below
        at = np.searchsorted(t, t_target_h, side="right") - 1
        return Aligned(v[at], u[at])
    # bad samples in the raw signal break the interval they sit in: mark the usable neighbours' interval
    # as a gap when a bad sample lies strictly between them
    bad_t = t_h[~ok]
    j = np.searchsorted(t, t_target_h, side="right")  # t[j-1] <= target < t[j]
    exact = (j >= 1) & (t[np.clip(j - 1, 0, len(t) - 1)] == t_target_h)
    inside = (j >= 1) & (j < len(t))
    lo = np.clip(j - 1, 0, len(t) - 1)
    hi = np.clip(j, 0, len(t) - 1)
    dt = t[hi] - t[lo]
    if max_gap_h is None:
        limits = default_max_gap_h(t) if gap_limits is None else gap_limits
        limit = limits[np.clip(lo, 0, max(len(limits) - 1, 0))] if len(limits) else np.zeros(len(lo))
    else:
        limit = max_gap_h
    fine = inside & (dt <= limit) & (dt > 0)
    if len(bad_t) and np.any(fine):
        # number of bad samples strictly inside (t[lo], t[hi])
        n_bad = np.searchsorted(bad_t, t[hi], side="left") - np.searchsorted(bad_t, t[lo], side="right")
        fine &= n_bad == 0
    w = np.where(fine, (t_target_h - t[lo]) / np.where(dt > 0, dt, 1.0), 0.0)
    out = np.where(fine, v[lo] + w * (v[hi] - v[lo]), np.nan)
    unc = np.where(fine, u[lo] | u[hi], False)
    out = np.where(exact, v[lo], out)
    unc = np.where(exact, u[lo], unc)
    return Aligned(out, unc)


def value_at(
    t_h: np.ndarray, values: np.ndarray, status: np.ndarray, at_h: float, max_gap_h: float | None = None
) -> float:
    """The signal's value at at_h [h] (linear between usable samples, never across a gap); NaN if unknown."""
    return float(align(np.array([at_h]), t_h, values, status, max_gap_h).values[0])


def last_usable_before(t_h: np.ndarray, values: np.ndarray, status: np.ndarray, at_h: float) -> float:
    """The newest usable value at or before at_h [h]; NaN when there is none."""
    ok = usable(values, status) & (np.asarray(t_h) <= at_h)
    idx = np.flatnonzero(ok)
    return float(np.asarray(values, dtype=np.float64)[idx[-1]]) if len(idx) else float("nan")


def covered_hours(t_h: np.ndarray, covered: np.ndarray, max_gap_h: float | np.ndarray | None = None) -> float:
    """Time [h] spanned by consecutive points that are both covered and at most max_gap_h apart."""
    t_h = np.asarray(t_h, dtype=np.float64)
    if len(t_h) < 2:
        return 0.0
    if max_gap_h is None:
        max_gap_h = default_max_gap_h(t_h)
    dt = np.diff(t_h)
    ok = covered[:-1] & covered[1:] & (dt <= max_gap_h) & (dt > 0)
    return float(dt[ok].sum())
