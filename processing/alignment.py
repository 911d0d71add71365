"""Aligning runs before they are laid over each other (pure): time since inoculation, phase landmarks, or a
maturity variable (../shared/domain/kpis.md, "Comparing a trial with the baseline").

Three axes, all monotone maps from a run's absolute time to an aligned coordinate:

- time since inoculation [h] (the default): t − t_inoc, where inoculation is the start of the equipment's
  [[process]] inoculation_phase (biopilot.config.ProcessSpec, "batch" by default);
- phase landmarks [h]: the starts of named phases (feed start, induction…) are moved to reference times and
  the time inside each phase between two landmarks is scaled linearly (piecewise-linear time warping with
  landmarks: Kassidas, MacGregor & Taylor 1998, AIChE J 44:864–875, discuss it as the simple alternative
  to dynamic time warping; Ramsay & Silverman, *Functional Data Analysis*, 2nd ed., Springer 2005, ch. 7,
  "landmark registration"). Before inoculation and after the last landmark a run reached, time runs at
  its own pace (slope 1): a live run in its current phase is not stretched by a phase end it has not seen;
- a maturity variable [its unit]: a monotone quantity of the run itself, such as cumulative O2 consumed
  [mol] or cumulative feed [L] (Nomikos & MacGregor 1994, AIChE J 40:1361–1375, "indicator variable").

Every aligned series keeps the samples' own OPC UA status (bad and uncertain samples stay what they are,
decided by severity: biopilot.samples) and gaps stay gaps: resampling onto a grid goes through
processing.signals.align in the run's own time, so it never interpolates across a gap or a bad sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np

from biopilot import units
from biopilot.errors import BioPilotError
from biopilot.records import Phase, SeriesData
from biopilot.samples import GOOD, Severity, to_us
from biopilot.samples import UNCERTAIN_LAST_USABLE_VALUE as UNCERTAIN
from processing import offgas
from processing.energy import gap_limits_h
from processing.signals import align, usable

US_PER_H = 3.6e9
_BAD = 0x80000000
_SEVERITY_SHIFT = 30


class AlignmentError(BioPilotError):
    """A run cannot be aligned as asked (no inoculation, landmarks out of order, no maturity data)."""


class Axis(StrEnum):
    INOCULATION = "time_since_inoculation"
    LANDMARKS = "phase_landmarks"
    MATURITY = "maturity"


@dataclass(frozen=True)
class Alignment:
    """How runs are aligned: the axis, and what it needs. The same Alignment must be used for the baseline
    runs of an envelope or MSPC model and for the run compared with them, so it travels with them (JSON).

    inoculation_phase: the phase whose start is inoculation (ProcessSpec.inoculation_phase).
    landmarks: phase names whose starts are landmarks after inoculation, in process order (LANDMARKS).
    reference_h: the aligned time of each landmark [h since inoculation] (reference_landmarks()).
    maturity: the name of the maturity variable (MATURITY), e.g. "o2_consumed"; unit: the axis unit."""

    axis: str = Axis.INOCULATION.value
    inoculation_phase: str = "batch"
    landmarks: tuple[str, ...] = ()
    reference_h: tuple[float, ...] = ()
    maturity: str | None = None
    unit: str = "h"

    def __post_init__(self) -> None:
        if self.axis not in tuple(Axis):
            raise AlignmentError(f"alignment axis {self.axis!r}: expected one of {', '.join(Axis)}")
        if self.axis == Axis.LANDMARKS:
            if not self.landmarks or len(self.landmarks) != len(self.reference_h):
                raise AlignmentError("landmark alignment needs one reference time per landmark phase")
            ref = np.asarray(self.reference_h, dtype=np.float64)
            if not np.all(np.isfinite(ref)) or ref[0] <= 0 or np.any(np.diff(ref) <= 0):
                raise AlignmentError(
                    f"landmark reference times {list(self.reference_h)} must increase from above 0 h"
                )
        if self.axis == Axis.MATURITY and not self.maturity:
            raise AlignmentError("maturity alignment needs the name of the maturity variable")

    def to_json(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "inoculation_phase": self.inoculation_phase,
            "landmarks": list(self.landmarks),
            "reference_h": [float(x) for x in self.reference_h],
            "maturity": self.maturity,
            "unit": self.unit,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Alignment:
        return cls(
            axis=str(doc["axis"]),
            inoculation_phase=str(doc.get("inoculation_phase", "batch")),
            landmarks=tuple(str(x) for x in doc.get("landmarks", ())),
            reference_h=tuple(float(x) for x in doc.get("reference_h", ())),
            maturity=doc.get("maturity"),
            unit=str(doc.get("unit", "h")),
        )


@dataclass(frozen=True)
class Maturity:
    """A monotone maturity variable of one run, from inoculation: cumulative [unit] at times ts_us [µs].

    gap_before[i]: the interval ending at sample i is a gap (nothing is known in it; for an integrated
    rate it was not integrated). uncertain[i]: the value at sample i rests on a skipped gap or on an
    uncertain-status sample before it (a lower bound rather than the value)."""

    name: str
    unit: str
    ts_us: np.ndarray  # int64
    cumulative: np.ndarray  # float64, non-decreasing
    gap_before: np.ndarray  # bool
    uncertain: np.ndarray  # bool


@dataclass(frozen=True)
class Warp:
    """The monotone map from a run's absolute time to the aligned coordinate.

    Time axes: knots (absolute µs → aligned h), linear between knots, slope 1 h/h beyond them.
    Maturity: the run's Maturity, linear between its samples, unknown (NaN) in its gaps and beyond it."""

    knots_us: np.ndarray  # float64, strictly increasing
    knots_t: np.ndarray  # float64, strictly increasing (time axes) or non-decreasing (maturity)
    maturity: Maturity | None = None

    def forward(self, ts_us: np.ndarray) -> np.ndarray:
        """Aligned coordinate [axis unit] of absolute times [µs]; NaN where unknown."""
        ts = np.asarray(ts_us, dtype=np.float64)
        if self.maturity is None:
            return _piecewise(ts, self.knots_us, self.knots_t, 1.0 / US_PER_H)
        m = self.maturity
        t_h = (m.ts_us.astype(np.float64) - m.ts_us[0]) / US_PER_H if len(m.ts_us) else np.empty(0)
        target = (ts - (m.ts_us[0] if len(m.ts_us) else 0)) / US_PER_H
        return _interp_no_gaps(target, t_h, m.cumulative, m.gap_before)

    def inverse(self, t: np.ndarray) -> np.ndarray:
        """Absolute time [µs, float64] of aligned coordinates; NaN where unknown. On a maturity axis, the
        first time the run reached that maturity."""
        t = np.asarray(t, dtype=np.float64)
        if self.maturity is None:
            return _piecewise(t, self.knots_t, self.knots_us, US_PER_H)
        m = self.maturity
        out = np.full(len(t), np.nan)
        if len(m.ts_us) == 0:
            return out
        c = m.cumulative
        j = np.searchsorted(c, t, side="left")  # first sample with c >= t
        at = (j < len(c)) & (j >= 0)
        jj = np.clip(j, 0, len(c) - 1)
        exact = at & (c[jj] == t)
        out[exact] = m.ts_us[jj[exact]]
        inner = at & ~exact & (jj >= 1)
        lo = np.clip(jj - 1, 0, len(c) - 1)
        ok = inner & ~m.gap_before[jj] & (c[jj] > c[lo])
        w = np.where(ok, (t - c[lo]) / np.where(c[jj] > c[lo], c[jj] - c[lo], 1.0), 0.0)
        ts_lo, ts_hi = m.ts_us[lo].astype(np.float64), m.ts_us[jj].astype(np.float64)
        out[ok] = (ts_lo + w * (ts_hi - ts_lo))[ok]
        return out


@dataclass(frozen=True)
class AlignedSeries:
    """One series of one run on an aligned axis: every raw sample kept, with its status.

    t: aligned coordinate of each sample [unit: `unit`], NaN where unknown (a maturity gap);
    ts_us: source timestamps [µs since the Unix epoch, UTC]; values: float64; status: OPC UA codes;
    breaks[i]: do not draw a line from sample i−1 to sample i (a gap, or a bad sample lies between);
    coord_uncertain[i]: the aligned coordinate itself is uncertain (a maturity that skipped a gap);
    origin_us: inoculation [µs]; flags: e.g. "assumed:inoculation=run_start", "missing_landmark:<phase>"."""

    series: str
    alignment: Alignment
    t: np.ndarray
    ts_us: np.ndarray
    values: np.ndarray
    status: np.ndarray
    breaks: np.ndarray
    coord_uncertain: np.ndarray
    origin_us: int
    warp: Warp
    flags: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ts_us)

    @property
    def unit(self) -> str:
        return self.alignment.unit

    @property
    def severity(self) -> np.ndarray:
        """Per sample 0 good, 1 uncertain, 2 bad (biopilot.samples.Severity): the status's top two bits,
        raised to uncertain where the aligned coordinate is uncertain."""
        bits = (np.asarray(self.status, dtype=np.int64) >> _SEVERITY_SHIFT) & 0b11
        sev = np.where(bits >= 2, int(Severity.BAD), bits)
        return np.where(self.coord_uncertain & (sev < Severity.UNCERTAIN), int(Severity.UNCERTAIN), sev)


@dataclass(frozen=True)
class GridSeries:
    """An aligned series resampled onto a grid: values NaN where the grid point is not covered (outside the
    series, in a gap, next to a bad sample); uncertain: an uncertain sample (or coordinate) entered it;
    ts_us: the absolute time of each grid point in this run [µs since the epoch, float64, NaN if unknown]."""

    series: str
    alignment: Alignment
    grid: np.ndarray
    values: np.ndarray
    uncertain: np.ndarray
    ts_us: np.ndarray

    @property
    def covered(self) -> np.ndarray:
        return np.isfinite(self.values)


# -- the origin and the landmarks -----------------------------------------------------------------------
def phase_start_us(phases: Sequence[Phase], name: str, after_us: int | None = None) -> int | None:
    """Start [µs] of the first phase called `name` (at or after after_us), None if the run has none."""
    starts = [to_us(p.start) for p in phases if p.name == name]
    starts = [s for s in starts if after_us is None or s >= after_us]
    return min(starts) if starts else None


def inoculation_us(
    phases: Sequence[Phase], inoculation_phase: str = "batch", run_start: datetime | None = None
) -> tuple[int, tuple[str, ...]]:
    """Inoculation [µs]: the start of the inoculation phase; without one, the run's start with the flag
    "assumed:inoculation=run_start" (as the KPIs do). AlignmentError when neither is known."""
    t = phase_start_us(phases, inoculation_phase)
    if t is not None:
        return t, ()
    if run_start is None:
        raise AlignmentError(f"the run has no {inoculation_phase!r} phase and no start to align on")
    return to_us(run_start), ("assumed:inoculation=run_start",)


def landmark_times_h(
    phases: Sequence[Phase], landmarks: Sequence[str], inoculation_phase: str = "batch"
) -> list[float | None]:
    """Each landmark phase's start [h since inoculation] in one run; None for a landmark it has not reached.

    A landmark counts only after the one before it (a phase repeated later is not taken as an earlier
    landmark)."""
    t0 = phase_start_us(phases, inoculation_phase)
    if t0 is None:
        return [None] * len(landmarks)
    out: list[float | None] = []
    last = t0
    for name in landmarks:
        t = phase_start_us(phases, name, after_us=last + 1)
        if t is None:
            out.extend([None] * (len(landmarks) - len(out)))
            break
        out.append((t - t0) / US_PER_H)
        last = t
    return out


def reference_landmarks(
    runs_phases: Sequence[Sequence[Phase]], landmarks: Sequence[str], inoculation_phase: str = "batch"
) -> tuple[float, ...]:
    """Reference landmark times [h since inoculation]: per landmark, the median over the runs that reached
    it (the median of componentwise-ordered sequences keeps their order). AlignmentError when a landmark is
    in no run."""
    table = [landmark_times_h(p, landmarks, inoculation_phase) for p in runs_phases]
    out = []
    for i, name in enumerate(landmarks):
        seen = [row[i] for row in table if row[i] is not None]
        if not seen:
            raise AlignmentError(f"no run reached landmark phase {name!r}")
        out.append(float(np.median(seen)))
    if np.any(np.diff([0.0, *out]) <= 0):
        raise AlignmentError(f"landmark phases {list(landmarks)} are not in process order in these runs")
    return tuple(out)


def warp_for(
    phases: Sequence[Phase],
    alignment: Alignment,
    *,
    run_start: datetime | None = None,
    maturity: Maturity | None = None,
) -> tuple[Warp, int, tuple[str, ...]]:
    """The run's map absolute time → aligned coordinate, its inoculation [µs] and flags."""
    if alignment.axis == Axis.MATURITY:
        if maturity is None or len(maturity.ts_us) == 0:
            what = alignment.maturity or "maturity"
            raise AlignmentError(f"maturity alignment needs the run's {what} data")
        origin = int(maturity.ts_us[0])
        return Warp(np.empty(0), np.empty(0), maturity), origin, ()
    origin, flags = inoculation_us(phases, alignment.inoculation_phase, run_start)
    knots_us = [float(origin)]
    knots_t = [0.0]
    if alignment.axis == Axis.LANDMARKS:
        own = landmark_times_h(phases, alignment.landmarks, alignment.inoculation_phase) if not flags else []
        missing = []
        for i, name in enumerate(alignment.landmarks):
            t = own[i] if i < len(own) else None
            if t is None:
                missing.append(name)
                continue
            if missing:  # a later landmark without the earlier ones: not used either
                missing.append(name)
                continue
            knots_us.append(origin + t * US_PER_H)
            knots_t.append(float(alignment.reference_h[i]))
        flags = (*flags, *(f"missing_landmark:{m}" for m in missing))
    return Warp(np.asarray(knots_us), np.asarray(knots_t)), origin, flags


# -- aligning -------------------------------------------------------------------------------------------
def align_series(
    data: SeriesData,
    phases: Sequence[Phase],
    alignment: Alignment | None = None,
    *,
    run_start: datetime | None = None,
    maturity: Maturity | None = None,
    max_gap_h: float | None = None,
) -> AlignedSeries:
    """One run's series (the store's SeriesData, numeric) on the aligned axis.

    phases: the run's phases (the catalog's Phase records); run_start: the run's start, used as
    inoculation when the run has no inoculation phase (flagged); maturity: the run's maturity variable
    (MATURITY axis only, see maturity_from_rate / maturity_from_total); max_gap_h: longest interval that
    is not a gap [h] (default: processing.energy.gap_limits_h, 5 × the local nominal interval).
    Samples are never moved in value or dropped: bad ones keep their status, and a line is never drawn
    across a gap (`breaks`)."""
    alignment = alignment or Alignment()
    warp, origin, flags = warp_for(phases, alignment, run_start=run_start, maturity=maturity)
    ts = np.asarray(data.ts, dtype=np.int64)
    values = np.asarray(data.values, dtype=np.float64)
    status = np.asarray(data.status, dtype=np.int64)
    t = warp.forward(ts)
    coord_unc = np.zeros(len(ts), dtype=bool)
    if alignment.axis == Axis.MATURITY and maturity is not None:
        coord_unc = _coord_uncertain(maturity, ts.astype(np.float64)) & np.isfinite(t)
    return AlignedSeries(
        data.series,
        alignment,
        t,
        ts,
        values,
        status,
        _breaks(ts, values, status, max_gap_h) | ~np.isfinite(t),
        coord_unc,
        origin,
        warp,
        flags,
    )


def resample(aligned: AlignedSeries, grid: np.ndarray, max_gap_h: float | None = None) -> GridSeries:
    """The aligned series at the grid's aligned coordinates: each grid point is mapped back to the run's
    own time and the signal interpolated there by processing.signals.align (linear between consecutive
    usable samples, never across a gap or a bad sample), so gaps stay gaps (NaN)."""
    grid = np.asarray(grid, dtype=np.float64)
    ts_grid = aligned.warp.inverse(grid)
    known = np.isfinite(ts_grid)
    values = np.full(len(grid), np.nan)
    unc = np.zeros(len(grid), dtype=bool)
    if len(aligned.ts_us) and np.any(known):
        origin = float(aligned.ts_us[0])
        res = align(
            (ts_grid[known] - origin) / US_PER_H,
            (aligned.ts_us.astype(np.float64) - origin) / US_PER_H,
            aligned.values,
            aligned.status,
            max_gap_h,
        )
        values[known] = res.values
        unc[known] = res.uncertain
        if aligned.warp.maturity is not None:
            unc[known] |= _coord_uncertain(aligned.warp.maturity, ts_grid[known])
    unc &= np.isfinite(values)
    return GridSeries(aligned.series, aligned.alignment, grid, values, unc, ts_grid)


def grid(end: float, step: float, start: float = 0.0) -> np.ndarray:
    """An evenly spaced aligned grid from start to end inclusive [axis unit] (end rounded down to a step)."""
    if step <= 0 or not math.isfinite(end) or end < start:
        raise AlignmentError(f"a grid needs step > 0 and end ≥ start, got {start:g}..{end:g} by {step:g}")
    n = math.floor((end - start) / step + 1e-9) + 1
    return start + step * np.arange(n)


# -- maturity variables --------------------------------------------------------------------------------
def maturity_from_rate(
    rate: SeriesData,
    *,
    start_us: int,
    name: str,
    unit: str,
    scale: float = 1.0,
    max_gap_h: float | None = None,
) -> Maturity:
    """A maturity variable as the integral of a rate from start_us (inoculation) by the trapezoid rule:
    cumulative O2 consumed [mol] from OUR·V [mol/h], cumulative feed [L] from a feed flow [L/h]
    (scale: rate unit × h → maturity unit). Intervals that are gaps or touch a bad sample are not
    integrated (as processing.energy.integrate_trapezoid); every value after such an interval is marked
    uncertain. Negative rates count as 0, so the variable is non-decreasing."""
    ts = np.asarray(rate.ts, dtype=np.int64)
    keep = ts >= start_us
    ts = ts[keep]
    v = np.asarray(rate.values, dtype=np.float64)[keep]
    st = np.asarray(rate.status, dtype=np.int64)[keep]
    if len(ts) == 0:
        return Maturity(name, unit, ts, np.empty(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))
    t_h = (ts - ts[0]) / US_PER_H
    ok = usable(v, st)
    unc_sample = ((st & 0xC0000000) == 0x40000000) & ok
    dt = np.diff(t_h)
    limit = gap_limits_h(t_h) if max_gap_h is None else np.full(len(dt), max_gap_h)
    fine = ok[:-1] & ok[1:] & (dt <= limit) & (dt > 0)
    rate_pos = np.where(ok, np.maximum(v, 0.0), 0.0) * scale
    area = np.where(fine, 0.5 * (rate_pos[:-1] + rate_pos[1:]) * dt, 0.0)
    cum = np.concatenate([[0.0], np.cumsum(area)])
    gap_before = np.concatenate([[False], ~fine])
    skipped = np.concatenate([[False], ~fine | unc_sample[:-1] | unc_sample[1:]])
    uncertain = np.logical_or.accumulate(skipped)
    return Maturity(name, unit, ts, cum, gap_before, uncertain)


def o2_uptake_rate(
    air_flow: SeriesData,
    o2_out: SeriesData,
    co2_out: SeriesData,
    *,
    air_unit: str = "NL/min",
    fraction_unit: str = "%",
    molar_volume_l_per_mol: float = offgas.MOLAR_VOLUME_STP,
    y_o2_in: float = offgas.Y_O2_AIR,
    y_co2_in: float = offgas.Y_CO2_AIR,
    max_gap_h: float | None = None,
) -> SeriesData:
    """The culture's O2 uptake OUR·V [mol/h] at the outlet O2 readings' times, by the inert balance
    (processing.offgas.our_cer; the volume cancels): n_in·(y_O2,in − y_O2,out·y_inert,in/y_inert,out).

    air_flow: inlet gas in air_unit (a volume flow at the meter's reference, whose molar volume is
    molar_volume_l_per_mol: 22.414 L/mol for NL/min); o2_out, co2_out: dry outlet fractions in fraction_unit
    (converted by biopilot.units). Air flow and CO2 are interpolated at the O2 times without bridging gaps;
    where an input is missing the result is NaN (not usable), where an uncertain sample entered it has an
    uncertain status. Integrate it with maturity_from_rate for the cumulative O2 consumed [mol]."""
    ts = np.asarray(o2_out.ts, dtype=np.int64)
    if len(ts) == 0:
        return SeriesData("o2_uptake", ts, np.empty(0), np.empty(0, dtype=np.int64))
    origin = ts[0]

    def at_o2(s: SeriesData) -> tuple[np.ndarray, np.ndarray]:
        r = align((ts - origin) / US_PER_H, (s.ts - origin) / US_PER_H, s.values, s.status, max_gap_h)
        return r.values, r.uncertain

    o2 = np.where(usable(o2_out.values, o2_out.status), np.asarray(o2_out.values, dtype=np.float64), np.nan)
    o2_unc = ((np.asarray(o2_out.status, dtype=np.int64) & 0xC0000000) == 0x40000000) & np.isfinite(o2)
    air, air_unc = at_o2(air_flow)
    co2, co2_unc = at_o2(co2_out)
    n_in = offgas.gas_flow_mol_per_h(units.convert(air, air_unit, "L/min"), molar_volume_l_per_mol)
    y_o2 = units.convert(o2, fraction_unit, "mol/mol")
    y_co2 = units.convert(co2, fraction_unit, "mol/mol")
    our, _ = offgas.our_cer(n_in, y_o2, y_co2, np.ones(len(ts)), y_o2_in, y_co2_in)
    status = np.where(np.isfinite(our) & (o2_unc | air_unc | co2_unc), UNCERTAIN, GOOD)
    return SeriesData("o2_uptake", ts, our, status.astype(np.int64))


def maturity_from_total(
    total: SeriesData, *, start_us: int, name: str, unit: str, max_gap_h: float | None = None
) -> Maturity:
    """A maturity variable from a cumulative signal (a feed totalizer [L], a balance's dosed mass [kg]):
    its usable readings minus the first one at or after start_us, made non-decreasing (a reading below an
    earlier one is held at the earlier value). An interval that is a gap (or holds a bad sample) is not
    interpolated but the readings after it stay exact (a totalizer counts on while nobody reads it)."""
    ts_all = np.asarray(total.ts, dtype=np.int64)
    v_all = np.asarray(total.values, dtype=np.float64)
    st_all = np.asarray(total.status, dtype=np.int64)
    after = ts_all >= start_us
    ts_all, v_all, st_all = ts_all[after], v_all[after], st_all[after]
    ok = usable(v_all, st_all)
    ts, v = ts_all[ok], v_all[ok]
    if len(ts) == 0:
        return Maturity(name, unit, ts, np.empty(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))
    cum = np.maximum.accumulate(v - v[0])
    t_h = (ts - ts[0]) / US_PER_H
    dt = np.diff(t_h)
    limit = gap_limits_h(t_h) if max_gap_h is None else np.full(len(dt), max_gap_h)
    bad_t = ts_all[~ok]
    n_bad = np.searchsorted(bad_t, ts[1:], side="left") - np.searchsorted(bad_t, ts[:-1], side="right")
    gap_before = np.concatenate([[False], (dt > limit) | (n_bad > 0)])
    unc = (st_all[ok] & 0xC0000000) == 0x40000000
    return Maturity(name, unit, ts, cum, gap_before, unc)


# -- private helpers ------------------------------------------------------------------------------------
def _piecewise(x: np.ndarray, kx: np.ndarray, ky: np.ndarray, slope: float) -> np.ndarray:
    """Linear between knots (kx strictly increasing), slope `slope` (y per x) beyond either end."""
    if len(kx) == 1:
        return ky[0] + (x - kx[0]) * slope
    y = np.interp(x, kx, ky)
    y = np.where(x < kx[0], ky[0] + (x - kx[0]) * slope, y)
    return np.where(x > kx[-1], ky[-1] + (x - kx[-1]) * slope, y)


def _interp_no_gaps(target: np.ndarray, t: np.ndarray, y: np.ndarray, gap_before: np.ndarray) -> np.ndarray:
    """y at target times, linear between samples t (increasing), NaN inside gap intervals and beyond."""
    out = np.full(len(target), np.nan)
    if len(t) == 0:
        return out
    j = np.searchsorted(t, target, side="right")  # t[j-1] <= target < t[j]
    jj = np.clip(j, 1, max(len(t) - 1, 1))
    exact = (j >= 1) & (t[np.clip(j - 1, 0, len(t) - 1)] == target)
    inside = (j >= 1) & (j < len(t))
    if len(t) >= 2:
        lo, hi = jj - 1, jj
        ok = inside & ~gap_before[hi]
        w = np.where(ok, (target - t[lo]) / np.where(t[hi] > t[lo], t[hi] - t[lo], 1.0), 0.0)
        out = np.where(ok, y[lo] + w * (y[hi] - y[lo]), np.nan)
    return np.where(exact, y[np.clip(j - 1, 0, len(t) - 1)], out)


def _coord_uncertain(maturity: Maturity, ts_us: np.ndarray) -> np.ndarray:
    """Whether the maturity at absolute times ts_us [µs] rests on an uncertain value: either end of the
    maturity interval holding the time is uncertain."""
    if len(maturity.ts_us) == 0:
        return np.zeros(len(ts_us), dtype=bool)
    m_ts = maturity.ts_us.astype(np.float64)
    hi = np.clip(np.searchsorted(m_ts, ts_us, side="left"), 0, len(m_ts) - 1)
    lo = np.clip(np.searchsorted(m_ts, ts_us, side="right") - 1, 0, len(m_ts) - 1)
    return maturity.uncertain[lo] | maturity.uncertain[hi]


def _breaks(ts_us: np.ndarray, values: np.ndarray, status: np.ndarray, max_gap_h: float | None) -> np.ndarray:
    """breaks[i]: sample i is not to be joined to the previous usable sample: it is unusable, the interval
    before it is a gap, or a bad sample lies between them."""
    n = len(ts_us)
    out = np.ones(n, dtype=bool)
    ok = usable(values, status)
    idx = np.flatnonzero(ok)
    if len(idx) < 2:
        return out
    t_h = (ts_us[idx] - ts_us[idx[0]]) / US_PER_H
    dt = np.diff(t_h)
    limit = gap_limits_h(t_h) if max_gap_h is None else np.full(len(dt), max_gap_h)
    joined = (dt <= limit) & (np.diff(idx) == 1)  # a bad sample between two usable ones breaks the line
    out[idx[1:]] = ~joined
    return out
