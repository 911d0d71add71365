"""Campaigns with a known true effect: the runs the shipped trial scenarios generate show that effect in
their true KPIs, run by run (against each run's counterfactual twin) and campaign against campaign.

To stay fast the runs are shortened (a 12 h fed-batch, 1 h turnaround, 30 s model steps, 10-minute
samples) and only the fermenter is simulated; the scenarios' campaigns, seeds, variability and effects are
the shipped ones, with fewer runs."""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

import pytest

from simulators import historical as hi
from simulators.engine import UnitSpec
from simulators.scenario import Scenario, load_scenario

REPO = Path(__file__).resolve().parents[2]
FERMENTER = [UnitSpec("F-101", "fermenter")]


def shortened(name: str, runs: tuple[int, ...], *, variability: bool = True) -> Scenario:
    sc = load_scenario(REPO / "config" / "scenarios" / f"{name}.toml")
    header = sc.scenario.model_copy(update={"model_step_s": 30.0, "sample_interval_s": 600.0})
    campaigns = [
        c.model_copy(update={"runs": n, **({} if variability else {"variability": {}})})
        for c, n in zip(sc.campaigns, runs, strict=True)
    ]
    fermenter = {**sc.fermenter, "t_fed_batch": 12.0, "t_turnaround": 1.0}
    return sc.model_copy(update={"scenario": header, "campaigns": campaigns, "fermenter": fermenter})


def kpis(history: hi.History, code: str) -> list[dict[str, Any]]:
    return [d["fermentation"]["kpis"] for d in history.truths.values() if d["campaign_code"] == code]


def trial_docs(history: hi.History) -> list[dict[str, Any]]:
    return [d for d in history.truths.values() if d["campaign_code"] == "TR"]


@pytest.fixture(scope="module")
def yield_trial() -> hi.History:
    return hi.generate(shortened("trial-yield", (4, 3)), FERMENTER, runs=7)


def test_each_trial_run_shows_the_declared_yield_effect_against_its_twin(yield_trial: hi.History) -> None:
    docs = trial_docs(yield_trial)
    assert len(docs) == 3
    for doc in docs:
        assert doc["declared_effects"] == {"product_yield": 0.06}
        effect = doc["effect"]
        # exactly the declared effect on product, titer and yield (the DO feedback on growth moves it < 0.1 %)
        for kpi in ("product_formed_g", "titer_g_per_l", "product_yield_g_per_g"):
            assert effect[kpi] == pytest.approx(0.06, abs=0.001), kpi
        # and none on what the change does not touch
        assert effect["substrate_consumed_g"] == pytest.approx(0.0, abs=0.001)
        assert effect["biomass_formed_g"] == pytest.approx(0.0, abs=0.001)
        twin = doc["counterfactual"]["fermentation"]["kpis"]
        actual = doc["fermentation"]["kpis"]
        assert actual["product_formed_g"] / twin["product_formed_g"] - 1 == pytest.approx(
            effect["product_formed_g"]
        )
    baseline_docs = [d for d in yield_trial.truths.values() if d["campaign_code"] == "BL"]
    assert all("effect" not in d for d in baseline_docs)


def test_runs_vary_from_run_to_run_by_the_declared_variability(yield_trial: hi.History) -> None:
    yields = [k["product_yield_g_per_g"] for k in kpis(yield_trial, "BL")]
    assert len(set(yields)) == 4
    spread = (max(yields) - min(yields)) / mean(yields)
    assert 0.005 < spread < 0.3  # alpha varies by 4 % (SD), growth and yield by 2–3 %


def test_without_variability_the_campaigns_differ_by_exactly_the_effect() -> None:
    history = hi.generate(shortened("trial-yield", (2, 2), variability=False), FERMENTER, runs=4)
    base, trial = kpis(history, "BL"), kpis(history, "TR")
    assert base[0]["product_formed_g"] == base[1]["product_formed_g"]  # identical runs
    ratio = mean(k["product_yield_g_per_g"] for k in trial) / mean(k["product_yield_g_per_g"] for k in base)
    assert ratio == pytest.approx(1.06, abs=0.001)


def test_the_agitation_trial_saves_12_percent_of_agitator_energy_and_nothing_else() -> None:
    history = hi.generate(shortened("trial-agitation", (1, 2)), FERMENTER, runs=3)
    for doc in trial_docs(history):
        effect = doc["effect"]
        assert effect["energy_kwh.agitator"] == pytest.approx(-0.12, abs=1e-9)
        assert effect["product_formed_g"] == pytest.approx(0.0, abs=1e-12)
        assert effect["energy_kwh.compressor"] == pytest.approx(0.0, abs=1e-12)
        # the same shaft power reaches the broth (only the drive's losses fall): the chiller is unchanged
        assert effect["energy_kwh.chiller"] == pytest.approx(0.0, abs=1e-12)
        k = doc["fermentation"]["kpis"]["energy_kwh"]
        assert effect["energy_kwh.total"] == pytest.approx(
            -0.12 * k["agitator"] / 0.88 / (k["total"] + 0.12 / 0.88 * k["agitator"])
        )


def test_a_trial_without_effect_has_none() -> None:
    history = hi.generate(shortened("trial-no-effect", (1, 2)), FERMENTER, runs=3)
    docs = trial_docs(history)
    assert len(docs) == 2
    for doc in docs:
        assert all(abs(v) < 1e-12 for v in doc["effect"].values()), doc["effect"]
