"""Upstream mass accounting of a fermenter run (kpis.md, "Fed-batch accounting"; processing.yields):

  product formed   m_P = V_end·P_end + Σ samples V_i·P_i + ∫ F_out·P dt      (F_out: discharge_flow tags)
  substrate fed    m_S,fed = ∫ F_feed·S_feed dt                            (feed_rate tags with `feed`)
  consumed         m_S = V_0·S_0 + m_S,fed − V_end·S_end − removed with samples and discharges
  yields           on substrate fed and on substrate consumed, on carbon, biomass on substrate, P/X
  volume balance   (V_end + ∫F_out dt + samples) / (V_0 + ∫ΣF_in dt)      (F_in: feed, base, acid,
                   antifoam and water flows; evaporation is not counted: about 1–2 % in a pilot fed-batch)

Every integral runs from inoculation to harvest start, the substrate fed over the whole run. A generic
`flow` tag on a fermenter is not broth leaving it: only `discharge_flow` tags are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from biopilot import units
from biopilot.config import BIOMASS_ANALYTES, SUBSTRATE_ANALYTES, TITER_ANALYTES, ProcessSpec, Role
from processing import plausibility, recovery, yields
from processing.energy import integrate_trapezoid
from processing.kpi.inputs import Kpi, LabSeries, RunData, Signal, Times, kpi
from processing.signals import last_usable_before, usable

LAB_TOLERANCE_H = 0.5  # a lab value this close to inoculation counts as the initial value
_KG = units.factor("g", "kg")
INFLOW_ROLES = (Role.FEED_RATE, Role.BASE_FLOW, Role.ACID_FLOW, Role.ANTIFOAM_FLOW, Role.WATER_FLOW)


@dataclass(frozen=True)
class Feed:
    """A feed_rate tag with what its feed carries (biopilot.config.FeedSpec)."""

    signal: Signal  # [L/h]
    substrate: str
    concentration: float  # [g/L]
    carbon_fraction: float  # [g C/g]


@dataclass(frozen=True)
class UpstreamInputs:
    """Everything the upstream family reads, gathered and converted once."""

    times: Times
    spec: ProcessSpec
    volume: Signal | None  # [L]
    titer: LabSeries  # [g/L] lab results, lab tags and titer tags
    titer_input: str  # the name its coverage goes by: a titer tag's, else "lab:titer"
    substrate: LabSeries
    biomass: LabSeries
    feeds: tuple[Feed, ...]
    main_feed_tags: tuple[str, ...]  # feed_rate tags of the main substrate
    discharges: tuple[Signal, ...]  # [L/h] broth leaving the vessel
    inflows: tuple[Signal, ...]  # [L/h] everything that enters the broth (feeds, base, acid, antifoam, water)
    sampled_l: float  # broth removed with lab samples from inoculation to harvest [L]
    limits: plausibility.YieldLimits

    @property
    def accounts(self) -> bool:
        """Is there anything to account masses with on this equipment?"""
        return self.volume is not None or len(self.titer) > 0 or bool(self.feeds) or bool(self.main_feed_tags)


@dataclass(frozen=True)
class MassAccount:
    """What the mass account hands to the carbon balance (off-gas family) and the intensities [g]."""

    product_g: float
    biomass_g: float
    carbon_in_g: float  # substrate carbon at inoculation and fed
    substrate_carbon_left_g: float  # substrate carbon at harvest and removed with samples and discharges
    inputs: dict[str, float]  # coverage of what the masses rest on


@dataclass(frozen=True)
class UpstreamResult:
    kpis: tuple[Kpi, ...]
    mass: MassAccount | None
    product_kg: float | None  # None: no mass accounting here; NaN: unknown
    limits: dict[str, tuple[float, str]]  # KPI → (stoichiometric maximum, its basis) for the yield checks
    product_inputs: dict[str, float]  # coverage of what product formed rests on


def gather(data: RunData) -> UpstreamInputs:
    spec = data.spec
    titer_tags = data.tags(Role.TITER)
    feeds = tuple(
        Feed(data.liquid_flow(t), t.feed.substrate, t.feed.concentration, t.feed.carbon_fraction)
        for t in data.tags(Role.FEED_RATE)
        if t.feed is not None
    )
    main = tuple(
        t.name
        for t in data.tags(Role.FEED_RATE)
        if t.feed is not None and t.feed.substrate == spec.main_substrate
    )
    times = data.times()
    main_cf = next((f.carbon_fraction for f in feeds if f.substrate == spec.main_substrate), None)
    return UpstreamInputs(
        times=times,
        spec=spec,
        volume=data.volume(),
        titer=data.lab_series(TITER_ANALYTES),
        titer_input=titer_tags[0].name if titer_tags else "lab:titer",
        substrate=data.lab_series((*SUBSTRATE_ANALYTES, spec.main_substrate)),
        biomass=data.lab_series(BIOMASS_ANALYTES),
        feeds=feeds,
        main_feed_tags=main,
        discharges=tuple(data.liquid_flow(t) for t in data.tags(Role.DISCHARGE_FLOW)),
        inflows=tuple(data.liquid_flow(t) for role in INFLOW_ROLES for t in data.tags(role)),
        sampled_l=data.sample_volumes(times.inoculation, times.harvest),
        limits=plausibility.yield_limits(
            spec.main_substrate,
            main_cf,
            spec.product_carbon_fraction,
            spec.max_yield_biomass,
            spec.max_yield_product,
        ),
    )


def compute(inp: UpstreamInputs) -> UpstreamResult:
    """The fermenter's upstream KPIs; product formed [kg] for the intensities."""
    times, spec = inp.times, inp.spec
    out: list[Kpi] = [
        kpi("batch_duration", times.run_h),
        kpi("growth_duration", times.growth_h, flags=times.assumed),
    ]
    if not inp.accounts:
        return UpstreamResult(tuple(out), None, None, {}, {})
    t_inoc, t_harv, growth_h = times.inoculation, times.harvest, times.growth_h
    # what is wrong with a lab series rides on every KPI that uses it
    p_flags = _series_flags(inp.titer, "titer", spec)
    s_series_flags = _series_flags(inp.substrate, "substrate", spec)
    x_series_flags = _series_flags(inp.biomass, "biomass", spec)

    p = inp.titer
    titer = yields.titer_g_per_l(p.t, p.v, times.harvest_end)
    titer_cov = {inp.titer_input: 1.0 if math.isfinite(titer) else 0.0}
    out.append(kpi("titer", titer, titer_cov, p_flags))

    # volumes at inoculation and harvest [L]
    vol = inp.volume
    v_name = vol.tag if vol is not None else "volume"
    v_end = _volume_at_harvest(vol, t_harv) if vol is not None else math.nan
    v0 = _value_near(vol, t_inoc) if vol is not None else math.nan
    vol_cov = {v_name: 1.0 if math.isfinite(v_end) else 0.0}
    v0_cov = {f"{v_name}@inoculation": 1.0 if math.isfinite(v0) else 0.0}

    # broth that left the vessel during growth (discharge_flow tags), with what it carried [g]
    s, x = inp.substrate, inp.biomass
    out_p, out_s, out_x, out_l = 0.0, 0.0, 0.0, 0.0
    out_cov: dict[str, float] = {}
    out_unc, out_s_assumed = False, False
    for sig in inp.discharges:
        f = sig.window(t_inoc, t_harv)
        lim = f.gap_limits
        ip = yields.discharged_g(f.t, f.v, f.status, p.t, p.v, lim)
        is_ = yields.discharged_g(f.t, f.v, f.status, s.t, s.v, lim)
        ix = yields.discharged_g(f.t, f.v, f.status, x.t, x.v, lim)
        out_p += ip.value
        if math.isfinite(is_.value):
            out_s += is_.value
        else:
            out_s_assumed = True
        out_x += ix.value
        out_l += integrate_trapezoid(f.t, f.v, f.status, lim).value
        out_cov[sig.tag] = _cov(ip.covered_h, growth_h)
        out_unc |= ip.uncertain

    in_growth_p = p.between(t_inoc, t_harv)
    m_p = yields.product_formed_g(v_end, titer, p.volume[in_growth_p], p.v[in_growth_p], out_p)
    unc = ["uncertain_inputs"] if out_unc or (vol is not None and vol.window(0, t_harv).any_uncertain) else []
    product_inputs = {**vol_cov, **titer_cov, **out_cov}
    out.append(kpi("product_formed", m_p * _KG, product_inputs, unc + p_flags))
    out.append(kpi("product_harvested", v_end * titer * _KG, {**vol_cov, **titer_cov}, unc + p_flags))

    # substrate fed per substrate, and carbon [g], over the whole run
    fed: dict[str, float] = {}
    carbon_g = 0.0
    feed_cov: dict[str, float] = {}
    feed_unc = False
    for feed in inp.feeds:
        integral = yields.substrate_fed_g(
            feed.signal.t, feed.signal.v, feed.signal.status, feed.concentration, feed.signal.gap_limits
        )
        fed[feed.substrate] = fed.get(feed.substrate, 0.0) + integral.value
        carbon_g += integral.value * feed.carbon_fraction
        feed_cov[feed.signal.tag] = _cov(integral.covered_h, times.run_h)
        feed_unc |= integral.uncertain
    main_cov = {name: feed_cov[name] for name in inp.main_feed_tags}
    fed_main = fed.get(spec.main_substrate, math.nan if not main_cov else 0.0)
    feed_flags = ["uncertain_inputs"] if feed_unc else []
    out.append(kpi("substrate_fed", fed_main * _KG if main_cov else None, main_cov, feed_flags))

    # substrate at inoculation and harvest [g/L]
    s0 = _lab_near(s.t, s.v, t_inoc, LAB_TOLERANCE_H)
    s_flags: list[str] = list(s_series_flags)
    s0_cov = 1.0
    if not math.isfinite(s0):
        if spec.initial_substrate is not None:
            s0 = spec.initial_substrate
            s_flags.append("assumed:initial_substrate=config")
        else:
            s0_cov = 0.0
    s_end = yields.titer_g_per_l(s.t, s.v, times.harvest_end)
    if not math.isfinite(s_end):
        s_end = 0.0
        s_flags.append("assumed:residual_substrate=0")
    if out_s_assumed and out_l > 0:
        s_flags.append("assumed:discharged_substrate=0")
    in_growth_s = s.between(t_inoc, t_harv)
    removed_s = float(np.sum(s.volume[in_growth_s] * s.v[in_growth_s])) + out_s
    consumed = yields.substrate_consumed_g(v0, s0, fed_main, v_end, s_end, removed_s)
    cons_inputs = {**vol_cov, **v0_cov, **main_cov, "initial_substrate": s0_cov, **out_cov}
    out.append(kpi("substrate_consumed", consumed * _KG, cons_inputs, s_flags + feed_flags))
    out.append(
        kpi(
            "yield_product_substrate_consumed",
            yields.ratio(m_p, consumed),
            {**cons_inputs, **titer_cov, **out_cov},
            s_flags + feed_flags + unc + p_flags,
        )
    )
    out.append(
        kpi(
            "yield_product_substrate_fed",
            yields.ratio(m_p, fed_main),
            {**product_inputs, **main_cov},
            feed_flags + unc + p_flags,
        )
    )
    main_cf = next((f.carbon_fraction for f in inp.feeds if f.substrate == spec.main_substrate), 0.4)
    mass_carbon: tuple[float, float] | None = None
    if fed:
        carbon_in_g = carbon_g + v0 * s0 * main_cf
        carbon_left_g = (v_end * s_end + removed_s) * main_cf
        mass_carbon = (carbon_in_g, carbon_left_g)
        out.append(kpi("carbon_fed", carbon_g * _KG, feed_cov, feed_flags))
        out.append(
            kpi(
                "yield_product_carbon",
                yields.ratio(m_p, carbon_in_g - carbon_left_g),
                {**cons_inputs, **feed_cov, **product_inputs},
                s_flags + feed_flags + unc + p_flags,
            )
        )

    # biomass formed, net of the inoculum, with the cells that left in samples and discharged broth
    x_end = yields.titer_g_per_l(x.t, x.v, times.harvest_end)
    x_cov = {"lab:biomass": 1.0 if math.isfinite(x_end) else 0.0}
    x0 = _lab_near(x.t, x.v, t_inoc, LAB_TOLERANCE_H)
    x_flags = list(x_series_flags)
    if not math.isfinite(x0):
        x0 = 0.0
        x_flags.append("assumed:initial_biomass=0")
    in_growth_x = x.between(t_inoc, t_harv)
    biomass_g = yields.biomass_formed_g(v_end, x_end, v0, x0, x.volume[in_growth_x], x.v[in_growth_x], out_x)
    if len(x) or vol is not None:
        out.append(kpi("biomass_formed", biomass_g * _KG, {**vol_cov, **x_cov, **out_cov}, x_flags + unc))
        out.append(
            kpi(
                "yield_biomass_substrate_consumed",
                yields.ratio(biomass_g, consumed),
                {**cons_inputs, **x_cov, **out_cov},
                x_flags + s_flags,
            )
        )
        out.append(
            kpi(
                "yield_biomass_substrate_fed",
                yields.ratio(biomass_g, fed_main),
                {**vol_cov, **x_cov, **out_cov, **main_cov},
                x_flags,
            )
        )
        out.append(
            kpi(
                "yield_product_biomass",
                yields.ratio(m_p, biomass_g),
                {**x_cov, **product_inputs},
                x_flags + p_flags,
            )
        )
        if vol is not None and len(x) >= 2:
            m_x = yields.total_mass_at(
                x.t[in_growth_x], x.v[in_growth_x], vol.t, vol.v, vol.status, vol.usable_gap_limits
            )
            out.append(kpi("mu_max", yields.max_specific_growth_rate_per_h(x.t[in_growth_x], m_x), x_cov))
        else:
            out.append(kpi("mu_max", None, {"lab:biomass": 0.0}))

    # productivity over inoculation → harvest, on the mean working volume
    if vol is not None:
        w = vol.window(t_inoc, t_harv)
        v_mean = yields.mean_volume_l(w.t, w.v, w.status, w.gap_limits)
        v_cov = {vol.tag: _cov(integrate_trapezoid(w.t, w.v, w.status, w.gap_limits).covered_h, growth_h)}
        out.append(kpi("mean_working_volume", v_mean, v_cov, times.assumed))
        out.append(
            kpi(
                "volumetric_productivity",
                yields.volumetric_productivity_g_per_l_h(m_p, v_mean, growth_h),
                {**v_cov, **product_inputs},
                list(times.assumed) + unc + p_flags,
            )
        )
        if inp.inflows:
            out.append(_volume_balance(inp, v0, v_end, {**vol_cov, **v0_cov}))

    limits = _limits(inp, fed_main, v0 * s0)
    mass = None
    if mass_carbon is not None:
        mass = MassAccount(m_p, biomass_g, mass_carbon[0], mass_carbon[1], {**x_cov, **titer_cov})
    return UpstreamResult(tuple(out), mass, m_p * _KG, limits, product_inputs)


def _series_flags(series: LabSeries, name: str, spec: ProcessSpec) -> list[str]:
    """refused_lab_unit:<unit> for results left out; implausible:<name>_above_broth_density when a value
    exceeds the broth's own density (no solute can be more concentrated than the liquid it is in: a
    titer in µg/mL declared as g/L reads 1000× too high)."""
    flags = [f"refused_lab_unit:{u or '(none)'}" for u in series.refused]
    limit = spec.broth_density * units.factor("kg/L", "g/L")
    if len(series) and float(np.nanmax(series.v)) > limit:
        flags.append(f"implausible:{name}_above_broth_density")
    return flags


def _volume_balance(inp: UpstreamInputs, v0: float, v_end: float, vol_cov: dict[str, float]) -> Kpi:
    """(V_end + broth out + samples) / (V_0 + everything in) over inoculation → harvest [–]."""
    t0, t1, growth_h = inp.times.inoculation, inp.times.harvest, inp.times.growth_h
    cov: dict[str, float] = dict(vol_cov)
    flows_in, flows_out = 0.0, 0.0
    for sig, sign in [*((s, 1) for s in inp.inflows), *((s, -1) for s in inp.discharges)]:
        w = sig.window(t0, t1)
        integral = integrate_trapezoid(w.t, w.v, w.status, w.gap_limits)
        if sign > 0:
            flows_in += integral.value
        else:
            flows_out += integral.value
        cov[sig.tag] = _cov(integral.covered_h, growth_h)
    into = v0 + flows_in
    closure = (v_end + flows_out + inp.sampled_l) / into if into > 0 and math.isfinite(into) else math.nan
    flags = [] if not math.isfinite(closure) or recovery.closure_ok(closure) else ["closure_out_of_range"]
    return kpi("volume_balance_closure", closure, cov, flags)


def _limits(
    inp: UpstreamInputs, fed_main_g: float, initial_substrate_g: float
) -> dict[str, tuple[float, str]]:
    """The stoichiometric maxima of the yields. On substrate fed the product may come from the substrate
    already in the broth at inoculation too: its maximum is Y_max · (fed + V_0·S_0) / fed (unchecked when
    V_0·S_0 is unknown)."""
    lim = inp.limits
    out = {
        "yield_product_substrate_consumed": (lim.product, lim.product_basis),
        "yield_biomass_substrate_consumed": (lim.biomass, lim.biomass_basis),
        "yield_product_carbon": (1.0 / inp.spec.product_carbon_fraction, "carbon_balance"),
    }
    if fed_main_g > 0 and math.isfinite(initial_substrate_g) and initial_substrate_g >= 0:
        supplied = (fed_main_g + initial_substrate_g) / fed_main_g
        out["yield_product_substrate_fed"] = (lim.product * supplied, lim.product_basis)
        out["yield_biomass_substrate_fed"] = (lim.biomass * supplied, lim.biomass_basis)
    return out


def _cov(covered_h: float, window_h: float) -> float:
    return min(covered_h / window_h, 1.0) if window_h > 0 else 0.0


def _value_near(s: Signal, at_h: float) -> float:
    """The signal at at_h, or the last usable value before it (a level holds when the sensor stops)."""
    v = s.at(np.array([at_h])).values[0]
    return float(v) if math.isfinite(v) else last_usable_before(s.t, s.v, s.status, at_h)


def _volume_at_harvest(s: Signal, t_harv_h: float) -> float:
    """Broth volume [L] at harvest start: the larger of the last usable reading before the first reading
    that says harvest, and the volume at that reading. The harvest started somewhere between the two;
    before it the feed only adds (litres per hour), after it the harvest pump drains (900 L/h at pilot
    scale: 15 L in a minute), so the larger reading is the closer one."""
    at = _value_near(s, t_harv_h)
    ok = usable(s.v, s.status) & (s.t < t_harv_h)
    before = float(s.v[ok][-1]) if np.any(ok) else math.nan
    candidates = [v for v in (at, before) if math.isfinite(v)]
    return max(candidates) if candidates else math.nan


def _lab_near(t: np.ndarray, v: np.ndarray, at_h: float, tol_h: float) -> float:
    near = np.abs(t - at_h) <= tol_h
    if not np.any(near):
        return math.nan
    idx = np.flatnonzero(near)
    return float(v[idx[np.argmin(np.abs(t[idx] - at_h))]])
