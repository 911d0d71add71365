"""simulators/recovery.py: the recovery units as pure models: plans that close, stepping that follows them."""

from __future__ import annotations

import dataclasses

import pytest

from simulators import recovery as rc
from simulators.recovery import Feed, UnitKind

DT_H = 10 / 3600
HARVEST = Feed("F101-X-B01", volume=829.66, product_g=6849.65, purity=0.30, biomass_g=42939.6)


def run_through(state: rc.UnitState, dt_h: float, limit_h: float = 100.0) -> tuple[list[str], list]:
    """Step until the unit is idle with nothing queued; the phases seen and the runs finished."""
    phases, finished = [state.phase], []
    for _ in range(int(limit_h / dt_h)):
        state = rc.step(state, dt_h)
        finished.extend(state.finished)
        if state.phase != phases[-1]:
            phases.append(state.phase)
        if state.plan is None and not state.queue:
            return phases, finished
    raise AssertionError("the unit did not finish")


def test_centrifuge_by_hand() -> None:
    params = rc.default_params(UnitKind.CENTRIFUGE)  # yield 0.95, 400 L/h, 3.6 L sludge per kg dry biomass
    plan = rc.plan(HARVEST, params)
    # sludge: 42.9396 kg · 3.6 L/kg = 154.583 L; centrate 829.66 − 154.583 = 675.077 L
    assert plan.out.volume == pytest.approx(675.077, abs=1e-3)
    assert plan.out.product_g == pytest.approx(0.95 * 6849.65)
    # purity: impurities 6849.65 · 0.7/0.3 = 15982.517 g, cleared 1.1× → 14529.561 g;
    # product 0.95 · 6849.65 = 6507.168 g: 6507.168 / (6507.168 + 14529.561) = 6507.168 / 21036.729 = 0.309324
    assert plan.out.purity == pytest.approx(0.309324, abs=1e-6)
    assert [s.name for s in plan.steps] == ["startup", "clarification", "cip"]
    # clarification: 829.66 L at 400 L/h = 2.07415 h
    assert plan.steps[1].duration == pytest.approx(2.07415, abs=1e-5)


def test_uf_df_by_hand() -> None:
    feed = Feed("B", volume=675.0, product_g=6507.0, purity=0.31)
    plan = rc.plan(feed, rc.default_params(UnitKind.UF_DF))  # CF 5, 5 diavolumes, flush 0.1, yield 0.97
    # retentate 675/5 = 135 L, flush 13.5 L into the pool: 148.5 L; buffer 5 · 135 + 13.5 = 688.5 L
    assert plan.out.volume == pytest.approx(148.5)
    assert rc.plan_totals(plan).buffer_l == pytest.approx(688.5)
    assert plan.out.concentration == pytest.approx(0.97 * 6507 / 148.5)


def test_capture_cycles_by_hand() -> None:
    params = rc.default_params(UnitKind.CAPTURE)  # 25 L column, 40 g/L, 80 % loaded per cycle: 800 g
    plan = rc.plan(Feed("B", volume=148.5, product_g=6312.0, purity=0.36), params)
    # 6312 / 800 = 7.89 → 8 cycles; eluate 8 · 2 CV · 25 L = 400 L
    assert [s.name for s in plan.steps].count("elution") == 8
    assert plan.out.volume == pytest.approx(400.0)
    # buffer per cycle: 3 + 5 + 2 + 3 = 13 CV = 325 L; 8 cycles: 2600 L
    assert rc.plan_totals(plan).buffer_l == pytest.approx(2600.0)
    # purity: 6312 · 0.9 = 5680.8 g product; impurities 6312 · 0.64/0.36 = 11221.3 g / 15 = 748.09 g
    assert plan.out.purity == pytest.approx(5680.8 / (5680.8 + 748.089), rel=1e-5)


@pytest.mark.parametrize("kind", list(UnitKind))
def test_every_unit_closes_and_stepping_follows_the_plan(kind: UnitKind) -> None:
    params = rc.default_params(kind)
    feed = HARVEST if kind == UnitKind.CENTRIFUGE else dataclasses.replace(HARVEST, biomass_g=0.0)
    plan = rc.plan(feed, params)
    planned = rc.plan_totals(plan)
    # exact step: product out = yield × product in = outlet volume × outlet concentration
    assert planned.product_in_g == pytest.approx(feed.product_g, rel=1e-12)
    assert planned.product_out_g == pytest.approx(params.step_yield * feed.product_g, rel=1e-12)
    assert planned.outlet_l == pytest.approx(plan.out.volume, rel=1e-12)
    assert planned.feed_l == pytest.approx(feed.volume, rel=1e-12)
    # stepping at an odd step length, so phases end inside steps: the same sums
    phases, finished = run_through(rc.receive(rc.UnitState(), plan), 7.3 / 3600)
    assert len(finished) == 1
    done_plan, totals = finished[0]
    assert done_plan is plan
    for name in planned._fields:
        assert getattr(totals, name) == pytest.approx(getattr(planned, name), rel=1e-9, abs=1e-9), name
    assert phases[0] == rc.IDLE and phases[-1] == rc.IDLE
    assert phases[1:-1] == list(dict.fromkeys(s.name for s in plan.steps)) or kind == UnitKind.CAPTURE


def test_a_unit_shows_its_batch_id_while_it_runs_and_blank_between_runs() -> None:
    params = rc.default_params(UnitKind.CENTRIFUGE)
    state = rc.UnitState()
    state = rc.receive(state, rc.plan(Feed("A", 100.0, 100.0, 0.3, 500.0), params))
    state = rc.receive(state, rc.plan(Feed("B", 100.0, 100.0, 0.3, 500.0), params))
    ids = []
    for _ in range(int(10 / DT_H)):
        state = rc.step(state, DT_H)
        signals = rc.signals(state, params)
        if not ids or ids[-1] != signals["batch_id"]:
            ids.append(signals["batch_id"])
    assert ids == ["A", "", "B", ""]  # in the order received, with a blank step between the runs


def test_signals_while_clarifying() -> None:
    params = rc.default_params(UnitKind.CENTRIFUGE)
    plan = rc.plan(HARVEST, params)
    state = rc.receive(rc.UnitState(), plan)
    while state.phase != "clarification":
        state = rc.step(state, DT_H)
    state = rc.step(state, 0.5)
    s = rc.signals(state, params)
    assert s["feed_flow"] == 400.0
    assert s["product"] == pytest.approx(plan.out.concentration)
    assert s["product_in"] == pytest.approx(HARVEST.concentration)
    assert s["bowl_speed"] == params.speed and s["power"] == params.power
    # the totalizers: 0.5 h at 400 L/h plus the first step of clarification
    assert float(s["feed_total"]) == pytest.approx(400.0 * (0.5 + state.t_phase - 0.5), rel=1e-9)
