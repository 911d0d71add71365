"""Golden-batch envelopes (pure): the baseline runs' band at each aligned grid point
(../shared/domain/kpis.md, "Comparing a trial with the baseline").

At each aligned grid point k with n_k baseline runs that have a value there (mean x̄_k, SD s_k, n_k − 1
degrees of freedom), the band is the prediction interval for one new run:

    x̄_k ± t(1 − α/2, n_k − 1) · s_k · √(1 + 1/n_k)

(a prediction band, not a confidence band for the mean: it is where a new normal run is expected with
probability 1 − α at that point; Hahn & Meeker, *Statistical Intervals*, Wiley 1991, §4.7; Montgomery,
*Introduction to Statistical Quality Control*, 7th ed., Wiley 2013, ch. 11). With 5–10 reference runs this
is the honest band: t(0.975, 4) = 2.776 and √(1 + 1/5) = 1.095 widen it by 55 % over ±1.96·s.

A point with fewer than MIN_RUNS runs has no band (NaN); an envelope from fewer than MIN_RUNS runs with data
is refused (EnvelopeError, a BioPilotError naming the tag and the runs). The band is pointwise: it is for
display; alarms use a rule that controls false alarms over the whole batch (processing.deviation).

The JSON form (Envelope.to_json, format ENVELOPE_FORMAT) is what the catalog stores per equipment + product
+ tag so live runs use it without recomputation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from scipy import stats

from biopilot.errors import BioPilotError
from biopilot.samples import utcnow
from processing.alignment import Alignment

ENVELOPE_FORMAT = "biopilot-envelope-1"
MIN_RUNS = 3  # below this a point has no band and a tag no envelope
DEFAULT_ALPHA = 0.05  # a 95 % pointwise prediction band


class EnvelopeError(BioPilotError):
    """No envelope can be computed (fewer than MIN_RUNS baseline runs with data); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Band:
    """Pointwise prediction band: mean, lower, upper [the signal's unit] and n (runs with a value) per point;
    mean/lower/upper NaN where n < MIN_RUNS."""

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: np.ndarray  # int64

    @property
    def half_width(self) -> np.ndarray:
        return self.upper - self.mean


def prediction_band(values: np.ndarray, alpha: float = DEFAULT_ALPHA) -> Band:
    """The prediction band of runs × points `values` (NaN: no value), at 1 − alpha per point.

    Example (hand-computed, t from a table): three runs 1, 2, 3 at one point: mean 2, s = 1, n = 3,
    t(0.975, 2) = 4.303, half-width 4.303 · 1 · √(4/3) = 4.969 → [−2.969, 6.969]."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    x = np.atleast_2d(np.asarray(values, dtype=np.float64))
    ok = np.isfinite(x)
    n = ok.sum(axis=0).astype(np.int64)
    has = n >= MIN_RUNS
    safe_n = np.where(has, n, MIN_RUNS)
    xs = np.where(ok, x, 0.0)
    mean = xs.sum(axis=0) / np.maximum(n, 1)
    var = np.where(ok, (x - mean) ** 2, 0.0).sum(axis=0) / np.maximum(n - 1, 1)
    t = stats.t.ppf(1 - alpha / 2, safe_n - 1)
    half = t * np.sqrt(var) * np.sqrt(1 + 1 / safe_n)
    nan = np.full(x.shape[1], np.nan)
    return Band(
        np.where(has, mean, nan),
        np.where(has, mean - half, nan),
        np.where(has, mean + half, nan),
        n,
    )


@dataclass(frozen=True)
class Envelope:
    """A golden-batch envelope of one tag of one equipment + product on an aligned grid.

    grid: aligned coordinates [alignment.unit]; mean/lower/upper [unit], NaN where n < MIN_RUNS;
    n: runs with a value at each point; runs: the baseline run ids used (those with data);
    alpha: 1 − the pointwise coverage."""

    equipment: str
    product: str
    tag: str
    unit: str
    alignment: Alignment
    grid: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: np.ndarray
    runs: tuple[str, ...]
    alpha: float
    computed: datetime = field(default_factory=utcnow)

    @property
    def half_width(self) -> np.ndarray:
        return self.upper - self.mean

    def to_json(self) -> dict[str, Any]:
        return {
            "format": ENVELOPE_FORMAT,
            "equipment": self.equipment,
            "product": self.product,
            "tag": self.tag,
            "unit": self.unit,
            "alignment": self.alignment.to_json(),
            "grid": _floats(self.grid),
            "mean": _floats(self.mean),
            "lower": _floats(self.lower),
            "upper": _floats(self.upper),
            "n": [int(v) for v in self.n],
            "runs": list(self.runs),
            "alpha": self.alpha,
            "computed": self.computed.isoformat(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Envelope:
        if doc.get("format") != ENVELOPE_FORMAT:
            raise ValueError(f"not an envelope document (format {doc.get('format')!r})")
        return cls(
            equipment=str(doc["equipment"]),
            product=str(doc["product"]),
            tag=str(doc["tag"]),
            unit=str(doc["unit"]),
            alignment=Alignment.from_json(doc["alignment"]),
            grid=_array(doc["grid"]),
            mean=_array(doc["mean"]),
            lower=_array(doc["lower"]),
            upper=_array(doc["upper"]),
            n=np.asarray(doc["n"], dtype=np.int64),
            runs=tuple(str(r) for r in doc["runs"]),
            alpha=float(doc["alpha"]),
            computed=datetime.fromisoformat(str(doc["computed"])),
        )


def golden_envelope(
    grid: np.ndarray,
    values: np.ndarray,
    runs: Sequence[str],
    *,
    equipment: str,
    product: str,
    tag: str,
    unit: str,
    alignment: Alignment,
    alpha: float = DEFAULT_ALPHA,
    computed: datetime | None = None,
) -> Envelope:
    """The envelope of `tag` from the baseline runs' values on the aligned grid (runs × grid points, NaN
    where a run has no value: processing.alignment.resample of each run). Refused (EnvelopeError) when
    fewer than MIN_RUNS runs have any value, or no grid point has MIN_RUNS runs."""
    grid = np.asarray(grid, dtype=np.float64)
    x = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if x.shape != (len(runs), len(grid)):
        raise ValueError(f"values are {x.shape}, expected (runs, grid points) = ({len(runs)}, {len(grid)})")
    with_data = [r for r, row in zip(runs, x, strict=True) if np.isfinite(row).any()]
    if len(with_data) < MIN_RUNS:
        named = ", ".join(with_data) if with_data else "none"
        raise EnvelopeError(
            f"no envelope for {tag} on {equipment} ({product or 'no product'}): {len(with_data)} baseline"
            f" run(s) with data ({named}); an envelope needs at least {MIN_RUNS}"
        )
    band = prediction_band(x, alpha)
    if not np.any(band.n >= MIN_RUNS):
        raise EnvelopeError(
            f"no envelope for {tag} on {equipment}: no aligned point has data from {MIN_RUNS} runs"
            " (the runs do not overlap on this grid)"
        )
    return Envelope(
        equipment,
        product,
        tag,
        unit,
        alignment,
        grid,
        band.mean,
        band.lower,
        band.upper,
        band.n,
        tuple(str(r) for r in with_data),
        float(alpha),
        computed or utcnow(),
    )


def _floats(a: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=np.float64).tolist()]


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
