"""Deviation alarms (pure): a run's aligned points against a golden-batch envelope, with a rule that controls
false alarms over the whole batch (../shared/domain/kpis.md, "Comparing a trial with the baseline").

The rule (a runs rule, Western Electric *Statistical Quality Control Handbook*, 1956; Montgomery,
*Introduction to Statistical Quality Control*, 7th ed., Wiley 2013, §5.3.6): an alarm when `k` consecutive
evaluated points lie outside the alarm band on the same side. The alarm band is the envelope's prediction
band at 99 % (DEFAULT_ALARM_ALPHA; the envelope may be stored and shown at 95 %, `alarm_band` rescales it).
Points without a value (a gap, not yet seen) or without a band are not evaluated: they neither count nor end
an excursion. A raised excursion ends when `clear_after` (default k) consecutive evaluated points are back
inside, or a point is on the other side (an alarm off-delay, so a run hovering at the band's edge raises
one alarm, not one per dip). One excursion raises one alarm, at its k-th point; later calls with more
points return the same alarm (same `key`), with its peak and end updated, so the caller stores each key
once.

Why k = 3 (the derivation). With a pointwise two-sided band at 1 − α and independent points, a normal run is
above the band at a point with probability q = α/2, and below with q. An excursion on one side reaches
length k either at the start (probability q^k) or after a point not on that side (probability
(1 − q)·q^k for each of the N − k later positions), so over N evaluated points

    E[false alarms per batch and tag] = 2·q^k·(1 + (N − k)·(1 − q)) ≈ 2·N·(α/2)^k.

For a 44 h batch on a 15 min grid (N = 177) and a 95 % band: k = 1 → 8.6, k = 2 → 0.21, k = 3 → 0.0053,
k = 4 → 1.3e-4 false alarms per batch and tag; on a 5 min grid (N = 529) k = 3 gives 0.016. With the 99 %
alarm band (q = 0.005) k = 3 gives 4.4e-5 (N = 177) and 1.3e-4 (N = 529), and k = 2 would already be
below 0.01 (8.8e-3 for N = 177). `expected_false_alarms` computes the formula; `consecutive_for` picks the
smallest k under a target. k = 3 on a 15 min grid means an alarm 30–45 min after a run leaves the band.

The independence is an assumption the data break: a run's offset from the baseline mean is mostly its own
(inoculum, strain vigour), so it persists along the batch; in the limit, a normal run outside the band at
one point is outside at all of them, and the false-alarm rate per tag tends to α whatever k is. Measured on
simulated baseline runs (benchmarks/baseline_seeds.py, 20 seeds × 11 runs each left out of an envelope of 10,
ten tags, 99 % band, k = 3): 200 of 220 runs raised no alarm on any tag (91 %); base flow, volume and feed
rate alarm most (12, 6, 5 of 220 runs), near the onsets of base dosing and feeding. Batch MSPC
(processing.mspc), which weighs the tags together, is the quieter alarm: 215 of 220 runs without one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from processing.alignment import GridSeries
from processing.envelope import Envelope

DEFAULT_CONSECUTIVE = 3
DEFAULT_ALARM_ALPHA = 0.01  # alarms against the 99 % band (the envelope may show 95 %)


def expected_false_alarms(n_points: int, alpha: float, k: int) -> float:
    """Expected false alarms per batch and tag of the k-consecutive rule over n_points independent points
    against a two-sided pointwise band at 1 − alpha: 2·q^k·(1 + (N − k)(1 − q)), q = α/2 (0 when N < k).

    Example (hand-computed): N = 177, α = 0.05, k = 3: 2 · 0.025³ · (1 + 174 · 0.975) = 5.33e-3."""
    if n_points < k or k < 1:
        return 0.0
    q = alpha / 2
    return 2 * q**k * (1 + (n_points - k) * (1 - q))


def consecutive_for(n_points: int, alpha: float, per_batch: float = 0.01, k_max: int = 20) -> int:
    """The smallest k whose expected false alarms per batch and tag (independent points) are ≤ per_batch."""
    for k in range(1, k_max + 1):
        if expected_false_alarms(n_points, alpha, k) <= per_batch:
            return k
    return k_max


@dataclass(frozen=True)
class Excursion:
    """A maximal stretch of consecutive evaluated points on one side (+1 above / −1 below) that reached
    k points: indices into the grid."""

    direction: int
    start: int  # first point outside
    raised: int  # the k-th consecutive point outside: the alarm
    last: int  # last point outside so far
    end: int | None  # first evaluated point no longer on that side; None: still outside (ongoing)


def excursions(side: np.ndarray, evaluated: np.ndarray, k: int, clear_after: int = 1) -> list[Excursion]:
    """Excursions raised by k consecutive evaluated points on the same side.

    side: per point +1 (above), −1 (below) or 0 (inside); evaluated: the points that count (others are
    skipped: they neither count nor end an excursion). A raised excursion lasts until `clear_after`
    consecutive evaluated points are back inside (an alarm off-delay against chattering, ANSI/ISA-18.2-2016
    §10.4) or a point lies on the other side; it ends at the first of those points."""
    if k < 1 or clear_after < 1:
        raise ValueError(f"k and clear_after must be at least 1, got {k}, {clear_after}")
    out: list[Excursion] = []
    cand_dir, cand_start, cand_len = 0, -1, 0
    active: list[int] | None = None  # [direction, start, raised, last, first point back inside]
    inside_run = 0
    for i in np.flatnonzero(np.asarray(evaluated, dtype=bool)).tolist():
        s = int(side[i])
        if active is not None:
            d = active[0]
            if s == d:
                active[3], inside_run = i, 0
                continue
            if inside_run == 0:
                active[4] = i
            inside_run += 1
            if s == -d or inside_run >= clear_after:
                out.append(Excursion(d, active[1], active[2], active[3], active[4]))
                active, inside_run = None, 0
                cand_dir, cand_start, cand_len = (s, i, 1) if s != 0 else (0, -1, 0)
                if s != 0 and cand_len >= k:
                    active, cand_dir = [s, i, i, i, -1], 0
            continue
        if s != 0 and s == cand_dir:
            cand_len += 1
        else:
            cand_dir, cand_start, cand_len = (s, i, 1) if s != 0 else (0, -1, 0)
        if cand_dir != 0 and cand_len >= k:
            active, cand_dir, inside_run = [cand_dir, cand_start, i, i, -1], 0, 0
    if active is not None:
        out.append(Excursion(active[0], active[1], active[2], active[3], None))
    return out


@dataclass(frozen=True)
class DeviationAlarm:
    """A run left the envelope of `tag` for k consecutive points.

    Aligned times [the alignment's unit] and absolute times [µs since the epoch, UTC; None if unknown];
    size: distance beyond the band at the alarm point [unit], size_halfwidths: that distance in band
    half-widths (None where the band has no width); peak*: the largest distance so far in the excursion;
    end_t: the first aligned point back inside (None while it lasts)."""

    tag: str
    unit: str
    direction: str  # "above" | "below"
    start_t: float
    t: float
    ts_us: int | None
    start_ts_us: int | None
    size: float
    size_halfwidths: float | None
    peak: float
    peak_halfwidths: float | None
    peak_t: float
    end_t: float | None
    points: int  # points outside so far (evaluated)
    consecutive: int  # the rule's k

    @property
    def key(self) -> str:
        """Stable id of the excursion: the same while it lasts, across calls with more points."""
        return f"{self.tag}|{self.direction}|{self.start_t:.6f}"

    @property
    def ongoing(self) -> bool:
        return self.end_t is None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "tag": self.tag,
            "unit": self.unit,
            "direction": self.direction,
            "start_t": self.start_t,
            "t": self.t,
            "ts_us": self.ts_us,
            "start_ts_us": self.start_ts_us,
            "size": self.size,
            "size_halfwidths": self.size_halfwidths,
            "peak": self.peak,
            "peak_halfwidths": self.peak_halfwidths,
            "peak_t": self.peak_t,
            "end_t": self.end_t,
            "points": self.points,
            "consecutive": self.consecutive,
        }


def alarm_band(envelope: Envelope, alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the envelope's band at 1 − alpha per point (default: the envelope's own α): the
    stored band rescaled by t(1 − α/2, n − 1) / t(1 − α_env/2, n − 1), the same prediction band at another
    coverage (the stored half-width is t·s·√(1 + 1/n))."""
    if alpha is None or alpha == envelope.alpha:
        return envelope.lower, envelope.upper
    n = np.maximum(envelope.n, 2)
    factor = stats.t.ppf(1 - alpha / 2, n - 1) / stats.t.ppf(1 - envelope.alpha / 2, n - 1)
    half = envelope.half_width * factor
    return envelope.mean - half, envelope.mean + half


def deviation_alarms(
    envelope: Envelope,
    live: GridSeries,
    *,
    consecutive: int = DEFAULT_CONSECUTIVE,
    alpha: float | None = DEFAULT_ALARM_ALPHA,
    clear_after: int | None = None,
) -> list[DeviationAlarm]:
    """Alarms of a run against an envelope: its aligned values on the envelope's grid (NaN where not seen
    yet or in a gap: processing.alignment.resample(aligned, envelope.grid)). Call it again with the points
    seen so far; an excursion that continues keeps its key (no duplicate).

    alpha: the alarm band's 1 − coverage (default 0.01: a 99 % band, whatever band the envelope shows;
    None: the envelope's own); clear_after: consecutive points back inside that end an excursion (default:
    `consecutive`). Sizes are measured against the alarm band."""
    grid = np.asarray(envelope.grid, dtype=np.float64)
    if len(live.grid) != len(grid) or not np.allclose(live.grid, grid, rtol=0, atol=1e-9):
        raise ValueError("the run is not resampled on the envelope's grid")
    x = np.asarray(live.values, dtype=np.float64)
    lo, hi = alarm_band(envelope, alpha)
    mean = envelope.mean
    evaluated = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    side = np.zeros(len(x), dtype=np.int8)
    with np.errstate(invalid="ignore"):
        side[evaluated & (x > hi)] = 1
        side[evaluated & (x < lo)] = -1
        beyond = np.where(side > 0, x - hi, np.where(side < 0, lo - x, 0.0))
        half = hi - mean
    out = []
    for ex in excursions(side, evaluated, consecutive, clear_after or consecutive):
        seg = np.arange(ex.start, ex.last + 1)
        seg = seg[(side[seg] == ex.direction) & evaluated[seg]]
        ipk = int(seg[np.argmax(beyond[seg])])
        out.append(
            DeviationAlarm(
                tag=envelope.tag,
                unit=envelope.unit,
                direction="above" if ex.direction > 0 else "below",
                start_t=float(grid[ex.start]),
                t=float(grid[ex.raised]),
                ts_us=_us(live.ts_us[ex.raised]),
                start_ts_us=_us(live.ts_us[ex.start]),
                size=float(beyond[ex.raised]),
                size_halfwidths=_ratio(beyond[ex.raised], half[ex.raised]),
                peak=float(beyond[ipk]),
                peak_halfwidths=_ratio(beyond[ipk], half[ipk]),
                peak_t=float(grid[ipk]),
                end_t=float(grid[ex.end]) if ex.end is not None else None,
                points=len(seg),
                consecutive=consecutive,
            )
        )
    return out


def _us(v: float) -> int | None:
    return round(v) if math.isfinite(v) else None


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 and math.isfinite(den) else None
