"""Electrical energy from power signals (pure).

E = ∫ P dt by the trapezoid rule over consecutive usable samples (../shared/domain/kpis.md, "Energy and
utilities"). An interval longer than `max_gap_h`, or one that touches a bad-status sample, is a gap: it is
never bridged, and the time it spans counts against the coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_GAP_FACTOR = 5.0  # an interval above 5 × the nominal sampling interval is a gap


@dataclass(frozen=True)
class Integral:
    value: float  # the integral over the covered intervals, in the signal's unit × h
    covered_h: float  # [h] time spanned by intervals that entered the integral
    span_h: float  # [h] time from the first to the last sample
    uncertain: bool  # an uncertain-status sample entered the integral

    @property
    def coverage(self) -> float:
        return self.covered_h / self.span_h if self.span_h > 0 else 0.0


def nominal_interval_h(t_h: np.ndarray) -> float:
    """The nominal sampling interval [h]: the median of the time steps."""
    if len(t_h) < 2:
        return 0.0
    return float(np.median(np.diff(t_h)))


def integrate_trapezoid(
    t_h: np.ndarray, values: np.ndarray, status: np.ndarray, max_gap_h: float | None = None
) -> Integral:
    """∫ values dt [value unit × h] over t_h [h] without bridging gaps.

    max_gap_h: longest interval that is integrated (default: DEFAULT_GAP_FACTOR × the nominal interval).
    Bad-status samples and NaN values are unusable; intervals touching them are gaps."""
    t_h = np.asarray(t_h, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    status = np.asarray(status, dtype=np.int64)
    if len(t_h) < 2:
        return Integral(0.0, 0.0, 0.0, False)
    span = float(t_h[-1] - t_h[0])
    if max_gap_h is None:
        max_gap_h = DEFAULT_GAP_FACTOR * nominal_interval_h(t_h)
    usable = ((status & 0x80000000) == 0) & np.isfinite(values)
    dt = np.diff(t_h)
    ok = usable[:-1] & usable[1:] & (dt <= max_gap_h) & (dt > 0)
    safe = np.where(usable, values, 0.0)
    areas = 0.5 * (safe[:-1] + safe[1:]) * dt
    uncertain_samples = usable & ((status & 0xC0000000) == 0x40000000)
    uncertain = bool(np.any(ok & (uncertain_samples[:-1] | uncertain_samples[1:])))
    return Integral(float(areas[ok].sum()), float(dt[ok].sum()), span, uncertain)


def energy_kwh(
    t_h: np.ndarray, power_kw: np.ndarray, status: np.ndarray, max_gap_h: float | None = None
) -> Integral:
    """Electrical energy [kWh] from a power signal [kW] sampled at t_h [h]."""
    return integrate_trapezoid(t_h, power_kw, status, max_gap_h)
