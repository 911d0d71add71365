"""simulators/fermenter.py and simulators/recovery.py: the pure process models, no network."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from simulators import recovery as rc
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


@dataclass
class Cycle:
    states: list[FermenterState]
    phases: list[Phase]  # in the order they were entered


@pytest.fixture(scope="module")
def cycle() -> Cycle:
    """One full cycle at 10 s steps, from a fresh state until the next fill starts."""
    params = FermenterParams()
    state = FermenterState()
    states = [state]
    phases = [state.phase]
    limit = int(200 / DT_H)  # 200 h of simulated time: far more than one cycle (about 51 h)
    for _ in range(limit):
        state = step(state, params, DT_H)
        states.append(state)
        if state.phase != phases[-1]:
            phases.append(state.phase)
            if state.phase == Phase.FILL:
                break
    return Cycle(states, phases)


def test_a_cycle_passes_the_phases_in_order(cycle: Cycle) -> None:
    assert cycle.phases == [
        Phase.FILL,
        Phase.STERILIZATION,
        Phase.BATCH,
        Phase.FED_BATCH,
        Phase.HARVEST,
        Phase.IDLE,
        Phase.FILL,
    ]
    assert cycle.states[0].cycle == 0
    assert cycle.states[-1].cycle == 1  # the batch counter moves on with the next fill


def test_volume_and_concentrations_never_negative(cycle: Cycle) -> None:
    for field in ("v", "x", "s", "p", "do", "feed", "base"):
        assert min(getattr(s, field) for s in cycle.states) >= 0.0, field


def test_feed_is_off_in_batch_and_on_in_fed_batch(cycle: Cycle) -> None:
    params = FermenterParams()
    batch = [s for s in cycle.states if s.phase == Phase.BATCH]
    fed = [s for s in cycle.states if s.phase == Phase.FED_BATCH]
    assert batch and fed
    assert all(s.feed == 0.0 for s in batch)
    # the feed runs while the vessel is below its maximum volume, within the pump's limit
    feeding = [s for s in fed if s.v < params.v_max]
    assert feeding
    assert all(0.0 < s.feed <= params.feed_max for s in feeding)
    assert fed[-1].v > fed[0].v  # the feed adds volume


def test_dissolved_oxygen_falls_as_biomass_grows_in_batch(cycle: Cycle) -> None:
    params = FermenterParams()
    batch = [s for s in cycle.states if s.phase == Phase.BATCH]
    # While the agitator is still at its minimum speed (before the DO cascade takes over), every step with
    # more biomass has less dissolved oxygen. The first batch step is left out: its growth rate still uses the
    # 100 % DO of the fresh medium, so its OUR is a little above the second step's.
    uncontrolled = list(itertools.takewhile(lambda s: s.agitation <= params.n_min + 0.01, batch[1:]))
    assert len(uncontrolled) > 100
    for before, after in itertools.pairwise(uncontrolled):
        assert after.x > before.x
        assert after.do < before.do
    assert batch[-1].x > 10 * batch[0].x  # the batch grows
    assert batch[-1].do < batch[0].do - 30  # and DO has fallen by much more than noise would


def test_harvest_empties_the_vessel_and_remembers_what_it_held(cycle: Cycle) -> None:
    harvest = [s for s in cycle.states if s.phase == Phase.HARVEST]
    assert harvest[0].harvest_v > 600.0
    assert harvest[0].harvest_p > 0.0
    idle = [s for s in cycle.states if s.phase == Phase.IDLE]
    assert all(s.v == 0.0 for s in idle)


# -- recovery ----------------------------------------------------------------------------------------


def test_a_received_harvest_goes_startup_clarification_cip_idle_with_its_batch_id() -> None:
    params = rc.RecoveryParams()
    rng = np.random.default_rng(1)
    harvest = rc.Harvest("F-101-0007", volume=200.0, product=4.0)
    state = rc.receive(rc.RecoveryState(), harvest)
    assert state.phase == rc.RecoveryPhase.IDLE
    assert rc.measure(state, params, rng)["batch_id"] == ""

    phases = [state.phase]
    batch_ids: dict[rc.RecoveryPhase, set[object]] = {}
    for _ in range(int(5 / DT_H)):  # 200 L at 400 L/h is 0.5 h; with startup and CIP about 1.5 h in all
        state = rc.step(state, params, DT_H)
        signals = rc.measure(state, params, rng)
        batch_ids.setdefault(state.phase, set()).add(signals["batch_id"])
        if state.phase == rc.RecoveryPhase.CLARIFICATION:
            assert signals["feed_flow"] > 0
            assert signals["product"] == pytest.approx(4.0 * params.step_yield, abs=0.2)
        if state.phase != phases[-1]:
            phases.append(state.phase)
            if state.phase == rc.RecoveryPhase.IDLE:
                break
    assert phases == [
        rc.RecoveryPhase.IDLE,
        rc.RecoveryPhase.STARTUP,
        rc.RecoveryPhase.CLARIFICATION,
        rc.RecoveryPhase.CIP,
        rc.RecoveryPhase.IDLE,
    ]
    for phase in (rc.RecoveryPhase.STARTUP, rc.RecoveryPhase.CLARIFICATION, rc.RecoveryPhase.CIP):
        assert batch_ids[phase] == {"F-101-0007"}
    assert batch_ids[rc.RecoveryPhase.IDLE] == {""}
    assert state.queue == ()
    assert state.harvest is None


def test_harvests_are_processed_in_the_order_received() -> None:
    params = rc.RecoveryParams()
    state = rc.RecoveryState()
    state = rc.receive(state, rc.Harvest("A", 50.0, 1.0))
    state = rc.receive(state, rc.Harvest("B", 50.0, 1.0))
    seen: list[str] = []
    for _ in range(int(10 / DT_H)):
        state = rc.step(state, params, DT_H)
        if state.harvest is not None and (not seen or seen[-1] != state.harvest.batch_id):
            seen.append(state.harvest.batch_id)
    assert seen == ["A", "B"]
    assert state.phase == rc.RecoveryPhase.IDLE
