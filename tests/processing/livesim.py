"""Simulated runs written into a real store as the collectors would, in time slices, so the processing service
sees runs that are live (the live alarm tests and the `biopilot baseline`/`alarms` CLI tests).

The site is config/demo.toml with only the fermenter F-101 simulated. The plant is the baseline campaign of
config/scenarios/baseline.toml (its run-to-run variability; 30 s model steps, one sample per 5 min, as
tests/processing/simbatches.py) split into two campaigns: `baseline` runs with batch ids …-B01, B02, … (the
demo's [[process]] baseline_batches pattern "F101-*-B??" records them as baseline runs) and `live` runs
…-L01, L02 after them. Faults are scripted on run numbers (run baseline + 1 is L01).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

import numpy as np

from biopilot.config import SiteConfig, parse_config
from biopilot.records import Run
from biopilot.samples import Sample, from_us, to_us
from biopilot.units import transform_samples
from processing.runs import Change, detect_runs
from simulators import historical as hi
from simulators.engine import UnitSpec
from simulators.scenario import Fault
from tests.processing import simbatches as sb

REPO = Path(__file__).resolve().parents[2]
_R201_UNIT = """[[simulator.units]]
equipment = "R-201"
model = "recovery"
operation = "centrifuge"        # or uf_df, capture, polish (each unit's upstream is the unit before it)
upstream = "F-101"
"""
FEED_TAG = "F-101.feed_rate"


def config_text() -> str:
    """config/demo.toml with the fermenter alone simulated (its R-201 tags simply get no data)."""
    text = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    assert text.count(_R201_UNIT) == 1, "demo.toml changed its layout"
    return text.replace(_R201_UNIT, "")


def site_config() -> SiteConfig:
    return parse_config(config_text(), "demo.toml (F-101 only)")


def feed_fault(run: int, at_h: float = 30.0, duration_h: float = 2.0) -> Fault:
    """The feed pump stopped on run `run` (1-based) from at_h after its fill (part A's feed fault)."""
    return Fault(kind="feed_pump", equipment="F-101", run=run, at_h=at_h, duration_h=duration_h, factor=0.0)


@dataclass(frozen=True)
class Plant:
    """A simulated history: every sample as the collectors would store it (time order), and the runs' spans
    (batch id → (start µs, end µs)) and truths."""

    samples: tuple[Sample, ...]
    ts_us: np.ndarray  # each sample's time [µs], for slicing
    spans: dict[str, tuple[int, int]]
    truths: dict[str, dict]

    def batch(self, suffix: str) -> str:
        """The batch id ending in `suffix` (e.g. "L01")."""
        (batch,) = [b for b in self.spans if b.endswith(f"-{suffix}")]
        return batch

    def start(self, suffix: str) -> datetime:
        return from_us(self.spans[self.batch(suffix)][0])

    def fault_start(self, suffix: str) -> datetime:
        (fault,) = self.truths[self.batch(suffix)]["faults"]
        return datetime.fromisoformat(fault["start"])


@cache
def _plant(seed: int, baseline: int, live: int, faults: tuple[Fault, ...]) -> Plant:
    base = sb.scenario(seed, baseline)
    campaign = base.campaigns[0]
    campaigns = [
        campaign.model_copy(update={"name": "baseline", "code": "B", "runs": baseline}),
        campaign.model_copy(update={"name": "live", "code": "L", "runs": live}),
    ]
    scenario = base.model_copy(update={"campaigns": campaigns, "faults": list(faults)})
    history = hi.generate(scenario, [UnitSpec(sb.EQUIPMENT, "fermenter")], runs=baseline + live)
    config = site_config()
    from simulators.wiring import tag_map

    samples = sorted(
        transform_samples(list(hi.to_samples(history, tag_map(config))), config.transforms()),
        key=lambda s: s.ts,
    )
    batch = history.column(f"{sb.EQUIPMENT}/BatchId")
    events, _ = detect_runs(
        zip(batch.ts_us.tolist(), batch.values.tolist(), batch.status.tolist(), strict=True), None
    )
    starts = {e.batch_id: e.ts_us for e in events if e.change == Change.START}
    ends = {e.batch_id: e.ts_us for e in events if e.change == Change.END}
    spans = {b: (s, ends.get(b, int(batch.ts_us[-1]) + 1)) for b, s in starts.items()}
    ts = np.asarray([to_us(s.ts) for s in samples], dtype=np.int64)
    return Plant(tuple(samples), ts, spans, dict(history.truths))


def plant(seed: int, baseline: int, live: int, faults: Sequence[Fault] = ()) -> Plant:
    """`baseline` runs (…-B01…) then `live` runs (…-L01…), with the faults (cached per process)."""
    return _plant(seed, baseline, live, tuple(faults))


class Feed:
    """Writes a Plant's samples into a store in time order, as far as asked (like the collectors would)."""

    def __init__(self, plant: Plant, store) -> None:  # type: ignore[no-untyped-def]
        self.plant = plant
        self.store = store
        self.done = 0

    def until(self, t: datetime) -> int:
        """Write every sample before t not written yet; how many."""
        upto = int(np.searchsorted(self.plant.ts_us, to_us(t), side="left"))
        if upto <= self.done:
            return 0
        n = self.store.write(list(self.plant.samples[self.done : upto]))
        self.done = upto
        return n


def run_of(runs: Sequence[Run], suffix: str) -> Run:
    (run,) = [r for r in runs if r.batch_id.endswith(f"-{suffix}")]
    return run
