"""A fed-batch fermenter: a pure model, no network code, no clock, no randomness.

`step(state, params, dt_h)` advances one run by dt_h hours and returns the new state; `take_sample`
removes a lab sample; `signals` gives the noise-free values a control system would serve. A run goes
fill → sterilization → batch → fed_batch → harvest → idle (turnaround); `run_complete` says when the
turnaround is over and the next run can be filled.

Units: volume V [L], masses in the broth m_X, m_S, m_P [g] (concentrations X, S, P = m/V [g/L]), flows
[L/h], time [h], OUR/CER [mol/L/h], power [kW], energy [kWh], steam [kg/h], cooling water [L/min].

Process model (state in masses, so that dilution, samples and discharges cannot bias a balance):
- Substrate uptake q_S = q_S,max·S/(K_S + S), q_S,max = μ_max·f_O2/Y_XS + m_S, f_O2 = DO/(K_DO + DO);
  growth by Pirt (1965): μ = Y_XS·(q_S − m_S) (negative when starving: endogenous decay).
  The substrate balance of a step is solved implicitly for S (positive and stable at any step length):
  V_new·S_new = m_S,available − q_S,max·S_new/(K_S + S_new)·m_X·dt, a quadratic in S_new.
- Product by Luedeking & Piret (1959): q_P = k_P·(α·max(μ, 0) + β); k_P = `product_factor` (1 for the
  baseline strain). Product carbon is taken from the catabolic (CO2) flux, so q_P changes neither the
  substrate uptake nor growth: a trial strain with k_P = 1.06 makes exactly 6 % more product from the same
  substrate.
- Gas exchange from elemental balances (Roels 1983): glucose 30.026 g/C-mol, γ = 4; biomass CH1.8O0.5N0.2
  24.6 g/C-mol, γ = 4.2 (NH3 as N source); product CH1.58O0.31N0.27 22.35 g/C-mol, γ = 4.15.
  CER = r_S − r_X − r_P [C-mol/h]; oxygen r_O2 = (4·r_S − 4.2·r_X − 4.15·r_P)/4 [mol/h]; carbon closes
  by construction, and RQ ≈ 1.1 during growth on glucose, 1.0 on maintenance.
- Off-gas: dry outlet mole fractions by the inert (N2 + Ar) balance, air in at y_O2 = 0.2095,
  y_CO2 = 0.0004, gas flow in NL/min at 0 °C, 1 atm (V_m = 22.414 L/mol); `offgas` is the exact inverse of
  the OUR/CER formulas in kpis.md.
- Oxygen transfer: kLa by van 't Riet (1979), coalescing broth: kLa = 0.026·(P_g/V)^0.4·v_s^0.5 [1/s],
  P_g/V [W/m³], v_s [m/s] (superficial velocity of the normal gas flow). Dissolved oxygen is quasi-steady:
  DO = 100·(1 − OUR/(kLa·C*)), C* = 0.236 mmol/L (air, 30 °C, 1 atm) × absolute head pressure [atm].
- Agitator: ungassed P0 = N_p·ρ·N³·D⁵; gassed P_g/P0 by Cui, van der Lans & Luyben (1996):
  1 − 12.6·Fl (Fl < 0.035), else 0.62 − 1.85·Fl, Fl = Q_g/(N·D³). The DO cascade sets the speed whose kLa
  holds DO at its set point (closed-form inverse of kLa(N) by fixed-point iteration), within limits and a
  ramp rate; at maximum speed it raises the air flow. Electrical power = P_g / motor efficiency ×
  `agitator_power_factor` (1 for the baseline; a trial drive/impeller change with unchanged oxygen transfer
  scales it).
- Heat: metabolic 460 kJ per mol O2 (Cooney, Wang & Wang 1969) plus agitator shaft power, removed by a
  proportional temperature controller on chilled cooling water (ΔT 5 K, c_p 4.18 kJ/kg/K); chiller
  electricity = Q_removed / COP. After sterilization the broth is cooled with tower water (cooling water,
  no chiller power).
- Sterilization (in place, jacket steam): heat to 121 °C, hold, cool to the growth temperature. Steam
  [kg] = sensible heat of broth and steel / (latent heat 2200 kJ/kg × jacket efficiency) plus the hold's
  heat loss / latent heat.
- pH: acid from growth (NH4+ uptake) = base_per_biomass·c_base per g biomass formed, buffer capacity β
  [mol/L/pH]; a proportional controller doses base (25 % NH3, 13.3 mol/L), so pH sits slightly below its
  set point while the culture grows.
- Volume: dV/dt = F_feed + F_base − F_discharge − F_evap (− samples, − harvest); evaporation is the water
  that saturates the off-gas at the condenser temperature (Magnus formula, Alduchov & Eskridge 1996).
  A discharge (bleed) of broth starts at `v_max` and stops at `v_after_discharge`.
- Feed: after the batch glucose is exhausted (S < `feed_start_s`), exponential at μ_set from
  F0 = (μ_set/Y_XS + m_S)·m_X/S_feed, capped at `feed_max`.
- Process faults (simulators/faults.py): `feed_pump_factor` multiplies the delivered feed flow (the FeedRate
  signal reads what is delivered); `kla_factor` multiplies kLa, and the DO cascade, acting on the real kLa,
  raises the speed (then the air flow) to make up for it, so DO dips only once the agitator is at n_max.

`Totals` accumulates, exactly as the state changes, every quantity the run's truth reports (see
simulators/truth.py for the definitions and units written to JSON).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

Y_O2_AIR = 0.2095
Y_CO2_AIR = 0.0004
MOLAR_VOLUME_NL = 22.414  # [L/mol] at 0 °C, 1 atm: the reference of NL/min
GLUCOSE_G_PER_CMOL = 30.026  # C6H12O6, 180.156 g/mol
BIOMASS_G_PER_CMOL = 24.6  # CH1.8O0.5N0.2 (kpis.md)
GAMMA_X = 4.2
CP_WATER = 4.18  # [kJ/kg/K]
HEAT_PER_MOL_O2 = 460.0  # [kJ/mol] Cooney et al. (1969)
STERILIZATION_T = 121.0  # [°C]
STERILIZATION_BARG = 1.05  # saturated steam at 121 °C


class Phase(StrEnum):
    FILL = "fill"
    STERILIZATION = "sterilization"
    BATCH = "batch"
    FED_BATCH = "fed_batch"
    HARVEST = "harvest"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class FermenterParams:
    """Strain, recipe and vessel of one run. Every field may be set by a scenario."""

    # strain kinetics
    mu_max: float = 0.30  # [1/h]
    ks: float = 0.15  # [g/L]
    k_do: float = 2.0  # [% of air saturation] oxygen half-saturation of growth
    y_xs: float = 0.48  # [g biomass / g glucose] true growth yield
    m_s: float = 0.025  # [g glucose / g biomass / h] maintenance
    alpha: float = 0.08  # [g product / g biomass] growth-associated
    beta: float = 0.004  # [g product / g biomass / h] non-growth-associated
    product_factor: float = 1.0  # multiplies q_P (the strain's productivity; trial effect)
    product_g_per_cmol: float = 22.35  # CH1.58O0.31N0.27
    gamma_p: float = 4.15  # degree of reduction of the product
    base_per_biomass: float = 0.0006  # [L base / g biomass formed]: acid from NH4+ uptake, as base volume
    base_conc: float = 13.3  # [mol/L] 25 % ammonia
    buffer_capacity: float = 0.05  # [mol/L per pH unit]
    purity: float = 0.30  # product / total protein in the harvested broth (downstream starts from it)
    # recipe
    v_medium: float = 600.0  # [L] filled
    s0: float = (
        20.0  # [g/L] glucose just after inoculation (the medium holds s0·(v_medium + v_inoculum)/v_medium)
    )
    v_inoculum: float = 20.0  # [L]
    x_inoculum: float = 12.0  # [g/L] biomass in the inoculum
    ph_medium: float = 7.0
    ph_set: float = 6.8
    t_set: float = 30.0  # [°C]
    t_fill_water: float = 20.0  # [°C]
    s_feed: float = 500.0  # [g/L] glucose in the feed
    mu_set: float = 0.12  # [1/h] exponential feed
    feed_max: float = 6.0  # [L/h]
    feed_start_s: float = 0.2  # [g/L] glucose below which the batch is over
    v_max: float = 800.0  # [L] a discharge starts here
    v_after_discharge: float = 760.0  # [L] and stops here
    discharge_rate: float = 240.0  # [L/h]
    t_fill: float = 0.5  # [h]
    t_heat: float = 0.75  # [h] to 121 °C
    t_hold: float = 0.5  # [h] at 121 °C
    t_cool: float = 0.75  # [h] to t_set
    t_fed_batch: float = 34.0  # [h]
    harvest_rate: float = 900.0  # [L/h]
    t_turnaround: float = 8.0  # [h] empty (CIP, SIP, inspection) before the next fill
    # vessel and utilities
    impeller_d: float = 0.33  # [m] Rushton turbine
    vessel_d: float = 1.0  # [m]
    power_number: float = 5.0
    rho: float = 1030.0  # [kg/m³] broth
    n_min: float = 150.0  # [rpm]
    n_max: float = 480.0  # [rpm]
    n_ramp: float = 600.0  # [rpm/h]
    motor_efficiency: float = 0.90
    agitator_power_factor: float = 1.0  # multiplies the electrical agitator power (trial effect)
    air_batch: float = 500.0  # [NL/min]
    air_fed_batch: float = 800.0  # [NL/min]
    air_max: float = 1200.0  # [NL/min]
    air_ramp: float = 600.0  # [NL/min per h] of the aeration cascade
    pressure: float = 0.5  # [barg] head pressure while growing
    do_set: float = 30.0  # [% of air saturation]
    c_star_1atm: float = 0.236e-3  # [mol/L] O2 saturation with air at 30 °C, 1 atm
    compressor_kw_per_nlpm: float = 0.005  # [kW per NL/min]
    chiller_cop: float = 4.0
    cw_delta_t: float = 5.0  # [K] cooling water temperature rise
    t_kp: float = 5.0  # [kW/K] temperature controller gain
    q_cool_max: float = 80.0  # [kW]
    ph_kc: float = 60.0  # [L/h per pH unit] base controller gain
    base_max: float = 10.0  # [L/h]
    condenser_t: float = 8.0  # [°C] off-gas condenser
    vessel_mass: float = 1500.0  # [kg] steel heated with the broth
    cp_steel: float = 0.5  # [kJ/kg/K]
    steam_latent: float = 2200.0  # [kJ/kg] at jacket pressure
    steam_efficiency: float = 0.85  # share of the steam's latent heat that reaches vessel and broth
    sterilization_loss_kw: float = 3.0  # [kW] heat loss while holding at 121 °C
    agitation_sterilization: float = 100.0  # [rpm]
    agitation_harvest: float = 100.0  # [rpm]
    # process-fault multipliers (1: healthy; a [[faults]] process fault sets them for its window)
    feed_pump_factor: float = 1.0  # delivered / set feed flow (feed_pump fault: a failing or stopped pump)
    kla_factor: float = 1.0  # oxygen transfer left (oxygen_transfer fault: foaming, antifoam overdose)


class Totals(NamedTuple):
    """Accumulated since the fill started; the run's truth (masses [g], volumes [L], gas [mol],
    energy [kWh], steam [kg], time [h] since the fill started)."""

    feed_l: float = 0.0
    substrate_fed_g: float = 0.0
    substrate_consumed_g: float = 0.0
    biomass_net_growth_g: float = 0.0  # Σ r_X·dt (negative contributions when starving)
    product_formed_g: float = 0.0  # Σ r_P·dt
    base_l: float = 0.0
    evaporated_l: float = 0.0
    sampled_l: float = 0.0
    discharged_l: float = 0.0
    harvested_l: float = 0.0
    # removed with samples and discharges: biomass, substrate, product [g]
    x_sampled_g: float = 0.0
    s_sampled_g: float = 0.0
    p_sampled_g: float = 0.0
    x_discharged_g: float = 0.0
    s_discharged_g: float = 0.0
    p_discharged_g: float = 0.0
    o2_mol: float = 0.0
    co2_mol: float = 0.0
    e_agitator_kwh: float = 0.0
    e_compressor_kwh: float = 0.0
    e_chiller_kwh: float = 0.0
    steam_kg: float = 0.0
    cooling_water_l: float = 0.0
    heat_metabolic_kwh: float = 0.0
    heat_removed_kwh: float = 0.0
    volume_hours: float = 0.0  # ∫V dt from inoculation to harvest start [L·h]
    # landmarks [h since the fill started]; -1 until reached
    t_inoculation: float = -1.0
    t_feed_start: float = -1.0
    t_harvest_start: float = -1.0
    t_harvest_end: float = -1.0
    # snapshots: after inoculation (initial) and at harvest start (final, after the final sample)
    v_initial: float = 0.0
    x_initial_g: float = 0.0
    s_initial_g: float = 0.0
    v_final: float = 0.0
    x_final_g: float = 0.0
    s_final_g: float = 0.0
    p_final_g: float = 0.0


class FermenterState(NamedTuple):
    phase: Phase = Phase.FILL
    t_phase: float = 0.0  # [h] in the current phase
    t_run: float = 0.0  # [h] since the fill started
    v: float = 0.0  # [L]
    mx: float = 0.0  # [g] biomass in the broth
    ms: float = 0.0  # [g] glucose in the broth
    mp: float = 0.0  # [g] product in the broth
    temperature: float = 20.0  # [°C]
    ph: float = 7.0
    do: float = 100.0  # [% of air saturation]
    pressure: float = 0.0  # [barg]
    agitation: float = 0.0  # [rpm]
    air: float = 0.0  # [NL/min]
    feed: float = 0.0  # [L/h]
    feed_f0: float = 0.0  # [L/h] feed rate at feed start
    base: float = 0.0  # [L/h]
    discharge: float = 0.0  # [L/h]
    discharging: bool = False
    harvest: float = 0.0  # [L/h] harvest pump
    evaporation: float = 0.0  # [L/h]
    our: float = 0.0  # [mol/L/h]
    cer: float = 0.0  # [mol/L/h]
    p_agitator: float = 0.0  # [kW] electrical
    p_compressor: float = 0.0  # [kW]
    p_chiller: float = 0.0  # [kW]
    cooling_water: float = 0.0  # [L/min]
    steam: float = 0.0  # [kg/h]
    totals: Totals = Totals()

    # concentrations [g/L]
    @property
    def x(self) -> float:
        return self.mx / self.v if self.v > 0 else 0.0

    @property
    def s(self) -> float:
        return self.ms / self.v if self.v > 0 else 0.0

    @property
    def p(self) -> float:
        return self.mp / self.v if self.v > 0 else 0.0


def initial_state() -> FermenterState:
    """An empty vessel at the start of a fill."""
    return FermenterState()


def run_complete(state: FermenterState, params: FermenterParams) -> bool:
    """The turnaround after the harvest is over: the next run may start."""
    return state.phase == Phase.IDLE and state.t_phase >= params.t_turnaround - 1e-9


def offgas(our: float, cer: float, v_l: float, air_nlpm: float) -> tuple[float, float]:
    """Dry outlet mole fractions (y_O2, y_CO2) from the model's OUR and CER [mol/L/h].

    The exact inverse of the inert balance used by the OUR/CER KPI (../shared/domain/kpis.md)."""
    if air_nlpm <= 0:
        return Y_O2_AIR, Y_CO2_AIR
    n_in = air_nlpm * 60 / MOLAR_VOLUME_NL  # [mol/h]
    n_o2 = max(n_in * Y_O2_AIR - our * v_l, 0.0)
    n_co2 = n_in * Y_CO2_AIR + cer * v_l
    n_inert = n_in * (1 - Y_O2_AIR - Y_CO2_AIR)
    total = n_o2 + n_co2 + n_inert
    return n_o2 / total, n_co2 / total


def _gassed_ratio(flow_number: float) -> float:
    ratio = 1 - 12.6 * flow_number if flow_number < 0.035 else 0.62 - 1.85 * flow_number
    return ratio if ratio > 0.3 else 0.3


def gassed_power_w(params: FermenterParams, rpm: float, air_nlpm: float) -> float:
    """Gassed agitator shaft power [W]: P0 = Np·ρ·N³·D⁵, P_g/P0 by Cui et al. (1996)."""
    n = rpm / 60
    if n <= 0:
        return 0.0
    d = params.impeller_d
    p0 = params.power_number * params.rho * n**3 * d**5
    return p0 * _gassed_ratio(air_nlpm / 60000 / (n * d**3))


def agitator_power_kw(params: FermenterParams, rpm: float, air_nlpm: float) -> float:
    """Electrical agitator power [kW]."""
    return (
        gassed_power_w(params, rpm, air_nlpm) / 1000 / params.motor_efficiency * params.agitator_power_factor
    )


def kla_per_h(power_w: float, v_l: float, air_nlpm: float, vessel_d: float) -> float:
    """kLa [1/h], van 't Riet (1979), coalescing broth: 0.026·(P_g/V)^0.4·v_s^0.5 [1/s]."""
    if v_l <= 0 or air_nlpm <= 0 or power_w <= 0:
        return 0.0
    vs = air_nlpm / 60000 / (math.pi * vessel_d**2 / 4)
    return 93.6 * (power_w / (v_l / 1000)) ** 0.4 * vs**0.5


def _rpm_for_power(params: FermenterParams, power_w: float, air_nlpm: float, rpm_guess: float) -> float:
    """Speed [rpm] whose gassed power is power_w (fixed point on the slowly varying gassing ratio)."""
    d = params.impeller_d
    k = params.power_number * params.rho * d**5
    n = max(rpm_guess, 1.0) / 60
    q = air_nlpm / 60000
    for _ in range(4):
        n = (power_w / (k * _gassed_ratio(q / (n * d**3)))) ** (1 / 3)
    return n * 60


def water_vapour_kpa(t_c: float) -> float:
    """Saturation pressure of water [kPa], Magnus formula (Alduchov & Eskridge 1996)."""
    return 0.61094 * math.exp(17.625 * t_c / (t_c + 243.04))


def c_star(params: FermenterParams) -> float:
    """O2 saturation [mol/L] at the head pressure."""
    return params.c_star_1atm * (1 + params.pressure / 1.01325)


def take_sample(state: FermenterState, volume_l: float) -> tuple[FermenterState, tuple[float, float, float]]:
    """Remove a lab sample of volume_l [L]; returns the new state and the true (X, S, P) [g/L] it holds."""
    if state.v <= 0 or volume_l <= 0:
        return state, (0.0, 0.0, 0.0)
    vol = min(volume_l, state.v)
    x, s, p = state.x, state.s, state.p
    frac = vol / state.v
    tot = state.totals
    tot = tot._replace(
        sampled_l=tot.sampled_l + vol,
        x_sampled_g=tot.x_sampled_g + state.mx * frac,
        s_sampled_g=tot.s_sampled_g + state.ms * frac,
        p_sampled_g=tot.p_sampled_g + state.mp * frac,
    )
    keep = 1 - frac
    new = state._replace(
        v=state.v - vol, mx=state.mx * keep, ms=state.ms * keep, mp=state.mp * keep, totals=tot
    )
    return new, (x, s, p)


def step(state: FermenterState, params: FermenterParams, dt_h: float) -> FermenterState:
    """Advance the run by dt_h hours (steps up to 30 s are accurate; the substrate is implicit)."""
    state = _advance_phase(state, params)
    ph = state.phase
    if ph == Phase.BATCH or ph == Phase.FED_BATCH:
        return _grow(state, params, dt_h)
    if ph == Phase.FILL:
        return _fill(state, params, dt_h)
    if ph == Phase.STERILIZATION:
        return _sterilize(state, params, dt_h)
    if ph == Phase.HARVEST:
        return _harvest(state, params, dt_h)
    return state._replace(
        t_phase=state.t_phase + dt_h,
        t_run=state.t_run + dt_h,
        agitation=0.0,
        air=0.0,
        feed=0.0,
        base=0.0,
        discharge=0.0,
        harvest=0.0,
        evaporation=0.0,
        our=0.0,
        cer=0.0,
        p_agitator=0.0,
        p_compressor=0.0,
        p_chiller=0.0,
        cooling_water=0.0,
        steam=0.0,
        pressure=0.0,
        temperature=params.t_fill_water,
        do=100.0,
        ph=params.ph_medium,
    )


def _advance_phase(state: FermenterState, params: FermenterParams) -> FermenterState:
    """Enter the next phase when the current one is over."""
    ph, t = state.phase, state.t_phase
    tot = state.totals
    if ph == Phase.FILL and t >= params.t_fill - 1e-9:
        return state._replace(phase=Phase.STERILIZATION, t_phase=0.0)
    if ph == Phase.STERILIZATION and t >= params.t_heat + params.t_hold + params.t_cool - 1e-9:
        # inoculation
        v = state.v + params.v_inoculum
        mx = params.v_inoculum * params.x_inoculum
        tot = tot._replace(t_inoculation=state.t_run, v_initial=v, x_initial_g=mx, s_initial_g=state.ms)
        return state._replace(
            phase=Phase.BATCH, t_phase=0.0, v=v, mx=mx, mp=0.0, do=100.0, ph=params.ph_medium, totals=tot
        )
    if ph == Phase.BATCH and t > 1.0 and state.ms < params.feed_start_s * state.v:
        f0 = (params.mu_set / params.y_xs + params.m_s) * state.mx / params.s_feed
        tot = tot._replace(t_feed_start=state.t_run)
        return state._replace(phase=Phase.FED_BATCH, t_phase=0.0, feed_f0=f0, totals=tot)
    if ph == Phase.FED_BATCH and t >= params.t_fed_batch - 1e-9:
        return state._replace(phase=Phase.HARVEST, t_phase=0.0, discharging=False, totals=_final(state))
    if ph == Phase.HARVEST and state.v <= 0.0:
        tot = tot._replace(t_harvest_end=state.t_run)
        return state._replace(phase=Phase.IDLE, t_phase=0.0, v=0.0, mx=0.0, ms=0.0, mp=0.0, totals=tot)
    return state


def _final(state: FermenterState) -> Totals:
    return state.totals._replace(
        t_harvest_start=state.t_run,
        v_final=state.v,
        x_final_g=state.mx,
        s_final_g=state.ms,
        p_final_g=state.mp,
    )


def fed_batch_over(state: FermenterState, params: FermenterParams) -> bool:
    """The next step starts the harvest (the moment of the final lab sample)."""
    return state.phase == Phase.FED_BATCH and state.t_phase >= params.t_fed_batch - 1e-9


def _fill(state: FermenterState, params: FermenterParams, dt_h: float) -> FermenterState:
    rate = params.v_medium / params.t_fill
    dv = min(rate * dt_h, params.v_medium - state.v)
    v = state.v + dv
    return state._replace(
        t_phase=state.t_phase + dt_h,
        t_run=state.t_run + dt_h,
        v=v,
        ms=params.s0 * (params.v_medium + params.v_inoculum) / params.v_medium * v,
        temperature=params.t_fill_water,
        ph=params.ph_medium,
        do=100.0,
        agitation=0.0,
        air=0.0,
        pressure=0.0,
    )


def _sterilize(state: FermenterState, params: FermenterParams, dt_h: float) -> FermenterState:
    t = state.t_phase + dt_h
    t0, t1 = params.t_heat, params.t_heat + params.t_hold
    heat_cap = state.v * params.rho / 1000 * CP_WATER + params.vessel_mass * params.cp_steel  # [kJ/K]
    steam = cw = 0.0
    if t <= t0:  # heating with jacket steam
        temp = params.t_fill_water + (STERILIZATION_T - params.t_fill_water) * t / t0
        steam = (
            heat_cap
            * (STERILIZATION_T - params.t_fill_water)
            / t0
            / (params.steam_latent * params.steam_efficiency)
        )
        pressure = STERILIZATION_BARG * t / t0
    elif t <= t1:  # holding: steam makes up the heat loss
        temp = STERILIZATION_T
        steam = params.sterilization_loss_kw * 3600 / params.steam_latent
        pressure = STERILIZATION_BARG
    else:  # cooling with tower water
        frac = min((t - t1) / params.t_cool, 1.0)
        temp = STERILIZATION_T - (STERILIZATION_T - params.t_set) * frac
        q_kw = heat_cap * (STERILIZATION_T - params.t_set) / params.t_cool / 3600
        cw = q_kw / (CP_WATER * params.cw_delta_t) * 60
        pressure = STERILIZATION_BARG + (params.pressure - STERILIZATION_BARG) * frac
    p_ag = agitator_power_kw(params, params.agitation_sterilization, 0.0)
    tot = state.totals
    tot = tot._replace(
        steam_kg=tot.steam_kg + steam * dt_h,
        cooling_water_l=tot.cooling_water_l + cw * 60 * dt_h,
        e_agitator_kwh=tot.e_agitator_kwh + p_ag * dt_h,
    )
    return state._replace(
        t_phase=t,
        t_run=state.t_run + dt_h,
        temperature=temp,
        pressure=pressure,
        agitation=params.agitation_sterilization,
        air=0.0,
        steam=steam,
        cooling_water=cw,
        p_agitator=p_ag,
        p_compressor=0.0,
        p_chiller=0.0,
        totals=tot,
    )


def _harvest(state: FermenterState, params: FermenterParams, dt_h: float) -> FermenterState:
    out = min(params.harvest_rate * dt_h, state.v)
    keep = 1 - out / state.v if state.v > 0 else 0.0
    p_ag = agitator_power_kw(params, params.agitation_harvest, 0.0)
    tot = state.totals
    tot = tot._replace(harvested_l=tot.harvested_l + out, e_agitator_kwh=tot.e_agitator_kwh + p_ag * dt_h)
    v = state.v - out
    return state._replace(
        t_phase=state.t_phase + dt_h,
        t_run=state.t_run + dt_h,
        v=v if v > 1e-9 else 0.0,
        mx=state.mx * keep,
        ms=state.ms * keep,
        mp=state.mp * keep,
        harvest=out / dt_h,
        feed=0.0,
        base=0.0,
        discharge=0.0,
        evaporation=0.0,
        agitation=params.agitation_harvest,
        air=0.0,
        our=0.0,
        cer=0.0,
        do=state.do,
        p_agitator=p_ag,
        p_compressor=0.0,
        p_chiller=0.0,
        cooling_water=0.0,
        steam=0.0,
        pressure=0.0,
        totals=tot,
    )


OXYGEN_LIMITED_MARGIN = 5.0  # [% of air saturation] DO this far below its set point: oxygen-limited


class _Reaction(NamedTuple):
    s_new: float  # [g/L]
    consumed: float  # [g] glucose this step
    r_x: float  # [g/h]
    r_p: float  # [g/h]
    o2: float  # [mol/h]
    co2: float  # [mol/h]


def _react(p: FermenterParams, f_o2: float, mx: float, avail: float, v_new: float, dt_h: float) -> _Reaction:
    """Uptake, growth, product and gas exchange of one step (module docstring) at oxygen factor f_O2."""
    qs_max = p.mu_max * f_o2 / p.y_xs + p.m_s
    c = qs_max * mx * dt_h
    bq = v_new * p.ks + c - avail
    disc = bq * bq + 4 * v_new * avail * p.ks
    s_new = 2 * avail * p.ks / (bq + math.sqrt(disc)) if bq > 0 else (-bq + math.sqrt(disc)) / (2 * v_new)
    consumed = c * s_new / (p.ks + s_new)  # [g] this step
    r_s = consumed / dt_h  # [g/h]
    mu = p.y_xs * (r_s / mx - p.m_s) if mx > 0 else 0.0
    r_x = mu * mx  # [g/h]
    r_p = p.product_factor * (p.alpha * (mu if mu > 0 else 0.0) + p.beta) * mx  # [g/h]
    cs, cx, cp_ = r_s / GLUCOSE_G_PER_CMOL, r_x / BIOMASS_G_PER_CMOL, r_p / p.product_g_per_cmol
    co2 = cs - cx - cp_  # [mol/h]
    o2 = (4 * cs - GAMMA_X * cx - p.gamma_p * cp_) / 4  # [mol/h]
    return _Reaction(s_new, consumed, r_x, r_p, o2, co2)


def _oxygen_limited(
    p: FermenterParams, transfer: float, mx: float, avail: float, v_new: float, dt_h: float
) -> tuple[float, _Reaction]:
    """DO [%] and the step's reaction where uptake OUR(DO) equals transfer·(1 − DO/100), transfer = kLa·C*
    [mol/L/h]: OUR rises with DO (f_O2 = DO/(K_DO + DO)) and transfer falls, so bisection on [0, 100]."""
    lo, hi = 0.0, 100.0
    rx = _react(p, 0.0, mx, avail, v_new, dt_h)
    if rx.o2 / v_new >= transfer:  # not even maintenance is supplied
        return 0.0, rx
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        rx = _react(p, mid / (p.k_do + mid), mx, avail, v_new, dt_h)
        if mid - 100 * (1 - rx.o2 / v_new / transfer) > 0:
            hi = mid
        else:
            lo = mid
    do = 0.5 * (lo + hi)
    return do, _react(p, do / (p.k_do + do), mx, avail, v_new, dt_h)


def _grow(state: FermenterState, p: FermenterParams, dt_h: float) -> FermenterState:
    v, mx, ms, mp = state.v, state.mx, state.ms, state.mp
    fed_batch = state.phase == Phase.FED_BATCH
    t_phase = state.t_phase + dt_h

    # -- flows of this step -------------------------------------------------------------------------
    # discharges (when v_after_discharge < v_max): from v_max down to v_after_discharge; without them
    # the feed stops at v_max
    discharging = False
    feed = 0.0
    if fed_batch:
        if p.v_after_discharge < p.v_max:
            discharging = v >= p.v_max or (state.discharging and v > p.v_after_discharge)
        if v < p.v_max or p.v_after_discharge < p.v_max:
            feed = min(state.feed_f0 * math.exp(p.mu_set * state.t_phase), p.feed_max) * p.feed_pump_factor
    discharge = p.discharge_rate if discharging else 0.0
    base = p.ph_kc * (p.ph_set - state.ph)
    base = 0.0 if base < 0 else (p.base_max if base > p.base_max else base)
    # aeration cascade: raise air when the agitator was at its maximum and DO below its set point
    air_sched = p.air_fed_batch if fed_batch else p.air_batch
    air = state.air if state.air >= air_sched else air_sched
    if state.agitation >= p.n_max - 1e-6 and state.do < p.do_set:
        air = min(air + p.air_ramp * dt_h, p.air_max)
    elif state.agitation < p.n_max - 30 and air > air_sched:
        air = max(air - p.air_ramp * dt_h, air_sched)
    n_in = air * 60 / MOLAR_VOLUME_NL  # [mol/h] gas in
    p_abs_kpa = 101.325 + p.pressure * 100
    pw = water_vapour_kpa(p.condenser_t)
    evap = n_in * pw / (p_abs_kpa - pw) * 0.018  # [L/h] water leaving with the off-gas (1 kg/L)
    out = discharge * dt_h
    if out > v:
        out, discharge = v, v / dt_h
    keep = 1 - out / v
    v_new = v + (feed + base - evap) * dt_h - out

    # -- reactions (substrate implicit, so any step length keeps S ≥ 0 and the balance exact) --------
    avail = ms * keep + feed * p.s_feed * dt_h  # [g] glucose that could be consumed
    rx = _react(p, state.do / (p.k_do + state.do), mx, avail, v_new, dt_h)
    our = rx.o2 / v_new  # per L of the volume the state reports, so that OUR·V is the molar rate exactly

    # -- DO cascade ---------------------------------------------------------------------------------
    cs_sat = p.c_star_1atm * (1 + p.pressure / 1.01325)
    vs = air / 60000 / (math.pi * p.vessel_d**2 / 4)
    need_kla = our / (cs_sat * (1 - p.do_set / 100)) / p.kla_factor  # the cascade acts on the real kLa
    pg_need = (need_kla / (93.6 * vs**0.5)) ** 2.5 * v / 1000  # [W]
    rpm = _rpm_for_power(p, pg_need, air, state.agitation or p.n_min) if pg_need > 0 else p.n_min
    ramp = p.n_ramp * dt_h
    if state.agitation > 0:
        rpm = min(max(rpm, state.agitation - ramp), state.agitation + ramp)
    rpm = min(max(rpm, p.n_min), p.n_max)
    pg = gassed_power_w(p, rpm, air)
    kla = 93.6 * (pg / (v / 1000)) ** 0.4 * vs**0.5 * p.kla_factor
    do = 100 * (1 - our / (kla * cs_sat))
    if do < p.do_set - OXYGEN_LIMITED_MARGIN and state.agitation > 0:
        # the cascade cannot hold DO (kLa lost, agitator at its limit): the speed rises at its ramp, and
        # DO settles where the culture's uptake equals the transfer (uptake limited by f_O2, solved
        # consistently: a DO lagged by one step would swing between 0 and far above the set point)
        rpm = min(state.agitation + ramp, p.n_max)
        pg = gassed_power_w(p, rpm, air)
        kla = 93.6 * (pg / (v / 1000)) ** 0.4 * vs**0.5 * p.kla_factor
        do, rx = _oxygen_limited(p, kla * cs_sat, mx, avail, v_new, dt_h)
        our = rx.o2 / v_new
    do = 0.0 if do < 0 else do
    consumed, r_x, r_p, o2 = rx.consumed, rx.r_x, rx.r_p, rx.o2
    cer = rx.co2 / v_new

    # -- heat, pH, utilities ------------------------------------------------------------------------
    p_ag = pg / 1000 / p.motor_efficiency * p.agitator_power_factor
    q_met = o2 * HEAT_PER_MOL_O2 / 3600  # [kW]
    q_gen = q_met + pg / 1000
    q_rem = q_gen + p.t_kp * (state.temperature - p.t_set)
    q_rem = 0.0 if q_rem < 0 else (p.q_cool_max if q_rem > p.q_cool_max else q_rem)
    heat_cap = v * p.rho / 1000 * CP_WATER  # [kJ/K]
    temperature = state.temperature + (q_gen - q_rem) * 3600 * dt_h / heat_cap
    cw = q_rem / (CP_WATER * p.cw_delta_t) * 60  # [L/min]
    p_ch = q_rem / p.chiller_cop
    p_co = air * p.compressor_kw_per_nlpm
    acid = p.base_per_biomass * p.base_conc * (r_x if r_x > 0 else 0.0)  # [mol/h]
    ph = state.ph + (base * p.base_conc - acid) * dt_h / (p.buffer_capacity * v)

    tot = state.totals
    tot = Totals(
        tot.feed_l + feed * dt_h,
        tot.substrate_fed_g + feed * p.s_feed * dt_h,
        tot.substrate_consumed_g + consumed,
        tot.biomass_net_growth_g + r_x * dt_h,
        tot.product_formed_g + r_p * dt_h,
        tot.base_l + base * dt_h,
        tot.evaporated_l + evap * dt_h,
        tot.sampled_l,
        tot.discharged_l + out,
        tot.harvested_l,
        tot.x_sampled_g,
        tot.s_sampled_g,
        tot.p_sampled_g,
        tot.x_discharged_g + mx * (1 - keep),
        tot.s_discharged_g + ms * (1 - keep),
        tot.p_discharged_g + mp * (1 - keep),
        tot.o2_mol + o2 * dt_h,
        tot.co2_mol + rx.co2 * dt_h,
        tot.e_agitator_kwh + p_ag * dt_h,
        tot.e_compressor_kwh + p_co * dt_h,
        tot.e_chiller_kwh + p_ch * dt_h,
        tot.steam_kg,
        tot.cooling_water_l + cw * 60 * dt_h,
        tot.heat_metabolic_kwh + q_met * dt_h,
        tot.heat_removed_kwh + q_rem * dt_h,
        tot.volume_hours + v * dt_h,
        *tot[26:],  # landmarks and snapshots: unchanged (keep in step with the field order of Totals)
    )
    return FermenterState(
        state.phase,
        t_phase,
        state.t_run + dt_h,
        v_new,
        mx * keep + r_x * dt_h,
        rx.s_new * v_new,
        mp * keep + r_p * dt_h,
        temperature,
        ph,
        do,
        p.pressure,
        rpm,
        air,
        feed,
        state.feed_f0,
        base,
        discharge,
        discharging,
        0.0,
        evap,
        our,
        cer,
        p_ag,
        p_co,
        p_ch,
        cw,
        0.0,
        tot,
    )


def signals(state: FermenterState, params: FermenterParams) -> dict[str, float | str]:
    """Noise-free values of the control-system signals (without BatchId, which the plant assigns)."""
    o2, co2 = offgas(state.our, state.cer, state.v, state.air)
    return {
        "Phase": state.phase.value,
        "Temperature": state.temperature,
        "pH": state.ph,
        "DissolvedOxygen": state.do,
        "AgitatorSpeed": state.agitation,
        "AirFlow": state.air,
        "Pressure": state.pressure,
        "FeedRate": state.feed,
        "BaseFlow": state.base,
        "DischargeFlow": state.discharge,
        "HarvestFlow": state.harvest,
        "Volume": state.v,
        "Weight": state.v * params.rho / 1000,
        "AgitatorPower": state.p_agitator,
        "CompressorPower": state.p_compressor,
        "ChillerPower": state.p_chiller,
        "CoolingWaterFlow": state.cooling_water,
        "SteamFlow": state.steam,
        "OffgasO2": o2 * 100,
        "OffgasCO2": co2 * 100,
    }
