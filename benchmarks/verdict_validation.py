"""Validation study of the trial verdict (issue 10): does the verdict say what the simulator's truth says,
as often as its design promises?

  .venv/bin/python benchmarks/verdict_validation.py [--seeds 200] [--workers 2] [--check-seeds 1]

Design: the example charter (config/trials/example-charter.toml): yield_product_substrate_consumed, higher
is better, superiority by 0 %, α = 0.05, 3 trial runs against 8 baseline runs, judged by
processing.verdict.judge exactly as `biopilot verdict` will. Campaigns: 8 baseline then 3 trial runs of
  config/scenarios/trial-yield.toml              the startup's strain makes 6 % more product (true +6 %)
  config/scenarios/trial-no-effect.toml          a change without effect (true 0)
  config/scenarios/trial-drifting-baseline.toml  no effect, but the host process's yield creeps up 1 % per
                                                 batch through baseline and trial runs
each over --seeds seeds (the scenario's seed + i): every seed is a new campaign (new run-to-run draws, new lab
errors), as `biopilot simulate --historical` would make it with that seed.

The fast, honest path (why this runs in minutes on 2 cores): the verdict needs one number per run, the
primary KPI. Instead of writing every signal of 6,600 simulated runs into a store and running the KPI engine
over them (about 5 s a run), each run is simulated by the fermenter model alone (simulators.engine.
FermenterRun, the same code, parameters (scenario.run_plan) and random draws the historical mode uses for
that seed and run number) at a 120 s model step, and its KPI is taken from the simulator's truth
(simulators.truth.fermentation_kpis) plus the measurement error the lab adds: the product formed is
counted with the lab's *measured* titer where the KPI engine counts it (the broth at harvest start:
V_end · P_measured, and each lab sample's V_i · P_measured) instead of the true one; substrate consumed
stays true (the feed is a metered flow). Two things are checked, not assumed:
  * the 120 s step against the 10 s step for the first runs: the KPI differs by about 0.1 % (the same sign
    for every run, so it cancels in the comparison), against a run-to-run SD of ~3.6 %;
  * --check-seeds (default 1) whole trial-yield campaigns go the slow way too: historical mode (30 s steps,
    every signal once a minute with its sensor noise, lab results over the lab tags) into a real SQLite
    store, the processing service's KPI engine, then the same verdict; the table reports how far the
    engine's yield is from the fast path's for the same runs, and whether the words agree.

Predictions come from the simulator's truth: the true effect (+6 %, i.e. ln 1.06 on the log-ratio scale the
relative charter judges; 0; for the drift, the mean drift of the trial runs against the baseline runs,
ln(1.01) × (mean run number of the trial − that of the baseline)); the true between-run SD of ln(yield) from
the truth KPIs (pooled within campaigns over every seed's baseline runs); the measurement SD from the lab's
titer CV (scenario [lab] titer_cv) times the share of product counted at harvest. The power the design
predicts is processing.stats.design_power (TTestIndPower with the Welch df the verdict's MDE uses) at
effect / total SD; the pooled-t power is shown beside it. Shares get Clopper–Pearson 95 % intervals
(scipy.stats.binomtest).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from scipy import stats as sps
from statsmodels.stats.power import TTestIndPower

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biopilot.charter import Charter, load_charter
from biopilot.records import KpiRecord
from processing import stats
from processing.kpis import KPI_UNITS
from processing.verdict import RunRecord, judge
from simulators import fermenter as fm
from simulators.engine import FermenterRun
from simulators.scenario import Scenario, load_scenario
from simulators.truth import fermentation_kpis

REPO = Path(__file__).resolve().parents[1]
CHARTER = REPO / "config" / "trials" / "example-charter.toml"
SCENARIOS = {
    "+6 % yield": REPO / "config" / "scenarios" / "trial-yield.toml",
    "no effect": REPO / "config" / "scenarios" / "trial-no-effect.toml",
    "drifting baseline": REPO / "config" / "scenarios" / "trial-drifting-baseline.toml",
}
STEP_S = 120.0
KPI = "yield_product_substrate_consumed"
WORD_COLUMNS = ("better", "inconclusive", "worse", "not judgeable")


@dataclass(frozen=True)
class RunResult:
    number: int
    campaign: str
    true_yield: float
    measured_yield: float
    harvest_share: float  # share of product formed counted at harvest (V_end · P_end)


@dataclass(frozen=True)
class Campaign:
    scenario: str
    seed: int
    runs: tuple[RunResult, ...]
    word: str
    stable: bool


def simulate_run(sc: Scenario, number: int, step_s: float) -> RunResult:
    """One run as the historical mode makes it (same plan, same lab draws), its true and measured yield."""
    plan = sc.run_plan(number)
    run = FermenterRun(plan.fermenter, sc.lab, np.random.default_rng([sc.seed, number, 1]))
    dt = step_s / 3600
    samples_error_g = 0.0  # Σ V_i (P_measured − P_true) over the in-growth samples (the final one too)
    final_ratio = math.nan
    while run.state.phase != fm.Phase.IDLE:
        due = run.due_sample()
        if due is not None:
            volume, true, measured = run.sample(due[1])
            samples_error_g += volume * (measured["titer"] - true["titer"])
            if due[1]:
                final_ratio = measured["titer"] / true["titer"] if true["titer"] > 0 else math.nan
        run.step(dt)
    k = fermentation_kpis(run.state.totals, plan.fermenter)
    harvested, formed, consumed = k["product_harvested_g"], k["product_formed_g"], k["substrate_consumed_g"]
    measured_formed = formed + harvested * (final_ratio - 1) + samples_error_g
    return RunResult(
        number, plan.campaign.code, k["product_yield_g_per_g"], measured_formed / consumed, harvested / formed
    )


def records(runs: list[RunResult], start: datetime) -> tuple[list[RunRecord], list[RunRecord]]:
    """Trial and baseline RunRecords with the measured yield as a final, fully covered KPI."""
    trial, baseline = [], []
    for r in runs:
        rec = KpiRecord(KPI, r.measured_yield, KPI_UNITS[KPI], 1.0, (), True)
        rr = RunRecord(f"F-101:{r.campaign}{r.number:02d}", start + timedelta(days=2 * r.number), {KPI: rec})
        (trial if r.campaign == "TR" else baseline).append(rr)
    return trial, baseline


def study_charter() -> Charter:
    """The example charter's design and primary KPI, without money and secondaries (not studied here)."""
    c = load_charter(CHARTER, KPI_UNITS)
    return Charter.model_validate({**c.model_dump(), "secondary_kpis": [], "prices": {}})


def one_campaign(args: tuple[str, int]) -> Campaign:
    name, i = args
    base = load_scenario(SCENARIOS[name])
    sc = Scenario.model_validate(
        {**base.model_dump(), "scenario": {**base.scenario.model_dump(), "seed": base.seed + i}}
    )
    runs = [simulate_run(sc, n, STEP_S) for n in range(1, sc.planned_runs + 1)]
    trial, baseline = records(runs, sc.scenario.start)
    v = judge(study_charter(), trial, baseline, with_money=False)
    return Campaign(name, sc.seed, tuple(runs), v.word, v.stability.stable)


def step_check(n_runs: int = 3) -> float:
    """Largest relative difference of the measured yield at STEP_S against 10 s steps (first runs of the
    yield scenario)."""
    sc = load_scenario(SCENARIOS["+6 % yield"])
    worst = 0.0
    for n in range(1, n_runs + 1):
        coarse, fine = simulate_run(sc, n, STEP_S), simulate_run(sc, n, 10.0)
        worst = max(worst, abs(coarse.measured_yield / fine.measured_yield - 1))
    return worst


def slow_path(seed_offset: int, workdir: Path) -> tuple[list[float], list[float], str, str, list[str]]:
    """One trial-yield campaign through historical mode, a SQLite store and the KPI engine: (engine yields,
    fast-path yields, engine word, fast word, flags seen on the engine's KPI)."""
    from biopilot.config import load_config
    from processing.service import Processing
    from simulators import historical as hi
    from simulators.engine import UnitSpec
    from simulators.wiring import tag_map
    from storage.catalog import Catalog
    from storage.sqlite import SqliteStore

    config = load_config(REPO / "config" / "pilot-line.toml")
    base = load_scenario(SCENARIOS["+6 % yield"])
    header = {
        **base.scenario.model_dump(),
        "seed": base.seed + seed_offset,
        "model_step_s": 30.0,
        "sample_interval_s": 60.0,
    }
    sc = Scenario.model_validate({**base.model_dump(), "scenario": header})
    history = hi.generate(sc, [UnitSpec("F-101", "fermenter")], runs=sc.planned_runs)
    db = workdir / f"check-{seed_offset}.db"
    store, catalog = SqliteStore(db), Catalog(db)
    try:
        hi.write_store(history, store, tag_map(config))
        Processing(config, store, catalog).process_once()
        runs = sorted(catalog.runs("F-101"), key=lambda r: r.start)
        engine = [{k.name: k for k in catalog.kpis(r.id)}.get(KPI) for r in runs]
        starts = [r.start for r in runs]
        ids = [r.id for r in runs]
    finally:
        catalog.close()
        store.close()
    fast = [simulate_run(sc, n, STEP_S) for n in range(1, sc.planned_runs + 1)]
    flags = sorted({f for k in engine if k is not None for f in k.flags})
    trial = [
        RunRecord(i, s, {KPI: k}) for i, s, k in zip(ids, starts, engine, strict=True) if "-TR" in i and k
    ]
    baseline = [
        RunRecord(i, s, {KPI: k}) for i, s, k in zip(ids, starts, engine, strict=True) if "-BL" in i and k
    ]
    charter = study_charter()
    engine_word = judge(charter, trial, baseline, with_money=False).word
    ft, fb = records(fast, sc.scenario.start)
    fast_word = judge(charter, ft, fb, with_money=False).word
    values = [k.value if k is not None and k.value is not None else math.nan for k in engine]
    return values, [r.measured_yield for r in fast], engine_word, fast_word, flags


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def pooled_within_sd(groups: list[np.ndarray]) -> float:
    """√(Σ (n_i − 1)s_i² / Σ (n_i − 1)): the SD within campaigns, seed-to-seed shifts left out."""
    num = sum((len(g) - 1) * np.var(g, ddof=1) for g in groups)
    return math.sqrt(num / sum(len(g) - 1 for g in groups))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--check-seeds", type=int, default=1, help="campaigns also run through store + KPI engine"
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    charter = study_charter()
    n_t, n_b = charter.planned_runs, len(charter.baseline_runs)
    alpha = charter.alpha

    worst_step = step_check()
    tasks = [(name, i) for name in SCENARIOS for i in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(one_campaign, tasks, chunksize=4))
    t_study = time.perf_counter() - t0

    # the truth: between-run SD of ln(true yield), measurement SD, effects
    base_truth = [
        np.log([r.true_yield for r in c.runs if r.campaign == "BL"])
        for c in results
        if c.scenario != "drifting baseline"
    ]
    sd_between = pooled_within_sd(base_truth)
    harvest_share = float(np.mean([r.harvest_share for c in results for r in c.runs]))
    titer_cv = load_scenario(SCENARIOS["no effect"]).lab.titer_cv
    sd_meas = titer_cv * harvest_share
    sd_total = math.sqrt(sd_between**2 + sd_meas**2)
    base_meas = [
        np.log([r.measured_yield for r in c.runs if r.campaign == "BL"])
        for c in results
        if c.scenario != "drifting baseline"
    ]
    sd_observed = pooled_within_sd(base_meas)
    trial_numbers = [n for n in range(n_b + 1, n_b + n_t + 1)]
    drift_effect = math.log(1.01) * (np.mean(trial_numbers) - np.mean(range(1, n_b + 1)))
    effects = {"+6 % yield": math.log(1.06), "no effect": 0.0, "drifting baseline": drift_effect}

    say = print
    say(f"Verdict validation: {args.seeds} seeds × {len(SCENARIOS)} scenarios, {n_t} trial vs {n_b} baseline")
    say(f"runs, superiority by {charter.margin:g} {charter.margin_unit}, α = {alpha:g}, {KPI} (log ratio)")
    say(f"model step {STEP_S:g} s: max |Δ| against 10 s steps (3 runs) {100 * worst_step:.3f} % of the KPI")
    say(f"truth: SD of ln(yield) between runs {sd_between:.4f}, of the measurement {sd_meas:.4f} (titer CV")
    say(f"  {titer_cv:g} × {harvest_share:.3f} of the product counted at harvest), total {sd_total:.4f};")
    say(f"  observed pooled SD of the measured baselines {sd_observed:.4f}")
    say()
    head = f"{'scenario':<18}{'true diff':>10}" + "".join(f"{w:>19}" for w in WORD_COLUMNS)
    head += f"{'unstable':>10}{'P(better) pred.':>17}{'pooled t':>10}"
    say(head)
    say("-" * len(head))
    summary: dict[str, tuple[int, int]] = {}
    for name in SCENARIOS:
        mine = [c for c in results if c.scenario == name]
        n = len(mine)
        words = Counter(c.word for c in mine)
        cells = ""
        for w in WORD_COLUMNS:
            lo, hi = clopper_pearson(words[w], n)
            cells += f"{words[w] / n:>7.3f} [{lo:.3f},{hi:.3f}]"
        flagged = sum(not c.stable for c in mine) / n
        d = effects[name] / sd_total
        predicted = stats.design_power(d, n_t, n_b, alpha) if d > 0 else alpha / 2
        pooled = TTestIndPower().power(d, n_t, alpha, ratio=n_b / n_t) if d > 0 else alpha / 2
        eff = f"{100 * (math.exp(effects[name]) - 1):+.1f} %"
        say(f"{name:<18}{eff:>10}{cells}{flagged:>10.3f}{predicted:>17.3f}{pooled:>10.3f}")
        summary[name] = (words["better"], n)
    say("shares with Clopper–Pearson 95 % intervals; unstable: baseline flagged by the individuals chart;")
    say("P(better) pred.: design power (Welch df, as the MDE) at true diff / total SD (0: α/2, one tail);")
    say("drifting baseline: the startup's effect is 0, the true diff is the drift between the runs compared")
    say()
    k, n = summary["no effect"]
    lo, hi = clopper_pearson(k, n)
    ok = "holds" if lo <= alpha else "FAILS"
    say(f"false 'better' with no effect: {k}/{n} = {k / n:.3f}, 95 % CI [{lo:.3f}, {hi:.3f}]; ≤ α: {ok}")
    k, n = summary["+6 % yield"]
    lo, hi = clopper_pearson(k, n)
    pred = stats.design_power(effects["+6 % yield"] / sd_total, n_t, n_b, alpha)
    ok = "within" if lo <= pred <= hi else "OUTSIDE"
    say(
        f"'better' at +6 %: {k}/{n} = {k / n:.3f}, 95 % CI [{lo:.3f}, {hi:.3f}]; design power {pred:.3f}: "
        f"{ok}"
    )
    mde = stats.minimum_detectable_effect(n_t, n_b, alpha) * sd_total
    say(f"MDE of the design (power 0.8): {100 * (math.exp(mde) - 1):.1f} % of the yield")
    say(f"study: {t_study:.0f} s, {args.workers} workers, {len(tasks) * (n_t + n_b)} simulated runs")

    if args.check_seeds:
        say()
        say("slow path (historical mode → SQLite store → KPI engine → verdict), trial-yield campaigns:")
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.check_seeds):
                engine, fast, w_engine, w_fast, flags = slow_path(i, Path(tmp))
                rel = np.array([e / f - 1 for e, f in zip(engine, fast, strict=True)])
                say(
                    f"  seed +{i}: engine yield / fast yield − 1 over {len(rel)} runs: max |Δ| "
                    f"{100 * np.max(np.abs(rel)):.2f} %, mean {100 * rel.mean():+.2f} %, SD "
                    f"{100 * rel.std(ddof=1):.2f} %"
                )
                say(
                    f"    words: engine {w_engine!r}, fast {w_fast!r}; "
                    f"engine flags: {', '.join(flags) or 'none'}"
                )
        say(f"  ({time.perf_counter() - t1:.0f} s)")
    say(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
