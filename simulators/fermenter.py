"""A fed-batch fermenter: pure model, no network code.

`step(state, params, dt_h)` advances the process by dt hours and returns the new state; `measure`
turns a state into the signals a plant's control system would serve (with sensor noise).
The cycle is: fill → sterilization → batch → fed_batch → harvest → idle, and again.

Process model (per hour, concentrations in g/L, volume in L):
- Monod growth with oxygen limitation: μ = μmax·S/(Ks+S)·DO/(K_DO+DO)
- Pirt substrate uptake: qS = μ/Y_XS + m_S
- Luedeking–Piret product formation: qP = α·μ + β
- dilution by feed and base; evaporation carried by the off-gas
- oxygen uptake: OUR = (μ/Y_XO + m_O)·X / 32 [mol/L/h]; CER = RQ·OUR
- dissolved oxygen from quasi-steady oxygen transfer: C = C* − OUR/kLa, kLa by van 't Riet (1979) for
  coalescing broth: kLa = 0.026·(P/V)^0.4·v_s^0.5 [1/s], P/V in W/m³, v_s in m/s
- agitator power: P0 = N_p·ρ·N³·D⁵, gassed by Cui et al. (1996): Pg/P0 = 1 − 12.6·Fl (Fl < 0.035)
  else 0.62 − 1.85·Fl, Fl = Q_g/(N·D³)
- off-gas by the inert (N2 + Ar) balance, dry basis, air in at y_O2 = 0.2095, y_CO2 = 0.0004
- heat: metabolic 460 kJ per mol O2 (Cooney et al. 1969) plus agitator power, removed by cooling water
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

Y_O2_AIR = 0.2095
Y_CO2_AIR = 0.0004
MOLAR_VOLUME_NL = 22.414  # L/mol at 0 °C, 1 atm: the reference of NL/min


class Phase(StrEnum):
    FILL = "fill"
    STERILIZATION = "sterilization"
    BATCH = "batch"
    FED_BATCH = "fed_batch"
    HARVEST = "harvest"
    IDLE = "idle"


@dataclass(frozen=True)
class FermenterParams:
    # kinetics
    mu_max: float = 0.30  # [1/h]
    ks: float = 0.15  # [g/L]
    k_do: float = 5.0  # [% saturation] oxygen half-saturation
    y_xs: float = 0.48  # [g biomass / g glucose]
    m_s: float = 0.025  # [g/g/h] maintenance on substrate
    alpha: float = 0.08  # [g product / g biomass] growth-associated
    beta: float = 0.004  # [g product / g biomass / h] non-growth-associated
    y_xo: float = 1.1  # [g biomass / g O2]
    m_o: float = 0.015  # [g O2 / g biomass / h]
    rq: float = 1.03  # respiratory quotient on glucose
    base_per_biomass: float = 0.0006  # [L base / g biomass formed] (25 % ammonia as N source and pH control)
    # recipe
    v_fill: float = 600.0  # [L] medium
    s0: float = 20.0  # [g/L] initial glucose
    x0: float = 0.4  # [g/L] after inoculation
    s_feed: float = 500.0  # [g/L] feed glucose
    mu_set: float = 0.12  # [1/h] exponential feed target
    feed_max: float = 6.0  # [L/h]
    v_max: float = 950.0  # [L] stop feeding here
    t_fill: float = 0.5  # [h]
    t_sterilization: float = 1.5  # [h]
    t_fed_batch: float = 34.0  # [h]
    t_harvest: float = 1.0  # [h]
    t_idle: float = 2.0  # [h]
    # vessel and utilities
    impeller_d: float = 0.33  # [m] Rushton turbine
    vessel_d: float = 1.0  # [m]
    power_number: float = 5.0
    rho: float = 1030.0  # [kg/m³] broth
    n_min: float = 150.0  # [rpm]
    n_max: float = 450.0  # [rpm]
    air_batch: float = 500.0  # [NL/min]
    air_fed_batch: float = 800.0  # [NL/min]
    pressure: float = 0.5  # [barg] head pressure
    do_set: float = 30.0  # [%]
    c_star_1atm: float = 0.236e-3  # [mol/L] O2 saturation with air at 30 °C, 1 atm
    t_set: float = 30.0  # [°C]
    compressor_kw_per_nlpm: float = 0.005  # [kW per NL/min]
    chiller_cop: float = 4.0
    evaporation: float = 0.15  # [L/h] water carried out by the off-gas at full aeration


@dataclass(frozen=True)
class FermenterState:
    cycle: int = 0  # batch number since start (the batch id is built from it)
    phase: Phase = Phase.FILL
    t_phase: float = 0.0  # [h] time in the current phase
    v: float = 0.0  # [L]
    x: float = 0.0  # [g/L]
    s: float = 0.0  # [g/L]
    p: float = 0.0  # [g/L]
    do: float = 100.0  # [%]
    temperature: float = 20.0  # [°C]
    agitation: float = 0.0  # [rpm]
    air: float = 0.0  # [NL/min]
    feed: float = 0.0  # [L/h]
    base: float = 0.0  # [L/h]
    our: float = 0.0  # [mol/L/h]
    cer: float = 0.0  # [mol/L/h]
    harvest_v: float = 0.0  # [L] volume at harvest start
    harvest_p: float = 0.0  # [g/L] product concentration at harvest start


def _kla(power_w: float, v_l: float, air_nlpm: float, vessel_d: float) -> float:
    """Volumetric oxygen transfer coefficient [1/h], van 't Riet (1979), coalescing broth."""
    if v_l <= 0 or air_nlpm <= 0 or power_w <= 0:
        return 0.0
    area = math.pi * vessel_d**2 / 4
    vs = air_nlpm / 1000 / 60 / area  # superficial gas velocity [m/s]
    return 0.026 * (power_w / (v_l / 1000)) ** 0.4 * vs**0.5 * 3600


def agitator_power_kw(params: FermenterParams, rpm: float, air_nlpm: float) -> float:
    """Gassed agitator power [kW]: P0 = Np·ρ·N³·D⁵, Pg/P0 by Cui et al. (1996)."""
    n = rpm / 60
    if n <= 0:
        return 0.0
    p0 = params.power_number * params.rho * n**3 * params.impeller_d**5
    flow_number = air_nlpm / 1000 / 60 / (n * params.impeller_d**3)
    ratio = 1 - 12.6 * flow_number if flow_number < 0.035 else 0.62 - 1.85 * flow_number
    return p0 * max(ratio, 0.3) / 1000


def offgas(our: float, cer: float, v_l: float, air_nlpm: float) -> tuple[float, float]:
    """Dry outlet mole fractions (y_O2, y_CO2) from the model's own OUR and CER [mol/L/h].

    The exact inverse of the inert balance used by the OUR/CER KPI (../shared/domain/kpis.md)."""
    if air_nlpm <= 0:
        return Y_O2_AIR, Y_CO2_AIR
    n_in = air_nlpm * 60 / MOLAR_VOLUME_NL  # [mol/h]
    n_o2 = max(n_in * Y_O2_AIR - our * v_l, 0.0)
    n_co2 = n_in * Y_CO2_AIR + cer * v_l
    n_inert = n_in * (1 - Y_O2_AIR - Y_CO2_AIR)
    total = n_o2 + n_co2 + n_inert
    return n_o2 / total, n_co2 / total


def _phase_length(params: FermenterParams, phase: Phase) -> float | None:
    return {
        Phase.FILL: params.t_fill,
        Phase.STERILIZATION: params.t_sterilization,
        Phase.FED_BATCH: params.t_fed_batch,
        Phase.HARVEST: params.t_harvest,
        Phase.IDLE: params.t_idle,
    }.get(phase)


_NEXT = {
    Phase.FILL: Phase.STERILIZATION,
    Phase.STERILIZATION: Phase.BATCH,
    Phase.BATCH: Phase.FED_BATCH,
    Phase.FED_BATCH: Phase.HARVEST,
    Phase.HARVEST: Phase.IDLE,
    Phase.IDLE: Phase.FILL,
}


def _advance_phase(state: FermenterState, params: FermenterParams) -> FermenterState:
    """Move to the next phase when the current one is over."""
    length = _phase_length(params, state.phase)
    if state.phase == Phase.BATCH:
        done = state.s < 0.5 and state.t_phase > 1.0  # glucose exhausted: start feeding
    elif state.phase == Phase.HARVEST:
        done = state.v <= 0.0
    else:
        done = length is not None and state.t_phase >= length
    if not done:
        return state
    nxt = _NEXT[state.phase]
    state = replace(state, phase=nxt, t_phase=0.0)
    if nxt == Phase.FILL:
        state = replace(state, cycle=state.cycle + 1)
    elif nxt == Phase.BATCH:  # inoculation
        state = replace(state, x=params.x0, s=params.s0, p=0.0)
    elif nxt == Phase.HARVEST:
        state = replace(state, harvest_v=state.v, harvest_p=state.p)
    elif nxt == Phase.IDLE:
        state = replace(state, v=0.0, x=0.0, s=0.0, p=0.0)
    return state


def step(state: FermenterState, params: FermenterParams, dt_h: float) -> FermenterState:
    """Advance the fermenter by dt_h hours (explicit Euler; keep dt_h ≤ 0.01 h)."""
    state = _advance_phase(state, params)
    ph = state.phase
    t_phase = state.t_phase + dt_h
    if ph == Phase.FILL:
        v = min(state.v + params.v_fill / params.t_fill * dt_h, params.v_fill)
        return replace(
            state,
            t_phase=t_phase,
            v=v,
            temperature=20.0,
            agitation=0.0,
            air=0.0,
            feed=0.0,
            base=0.0,
            our=0.0,
            cer=0.0,
            do=100.0,
        )
    if ph == Phase.STERILIZATION:
        frac = t_phase / params.t_sterilization
        temp = 30 + 91 * min(frac * 3, 1.0) if frac < 2 / 3 else 121 - 91 * min((frac - 2 / 3) * 3, 1.0)
        return replace(state, t_phase=t_phase, temperature=temp, agitation=params.n_min, air=0.0, do=100.0)
    if ph == Phase.IDLE:
        return replace(
            state,
            t_phase=t_phase,
            agitation=0.0,
            air=0.0,
            feed=0.0,
            base=0.0,
            our=0.0,
            cer=0.0,
            temperature=20.0,
            do=100.0,
        )
    if ph == Phase.HARVEST:
        rate = state.harvest_v / params.t_harvest
        v = max(state.v - rate * dt_h, 0.0)
        return replace(
            state, t_phase=t_phase, v=v, feed=0.0, base=0.0, agitation=params.n_min, air=0.0, our=0.0, cer=0.0
        )
    return _grow(replace(state, t_phase=t_phase), params, dt_h)


def _grow(state: FermenterState, params: FermenterParams, dt_h: float) -> FermenterState:
    x, s, p, v = state.x, state.s, state.p, state.v
    mu = params.mu_max * s / (params.ks + s) * state.do / (params.k_do + state.do)
    qs = mu / params.y_xs + params.m_s if s > 0 else 0.0
    qp = params.alpha * mu + params.beta
    our = (mu / params.y_xo + params.m_o) * x / 32.0
    cer = params.rq * our

    # feed: exponential at mu_set (Σ substrate need of the biomass present), capped, until the vessel is full
    if state.phase == Phase.FED_BATCH and v < params.v_max:
        feed = min(params.mu_set / params.y_xs * x * v / params.s_feed, params.feed_max)
    else:
        feed = 0.0
    base = params.base_per_biomass * mu * x * v
    air = params.air_batch if state.phase == Phase.BATCH else params.air_fed_batch
    evap = params.evaporation * air / params.air_fed_batch

    # agitation cascade: the speed that holds DO at its set point, within limits and a ramp rate
    c_star = params.c_star_1atm * (1 + params.pressure / 1.01325)
    need_kla = our / (c_star * (1 - params.do_set / 100)) if our > 0 else 0.0
    rpm = _rpm_for_kla(params, need_kla, v, air)
    max_ramp = 600.0 * dt_h  # [rpm per step] the controller ramps at most 600 rpm/h
    rpm = min(max(rpm, state.agitation - max_ramp), state.agitation + max_ramp)
    rpm = min(max(rpm, params.n_min), params.n_max)
    kla = _kla(agitator_power_kw(params, rpm, air) * 1000, v, air, params.vessel_d)
    do = max(100 * (1 - our / (kla * c_star)), 0.0) if kla > 0 else 0.0

    dilution = (feed + base) / v if v > 0 else 0.0
    x_new = x + (mu * x - dilution * x) * dt_h
    s_new = max(s + (-qs * x + (feed * params.s_feed - (feed + base) * s) / v) * dt_h, 0.0)
    p_new = p + (qp * x - dilution * p) * dt_h
    v_new = v + (feed + base - evap) * dt_h
    return replace(
        state,
        x=x_new,
        s=s_new,
        p=p_new,
        v=v_new,
        do=do,
        temperature=params.t_set,
        agitation=rpm,
        air=air,
        feed=feed,
        base=base,
        our=our,
        cer=cer,
    )


def _rpm_for_kla(params: FermenterParams, kla_needed: float, v_l: float, air: float) -> float:
    """Smallest agitator speed whose kLa reaches kla_needed (bisection on the monotone kLa(N))."""
    lo, hi = params.n_min, params.n_max
    if _kla(agitator_power_kw(params, hi, air) * 1000, v_l, air, params.vessel_d) <= kla_needed:
        return hi
    for _ in range(20):
        mid = (lo + hi) / 2
        if _kla(agitator_power_kw(params, mid, air) * 1000, v_l, air, params.vessel_d) < kla_needed:
            lo = mid
        else:
            hi = mid
    return hi


def cooling_load_kw(state: FermenterState, params: FermenterParams) -> float:
    """Heat to remove [kW]: metabolic heat (460 kJ/mol O2) plus agitator power, during growth."""
    if state.phase not in (Phase.BATCH, Phase.FED_BATCH):
        return 0.0
    metabolic = state.our * state.v * 460.0 / 3600  # mol/h · kJ/mol → kW
    return metabolic + agitator_power_kw(params, state.agitation, state.air)


def measure(
    state: FermenterState, params: FermenterParams, rng: np.random.Generator
) -> dict[str, float | str]:
    """The signals the fermenter's control system serves, keyed by the simulator's signal name."""
    o2, co2 = offgas(state.our, state.cer, state.v, state.air)
    q_cool = cooling_load_kw(state, params)
    agitator_kw = agitator_power_kw(params, state.agitation, state.air)
    sterilizing = state.phase == Phase.STERILIZATION

    def noisy(value: float, sd: float, low: float = 0.0) -> float:
        return max(value + rng.normal(0.0, sd), low)

    return {
        "BatchId": "",  # filled in by the shell, which knows the equipment id and the clock
        "Phase": state.phase.value,
        "Temperature": round(noisy(state.temperature, 0.05, -50.0), 3),
        "pH": round(noisy(6.8 if state.v > 0 and not sterilizing else 7.0, 0.01), 3),
        "DissolvedOxygen": round(min(noisy(state.do, 0.4), 120.0), 2),
        "AgitatorSpeed": round(noisy(state.agitation, 0.5) if state.agitation > 0 else 0.0, 1),
        "AirFlow": round(noisy(state.air, 2.0) if state.air > 0 else 0.0, 1),
        "Pressure": round(noisy(params.pressure if state.v > 0 else 0.0, 0.005, -0.1), 3),
        "FeedRate": round(noisy(state.feed, 0.01) if state.feed > 0 else 0.0, 3),
        "BaseFlow": round(noisy(state.base, 0.002) if state.base > 0 else 0.0, 4),
        "Volume": round(noisy(state.v, 0.5), 1),
        "Weight": round(noisy(state.v * params.rho / 1000, 0.5), 1),
        "AgitatorPower": round(noisy(agitator_kw, 0.02), 3),
        "CompressorPower": round(state.air * params.compressor_kw_per_nlpm, 3),
        "ChillerPower": round(q_cool / params.chiller_cop, 3),
        "CoolingWaterFlow": round(q_cool / (4.18 * 5.0) * 60, 2),  # ΔT 5 K, L/min
        "SteamFlow": round(
            40.0 if sterilizing and state.t_phase < params.t_sterilization * 2 / 3 else 0.0, 1
        ),
        "OffgasO2": round(noisy(o2 * 100, 0.005), 4),  # [%]
        "OffgasCO2": round(noisy(co2 * 100, 0.003), 4),  # [%]
    }
