"""Downsampling arithmetic shared by the store backends: per-bucket partial aggregates, computed from raw
points or from rollups, and combined exactly.

A bucket's partial aggregate is (first time, last time, min, max, sum, count) of the good and uncertain
numeric samples in it (bad status and missing values are left out, as in every backend's `read_buckets`).
Partials of disjoint parts of the same bucket combine exactly: min of mins, max of maxes, sum of sums and
of counts, first of firsts, last of lasts; the mean is sum / count at the end. This is what lets a rollup
(the partials of fixed, epoch-aligned buckets) answer a coarser request without touching raw points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biopilot.records import Buckets

BAD = 0x80000000  # status codes at or above this are bad (OPC UA severity bits 1x)
ROLLUP_WIDTHS_S = (10, 60, 600, 3600)
"""Rollup resolutions of the archive [s], finest first; each divides the next, so a coarser one is built
from a finer one and a request is answered from the coarsest that is not wider than its buckets."""


@dataclass(frozen=True)
class Partials:
    """Partial aggregates keyed by bucket index k (any order, duplicates allowed until `combine`)."""

    k: np.ndarray  # int64
    t_first: np.ndarray  # int64 [µs]
    t_last: np.ndarray  # int64 [µs]
    min: np.ndarray  # float64
    max: np.ndarray  # float64
    sum: np.ndarray  # float64
    count: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.k)

    @staticmethod
    def empty() -> Partials:
        i, f = np.empty(0, np.int64), np.empty(0, np.float64)
        return Partials(i, i, i, f, f, f, i)

    def select(self, mask: np.ndarray) -> Partials:
        return Partials(
            self.k[mask],
            self.t_first[mask],
            self.t_last[mask],
            self.min[mask],
            self.max[mask],
            self.sum[mask],
            self.count[mask],
        )

    def rekey(self, k: np.ndarray) -> Partials:
        return Partials(k, self.t_first, self.t_last, self.min, self.max, self.sum, self.count)


def usable(values: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Mask of samples that enter aggregates: a numeric value (not NaN) and a status that is not bad."""
    if values.dtype != np.float64:
        values = np.array([v if isinstance(v, float | int) else np.nan for v in values], dtype=np.float64)
    return (status < BAD) & ~np.isnan(values)


def from_points(ts: np.ndarray, values: np.ndarray, status: np.ndarray, t0: int, width: int) -> Partials:
    """Partials of raw points (ts sorted ascending) in buckets k = (ts − t0) // width.

    values: float64 (NaN = no value) or object (text samples are left out)."""
    keep = usable(values, status)
    if values.dtype != np.float64:
        values = np.array([v if keep[i] else np.nan for i, v in enumerate(values)], dtype=np.float64)
    ts, v = ts[keep], values[keep]
    if len(ts) == 0:
        return Partials.empty()
    k = (ts - t0) // width
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    ends = np.r_[starts[1:], len(k)]
    return Partials(
        k[starts],
        ts[starts],
        ts[ends - 1],
        np.minimum.reduceat(v, starts),
        np.maximum.reduceat(v, starts),
        np.add.reduceat(v, starts),
        (ends - starts).astype(np.int64),
    )


def combine(parts: list[Partials]) -> Partials:
    """Partials with one row per bucket index, in index order (exact for min, max, count, first, last)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Partials.empty()
    if len(parts) == 1 and (len(parts[0]) < 2 or bool(np.all(parts[0].k[1:] > parts[0].k[:-1]))):
        return parts[0]
    k = np.concatenate([p.k for p in parts])
    order = np.argsort(k, kind="stable")
    k = k[order]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])[order]

    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return Partials(
        k[starts],
        np.minimum.reduceat(cat("t_first"), starts),
        np.maximum.reduceat(cat("t_last"), starts),
        np.minimum.reduceat(cat("min"), starts),
        np.maximum.reduceat(cat("max"), starts),
        np.add.reduceat(cat("sum"), starts),
        np.add.reduceat(cat("count"), starts),
    )


def coarsen(p: Partials, factor: int) -> Partials:
    """Partials of buckets `factor` times wider (index k // factor), as a rollup is built from a finer one."""
    return combine([p.rekey(p.k // factor)])


def to_buckets(series: str, p: Partials, t0: int, width: int) -> Buckets:
    return Buckets(
        series=series,
        start=t0 + p.k * width,
        t_first=p.t_first,
        t_last=p.t_last,
        min=p.min,
        max=p.max,
        mean=p.sum / np.maximum(p.count, 1),
        count=p.count,
    )


def bucket_width(t0: int, t1: int, n: int) -> int:
    """The width [µs] of each of n equal buckets over [t0, t1) (at least 1 µs), as every backend splits."""
    if n <= 0:
        raise ValueError("n must be positive")
    return max((t1 - t0 + n - 1) // n, 1)


def aligned(start_us: int, end_us: int, n: int) -> tuple[int, int, int]:
    """A request of about n buckets covering [start, end) whose edges fall on multiples of a rollup width,
    so an archived store answers it from rollups alone: (start, end, n) to pass to read_buckets. The
    rollup is the widest not wider than a tenth of the requested bucket width (else the widest not wider
    than it), so rounding the width up to a multiple of it adds at most about 10 %; start moves back to a
    multiple of that rollup, end forward to a whole bucket. Requests finer than the finest rollup come back
    as they are."""
    width = bucket_width(start_us, end_us, n)
    widths = [w * 1_000_000 for w in ROLLUP_WIDTHS_S]
    fits = [w for w in widths if w * 10 <= width] or [w for w in widths if w <= width]
    if not fits:
        return start_us, end_us, n
    r = fits[-1]
    width = -(-width // r) * r
    start = (start_us // r) * r
    count = max(-(-(end_us - start) // width), 1)
    return start, start + count * width, count


def span_index(t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indexes of the (sorted) times t inside any of the disjoint, sorted spans [lo_i, hi_i): found by
    binary search per span, so it costs O(spans · log len(t)) plus the points found."""
    a = np.searchsorted(t, lo)
    b = np.searchsorted(t, hi)
    n = b - a
    if n.sum() == 0:
        return np.empty(0, np.int64)
    keep = n > 0
    a, n = a[keep], n[keep]
    offsets = np.repeat(a - np.r_[0, np.cumsum(n)[:-1]], n)
    return np.arange(int(n.sum()), dtype=np.int64) + offsets


def in_spans(t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mask of times t inside any of the disjoint, sorted spans [lo_i, hi_i)."""
    if len(lo) == 0:
        return np.zeros(len(t), dtype=bool)
    i = np.searchsorted(lo, t, side="right") - 1
    return (i >= 0) & (t < hi[np.maximum(i, 0)])


def split_free(t_first: np.ndarray, t_last: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Mask of buckets whose samples all lie on one side of every cut (no cut c with t_first < c ≤ t_last):
    such a bucket belongs whole to one requested bucket. cuts: sorted."""
    return np.searchsorted(cuts, t_last, side="right") == np.searchsorted(cuts, t_first, side="right")
