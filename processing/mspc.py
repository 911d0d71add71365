"""Batch multivariate statistical process control (pure): multiway PCA of baseline batches, Hotelling T² and
SPE with their limits, per-variable contributions, for a finished run (offline) and a live run over the part
of the batch seen so far (online). ../shared/domain/kpis.md, "Comparing a trial with the baseline".

Method (Nomikos & MacGregor 1995, "Multivariate SPC charts for monitoring batch processes", Technometrics
37:41–59; Nomikos & MacGregor 1994, AIChE J 40:1361–1375):

- Unfolding: each run's aligned data on a common grid (K points × J variables) is one row of the
  batch-wise unfolded matrix X (runs × K·J), time-major: columns k·J + j.
- Autoscaling per column: the baseline mean and SD (n − 1) of each column. An SD is floored at the larger of
  FLOOR_FRACTION (10 %) of the variable's median column SD and SPREAD_FRACTION (2 %) of the variable's SD
  over all runs and grid points: where every baseline run shows exactly the same value (a pump or a
  controller still off), a column SD of 0 would turn a new run's ordinary difference in the onset into
  hundreds of SDs (measured: one normal simulated run with base dosing 40 min early had SPE 22 × its
  limit, all from that column). A column with fewer than 3 baseline values is not used; a missing baseline
  value is set to the column mean (0 after scaling).
- PCA by the SVD of the scaled X (numpy). The number of components A is stated, or chosen by
  cross-validation: leave one baseline batch out, fit the rest, and predict each element of the left-out
  batch from the rest of its row with the model (the PRESS residual e_c / (1 − h_c), h_c = Σ_a p_ca², the
  exact leave-one-element-out residual of a projection on orthonormal loadings). Plain row-wise PRESS
  (project the whole left-out row) can only fall as A grows and cannot choose A (Bro, Kjeldahl, Smilde &
  Kiers 2008, "Cross-validation of component models: a critical look at current methods", Anal Bioanal
  Chem 390:1241–1251). A component a is kept while it cuts PRESS by at least 5 %, PRESS(a) / PRESS(a − 1)
  < WOLD_R = 0.95 (a cross-validatory ratio criterion after Wold 1978, "Cross-validatory estimation of the
  number of components in factor and principal components models", Technometrics 20:397–405); at least one
  component, at most n − 2. Wold's own ratio PRESS(a) / RSS(a − 1), with the fitted residual sum of squares
  in the denominator, never keeps a component here: with autoscaling from n ≈ 10 runs the fitted RSS is far
  below any out-of-sample error (measured on the simulated runs: PRESS(0) / RSS(0) ≈ 1.6).
- Hotelling T² = Σ_a t_a² / s_a² (s_a²: variance of score a over the baseline); limit for a new batch
  A(n² − 1) / (n(n − A)) · F(1 − α; A, n − A) (Tracy, Young & Mason 1992, J Qual Technol 24:88–95).
- SPE = Σ e² over the run's columns; limit g·χ²(1 − α; h), g = v / (2m), h = 2m² / v (Box 1954; Nomikos &
  MacGregor 1995), with m, v the mean and variance of the SPE of the baseline runs, each computed by a
  model fitted without it (leave-one-out): the SPE a run has in the model it was fitted with is smaller by
  the degrees of freedom the fit took, and limits from it give new normal batches too many alarms (van
  Sprang, Ramaker, Westerhuis, Gurden & Smilde 2002, "Critical evaluation of approaches for on-line batch
  process monitoring", Chem Eng Sci 57:3979–3991). With m and v from only n ≈ 10 runs the limit is itself
  uncertain: in a Monte Carlo with exactly χ²(18)-distributed SPE and n = 10, g·χ²(0.99; h) lets 2.9 % of
  new normal batches out instead of 1 %. The model's limits therefore take the prediction form
  m·F(1 − α; h, n·h) (a new SPE over the mean of n others is F(h, n·h) under the same approximation), 2.2 %
  in that Monte Carlo; the rest is the estimated v, which no closed form covers (spe_limit without n gives
  the plain g·χ²(h)).
- Missing data (a gap, or the future of a live run): scores by projection to the model plane over the
  known columns, t = (P_oᵀP_o)⁻¹ P_oᵀ x_o (Nomikos & MacGregor 1995, method 3; Nelson, Taylor & MacGregor
  1996, "Missing data methods in PCA and PLS: score calculations with incomplete observations", Chemom
  Intell Lab Syst 35:45–65; Arteaga & Ferrer 2002, J Chemometrics 16:408–418, compare it with the
  alternatives). Online, at grid point k the known columns are those of points 0…k: T²_k from those scores
  against the same F limit, and the instantaneous SPE_k = Σ_j e_kj² of point k against a limit per point,
  moment-matched as above from the baseline runs' leave-one-out online SPE at points k − w … k + w
  (w = ONLINE_WINDOW; Nomikos & MacGregor 1995 pool a window the same way). The scores are unreliable over
  the first few points (few known columns): the online charts start at MIN_KNOWN_POINTS.
- Contributions: to SPE, e_c² per column; to T², x_c · Σ_a p_ca t_a / s_a² per column (they sum to T² for
  a complete run; Nomikos 1996, ISA Trans 35:259–266; Westerhuis, Gurden & Smilde 2000, "Generalized
  contribution plots in multivariate statistical process monitoring", Chemom Intell Lab Syst 51:95–114),
  summed over time per variable and over variables per time point. Relative contributions divide each
  variable's contribution by its mean over the baseline runs (leave-one-out), as Westerhuis et al.
  recommend, so a variable whose residuals are always large (noisy) does not head every list; the top
  contributor is the variable with the largest relative contribution to the statistic furthest above its
  limit.

Units: the input arrays carry each variable's unit (MspcModel.units); T², SPE and contributions are
dimensionless (scaled data).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from biopilot.errors import BioPilotError
from biopilot.samples import utcnow
from processing.alignment import Alignment, GridSeries
from processing.deviation import DEFAULT_CONSECUTIVE, excursions

MSPC_FORMAT = "biopilot-mspc-1"
LEVELS = (0.95, 0.99)
MIN_RUNS = 5  # fewer baseline runs than this: no model (with n − 2 components at most, 5 gives A ≤ 3)
FLOOR_FRACTION = 0.1
SPREAD_FRACTION = 0.02
WOLD_R = 0.95
MAX_COMPONENTS = 10
ONLINE_WINDOW = 2
MIN_KNOWN_POINTS = 3


class MspcError(BioPilotError):
    """No MSPC model can be built from these baseline runs; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- data ------------------------------------------------------------------------------------------------
def run_array(series: Mapping[str, GridSeries], variables: Sequence[str]) -> np.ndarray:
    """One run's K × J array: each variable's GridSeries (processing.alignment.resample on the model grid)
    as a column, NaN where the run has no value (a missing variable is all NaN)."""
    grids = [s.grid for s in series.values()]
    if not grids:
        raise ValueError("no series for this run")
    k = len(grids[0])
    cols = []
    for v in variables:
        s = series.get(v)
        cols.append(np.full(k, np.nan) if s is None else np.asarray(s.values, dtype=np.float64))
    return np.stack(cols, axis=1)


class _Pca(NamedTuple):
    mean: np.ndarray  # (p,)
    scale: np.ndarray  # (p,)
    active: np.ndarray  # (p,) bool
    loadings: np.ndarray  # (p, A) orthonormal columns
    score_sd: np.ndarray  # (A,)
    singular: np.ndarray  # all singular values of the scaled data


def _scaling(x: np.ndarray, n_vars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column means, SDs (floored per variable) and the usable columns of runs × p data (NaN: missing)."""
    ok = np.isfinite(x)
    cnt = ok.sum(axis=0)
    active = cnt >= 3
    xs = np.where(ok, x, 0.0)
    mean = xs.sum(axis=0) / np.maximum(cnt, 1)
    var = np.where(ok, (x - mean) ** 2, 0.0).sum(axis=0) / np.maximum(cnt - 1, 1)
    sd = np.sqrt(var)
    sd_kj = sd.reshape(-1, n_vars)
    act_kj = active.reshape(-1, n_vars)
    x3 = x.reshape(x.shape[0], -1, n_vars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a variable without a positive SD: floor 1
        med = np.nanmedian(np.where(act_kj & (sd_kj > 0), sd_kj, np.nan), axis=0)
        spread = np.nanstd(np.where(np.isfinite(x3), x3, np.nan), axis=(0, 1), ddof=1)
    floor = np.fmax(FLOOR_FRACTION * med, SPREAD_FRACTION * spread)
    floor = np.where(np.isfinite(floor) & (floor > 0), floor, 1.0)
    scale = np.maximum(sd_kj, floor).reshape(-1)
    return np.where(active, mean, 0.0), np.where(active, scale, 1.0), active


def _scaled(pca_mean: np.ndarray, pca_scale: np.ndarray, active: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = (x - pca_mean) / pca_scale
    return np.where(active & np.isfinite(z), z, np.nan)


def _fit(x: np.ndarray, n_vars: int, a: int) -> _Pca:
    mean, scale, active = _scaling(x, n_vars)
    z = np.nan_to_num(_scaled(mean, scale, active, x), nan=0.0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    p = vt[:a].T
    n = x.shape[0]
    return _Pca(mean, scale, active, p, s[:a] / math.sqrt(n - 1), s)


def _project(loadings: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores by projection to the model plane over the known (finite) entries of z, and the residuals
    (NaN where unknown). NaN scores when the known columns cannot determine them."""
    known = np.isfinite(z)
    po = loadings[known]
    a = loadings.shape[1]
    g = po.T @ po
    if known.sum() < a or np.linalg.eigvalsh(g).min() <= 1e-10 * max(np.trace(g), 1e-300):
        return np.full(a, np.nan), np.full(len(z), np.nan)
    t = np.linalg.solve(g, po.T @ z[known])
    e = np.full(len(z), np.nan)
    e[known] = z[known] - po @ t
    return t, e


def _online(loadings: np.ndarray, score_sd: np.ndarray, z: np.ndarray, n_vars: int) -> dict[str, np.ndarray]:
    """Online statistics at every grid point k with the known entries of points 0…k: scores (K, A), T²_k,
    instantaneous SPE_k and residuals of point k (K, J)."""
    a = loadings.shape[1]
    p3 = loadings.reshape(-1, n_vars, a)  # (K, J, A)
    z2 = z.reshape(-1, n_vars)
    known = np.isfinite(z2)
    pm = np.where(known[..., None], p3, 0.0)
    zz = np.where(known, z2, 0.0)
    g = np.cumsum(np.einsum("kja,kjb->kab", pm, pm), axis=0)
    b = np.cumsum(np.einsum("kja,kj->ka", pm, zz), axis=0)
    n_known = np.cumsum(known.sum(axis=1))
    eig_min = np.linalg.eigvalsh(g)[:, 0]
    tr = np.trace(g, axis1=1, axis2=2)
    ok = (n_known >= a) & (eig_min > 1e-10 * np.maximum(tr, 1e-300))
    g_safe = np.where(ok[:, None, None], g, np.eye(a))
    t = np.linalg.solve(g_safe, b[..., None])[..., 0]
    t[~ok] = np.nan
    e = np.where(known, z2 - np.einsum("kja,ka->kj", p3, t), np.nan)
    t2 = np.sum((t / score_sd) ** 2, axis=1)
    spe = np.where(known.any(axis=1), np.nansum(e**2, axis=1), np.nan)
    spe[~ok] = np.nan
    return {"t": t, "t2": t2, "spe": spe, "e": e}


def t2_limit(n: int, a: int, level: float) -> float:
    """Hotelling T² limit for a new batch: A(n² − 1)/(n(n − A)) · F(level; A, n − A) (Tracy et al. 1992).

    Example (recomputed in the tests): n = 10, A = 2, 0.95: 2·99/(10·8) · F(0.95; 2, 8) = 2.475 · 4.459."""
    return a * (n * n - 1) / (n * (n - a)) * float(stats.f.ppf(level, a, n - a))


def spe_limit(m: float, v: float, level: float, n: int | None = None) -> float:
    """SPE limit g·χ²(level; h), g = v/(2m), h = 2m²/v from the mean m and variance v of the baseline SPE
    (Box 1954; Nomikos & MacGregor 1995). NaN when m or v is not positive.

    With n (the number of baseline runs m and v come from), the limit for one new batch accounts for m being
    estimated: if SPE ~ g·χ²(h), the ratio of a new batch's SPE to the mean of n others is F(h, n·h)
    distributed, so the limit is m·F(level; h, n·h) (it tends to g·χ²(level; h) as n grows)."""
    if not (m > 0 and v > 0):
        return math.nan
    g, h = v / (2 * m), 2 * m * m / v
    if n is not None:
        return m * float(stats.f.ppf(level, h, n * h))
    return g * float(stats.chi2.ppf(level, h))


def spe_limits(samples: np.ndarray, level: float, n: int | None = None) -> np.ndarray:
    """spe_limit for each row of SPE samples (NaN: none), from its mean and variance; NaN for rows with
    fewer than 3 values or without spread. n: as in spe_limit."""
    ok = np.isfinite(samples)
    cnt = ok.sum(axis=1)
    x = np.where(ok, samples, 0.0)
    m = x.sum(axis=1) / np.maximum(cnt, 1)
    v = np.where(ok, (samples - m[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(cnt - 1, 1)
    good = (cnt >= 3) & (m > 0) & (v > 0)
    h = np.where(good, 2 * m * m / np.where(good, v, 1.0), 1.0)
    if n is not None:
        return np.where(good, m * stats.f.ppf(level, h, n * h), np.nan)
    g = np.where(good, v / np.where(good, 2 * m, 1.0), np.nan)
    return np.where(good, g * stats.chi2.ppf(level, h), np.nan)


# -- the model -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MspcModel:
    """A multiway PCA model of baseline batches with its limits (see the module docstring).

    Arrays over the unfolded columns are stored as K × J (grid points × variables). t2_limits / spe_limits:
    {level: limit} offline; spe_online_limits: {level: (K,) array} for the instantaneous SPE_k."""

    equipment: str
    product: str
    variables: tuple[str, ...]
    units: tuple[str, ...]
    alignment: Alignment
    grid: np.ndarray  # (K,)
    runs: tuple[str, ...]
    mean: np.ndarray  # (K, J) [each variable's unit]
    scale: np.ndarray  # (K, J) [each variable's unit]
    active: np.ndarray  # (K, J) bool
    loadings: np.ndarray  # (K·J, A), time-major
    score_sd: np.ndarray  # (A,)
    components_by: str  # "cross-validation" or "stated"
    press: tuple[float, ...]  # PRESS(0 … A_max) of the cross-validation (empty when stated)
    rss: tuple[float, ...]  # RSS(0 … A_max) of the fit on all baseline runs
    t2_limits: dict[float, float]
    spe_limits: dict[float, float]
    spe_moments: tuple[float, float]  # m, v of the leave-one-out SPE
    spe_online_limits: dict[float, np.ndarray]
    ref_spe: np.ndarray  # (K, J) mean leave-one-out e² per column (pooled over the online window)
    ref_t2_var: np.ndarray  # (J,) mean |T² contribution| per variable over leave-one-out runs
    loo_t2: np.ndarray  # (n,) leave-one-out T² of each baseline run
    loo_spe: np.ndarray  # (n,) leave-one-out SPE of each baseline run
    computed: datetime = field(default_factory=utcnow)

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def n_components(self) -> int:
        return int(self.loadings.shape[1])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MSPC_FORMAT,
            "equipment": self.equipment,
            "product": self.product,
            "variables": list(self.variables),
            "units": list(self.units),
            "alignment": self.alignment.to_json(),
            "grid": self.grid.tolist(),
            "runs": list(self.runs),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "active": self.active.tolist(),
            "loadings": self.loadings.tolist(),
            "score_sd": self.score_sd.tolist(),
            "n_components": self.n_components,
            "components_by": self.components_by,
            "press": list(self.press),
            "rss": list(self.rss),
            "t2_limits": {str(k): v for k, v in self.t2_limits.items()},
            "spe_limits": {str(k): v for k, v in self.spe_limits.items()},
            "spe_moments": list(self.spe_moments),
            "spe_online_limits": {str(k): _floats(v) for k, v in self.spe_online_limits.items()},
            "ref_spe": self.ref_spe.tolist(),
            "ref_t2_var": self.ref_t2_var.tolist(),
            "loo_t2": self.loo_t2.tolist(),
            "loo_spe": self.loo_spe.tolist(),
            "computed": self.computed.isoformat(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> MspcModel:
        if doc.get("format") != MSPC_FORMAT:
            raise ValueError(f"not an MSPC model document (format {doc.get('format')!r})")
        a = int(doc["n_components"])
        return cls(
            equipment=str(doc["equipment"]),
            product=str(doc["product"]),
            variables=tuple(doc["variables"]),
            units=tuple(doc["units"]),
            alignment=Alignment.from_json(doc["alignment"]),
            grid=np.asarray(doc["grid"], dtype=np.float64),
            runs=tuple(doc["runs"]),
            mean=np.asarray(doc["mean"], dtype=np.float64),
            scale=np.asarray(doc["scale"], dtype=np.float64),
            active=np.asarray(doc["active"], dtype=bool),
            loadings=np.asarray(doc["loadings"], dtype=np.float64).reshape(-1, a),
            score_sd=np.asarray(doc["score_sd"], dtype=np.float64),
            components_by=str(doc["components_by"]),
            press=tuple(float(x) for x in doc["press"]),
            rss=tuple(float(x) for x in doc["rss"]),
            t2_limits={float(k): float(v) for k, v in doc["t2_limits"].items()},
            spe_limits={float(k): float(v) for k, v in doc["spe_limits"].items()},
            spe_moments=(float(doc["spe_moments"][0]), float(doc["spe_moments"][1])),
            spe_online_limits={
                float(k): np.asarray([np.nan if x is None else x for x in v], dtype=np.float64)
                for k, v in doc["spe_online_limits"].items()
            },
            ref_spe=np.asarray(doc["ref_spe"], dtype=np.float64),
            ref_t2_var=np.asarray(doc["ref_t2_var"], dtype=np.float64),
            loo_t2=np.asarray(doc["loo_t2"], dtype=np.float64),
            loo_spe=np.asarray(doc["loo_spe"], dtype=np.float64),
            computed=datetime.fromisoformat(str(doc["computed"])),
        )

    # -- scaling a run ---------------------------------------------------------------------------------
    def scaled(self, x: np.ndarray) -> np.ndarray:
        """A run's K × J array (each variable's unit) scaled and unfolded (K·J,), NaN where unknown."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.mean.shape:
            raise ValueError(f"a run array is {x.shape}; the model's grid × variables is {self.mean.shape}")
        return _scaled(self.mean, self.scale, self.active, x).reshape(-1)


def select_components(
    x: np.ndarray, n_vars: int, max_components: int = MAX_COMPONENTS, wold_r: float = WOLD_R
) -> tuple[int, list[float], list[float]]:
    """A by leave-one-batch-out cross-validation, element-wise prediction and the PRESS ratio (module doc).

    x: runs × p (NaN: missing). Returns (A, PRESS(0…A_max), RSS(0…A_max))."""
    n = x.shape[0]
    a_max = max(1, min(max_components, n - 2))
    full = _fit(x, n_vars, a_max)
    z_full = np.nan_to_num(_scaled(full.mean, full.scale, full.active, x), nan=0.0)
    total = float(np.sum(z_full**2))
    s2 = full.singular**2
    rss = [max(total - float(np.sum(s2[:a])), 0.0) for a in range(a_max + 1)]
    press = np.zeros(a_max + 1)
    for i in range(n):
        rest = np.delete(x, i, axis=0)
        pca = _fit(rest, n_vars, a_max)
        z = _scaled(pca.mean, pca.scale, pca.active, x[i])
        known = np.isfinite(z)
        zk = z[known]
        pk = pca.loadings[known]
        press[0] += float(np.sum(zk**2))
        for a in range(1, a_max + 1):
            p = pk[:, :a]
            t = p.T @ zk
            h = np.sum(p**2, axis=1)
            e = zk - p @ t
            press[a] += float(np.sum((e / np.maximum(1 - h, 1e-9)) ** 2))
    a_sel = 0
    for a in range(1, a_max + 1):
        if press[a - 1] > 0 and press[a] / press[a - 1] < wold_r:
            a_sel = a
        else:
            break
    return max(a_sel, 1), press.tolist(), rss


def fit_mspc(
    x: np.ndarray,
    *,
    variables: Sequence[str],
    units: Sequence[str],
    grid: np.ndarray,
    alignment: Alignment,
    runs: Sequence[str],
    equipment: str = "",
    product: str = "",
    n_components: int | None = None,
    max_components: int = MAX_COMPONENTS,
    wold_r: float = WOLD_R,
    computed: datetime | None = None,
) -> MspcModel:
    """The MSPC model of baseline runs: x is runs × grid points × variables (run_array of each run), NaN
    where a run has no value. n_components: stated A, or None to choose it by cross-validation.
    Refused (MspcError) with fewer than MIN_RUNS runs."""
    x = np.asarray(x, dtype=np.float64)
    n, k, j = x.shape
    if n < MIN_RUNS:
        raise MspcError(
            f"no MSPC model for {equipment or 'this equipment'}: {n} baseline run(s); it needs {MIN_RUNS}"
        )
    if len(variables) != j or len(units) != j or len(grid) != k or len(runs) != n:
        raise ValueError("variables, units, grid and runs must match the array's shape")
    flat = x.reshape(n, k * j)
    if n_components is None:
        a, press, rss = select_components(flat, j, max_components, wold_r)
        by = "cross-validation"
    else:
        if not 1 <= n_components <= n - 2:
            raise MspcError(f"{n_components} components from {n} runs: at most n − 2 = {n - 2}")
        a, press, by = n_components, [], "stated"
        full = _fit(flat, j, a)
        total = float(np.sum(np.nan_to_num(_scaled(full.mean, full.scale, full.active, flat), nan=0.0) ** 2))
        rss = [max(total - float(np.sum(full.singular[:b] ** 2)), 0.0) for b in range(a + 1)]
    pca = _fit(flat, j, a)

    # leave-one-out statistics of the baseline runs: the limits and the reference contributions
    loo_t2, loo_spe = np.zeros(n), np.zeros(n)
    online_spe = np.full((n, k), np.nan)
    e2 = np.full((n, k, j), np.nan)
    t2_var = np.zeros((n, j))
    for i in range(n):
        fold = _fit(np.delete(flat, i, axis=0), j, a)
        z = _scaled(fold.mean, fold.scale, fold.active, flat[i])
        t, e = _project(fold.loadings, z)
        loo_t2[i] = float(np.sum((t / fold.score_sd) ** 2))
        loo_spe[i] = float(np.nansum(e**2))
        e2[i] = (e**2).reshape(k, j)
        t2_var[i] = _t2_contrib(fold.loadings, fold.score_sd, z, t).reshape(k, j).sum(axis=0)
        online_spe[i] = _online(fold.loadings, fold.score_sd, z, j)["spe"]
    m, v = float(np.nanmean(loo_spe)), float(np.nanvar(loo_spe, ddof=1))
    # per grid point, the leave-one-out online SPE pooled over points k − w … k + w
    pooled = np.full((k, n * (2 * ONLINE_WINDOW + 1)), np.nan)
    ref_spe = np.full((k, j), np.nan)
    for kk in range(k):
        lo, hi = max(0, kk - ONLINE_WINDOW), min(k, kk + ONLINE_WINDOW + 1)
        vals = online_spe[:, lo:hi].ravel()
        pooled[kk, : len(vals)] = vals
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ref_spe[kk] = np.nanmean(e2[:, lo:hi, :].reshape(-1, j), axis=0)
    online_limits = {lvl: spe_limits(pooled, lvl, n) for lvl in LEVELS}
    return MspcModel(
        equipment=equipment,
        product=product,
        variables=tuple(variables),
        units=tuple(units),
        alignment=alignment,
        grid=np.asarray(grid, dtype=np.float64),
        runs=tuple(runs),
        mean=pca.mean.reshape(k, j),
        scale=pca.scale.reshape(k, j),
        active=pca.active.reshape(k, j),
        loadings=pca.loadings,
        score_sd=pca.score_sd,
        components_by=by,
        press=tuple(float(x) for x in press),
        rss=tuple(float(x) for x in rss),
        t2_limits={lvl: t2_limit(n, a, lvl) for lvl in LEVELS},
        spe_limits={lvl: spe_limit(m, v, lvl, n) for lvl in LEVELS},
        spe_moments=(m, v),
        spe_online_limits=online_limits,
        ref_spe=ref_spe,
        ref_t2_var=np.mean(np.abs(t2_var), axis=0),
        loo_t2=loo_t2,
        loo_spe=loo_spe,
        computed=computed or utcnow(),
    )


def _t2_contrib(loadings: np.ndarray, score_sd: np.ndarray, z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per column x_c · Σ_a p_ca t_a / s_a² (0 where unknown)."""
    w = loadings @ (t / score_sd**2)
    return np.where(np.isfinite(z), np.nan_to_num(z) * w, 0.0)


def _top(
    variables: Sequence[str], rel_t2: np.ndarray, rel_spe: np.ndarray, t2_ratio: float, spe_ratio: float
) -> tuple[str | None, str | None]:
    """The statistic furthest above its limit (ratio statistic / 99 % limit) and its top variable."""
    if not (math.isfinite(t2_ratio) or math.isfinite(spe_ratio)):
        return None, None
    stat = "spe" if not math.isfinite(t2_ratio) or spe_ratio >= t2_ratio else "t2"
    rel = rel_spe if stat == "spe" else rel_t2
    if not np.any(np.isfinite(rel)):
        return stat, None
    return stat, variables[int(np.nanargmax(rel))]


# -- a finished run --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MspcResult:
    """A finished run against the model. Contributions per variable (J,) raw and relative to the baseline
    runs' mean; per time point (K,); per column (K, J). known_share: share of the model's columns the run
    has (its SPE is over those only)."""

    variables: tuple[str, ...]
    grid: np.ndarray
    t2: float
    spe: float
    t2_limits: dict[float, float]
    spe_limits: dict[float, float]
    scores: np.ndarray
    known_share: float
    spe_contrib: np.ndarray  # (J,)
    t2_contrib: np.ndarray  # (J,)
    spe_rel: np.ndarray  # (J,)
    t2_rel: np.ndarray  # (J,)
    spe_by_time: np.ndarray  # (K,)
    t2_by_time: np.ndarray  # (K,)
    spe_columns: np.ndarray  # (K, J)
    t2_columns: np.ndarray  # (K, J)
    top_statistic: str | None
    top_variable: str | None

    def inside(self, level: float = 0.99) -> bool:
        """T² and SPE both at or below their limits at `level` (one of LEVELS)."""
        return bool(self.t2 <= self.t2_limits[level] and self.spe <= self.spe_limits[level])

    def to_json(self) -> dict[str, Any]:
        return {
            "t2": _num(self.t2),
            "spe": _num(self.spe),
            "t2_limits": {str(k): _num(v) for k, v in self.t2_limits.items()},
            "spe_limits": {str(k): _num(v) for k, v in self.spe_limits.items()},
            "scores": _floats(self.scores),
            "known_share": self.known_share,
            "contributions": {
                v: {
                    "spe": _num(self.spe_contrib[i]),
                    "t2": _num(self.t2_contrib[i]),
                    "spe_relative": _num(self.spe_rel[i]),
                    "t2_relative": _num(self.t2_rel[i]),
                }
                for i, v in enumerate(self.variables)
            },
            "grid": _floats(self.grid),
            "spe_by_time": _floats(self.spe_by_time),
            "t2_by_time": _floats(self.t2_by_time),
            "top_statistic": self.top_statistic,
            "top_variable": self.top_variable,
        }


def mspc_offline(model: MspcModel, x: np.ndarray) -> MspcResult:
    """A finished run (K × J, each variable's unit, NaN where it has no value) against the model: T², SPE,
    their limits, contributions and the top contributor. Missing columns: projection to the model plane."""
    z = model.scaled(x)
    t, e = _project(model.loadings, z)
    k, j = model.mean.shape
    t2 = float(np.sum((t / model.score_sd) ** 2))
    spe = float(np.nansum(e**2)) if np.isfinite(t).all() else math.nan
    e2 = np.nan_to_num(e**2).reshape(k, j)
    c_t2 = _t2_contrib(model.loadings, model.score_sd, z, np.nan_to_num(t)).reshape(k, j)
    spe_var, t2_var = e2.sum(axis=0), c_t2.sum(axis=0)
    ref_spe_var = np.nansum(model.ref_spe, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        spe_rel = np.where(ref_spe_var > 0, spe_var / ref_spe_var, np.nan)
        t2_rel = np.where(model.ref_t2_var > 0, t2_var / model.ref_t2_var, np.nan)
    stat, top = _top(
        model.variables, t2_rel, spe_rel, t2 / model.t2_limits[0.99], spe / model.spe_limits[0.99]
    )
    return MspcResult(
        model.variables,
        model.grid,
        t2,
        spe,
        dict(model.t2_limits),
        dict(model.spe_limits),
        t,
        float(np.isfinite(z).sum() / max(model.active.sum(), 1)),
        spe_var,
        t2_var,
        spe_rel,
        t2_rel,
        e2.sum(axis=1),
        c_t2.sum(axis=1),
        e2,
        c_t2,
        stat,
        top,
    )


# -- a live run ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MspcAlarm:
    """The online T² or SPE above its 99 % limit for k consecutive grid points (processing.deviation rule)."""

    statistic: str  # "t2" | "spe"
    start_t: float  # aligned time of the first point above [alignment unit]
    t: float  # aligned time of the alarm (the k-th point)
    ts_us: int | None  # absolute time of the alarm point [µs], when known
    ratio: float  # statistic / limit at the alarm point
    peak_ratio: float
    end_t: float | None
    top_variable: str | None  # the largest relative contribution at the alarm point

    @property
    def key(self) -> str:
        return f"mspc|{self.statistic}|{self.start_t:.6f}"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "statistic": self.statistic,
            "start_t": self.start_t,
            "t": self.t,
            "ts_us": self.ts_us,
            "ratio": self.ratio,
            "peak_ratio": self.peak_ratio,
            "end_t": self.end_t,
            "top_variable": self.top_variable,
        }


@dataclass(frozen=True)
class MspcTrajectory:
    """A live run's online T²_k and SPE_k at each grid point seen (NaN beyond `upto` and before
    MIN_KNOWN_POINTS), with the limits per point, the contributions at the newest point, and alarms."""

    variables: tuple[str, ...]
    grid: np.ndarray
    upto: int  # index of the newest grid point with data (−1: none)
    t2: np.ndarray  # (K,)
    spe: np.ndarray  # (K,)
    t2_limits: dict[float, float]
    spe_limits: dict[float, np.ndarray]  # (K,) per level
    spe_contrib: np.ndarray  # (J,) at `upto`
    spe_rel: np.ndarray  # (J,) at `upto`, relative to the baseline's e² there
    t2_contrib: np.ndarray  # (J,) over points 0 … upto
    t2_rel: np.ndarray  # (J,)
    alarms: tuple[MspcAlarm, ...]
    top_statistic: str | None
    top_variable: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "grid": _floats(self.grid),
            "upto": self.upto,
            "t2": _floats(self.t2),
            "spe": _floats(self.spe),
            "t2_limits": {str(k): _num(v) for k, v in self.t2_limits.items()},
            "spe_limits": {str(k): _floats(v) for k, v in self.spe_limits.items()},
            "contributions": {
                v: {
                    "spe": _num(self.spe_contrib[i]),
                    "spe_relative": _num(self.spe_rel[i]),
                    "t2": _num(self.t2_contrib[i]),
                    "t2_relative": _num(self.t2_rel[i]),
                }
                for i, v in enumerate(self.variables)
            },
            "alarms": [a.to_json() for a in self.alarms],
            "top_statistic": self.top_statistic,
            "top_variable": self.top_variable,
        }


def mspc_online(
    model: MspcModel,
    x: np.ndarray,
    *,
    upto: int | None = None,
    ts_us: np.ndarray | None = None,
    consecutive: int = DEFAULT_CONSECUTIVE,
) -> MspcTrajectory:
    """A live run (K × J on the model grid, NaN where not seen yet or missing) over the points 0…upto
    (default: the newest point with any value). ts_us: absolute time of each grid point [µs] for the
    alarms (GridSeries.ts_us of any variable)."""
    x = np.array(x, dtype=np.float64)
    k, j = model.mean.shape
    seen = np.flatnonzero(np.isfinite(x).any(axis=1))
    if upto is None:
        upto = int(seen[-1]) if len(seen) else -1
    x[upto + 1 :] = np.nan
    z = model.scaled(x)
    nan_k = np.full(k, np.nan)
    if upto < 0:
        zeros = np.zeros(j)
        return MspcTrajectory(
            model.variables, model.grid, -1, nan_k, nan_k.copy(), dict(model.t2_limits),
            dict(model.spe_online_limits), zeros, zeros, zeros, zeros, (), None, None,
        )  # fmt: skip
    on = _online(model.loadings, model.score_sd, z, j)
    t2, spe = on["t2"].copy(), on["spe"].copy()
    t2[upto + 1 :] = np.nan
    spe[upto + 1 :] = np.nan
    start = int(seen[0]) + MIN_KNOWN_POINTS - 1 if len(seen) else 0
    t2[:start] = np.nan
    spe[:start] = np.nan
    e_k = on["e"][upto]
    spe_contrib = np.nan_to_num(e_k**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        spe_rel = np.where(model.ref_spe[upto] > 0, spe_contrib / model.ref_spe[upto], np.nan)
        t_up = on["t"][upto]
        t2_cols = _t2_contrib(model.loadings, model.score_sd, z, np.nan_to_num(t_up)).reshape(k, j)
        t2_contrib = t2_cols[: upto + 1].sum(axis=0)
        t2_rel = np.where(model.ref_t2_var > 0, t2_contrib / model.ref_t2_var, np.nan)
    lim_t2 = model.t2_limits[0.99]
    lim_spe = model.spe_online_limits[0.99]
    alarms: list[MspcAlarm] = []
    for stat, series, limit in (("t2", t2, np.full(k, lim_t2)), ("spe", spe, lim_spe)):
        evaluated = np.isfinite(series) & np.isfinite(limit)
        with np.errstate(invalid="ignore"):
            ratio = series / limit
        side = np.where(evaluated & (ratio > 1), 1, 0).astype(np.int8)
        for ex in excursions(side, evaluated, consecutive, consecutive):
            seg = np.arange(ex.start, ex.last + 1)
            seg = seg[side[seg] > 0]
            e_r = on["e"][ex.raised]
            with np.errstate(divide="ignore", invalid="ignore"):
                if stat == "spe":
                    ref = model.ref_spe[ex.raised]
                    rel = np.where(ref > 0, np.nan_to_num(e_r**2) / ref, 0.0)
                else:
                    cols = _t2_contrib(model.loadings, model.score_sd, z, np.nan_to_num(on["t"][ex.raised]))
                    rel = cols.reshape(k, j)[: ex.raised + 1].sum(axis=0) / model.ref_t2_var
            top = model.variables[int(np.nanargmax(rel))] if np.any(np.isfinite(rel)) else None
            ts = None
            if ts_us is not None and math.isfinite(float(ts_us[ex.raised])):
                ts = round(float(ts_us[ex.raised]))
            alarms.append(
                MspcAlarm(
                    stat,
                    float(model.grid[ex.start]),
                    float(model.grid[ex.raised]),
                    ts,
                    float(ratio[ex.raised]),
                    float(np.max(ratio[seg])),
                    float(model.grid[ex.end]) if ex.end is not None else None,
                    top,
                )
            )
    alarms.sort(key=lambda a: a.t)
    stat, top = _top(
        model.variables,
        t2_rel,
        spe_rel,
        float(t2[upto] / lim_t2) if math.isfinite(t2[upto]) else math.nan,
        float(spe[upto] / lim_spe[upto]) if math.isfinite(spe[upto]) else math.nan,
    )
    return MspcTrajectory(
        model.variables,
        model.grid,
        upto,
        t2,
        spe,
        dict(model.t2_limits),
        dict(model.spe_online_limits),
        spe_contrib,
        spe_rel,
        t2_contrib,
        t2_rel,
        tuple(alarms),
        stat,
        top,
    )


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _floats(a: np.ndarray) -> list[float | None]:
    return [_num(v) for v in np.asarray(a, dtype=np.float64).tolist()]
