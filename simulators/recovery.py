"""The recovery line: a pure model, no network code, no clock, no randomness.

A harvest (batch id, volume, product, biomass, purity) goes through units in series, for example
disc-stack centrifuge → UF/DF → capture chromatography → polishing chromatography. Each unit takes a
`Feed` from its hold tank, runs a sequence of phases and hands its product pool (a new `Feed` with the
same batch id) to the next unit, so every downstream run links to the fermentation it processed.

When a unit starts a feed, `plan` turns the feed and the unit's parameters into a table of phases, each
with a duration [h] and constant flows [L/h] (feed from the hold tank, outlet to the next pool, buffer,
water) and power [kW]. The product leaves with the outlet at the concentration
C_out = Y·m_in / V_out [g/L], so that every step closes exactly:
  product out [g] = step yield Y × product in [g], product in = V_in·C_in;
  purity out = Y·m_P / (Y·m_P + m_I/r), m_I the impurity (other protein) mass in, r the unit's impurity
  clearance factor (kpis.md: purity = target / total; purification factor = purity out / purity in);
  energy [kWh] = Σ phase power × duration; buffer and water [L] = Σ flow × duration.

Kinds and their phases (V_in feed volume, CV column volume):
- centrifuge: startup → clarification (feed at `flow`, centrate out, desludging water) → cip.
  Centrate volume V_out = V_in − sludge, sludge = biomass [kg] × `sludge_l_per_kg`.
- uf_df: setup → concentration (feed, permeate out) to V_in/`concentration_factor` → diafiltration
  (`diavolumes` × retentate volume of buffer) → recovery (retentate out, plus a buffer flush of
  `flush_fraction` × retentate) → cip.
- capture (bind/elute): per cycle equilibration (3 CV) → load → wash (5 CV) → elution (`elution_cv` CV,
  the pool) → strip (3 CV); cycles = ⌈m_in / (`capacity` × CV × `utilization`)⌉; then cip (3 CV water).
- polish (flow-through): equilibration (3 CV) → load (the flow-through is the pool) → chase (2 CV buffer
  into the pool) → cip (3 CV water).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple


class UnitKind(StrEnum):
    CENTRIFUGE = "centrifuge"
    UF_DF = "uf_df"
    CAPTURE = "capture"
    POLISH = "polish"


IDLE = "idle"


@dataclass(frozen=True)
class Feed:
    """What a unit processes: a harvest, or the product pool of the unit before it."""

    batch_id: str
    volume: float  # [L]
    product_g: float  # [g]
    purity: float  # product / total protein
    biomass_g: float = 0.0  # [g] solids (only in a harvest)

    @property
    def concentration(self) -> float:
        """[g/L]"""
        return self.product_g / self.volume if self.volume > 0 else 0.0


@dataclass(frozen=True, slots=True)
class UnitParams:
    kind: UnitKind = UnitKind.CENTRIFUGE
    step_yield: float = 0.95  # product out / product in
    clearance: float = 1.0  # impurity reduction factor r (impurities out = impurities in / r)
    flow: float = 400.0  # [L/h] feed (load) flow
    power: float = 11.0  # [kW] while processing
    power_standby: float = 2.0  # [kW] in startup, setup, cip
    t_startup: float = 0.25  # [h]
    t_cip: float = 0.75  # [h]
    cip_water: float = 300.0  # [L] per run
    water_per_feed: float = 0.05  # [L water per L feed] (centrifuge desludging flushes)
    sludge_l_per_kg: float = 3.6  # [L sludge per kg dry biomass] (centrifuge)
    speed: float = 7500.0  # [rpm] bowl (centrifuge)
    turbidity: float = 25.0  # [NTU] centrate (centrifuge)
    concentration_factor: float = 5.0  # (uf_df)
    diavolumes: float = 5.0  # (uf_df)
    flush_fraction: float = 0.1  # (uf_df) buffer flush into the pool, × retentate volume
    tmp: float = 1.2  # [bar] transmembrane pressure (uf_df)
    column_volume: float = 25.0  # [L] (capture, polish)
    capacity: float = 40.0  # [g/L resin] dynamic binding capacity (capture)
    utilization: float = 0.8  # share of the capacity loaded per cycle (capture)
    elution_cv: float = 2.0  # [CV] elution pool (capture)
    cv_per_h: float = 6.0  # [CV/h] buffer phases (capture, polish)


def default_params(kind: UnitKind) -> UnitParams:
    """Typical pilot-scale values for each kind of unit."""
    if kind == UnitKind.CENTRIFUGE:
        return UnitParams(kind, step_yield=0.95, clearance=1.1, flow=400.0, power=11.0, power_standby=2.0)
    if kind == UnitKind.UF_DF:
        return UnitParams(
            kind,
            step_yield=0.97,
            clearance=1.3,
            flow=300.0,
            power=5.5,
            power_standby=0.5,
            t_startup=0.3,
            t_cip=1.0,
            cip_water=400.0,
            water_per_feed=0.0,
        )
    if kind == UnitKind.CAPTURE:
        return UnitParams(
            kind,
            step_yield=0.90,
            clearance=15.0,
            flow=150.0,
            power=1.5,
            power_standby=0.3,
            t_startup=0.0,
            t_cip=0.0,
            cip_water=0.0,
            water_per_feed=0.0,
        )
    return UnitParams(
        kind,
        step_yield=0.95,
        clearance=8.0,
        flow=150.0,
        power=1.2,
        power_standby=0.3,
        t_startup=0.0,
        t_cip=0.0,
        cip_water=0.0,
        water_per_feed=0.0,
    )


class PhaseStep(NamedTuple):
    name: str
    duration: float  # [h]
    feed: float = 0.0  # [L/h] from the hold tank
    outlet: float = 0.0  # [L/h] into the product pool
    buffer: float = 0.0  # [L/h]
    water: float = 0.0  # [L/h]
    power: float = 0.0  # [kW]
    concentration_out: float = 0.0  # [g/L] product in the outlet


@dataclass(frozen=True)
class Plan:
    feed: Feed
    steps: tuple[PhaseStep, ...]
    out: Feed  # the product pool it makes

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.steps)


def plan(feed: Feed, params: UnitParams) -> Plan:
    """The phase table for processing `feed` (see the module docstring)."""
    p = params
    m_out = feed.product_g * p.step_yield
    impurity_in = feed.product_g * (1 - feed.purity) / feed.purity if feed.purity > 0 else 0.0
    purity_out = m_out / (m_out + impurity_in / p.clearance) if m_out > 0 else 0.0
    steps: list[PhaseStep] = []
    v_in = feed.volume
    if p.kind == UnitKind.CENTRIFUGE:
        v_out = max(v_in - feed.biomass_g / 1000 * p.sludge_l_per_kg, 0.0)
        c_out = m_out / v_out if v_out > 0 else 0.0
        t = v_in / p.flow
        steps += [
            PhaseStep("startup", p.t_startup, power=p.power),  # accelerating the bowl draws full power
            PhaseStep(
                "clarification",
                t,
                feed=p.flow,
                outlet=v_out / t,
                water=p.water_per_feed * p.flow,
                power=p.power,
                concentration_out=c_out,
            ),
            PhaseStep(
                "cip", p.t_cip, water=p.cip_water / p.t_cip if p.t_cip > 0 else 0.0, power=p.power_standby
            ),
        ]
    elif p.kind == UnitKind.UF_DF:
        v_ret = v_in / p.concentration_factor
        flush = p.flush_fraction * v_ret
        v_out = v_ret + flush
        c_out = m_out / v_out if v_out > 0 else 0.0
        t_conc = v_in / p.flow
        buffer_df = p.diavolumes * v_ret
        t_df = buffer_df / p.flow
        t_rec = 0.25
        steps += [
            PhaseStep(
                "setup",
                p.t_startup,
                water=100.0 / p.t_startup if p.t_startup > 0 else 0.0,
                power=p.power_standby,
            ),
            PhaseStep("concentration", t_conc, feed=p.flow, power=p.power),
            PhaseStep("diafiltration", t_df, buffer=p.flow, power=p.power),
            PhaseStep(
                "recovery",
                t_rec,
                outlet=v_out / t_rec,
                buffer=flush / t_rec,
                power=p.power_standby,
                concentration_out=c_out,
            ),
            PhaseStep(
                "cip", p.t_cip, water=p.cip_water / p.t_cip if p.t_cip > 0 else 0.0, power=p.power_standby
            ),
        ]
    elif p.kind == UnitKind.CAPTURE:
        cv = p.column_volume
        per_cycle = p.capacity * cv * p.utilization
        cycles = max(1, math.ceil(feed.product_g / per_cycle - 1e-9)) if per_cycle > 0 else 1
        v_out = cycles * p.elution_cv * cv
        c_out = m_out / v_out if v_out > 0 else 0.0
        buf = p.cv_per_h * cv  # [L/h]
        t_load = v_in / cycles / p.flow
        for _ in range(cycles):
            steps += [
                PhaseStep("equilibration", 3 / p.cv_per_h, buffer=buf, power=p.power_standby),
                PhaseStep("load", t_load, feed=p.flow, power=p.power),
                PhaseStep("wash", 5 / p.cv_per_h, buffer=buf, power=p.power),
                PhaseStep(
                    "elution",
                    p.elution_cv / p.cv_per_h,
                    buffer=buf,
                    outlet=buf,
                    power=p.power,
                    concentration_out=c_out,
                ),
                PhaseStep("strip", 3 / p.cv_per_h, buffer=buf, power=p.power_standby),
            ]
        steps.append(PhaseStep("cip", 3 / p.cv_per_h, water=buf, power=p.power_standby))
    else:  # polish, flow-through
        cv = p.column_volume
        buf = p.cv_per_h * cv
        t_load = v_in / p.flow
        t_chase = 2 / p.cv_per_h
        v_out = v_in + 2 * cv
        c_out = m_out / v_out if v_out > 0 else 0.0
        steps += [
            PhaseStep("equilibration", 3 / p.cv_per_h, buffer=buf, power=p.power_standby),
            PhaseStep("load", t_load, feed=p.flow, outlet=p.flow, power=p.power, concentration_out=c_out),
            PhaseStep("chase", t_chase, buffer=buf, outlet=buf, power=p.power, concentration_out=c_out),
            PhaseStep("cip", 3 / p.cv_per_h, water=buf, power=p.power_standby),
        ]
    steps = [s for s in steps if s.duration > 0]
    return Plan(feed, tuple(steps), Feed(feed.batch_id, v_out, m_out, purity_out))


class UnitTotals(NamedTuple):
    """Accumulated over one run of a unit: volumes [L], product [g], energy [kWh], time [h]."""

    feed_l: float = 0.0
    outlet_l: float = 0.0
    buffer_l: float = 0.0
    water_l: float = 0.0
    product_in_g: float = 0.0
    product_out_g: float = 0.0
    energy_kwh: float = 0.0
    hours: float = 0.0


@dataclass(frozen=True)
class UnitState:
    plan: Plan | None = None
    index: int = 0  # the phase of the plan being run
    t_phase: float = 0.0  # [h]
    totals: UnitTotals = field(default_factory=UnitTotals)
    queue: tuple[Plan, ...] = ()
    finished: tuple[tuple[Plan, UnitTotals], ...] = ()  # runs that ended in the last step

    @property
    def phase(self) -> str:
        return self.plan.steps[self.index].name if self.plan is not None else IDLE

    @property
    def batch_id(self) -> str:
        return self.plan.feed.batch_id if self.plan is not None else ""

    @property
    def current(self) -> PhaseStep | None:
        return self.plan.steps[self.index] if self.plan is not None else None


def receive(state: UnitState, plan_: Plan) -> UnitState:
    """A feed arrives in the unit's hold tank, planned with the parameters of its batch; feeds are
    processed in the order received."""
    return replace(state, queue=(*state.queue, plan_))


def plan_totals(plan_: Plan) -> UnitTotals:
    """What a whole run of the plan accumulates (the same sums `step` makes, in one go)."""
    tot = UnitTotals()
    for ph in plan_.steps:
        tot = _add(tot, ph, ph.duration, plan_.feed.concentration)
    return tot


def _add(tot: UnitTotals, ph: PhaseStep, run: float, c_in: float) -> UnitTotals:
    return UnitTotals(
        tot.feed_l + ph.feed * run,
        tot.outlet_l + ph.outlet * run,
        tot.buffer_l + ph.buffer * run,
        tot.water_l + ph.water * run,
        tot.product_in_g + ph.feed * run * c_in,
        tot.product_out_g + ph.outlet * run * ph.concentration_out,
        tot.energy_kwh + ph.power * run,
        tot.hours + run,
    )


def step(state: UnitState, dt_h: float) -> UnitState:
    """Advance by dt_h hours. A run that ends is reported once in `finished` (with its totals); its pool
    goes to the next unit. Phases end exactly: a step that crosses a phase end runs the rest of the step
    in the next phase. After a run the unit idles for the rest of the step, so its batch id shows blank
    at least once between two runs."""
    finished: list[tuple[Plan, UnitTotals]] = []
    plan_, index, t_phase, tot, queue = state.plan, state.index, state.t_phase, state.totals, state.queue
    if plan_ is None and queue:
        plan_, index, t_phase, tot, queue = queue[0], 0, 0.0, UnitTotals(), queue[1:]
    left = dt_h
    while plan_ is not None and left > 1e-12:
        ph = plan_.steps[index]
        run = min(left, ph.duration - t_phase)
        if run > 0:
            tot = _add(tot, ph, run, plan_.feed.concentration)
            t_phase += run
            left -= run
        if t_phase >= ph.duration - 1e-12:
            index, t_phase = index + 1, 0.0
            if index >= len(plan_.steps):
                finished.append((plan_, tot))
                plan_, index, tot = None, 0, UnitTotals()
    return UnitState(plan_, index, t_phase, tot, queue, tuple(finished))


def signals(state: UnitState, params: UnitParams) -> dict[str, float | str]:
    """Noise-free values the unit publishes (field names of its MQTT message)."""
    ph = state.current
    pl = state.plan
    kind = params.kind
    out: dict[str, float | str] = {
        "batch_id": state.batch_id,
        "phase": state.phase,
        "feed_flow": ph.feed if ph else 0.0,
        "outlet_flow": ph.outlet if ph else 0.0,
        "buffer_flow": ph.buffer if ph else 0.0,
        "water_flow": ph.water if ph else 0.0,
        "power": ph.power if ph else 0.0,
        "feed_total": state.totals.feed_l,
        "outlet_total": state.totals.outlet_l,
        "product_in": pl.feed.concentration if ph and ph.feed > 0 and pl else 0.0,
        "product": ph.concentration_out if ph and ph.outlet > 0 else 0.0,
        "purity": 100 * pl.out.purity if ph and ph.outlet > 0 and pl else 0.0,
    }
    if kind == UnitKind.CENTRIFUGE:
        running = ph is not None and ph.name in ("startup", "clarification")
        ramp = min(state.t_phase / ph.duration, 1.0) if ph is not None and ph.name == "startup" else 1.0
        out["bowl_speed"] = params.speed * ramp if running else 0.0
        out["turbidity"] = params.turbidity if ph is not None and ph.name == "clarification" else 0.0
    elif kind == UnitKind.UF_DF:
        out["tmp"] = params.tmp if ph is not None and ph.name in ("concentration", "diafiltration") else 0.0
    else:
        out["conductivity"] = _conductivity(ph.name) if ph is not None else 0.0
    return out


def _conductivity(phase: str) -> float:
    """[mS/cm] of the buffer in the column, by phase (equilibration/wash buffers are low-salt)."""
    return {"elution": 25.0, "strip": 90.0, "cip": 120.0, "load": 12.0}.get(phase, 8.0)
