"""simulators/fermenter.py: the pure fed-batch model, no network, no clock.

Balances are checked against quantities the accumulators (Totals) do not use: the per-step flows and
rates the state carries, summed here; correlations against values computed by hand in the comments.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import pytest

from simulators import fermenter as fm
from simulators.fermenter import FermenterParams, FermenterState, Phase, offgas, step

DT_H = 10 / 3600  # 10 s steps
V_M = 22.414  # [L/mol] molar volume at 0 °C, 1 atm: the reference of NL/min (kpis.md)
Y_O2_IN, Y_CO2_IN = 0.2095, 0.0004  # air in (kpis.md)


def our_cer_from_offgas(
    y_o2_out: float, y_co2_out: float, v_l: float, air_nlpm: float
) -> tuple[float, float]:
    """OUR and CER [mol/L/h] by the inert (N2 + Ar) balance of ../shared/domain/kpis.md, written out here:

    y_inert,in = 1 − y_O2,in − y_CO2,in ; y_inert,out = 1 − y_O2,out − y_CO2,out
    OUR = (F_gas,in / V_m) · (y_O2,in − y_O2,out · y_inert,in / y_inert,out) / V_L
    CER = (F_gas,in / V_m) · (y_CO2,out · y_inert,in / y_inert,out − y_CO2,in) / V_L
    with F_gas,in in NL/h (NL/min · 60) and V_m = 22.414 L/mol.
    """
    y_inert_in = 1 - Y_O2_IN - Y_CO2_IN
    y_inert_out = 1 - y_o2_out - y_co2_out
    molar_flow_in = air_nlpm * 60 / V_M  # [mol/h]
    our = molar_flow_in * (Y_O2_IN - y_o2_out * y_inert_in / y_inert_out) / v_l
    cer = molar_flow_in * (y_co2_out * y_inert_in / y_inert_out - Y_CO2_IN) / v_l
    return our, cer


@pytest.mark.parametrize(
    ("our", "cer", "v_l", "air_nlpm"),
    [
        (0.05, 0.0515, 600.0, 500.0),  # early batch
        (0.12, 0.1236, 800.0, 800.0),  # fed-batch, RQ 1.03
        (0.08, 0.056, 900.0, 800.0),  # on oil, RQ 0.7
        (0.0, 0.0, 600.0, 500.0),  # no respiration: the outlet is air
    ],
)
def test_offgas_fed_back_through_the_inert_balance_returns_our_and_cer(
    our: float, cer: float, v_l: float, air_nlpm: float
) -> None:
    y_o2, y_co2 = offgas(our, cer, v_l, air_nlpm)
    assert 0 < y_o2 <= Y_O2_IN * (1 + 1e-12)
    assert y_co2 >= Y_CO2_IN * (1 - 1e-12)
    our_back, cer_back = our_cer_from_offgas(y_o2, y_co2, v_l, air_nlpm)
    assert our_back == pytest.approx(our, rel=1e-9, abs=1e-15)
    assert cer_back == pytest.approx(cer, rel=1e-9, abs=1e-15)


def test_offgas_without_air_is_air() -> None:
    assert offgas(0.1, 0.1, 600.0, 0.0) == (Y_O2_IN, Y_CO2_IN)


# -- correlations, against hand-computed values -------------------------------------------------------
def test_agitator_power_ungassed_and_gassed_by_hand() -> None:
    params = FermenterParams()  # Np 5, ρ 1030 kg/m³, D 0.33 m
    # 300 rpm = 5 1/s: P0 = 5 · 1030 · 5³ · 0.33⁵ = 5 · 1030 · 125 · 0.0039135393 = 2519.34 W
    assert fm.gassed_power_w(params, 300.0, 0.0) == pytest.approx(2519.34, abs=0.01)
    # 800 NL/min = 0.013333 m³/s: Fl = 0.013333 / (5 · 0.33³) = 0.013333 / 0.179685 = 0.074203 ≥ 0.035,
    # so Pg/P0 = 0.62 − 1.85 · 0.074203 = 0.482724 (Cui et al. 1996): Pg = 1216.15 W
    assert fm.gassed_power_w(params, 300.0, 800.0) == pytest.approx(1216.15, abs=0.05)
    # electrical: Pg / motor efficiency 0.9 = 1.35128 kW
    assert fm.agitator_power_kw(params, 300.0, 800.0) == pytest.approx(1.35128, abs=1e-4)


def test_kla_van_t_riet_by_hand() -> None:
    # P/V = 2000 W/m³ (2 kW in 1 m³), 800 NL/min through a 1 m vessel: vs = 0.013333 / 0.785398 = 0.016977 m/s
    # kLa = 0.026 · 2000^0.4 · 0.016977^0.5 = 0.026 · 20.9128 · 0.130296 = 0.070846 1/s = 255.05 1/h
    assert fm.kla_per_h(2000.0, 1000.0, 800.0, 1.0) == pytest.approx(255.05, abs=0.02)


@pytest.mark.parametrize(("t_c", "kpa"), [(8.0, 1.0730), (20.0, 2.3392), (30.0, 4.2470)])
def test_water_vapour_pressure_matches_steam_tables(t_c: float, kpa: float) -> None:
    """Saturation pressure of water from the IAPWS-IF97 steam tables [kPa]; the Magnus formula is within
    0.5 % from 0 to 40 °C."""
    assert fm.water_vapour_kpa(t_c) == pytest.approx(kpa, rel=0.005)


def test_respiratory_quotient_of_pure_growth_on_glucose_by_hand() -> None:
    """No product, no maintenance: per g glucose (30.026 g/C-mol) 0.48 g biomass (24.6 g/C-mol, γ = 4.2) is
    formed. CO2 = 1/30.026 − 0.48/24.6 = 0.0333045 − 0.0195122 = 0.0137923 C-mol;
    O2 = (4/30.026 − 4.2 · 0.48/24.6)/4 = (0.1332179 − 0.0819512)/4 = 0.0128167 mol; RQ = 1.07612."""
    params = FermenterParams(alpha=0.0, beta=0.0, m_s=0.0)
    state = _run_until(params, lambda s: s.phase == Phase.BATCH and s.t_phase > 2.0)
    assert state.cer / state.our == pytest.approx(1.07612, abs=2e-5)
    # and per mol O2: 0.48 / 0.0128167 = 37.45 g biomass per mol O2 (Y_X/O = 1.17 g/g)
    assert state.do > 0


def _run_until(params: FermenterParams, done: object, dt_h: float = DT_H) -> FermenterState:
    state = fm.initial_state()
    for _ in range(int(100 / dt_h)):
        state = step(state, params, dt_h)
        if done(state):  # type: ignore[operator]
            return state
    raise AssertionError("not reached in 100 h")


# -- one whole run -------------------------------------------------------------------------------------
@dataclass
class Cycle:
    params: FermenterParams
    states: list[FermenterState]
    phases: list[Phase]  # in the order they were entered


def _cycle(params: FermenterParams, dt_h: float) -> Cycle:
    state = fm.initial_state()
    states, phases = [state], [state.phase]
    while not fm.run_complete(state, params):
        state = step(state, params, dt_h)
        states.append(state)
        if state.phase != phases[-1]:
            phases.append(state.phase)
    return Cycle(params, states, phases)


@pytest.fixture(scope="module")
def cycle() -> Cycle:
    """One full run at 10 s steps, from an empty vessel to the end of the turnaround."""
    return _cycle(FermenterParams(), DT_H)


def test_a_run_passes_the_phases_in_order(cycle: Cycle) -> None:
    assert cycle.phases == [
        Phase.FILL,
        Phase.STERILIZATION,
        Phase.BATCH,
        Phase.FED_BATCH,
        Phase.HARVEST,
        Phase.IDLE,
    ]
    tot = cycle.states[-1].totals
    # a 48 h fed-batch: fill 0.5 h, sterilization 2 h, batch until glucose is gone, 34 h fed-batch, harvest
    assert 45 < tot.t_harvest_end < 52


def test_volume_and_concentrations_never_negative(cycle: Cycle) -> None:
    for name in ("v", "mx", "ms", "mp", "do", "feed", "base", "discharge", "our", "cer"):
        assert min(getattr(s, name) for s in cycle.states) >= 0.0, name


def test_feed_starts_when_the_batch_glucose_is_gone_and_stays_within_the_pump(cycle: Cycle) -> None:
    params = cycle.params
    batch = [s for s in cycle.states if s.phase == Phase.BATCH]
    fed = [s for s in cycle.states if s.phase == Phase.FED_BATCH]
    assert all(s.feed == 0.0 for s in batch)
    assert batch[-1].s < params.feed_start_s  # the batch ended because the glucose was used up
    assert all(0.0 < s.feed <= params.feed_max for s in fed[1:])
    # exponential at μ_set until the pump's limit: 1 h into the feed the rate is e^0.12 = 1.1275 × the first
    one_h = next(s for s in fed if s.t_phase >= 1.0)
    assert one_h.feed / fed[1].feed == pytest.approx(
        math.exp(params.mu_set * (one_h.t_phase - fed[1].t_phase))
    )


def test_dissolved_oxygen_falls_as_biomass_grows_then_the_cascade_holds_it(cycle: Cycle) -> None:
    params = cycle.params
    batch = [s for s in cycle.states if s.phase == Phase.BATCH]
    # While the agitator is at its minimum speed, every step with more biomass has less dissolved oxygen.
    # (The first batch step is left out: its growth still uses the 100 % DO of the fresh medium.)
    uncontrolled = list(itertools.takewhile(lambda s: s.agitation <= params.n_min + 1e-6, batch[1:]))
    assert len(uncontrolled) > 100
    for before, after in itertools.pairwise(uncontrolled):
        assert after.x > before.x
        assert after.do < before.do
    assert batch[-1].x > 10 * batch[0].x
    # when the batch glucose runs out the oxygen demand drops faster than the agitator may slow down
    # (600 rpm/h): DO spikes above its set point, the sign plants use to start the feed
    fed = [s for s in cycle.states if s.phase == Phase.FED_BATCH]
    assert fed[0].do > params.do_set + 10
    # then the agitation cascade holds DO at its set point
    controlled = [s for s in fed if s.t_phase > 0.25 and params.n_min < s.agitation < params.n_max]
    assert len(controlled) > 1000
    assert max(abs(s.do - params.do_set) for s in controlled) < 0.5


def test_discharges_keep_the_volume_below_its_limit(cycle: Cycle) -> None:
    params = cycle.params
    tot = cycle.states[-1].totals
    assert tot.discharged_l > 0
    assert max(s.v for s in cycle.states) < params.v_max + params.feed_max * DT_H * 2
    discharging = [s for s in cycle.states if s.discharge > 0]
    assert discharging and all(s.phase == Phase.FED_BATCH for s in discharging)


def test_volume_balance_from_the_per_step_flows(cycle: Cycle) -> None:
    """V_end = V_0 + Σ (feed + base − evaporation − discharge)·dt − samples, from the flows each step
    reports (not the accumulators)."""
    tot = cycle.states[-1].totals
    grow = [s for s in cycle.states if s.phase in (Phase.BATCH, Phase.FED_BATCH)]
    flows = sum((s.feed + s.base - s.evaporation - s.discharge) * DT_H for s in grow)
    assert tot.v_initial + flows - tot.sampled_l == pytest.approx(tot.v_final, rel=1e-9)
    assert tot.v_final == pytest.approx(tot.harvested_l, rel=1e-9)  # the harvest takes all of it


def test_substrate_product_and_biomass_balances_close(cycle: Cycle) -> None:
    tot = cycle.states[-1].totals
    p = cycle.params
    grow = [s for s in cycle.states if s.phase in (Phase.BATCH, Phase.FED_BATCH)]
    fed = sum(s.feed * p.s_feed * DT_H for s in grow)
    assert tot.substrate_fed_g == pytest.approx(fed, rel=1e-9)
    # substrate: in = initial + fed; out = consumed + left + removed (the consumption is the model's own sum)
    assert tot.s_initial_g + fed == pytest.approx(
        tot.substrate_consumed_g + tot.s_final_g + tot.s_sampled_g + tot.s_discharged_g, rel=1e-9
    )
    # glucose at inoculation: s0 = 20 g/L in the inoculated volume (the recipe's figure)
    assert tot.s_initial_g / tot.v_initial == pytest.approx(p.s0, rel=1e-12)
    assert tot.product_formed_g == pytest.approx(
        tot.p_final_g + tot.p_sampled_g + tot.p_discharged_g, rel=1e-9
    )
    assert tot.x_initial_g + tot.biomass_net_growth_g == pytest.approx(
        tot.x_final_g + tot.x_sampled_g + tot.x_discharged_g, rel=1e-9
    )


def test_carbon_closes_through_the_gas_balance(cycle: Cycle) -> None:
    """C-mol of consumed glucose = biomass + product + ∫CER·V dt, with CER·V summed from the states."""
    tot = cycle.states[-1].totals
    p = cycle.params
    grow = [s for s in cycle.states if s.phase in (Phase.BATCH, Phase.FED_BATCH)]
    co2 = sum(s.cer * s.v * DT_H for s in grow)
    o2 = sum(s.our * s.v * DT_H for s in grow)
    assert co2 == pytest.approx(tot.co2_mol, rel=1e-9)
    assert o2 == pytest.approx(tot.o2_mol, rel=1e-9)
    c_in = tot.substrate_consumed_g / 30.026
    c_out = tot.biomass_net_growth_g / 24.6 + tot.product_formed_g / p.product_g_per_cmol + co2
    assert c_out / c_in == pytest.approx(1.0, abs=1e-9)
    assert 1.0 < co2 / o2 < 1.12  # RQ of aerobic growth on glucose


def test_energy_is_the_integral_of_power(cycle: Cycle) -> None:
    tot = cycle.states[-1].totals
    ag = sum(s.p_agitator * DT_H for s in cycle.states)
    co = sum(s.p_compressor * DT_H for s in cycle.states)
    ch = sum(s.p_chiller * DT_H for s in cycle.states)
    assert (tot.e_agitator_kwh, tot.e_compressor_kwh, tot.e_chiller_kwh) == pytest.approx(
        (ag, co, ch), rel=1e-9
    )
    # the compressor: 500 NL/min in the batch, 800 in the fed-batch, 0.005 kW per NL/min
    batch_h = tot.t_feed_start - tot.t_inoculation
    fed_h = tot.t_harvest_start - tot.t_feed_start
    assert tot.e_compressor_kwh == pytest.approx(2.5 * batch_h + 4.0 * fed_h, rel=1e-3)


def test_cooling_removes_the_metabolic_heat_and_the_agitator_power(cycle: Cycle) -> None:
    """Temperature held at its set point: heat removed = 460 kJ/mol O2 × O2 + agitator shaft power, up to
    the heat the broth stores while it warms slightly (a proportional controller)."""
    tot = cycle.states[-1].totals
    p = cycle.params
    grow = [s for s in cycle.states if s.phase in (Phase.BATCH, Phase.FED_BATCH)]
    shaft = sum(s.p_agitator * p.motor_efficiency * DT_H for s in grow)
    assert tot.heat_metabolic_kwh == pytest.approx(tot.o2_mol * 460 / 3600, rel=1e-9)
    assert tot.heat_removed_kwh == pytest.approx(tot.heat_metabolic_kwh + shaft, rel=0.01)
    assert max(abs(s.temperature - p.t_set) for s in grow) < 0.2


def test_sterilization_steam_by_hand(cycle: Cycle) -> None:
    """Heat-up of 600 L broth (1030 kg/m³, 4.18 kJ/kg/K) and 1500 kg steel (0.5 kJ/kg/K) from 20 to 121 °C:
    (618 · 4.18 + 750) · 101 = 336,661 kJ; / (2200 kJ/kg · 0.85) = 180.03 kg; holding 0.5 h at 3 kW:
    5400 kJ / 2200 = 2.45 kg; in all 182.49 kg."""
    assert cycle.states[-1].totals.steam_kg == pytest.approx(182.49, abs=0.02)
    assert max(s.temperature for s in cycle.states) == pytest.approx(121.0)


def test_a_lab_sample_takes_its_share_of_every_mass() -> None:
    state = _run_until(FermenterParams(), lambda s: s.phase == Phase.FED_BATCH and s.t_phase > 5)
    after, (x, s, p) = fm.take_sample(state, 0.05)
    assert (x, s, p) == (state.x, state.s, state.p)
    assert after.v == pytest.approx(state.v - 0.05)
    assert (after.x, after.s, after.p) == pytest.approx((state.x, state.s, state.p), rel=1e-12)
    assert after.totals.p_sampled_g == pytest.approx(0.05 * p)
    assert after.totals.sampled_l == pytest.approx(0.05)


@pytest.fixture(scope="module")
def coarse(cycle: Cycle) -> Cycle:
    """The same run at 30 s steps."""
    return _cycle(cycle.params, 30 / 3600)


def test_30_s_steps_give_the_same_run_as_10_s_steps(cycle: Cycle, coarse: Cycle) -> None:
    """The substrate is solved implicitly, so longer steps stay stable; the run is the same within 0.5 %."""
    fine = cycle.states[-1].totals
    coarse = coarse.states[-1].totals
    for name in (
        "product_formed_g",
        "substrate_consumed_g",
        "biomass_net_growth_g",
        "o2_mol",
        "e_agitator_kwh",
    ):
        assert getattr(coarse, name) == pytest.approx(getattr(fine, name), rel=0.005), name


def test_the_trial_mechanisms_change_exactly_what_they_claim(coarse: Cycle) -> None:
    """product_factor scales product only; agitator_power_factor scales agitator electricity only (30 s
    steps, all three runs)."""
    dt_h = 30 / 3600
    base = coarse.states[-1].totals
    more = _cycle(dataclasses.replace(coarse.params, product_factor=1.06), dt_h).states[-1].totals
    assert more.product_formed_g / base.product_formed_g == pytest.approx(1.06, rel=1e-3)
    assert more.substrate_consumed_g == pytest.approx(base.substrate_consumed_g, rel=1e-3)
    less = _cycle(dataclasses.replace(coarse.params, agitator_power_factor=0.88), dt_h).states[-1].totals
    assert less.e_agitator_kwh / base.e_agitator_kwh == pytest.approx(0.88, rel=1e-9)
    assert less.product_formed_g == base.product_formed_g
