"""Upstream KPIs of a fed-batch, with mass accounting (pure).

A fed-batch is diluted by feed and loses broth to samples, bleeds, discharges and evaporation, so yields
are computed from masses, never from concentrations (../shared/domain/kpis.md, "Fed-batch accounting";
Villadsen, Nielsen & Lidén, *Bioreaction Engineering Principles*, 3rd ed., Springer 2011, ch. 3 and 9):

- product formed  m_P = V_end·P_end + Σ_samples V_i·P_i + ∫ F_out·P dt                      [g]
- substrate fed   m_S,fed = ∫ F_feed·S_feed dt                                              [g]
- consumed        m_S = V_0·S_0 + m_S,fed − V_end·S_end − Σ_samples V_i·S_i − ∫ F_out·S dt  [g]
- biomass formed  Δm_X = V_end·X_end + Σ_samples V_i·X_i + ∫ F_out·X dt − V_0·X_0             [g]
- yields          Y_P/S = m_P / m_S, Y_X/S = Δm_X / m_S, Y_P/X = m_P / Δm_X                 [g/g]
- productivity    Q_P = m_P / (V̄·t)  with V̄ the time-mean working volume over t            [g/L/h]
- growth rate     μ = d ln(V·X)/dt on total biomass, so dilution does not bias it           [1/h]

Units: volumes [L], concentrations [g/L], flows [L/h], times [h], masses [g].
"""

from __future__ import annotations

import math

import numpy as np

from processing.energy import Integral, integrate_trapezoid
from processing.signals import align, usable


def substrate_fed_g(
    t_h: np.ndarray,
    feed_l_per_h: np.ndarray,
    status: np.ndarray,
    concentration_g_per_l: float,
    max_gap_h: float | np.ndarray | None = None,
) -> Integral:
    """Substrate fed [g] = ∫ F_feed [L/h] · S_feed [g/L] dt by the trapezoid rule, never across a gap.

    The feed concentration is the configured one of the feed tag (biopilot.config.FeedSpec)."""
    flow = np.asarray(feed_l_per_h, dtype=np.float64)
    return integrate_trapezoid(t_h, flow * concentration_g_per_l, status, max_gap_h)


def discharged_g(
    t_h: np.ndarray,
    f_out_l_per_h: np.ndarray,
    status: np.ndarray,
    t_conc_h: np.ndarray,
    conc_g_per_l: np.ndarray,
    max_gap_h: float | np.ndarray | None = None,
) -> Integral:
    """Mass carried out with discharged broth [g] = ∫ F_out [L/h] · C(t) [g/L] dt.

    C(t) is interpolated linearly between its (lab) values t_conc_h, held constant before the first and
    after the last one (a discharge between two samples carries the broth's concentration at that time);
    the flow's gaps are never bridged. With no concentration value at all the result is NaN unless nothing
    was discharged."""
    t_h = np.asarray(t_h, dtype=np.float64)
    flow = np.asarray(f_out_l_per_h, dtype=np.float64)
    t_c = np.asarray(t_conc_h, dtype=np.float64)
    c = np.asarray(conc_g_per_l, dtype=np.float64)
    if len(t_c) == 0:
        integral = integrate_trapezoid(t_h, flow, status, max_gap_h)
        value = 0.0 if integral.value == 0 else math.nan
        return Integral(value, integral.covered_h, integral.span_h, integral.uncertain)
    conc = np.interp(t_h, t_c, c)
    return integrate_trapezoid(t_h, flow * conc, status, max_gap_h)


def product_formed_g(
    v_end_l: float,
    p_end_g_per_l: float,
    sample_volume_l: np.ndarray | None = None,
    sample_product_g_per_l: np.ndarray | None = None,
    discharged_product_g: float = 0.0,
) -> float:
    """Total product formed [g] = V_end·P_end + Σ V_i·P_i (samples) + product in discharged broth.

    Example (hand-computed): 800 L at 5 g/L, two 0.1 L samples at 2 and 4 g/L, 50 g discharged:
    4000 + 0.2 + 0.4 + 50 = 4050.6 g."""
    samples = 0.0
    if sample_volume_l is not None and sample_product_g_per_l is not None:
        samples = float(np.sum(np.asarray(sample_volume_l) * np.asarray(sample_product_g_per_l)))
    return v_end_l * p_end_g_per_l + samples + discharged_product_g


def biomass_formed_g(
    v_end_l: float,
    x_end_g_per_l: float,
    v0_l: float,
    x0_g_per_l: float,
    sample_volume_l: np.ndarray | None = None,
    sample_biomass_g_per_l: np.ndarray | None = None,
    discharged_biomass_g: float = 0.0,
) -> float:
    """Biomass formed [g] = V_end·X_end + Σ V_i·X_i (samples) + biomass in discharged broth − V_0·X_0,
    net of the inoculum (the same accounting as product formed: discharged cells grew in this vessel).

    Example (hand-computed): 800 L at 40 g/L, one 0.1 L sample at 20 g/L, 100 g discharged, 500 L at
    1 g/L at inoculation: 32 000 + 2 + 100 − 500 = 31 602 g."""
    samples = 0.0
    if sample_volume_l is not None and sample_biomass_g_per_l is not None:
        samples = float(np.sum(np.asarray(sample_volume_l) * np.asarray(sample_biomass_g_per_l)))
    return v_end_l * x_end_g_per_l + samples + discharged_biomass_g - v0_l * x0_g_per_l


def substrate_consumed_g(
    v0_l: float,
    s0_g_per_l: float,
    fed_g: float,
    v_end_l: float,
    s_end_g_per_l: float,
    removed_g: float = 0.0,
) -> float:
    """Substrate consumed [g] = V_0·S_0 + fed − V_end·S_end − removed (with samples and discharges)."""
    return v0_l * s0_g_per_l + fed_g - v_end_l * s_end_g_per_l - removed_g


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is not positive or either is not finite
    (a yield on nothing consumed is undefined, not infinite)."""
    if not (math.isfinite(numerator) and math.isfinite(denominator)) or denominator <= 0:
        return math.nan
    return numerator / denominator


def mean_volume_l(
    t_h: np.ndarray, volume_l: np.ndarray, status: np.ndarray, max_gap_h: float | np.ndarray | None = None
) -> float:
    """Time-weighted mean working volume [L] = ∫ V dt / covered time, over the covered intervals."""
    integral = integrate_trapezoid(t_h, volume_l, status, max_gap_h)
    return integral.value / integral.covered_h if integral.covered_h > 0 else math.nan


def volumetric_productivity_g_per_l_h(product_g: float, mean_volume: float, duration_h: float) -> float:
    """Q_P = m_P / (V̄ · t) [g/L/h]; V̄ the mean working volume [L] and t the time [h] it was formed in
    (BioPilot uses inoculation to harvest start)."""
    return ratio(product_g, mean_volume * duration_h) if duration_h > 0 else math.nan


def max_specific_growth_rate_per_h(
    t_h: np.ndarray, total_biomass_g: np.ndarray, min_interval_h: float = 0.0
) -> float:
    """μ_max [1/h]: the largest μ = ln(m_X,i+1 / m_X,i) / (t_i+1 − t_i) between consecutive points of the
    total biomass m_X = V·X [g] (on total biomass, so dilution by feed does not bias it).

    Pairs closer than min_interval_h, and non-positive masses, are skipped. NaN with fewer than two points.
    Example (hand-computed): 10 g at 0 h, 20 g at 2 h, 30 g at 3 h → ln 2 / 2 = 0.3466 and ln 1.5 = 0.4055
    → μ_max = 0.4055 1/h."""
    t = np.asarray(t_h, dtype=np.float64)
    m = np.asarray(total_biomass_g, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(m) & (m > 0)
    t, m = t[keep], m[keep]
    if len(t) < 2:
        return math.nan
    dt = np.diff(t)
    ok = dt > max(min_interval_h, 0.0)
    if not np.any(ok):
        return math.nan
    mu = np.log(m[1:] / m[:-1])[ok] / dt[ok]
    return float(mu.max())


def total_mass_at(
    t_lab_h: np.ndarray,
    conc_g_per_l: np.ndarray,
    t_volume_h: np.ndarray,
    volume_l: np.ndarray,
    volume_status: np.ndarray,
    volume_gap_limits: np.ndarray | None = None,
) -> np.ndarray:
    """V(t_i)·C_i [g] at each lab time t_i, V interpolated (never across a gap); NaN where V is unknown.
    volume_gap_limits: the gap limits of the volume's usable samples when known (processing.signals.align)."""
    t_lab = np.asarray(t_lab_h, dtype=np.float64)
    v = align(t_lab, t_volume_h, volume_l, volume_status, gap_limits=volume_gap_limits).values
    return v * np.asarray(conc_g_per_l, dtype=np.float64)


def titer_g_per_l(t_lab_h: np.ndarray, product_g_per_l: np.ndarray, harvest_h: float) -> float:
    """Titer [g/L]: the last product concentration measured at or before harvest_h; NaN if none."""
    t = np.asarray(t_lab_h, dtype=np.float64)
    p = np.asarray(product_g_per_l, dtype=np.float64)
    ok = (t <= harvest_h) & np.isfinite(p)
    return float(p[ok][-1]) if np.any(ok) else math.nan


def usable_span_h(t_h: np.ndarray, values: np.ndarray, status: np.ndarray) -> float:
    """Time [h] from the first to the last usable sample."""
    ok = usable(values, status)
    t = np.asarray(t_h, dtype=np.float64)[ok]
    return float(t[-1] - t[0]) if len(t) >= 2 else 0.0
