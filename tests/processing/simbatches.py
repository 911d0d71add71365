"""Simulated fed-batch runs for the alignment, envelope and MSPC tests (and benchmarks/baseline_seeds.py).

The simulator's historical mode (simulators/historical.py) runs the baseline campaign of
config/scenarios/baseline.toml (its recipe and its run-to-run variability: μ_max 3 %, inoculum 10 %, S0 2 %,
α 4 %, Y_XS 2 % relative SD) on fermenter F-101 alone, with a coarse model step (30 s) and one sample of
every signal per 5 minutes, so a run (fill to turnaround end, ~57 h of plant time) takes ~0.2 s. Runs are
split by the BatchId signal and their phases read off the Phase signal with processing.runs (as the
processing service does from the store), and each signal of a run becomes the store's SeriesData.

Faults (simulators/faults.py, [[faults]] of a scenario) are scripted on chosen run numbers: signal faults
(a temperature probe drift) and process faults (oxygen transfer loss, feed pump failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from biopilot.records import Phase, SeriesData
from biopilot.samples import from_us, to_us
from processing.alignment import (
    Alignment,
    Axis,
    align_series,
    grid,
    reference_landmarks,
    resample,
    warp_for,
)
from processing.mspc import run_array
from processing.runs import Change, detect_phases, detect_runs
from simulators import historical as hi
from simulators.engine import UnitSpec
from simulators.scenario import Fault, Scenario, load_scenario

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "config" / "scenarios" / "baseline.toml"
EQUIPMENT = "F-101"
# the fermenter signals compared (simulator signal name → the pilot line's tag role and unit)
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("Temperature", "temperature", "degC"),
    ("pH", "ph", "pH"),
    ("DissolvedOxygen", "dissolved_oxygen", "%"),
    ("AgitatorSpeed", "agitation_speed", "rpm"),
    ("AirFlow", "air_flow", "NL/min"),
    ("FeedRate", "feed_rate", "L/h"),
    ("BaseFlow", "base_flow", "L/h"),
    ("Volume", "volume", "L"),
    ("OffgasO2", "offgas_o2", "%"),
    ("OffgasCO2", "offgas_co2", "%"),
)
ROLES = tuple(v[1] for v in VARIABLES)
UNITS = tuple(v[2] for v in VARIABLES)
LANDMARKS = ("fed_batch", "harvest")
GRID_STEP_H = 0.25
REFERENCE = 10  # baseline runs in a model or envelope
# the faults of the tests, each on its own run after the normal ones, with the variables that show it:
#   drift   a temperature probe drifting +0.25 K/h for 4 h from 26 h after the fill (a sensor fault)
#   do_dip  kLa cut to 50 % for 4 h from 30 h (foaming): DO dips, the cascade drives agitation and air up
#   feed    the feed pump stopped for 2 h from 30 h
FAULTS: dict[str, tuple[Fault, frozenset[str]]] = {
    "drift": (
        Fault(kind="drift", signal="F-101/Temperature", at_h=26.0, duration_h=4.0, rate_per_h=0.25),
        frozenset({"temperature"}),
    ),
    "do_dip": (
        Fault(kind="oxygen_transfer", equipment="F-101", at_h=30.0, duration_h=4.0, factor=0.5),
        frozenset({"dissolved_oxygen", "agitation_speed", "air_flow"}),
    ),
    "feed": (
        Fault(kind="feed_pump", equipment="F-101", at_h=30.0, duration_h=2.0, factor=0.0),
        frozenset({"feed_rate"}),
    ),
}


@dataclass(frozen=True)
class SimRun:
    batch_id: str
    number: int  # 1-based run number in the scenario
    start_us: int
    end_us: int
    phases: tuple[Phase, ...]
    series: dict[str, SeriesData]  # by role
    truth: dict[str, Any]


def scenario(seed: int, runs: int, faults: Sequence[Fault] = ()) -> Scenario:
    base = load_scenario(BASELINE)
    header = base.scenario.model_copy(update={"seed": seed, "model_step_s": 30.0, "sample_interval_s": 300.0})
    campaign = base.campaigns[0].model_copy(update={"runs": runs})
    return base.model_copy(update={"scenario": header, "campaigns": [campaign], "faults": list(faults)})


@cache
def _simulate_cached(seed: int, runs: int, faults: tuple[Fault, ...]) -> tuple[SimRun, ...]:
    history = hi.generate(scenario(seed, runs, faults), [UnitSpec(EQUIPMENT, "fermenter")], runs=runs)
    batch = history.column(f"{EQUIPMENT}/BatchId")
    phase = history.column(f"{EQUIPMENT}/Phase")
    events, _ = detect_runs(
        zip(batch.ts_us.tolist(), batch.values.tolist(), batch.status.tolist(), strict=True), None
    )
    starts = {e.batch_id: e.ts_us for e in events if e.change == Change.START}
    ends = {e.batch_id: e.ts_us for e in events if e.change == Change.END}
    out = []
    for number, (batch_id, start) in enumerate(starts.items(), start=1):
        end = ends.get(batch_id, int(batch.ts_us[-1]) + 1)
        sel = (phase.ts_us >= start) & (phase.ts_us < end)
        spans = detect_phases(
            zip(
                phase.ts_us[sel].tolist(), phase.values[sel].tolist(), phase.status[sel].tolist(), strict=True
            ),
            end,
        )
        phases = tuple(
            Phase(p.name, from_us(p.start_us), from_us(p.end_us) if p.end_us is not None else None)
            for p in spans
        )
        series = {}
        for signal, role, _unit in VARIABLES:
            c = history.column(f"{EQUIPMENT}/{signal}")
            s = (c.ts_us >= start) & (c.ts_us < end)
            series[role] = SeriesData(
                f"{EQUIPMENT}.{role}", c.ts_us[s], c.values[s].astype(np.float64), c.status[s]
            )
        out.append(SimRun(batch_id, number, start, end, phases, series, history.truths.get(batch_id, {})))
    return tuple(out)


def simulate(seed: int, runs: int, faults: Sequence[Fault] = ()) -> list[SimRun]:
    """`runs` complete runs of the baseline campaign with this seed (cached per process)."""
    return list(_simulate_cached(seed, runs, tuple(faults)))


def with_faults(seed: int, reference: int = REFERENCE) -> list[SimRun]:
    """reference + 1 normal runs, then one run per fault of FAULTS (in that order)."""
    faults = [f.model_copy(update={"run": reference + 2 + i}) for i, (f, _) in enumerate(FAULTS.values())]
    return simulate(seed, reference + 1 + len(FAULTS), faults)


def fault_start_h(run: SimRun, alignment: Alignment) -> float:
    """The aligned time at which the run's (one) fault starts, from its truth."""
    (fault,) = run.truth["faults"]
    start = to_us(datetime.fromisoformat(fault["start"]))
    warp, _, _ = warp_for(run.phases, alignment)
    return float(warp.forward(np.array([start]))[0])


def landmark_alignment(reference: Sequence[SimRun]) -> Alignment:
    ref = reference_landmarks([r.phases for r in reference], LANDMARKS)
    return Alignment(axis=Axis.LANDMARKS.value, landmarks=LANDMARKS, reference_h=ref)


def model_grid(alignment: Alignment, step_h: float = GRID_STEP_H) -> np.ndarray:
    """From inoculation to the last grid point before the reference harvest start."""
    return grid(alignment.reference_h[-1] - step_h, step_h)


def run_grid_array(run: SimRun, alignment: Alignment, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The run's K × J array on the grid and the absolute time of each grid point [µs]."""
    start = from_us(run.start_us)
    aligned = {role: align_series(run.series[role], run.phases, alignment, run_start=start) for role in ROLES}
    resampled = {role: resample(a, g) for role, a in aligned.items()}
    return run_array(resampled, ROLES), resampled[ROLES[0]].ts_us
