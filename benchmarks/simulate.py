"""How fast the simulator makes data, with baselines measured in the same run.

  .venv/bin/python benchmarks/simulate.py [--runs 10] [--repeat 3]

1. One 48 h fed-batch (fill to harvest end, plus its turnaround) in historical mode, fermenter only, 10 s
   model steps, one sample of every signal per minute, up to the Samples a store write would take.
   Target: ≤ 2 s. Baselines: the same number of Python loop iterations doing one multiply-add (the floor
   of any per-step Python model), and building the same number of Samples from ready-made arrays (the
   floor of producing the samples).
2. A 10-run campaign (config/scenarios/trial-yield.toml, the first N runs) with the demo site's units
   (F-101 and its centrifuge R-201), into a fresh SQLite store and as historian CSV, with their truth.
3. Live-mode headroom: model steps per wall second, as simulated seconds per wall second (the fastest
   --speed at which the models alone keep up; the protocol shells cost more).
Best of --repeat for (1); one pass for (2) and (3).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biopilot.config import load_config
from biopilot.samples import Sample, from_us
from simulators import fermenter as fm
from simulators import historical as hi
from simulators.engine import UnitSpec
from simulators.scenario import default_scenario, load_scenario
from simulators.wiring import tag_map, units_of
from storage import SqliteStore

REPO = Path(__file__).resolve().parents[1]


def one_batch() -> tuple[float, float, float, int, int]:
    """(simulate + readings [s], samples [s], total [s], model steps, samples) for one run."""
    t0 = time.perf_counter()
    history = hi.generate(default_scenario(), [UnitSpec("F-101", "fermenter")], runs=1)
    t1 = time.perf_counter()
    tags = {(c.equipment, c.signal.name): c.key for c in history.columns}
    samples = list(hi.to_samples(history, tags))
    t2 = time.perf_counter()
    steps = round((history.end - history.start).total_seconds() / 10)
    return t1 - t0, t2 - t1, t2 - t0, steps, len(samples)


def floor_loop(steps: int) -> float:
    t0 = time.perf_counter()
    x = 0.0
    for i in range(steps):
        x = x * 0.999 + i
    return time.perf_counter() - t0


def floor_samples(n: int) -> float:
    ts = np.arange(n, dtype=np.int64) * 60_000_000 + 1_736_143_200_000_000
    values = np.random.default_rng(1).normal(size=n)
    t0 = time.perf_counter()
    out = [Sample("F-101.x", from_us(t), v, 0) for t, v in zip(ts.tolist(), values.tolist(), strict=True)]
    assert len(out) == n
    return time.perf_counter() - t0


def campaign(runs: int) -> None:
    config = load_config(REPO / "config" / "demo.toml")
    scenario = load_scenario(REPO / "config" / "scenarios" / "trial-yield.toml")
    tags = tag_map(config)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        history = hi.generate(scenario, units_of(config), runs=runs, truth_dir=out / "truth")
        t1 = time.perf_counter()
        store = SqliteStore(out / "bench.db")
        try:
            n = hi.write_store(history, store, tags)
        finally:
            store.close()
        t2 = time.perf_counter()
        paths = hi.write_csv(history, out, tags)
        t3 = time.perf_counter()
        size = sum(p.stat().st_size for p in paths) / 1e6
        truths = len(list((out / "truth").glob("*.json")))
        plant_h = (history.end - history.start).total_seconds() / 3600
    print(
        f"campaign of {runs} runs ({plant_h:.0f} h of plant time,"
        f" units {', '.join(u.equipment for u in units_of(config))}):"
    )
    print(
        f"  simulate + readings + truth ({truths} files): {t1 - t0:6.2f} s"
        f"  ({(t1 - t0) / runs:.2f} s per run, trial runs with their counterfactual twin)"
    )
    print(
        f"  into SQLite (TimeSeriesStore.write):   {t2 - t1:6.2f} s  ({n:,} samples, {n / (t2 - t1):,.0f}/s)"
    )
    print(f"  historian CSV:                          {t3 - t2:6.2f} s  ({size:.1f} MB)")
    print(f"  total:                                  {t3 - t0:6.2f} s")


def headroom() -> None:
    params = fm.FermenterParams()
    state = fm.initial_state()
    dt = 10 / 3600
    n = 0
    t0 = time.perf_counter()
    while not fm.run_complete(state, params):
        state = fm.step(state, params, dt)
        n += 1
    wall = time.perf_counter() - t0
    print(
        f"live headroom: {n / wall:,.0f} fermenter steps/s = {n * 10 / wall:,.0f} simulated s per wall s"
        f" ({wall / n * 1e6:.1f} µs per 10 s step)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(
        f"benchmarks/simulate.py · {datetime.now(UTC).isoformat(timespec='seconds')}"
        f" · Python {sys.version.split()[0]}"
    )
    best = min((one_batch() for _ in range(args.repeat)), key=lambda r: r[2])
    sim, smp, total, steps, n = best
    loop = floor_loop(steps)
    raw = floor_samples(n)
    print(f"one 48 h fed-batch, historical mode (best of {args.repeat}): {total:.2f} s  (target ≤ 2 s)")
    print(
        f"  simulate + readings: {sim:.2f} s for {steps:,} model steps ({sim / steps * 1e6:.1f} µs per step)"
    )
    print(f"  Samples:             {smp:.2f} s for {n:,} samples")
    print(f"  baseline: bare Python loop of {steps:,} multiply-adds {loop:.3f} s;")
    print(f"            {n:,} Samples from ready arrays {raw:.2f} s")
    print(
        f"  → the model costs {sim / loop:.0f}× a bare loop;"
        f" producing samples {smp / raw:.2f}× the bare floor (timestamps are shared)"
    )
    campaign(args.runs)
    headroom()


if __name__ == "__main__":
    main()
