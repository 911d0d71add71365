"""The simulated plant on one simulated clock: fermenters, their recovery lines and the lab. No network
code and no wall clock: `step(dt_h)` advances every unit and returns what happened (events); the live
shell (simulators/plant.py) and the historical mode (simulators/historical.py) both drive it.

A fermenter runs the scenario's runs one after another (run k+1 fills when run k's turnaround is over).
Its harvest goes to the first recovery unit whose upstream it is; each unit's product pool goes to the
unit whose upstream that unit is. Every downstream run carries the batch id of the fermentation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from simulators import fermenter as fm
from simulators import lab
from simulators import recovery as rc
from simulators.scenario import PROCESS_FAULTS, Fault, Lab, RunPlan, Scenario


@dataclass(frozen=True)
class UnitSpec:
    """A simulated unit as wired in the site config."""

    equipment: str
    kind: str  # "fermenter" or a recovery UnitKind value
    upstream: str | None = None


@dataclass(frozen=True)
class RunStarted:
    equipment: str
    batch_id: str
    plan: RunPlan
    t_h: float  # plant time [h since the simulation start]


@dataclass(frozen=True)
class LabSample:
    equipment: str
    batch_id: str
    sample_id: str
    t_h: float  # sampled [h]
    report_t_h: float  # reported [h]
    volume_l: float
    true: dict[str, float]  # titer, dcw, glucose [g/L]
    measured: dict[str, float]
    final: bool


@dataclass(frozen=True)
class FermentationEnded:
    """The harvest is over (truth of the run can be written); `t_h` is the harvest end."""

    equipment: str
    batch_id: str
    plan: RunPlan
    totals: fm.Totals
    start_t_h: float  # fill start [h]
    t_h: float
    samples: tuple[LabSample, ...]
    chain: tuple[tuple[str, rc.UnitKind], ...]  # the recovery units the harvest goes through, in order


@dataclass(frozen=True)
class UnitRunEnded:
    equipment: str
    kind: rc.UnitKind
    batch_id: str
    plan: rc.Plan
    totals: rc.UnitTotals
    start_t_h: float
    t_h: float
    position: int  # 1 for the first unit after the fermenter


Event = RunStarted | LabSample | FermentationEnded | UnitRunEnded


class FermenterRun:
    """One run of the pure fermenter model with its lab sampling (live, historical and counterfactual)."""

    def __init__(self, params: fm.FermenterParams, lab_cfg: Lab, rng: np.random.Generator) -> None:
        self.params = params
        self.lab = lab_cfg
        self.err = lab.LabError(lab_cfg.titer_cv, lab_cfg.dcw_cv, lab_cfg.glucose_cv, lab_cfg.glucose_sd)
        self.rng = rng
        self.state = fm.initial_state()
        self.next_sample_h = 0.0  # after inoculation
        self.final_taken = False

    def due_sample(self) -> tuple[bool, bool] | None:
        """(take, final) when a lab sample is due now, else None."""
        st = self.state
        if self.lab.delivery == "none" and self.lab.sample_volume_l == 0:
            return None
        if fm.fed_batch_over(st, self.params) and not self.final_taken:
            return True, True
        if st.phase in (fm.Phase.BATCH, fm.Phase.FED_BATCH):
            since = st.t_run - st.totals.t_inoculation
            if since >= self.next_sample_h - 1e-9:
                return True, False
        return None

    def sample(self, final: bool) -> tuple[float, dict[str, float], dict[str, float]]:
        """Take the due sample: (volume [L], true values, lab readings)."""
        self.state, (x, s, p) = fm.take_sample(self.state, self.lab.sample_volume_l)
        if final:
            self.final_taken = True
        else:
            self.next_sample_h += self.lab.every_h
        true = {"titer": p, "dcw": x, "glucose": s}
        return self.lab.sample_volume_l, true, lab.measure(x, s, p, self.err, self.rng)

    def step(self, dt_h: float, params: fm.FermenterParams | None = None) -> None:
        """One model step; `params` stands in for the run's own during a process fault."""
        self.state = fm.step(self.state, params or self.params, dt_h)


def simulate_run(
    plan_params: fm.FermenterParams, lab_cfg: Lab, seed: list[int], dt_h: float
) -> fm.FermenterState:
    """A whole run without a clock (the counterfactual twin of a trial run): its final state."""
    run = FermenterRun(plan_params, lab_cfg, np.random.default_rng(seed))
    while run.state.phase != fm.Phase.IDLE:
        due = run.due_sample()
        if due is not None:
            run.sample(due[1])
        run.step(dt_h)
    return run.state


@dataclass
class _Fermenter:
    equipment: str
    prefix: str
    run: FermenterRun | None = None
    plan: RunPlan | None = None
    batch_id: str = ""
    start_t_h: float = 0.0
    samples: list[LabSample] = field(default_factory=list)
    first: str | None = None  # the first recovery unit


@dataclass
class _Unit:
    equipment: str
    kind: rc.UnitKind
    state: rc.UnitState = field(default_factory=rc.UnitState)
    next: str | None = None
    position: int = 1
    started_t_h: float = 0.0
    plans: dict[str, RunPlan] = field(default_factory=dict)  # batch id -> the run it came from


class PlantModel:
    """All simulated units on one clock that starts at `start` (t_h = 0)."""

    def __init__(
        self, scenario: Scenario, units: list[UnitSpec], start: datetime, *, max_runs: int | None = None
    ) -> None:
        self.scenario = scenario
        self.start = start
        self.t_h = 0.0
        self.next_run = 1
        self.max_runs = max_runs  # no run is started after this many (historical mode)
        stamp = start.strftime("%y%m%dT%H%M")
        self.fermenters: dict[str, _Fermenter] = {}
        self.units: dict[str, _Unit] = {}
        self._idle: dict[rc.UnitKind, rc.UnitParams] = {}
        for u in units:
            if u.kind == "fermenter":
                self.fermenters[u.equipment] = _Fermenter(
                    u.equipment, f"{u.equipment.replace('-', '')}-{stamp}"
                )
        for u in units:
            if u.kind != "fermenter":
                self.units[u.equipment] = _Unit(u.equipment, rc.UnitKind(u.kind))
        for u in units:
            if u.kind == "fermenter" or u.upstream is None:
                continue
            if u.upstream in self.fermenters:
                self.fermenters[u.upstream].first = u.equipment
            elif u.upstream in self.units:
                self.units[u.upstream].next = u.equipment
        for f in self.fermenters.values():
            pos, eq = 1, f.first
            while eq is not None:
                self.units[eq].position = pos
                pos, eq = pos + 1, self.units[eq].next
        self._downstream_first = sorted(self.units.values(), key=lambda u: -u.position)
        self._process_faults: list[Fault] = [f for f in scenario.faults if f.kind in PROCESS_FAULTS]

    def now(self) -> datetime:
        return self.at(self.t_h)

    def at(self, t_h: float) -> datetime:
        return self.start + timedelta(microseconds=round(t_h * 3.6e9))

    def chain(self, fermenter: str) -> tuple[tuple[str, rc.UnitKind], ...]:
        out = []
        eq = self.fermenters[fermenter].first
        while eq is not None:
            out.append((eq, self.units[eq].kind))
            eq = self.units[eq].next
        return tuple(out)

    # -- stepping -------------------------------------------------------------------------------------
    def step(self, dt_h: float) -> list[Event]:
        events: list[Event] = []
        for f in self.fermenters.values():
            self._step_fermenter(f, dt_h, events)
        for u in self._downstream_first:  # a pool handed on in this step starts in the next one
            self._step_unit(u, dt_h, events)
        self.t_h += dt_h
        return events

    def _start_run(self, f: _Fermenter, events: list[Event]) -> None:
        plan = self.scenario.run_plan(self.next_run)
        self.next_run += 1
        f.plan = plan
        f.run = FermenterRun(
            plan.fermenter, self.scenario.lab, np.random.default_rng([self.scenario.seed, plan.number, 1])
        )
        f.batch_id = plan.batch_id(f.prefix)
        f.start_t_h = self.t_h
        f.samples = []
        events.append(RunStarted(f.equipment, f.batch_id, plan, self.t_h))

    def _step_fermenter(self, f: _Fermenter, dt_h: float, events: list[Event]) -> None:
        if f.run is None or fm.run_complete(f.run.state, f.run.params):
            if self.max_runs is not None and self.next_run > self.max_runs:
                if f.run is not None:
                    f.run.step(dt_h)  # stays idle
                return
            self._start_run(f, events)
        run = f.run
        assert run is not None and f.plan is not None
        due = run.due_sample()
        if due is not None:
            n = len(f.samples) + 1
            volume, true, measured = run.sample(due[1])
            sample = LabSample(
                f.equipment,
                f.batch_id,
                f"{f.batch_id}-S{n:02d}",
                self.t_h,
                self.t_h + self.scenario.lab.delay_h,
                volume,
                true,
                measured,
                due[1],
            )
            f.samples.append(sample)
            events.append(sample)
        before = run.state.phase
        run.step(dt_h, self._upset(f) if self._process_faults else None)
        after = run.state.phase
        if before == fm.Phase.FED_BATCH and after == fm.Phase.HARVEST and f.first is not None:
            st = run.state
            tot = st.totals
            harvest = rc.Feed(f.batch_id, tot.v_final, tot.p_final_g, f.plan.fermenter.purity, tot.x_final_g)
            unit = self.units[f.first]
            unit.plans[f.batch_id] = f.plan
            unit.state = rc.receive(unit.state, rc.plan(harvest, f.plan.units[unit.kind]))
        if before == fm.Phase.HARVEST and after == fm.Phase.IDLE:
            events.append(
                FermentationEnded(
                    f.equipment,
                    f.batch_id,
                    f.plan,
                    run.state.totals,
                    f.start_t_h,
                    self.t_h + dt_h,
                    tuple(f.samples),
                    self.chain(f.equipment),
                )
            )

    def _upset(self, f: _Fermenter) -> fm.FermenterParams | None:
        """The run's parameters with the multipliers of the process faults active now, or None if none is.

        A fault with `run` is timed from that run's fill start, one without from the simulation start."""
        assert f.run is not None and f.plan is not None
        changes: dict[str, float] = {}
        for fault in self._process_faults:
            if fault.equipment != f.equipment:
                continue
            if fault.run is not None:
                if fault.run != f.plan.number:
                    continue
                start = f.start_t_h + fault.at_h
            else:
                start = fault.at_h
            if start - 1e-9 <= self.t_h < start + fault.duration_h - 1e-9:
                param = PROCESS_FAULTS[fault.kind]
                changes[param] = changes.get(param, getattr(f.run.params, param)) * fault.factor
        return dataclasses.replace(f.run.params, **changes) if changes else None

    def _step_unit(self, u: _Unit, dt_h: float, events: list[Event]) -> None:
        was_idle = u.state.plan is None
        u.state = rc.step(u.state, dt_h)
        if was_idle and (u.state.plan is not None or u.state.finished):
            u.started_t_h = self.t_h
        for plan_, totals in u.state.finished:
            batch = plan_.feed.batch_id
            run_plan = u.plans.pop(batch, None)
            events.append(
                UnitRunEnded(
                    u.equipment,
                    u.kind,
                    batch,
                    plan_,
                    totals,
                    u.started_t_h,
                    u.started_t_h + totals.hours,
                    u.position,
                )
            )
            if u.next is not None and run_plan is not None:
                nxt = self.units[u.next]
                nxt.plans[batch] = run_plan
                nxt.state = rc.receive(nxt.state, rc.plan(plan_.out, run_plan.units[nxt.kind]))
            if u.state.plan is not None:  # the next queued run started in the same step
                u.started_t_h = self.t_h

    # -- what the units show ------------------------------------------------------------------------
    def fermenter_signals(self, equipment: str) -> dict[str, float | str]:
        f = self.fermenters[equipment]
        if f.run is None:  # before the first step: an empty vessel
            values = fm.signals(fm.initial_state()._replace(phase=fm.Phase.IDLE), fm.FermenterParams())
            values["BatchId"] = ""
            return values
        values = fm.signals(f.run.state, f.run.params)
        values["BatchId"] = "" if f.run.state.phase == fm.Phase.IDLE else f.batch_id
        return values

    def unit_signals(self, equipment: str) -> dict[str, float | str]:
        u = self.units[equipment]
        plan_ = u.plans.get(u.state.batch_id) if u.state.plan is not None else None
        params = plan_.units[u.kind] if plan_ is not None else self._idle_params(u.kind)
        return rc.signals(u.state, params)

    def _idle_params(self, kind: rc.UnitKind) -> rc.UnitParams:
        params = self._idle.get(kind)
        if params is None:
            params = self._idle[kind] = self.scenario.unit_params(kind)
        return params

    def busy(self) -> bool:
        """Some unit is running a batch: a fermenter that is not idle, or a recovery unit with work in hand
        or queued."""
        return any(
            f.run is not None and not fm.run_complete(f.run.state, f.run.params)
            for f in self.fermenters.values()
        ) or any(u.state.plan is not None or u.state.queue for u in self.units.values())
