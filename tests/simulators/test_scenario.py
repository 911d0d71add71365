"""simulators/scenario.py: the shipped scenarios load; a broken file fails with one line naming the file and
the key; run plans follow the campaigns, their variability and their effects."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from biopilot.errors import ConfigError
from simulators.fermenter import FermenterParams
from simulators.recovery import UnitKind, default_params
from simulators.scenario import Scenario, load_scenario, parse_scenario

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO / "config" / "scenarios").glob("*.toml"))

MINIMAL = """
[scenario]
name = "t"
seed = 5

[[campaigns]]
name = "baseline"
code = "BL"
runs = 2
variability = { mu_max = 0.05, "capture.step_yield" = 0.02 }

[[campaigns]]
name = "trial"
code = "TR"
runs = 1
effects = { product_yield = 0.06, agitation_energy = -0.12 }
changes = { do_set = 20.0, "uf_df.diavolumes" = 7.0 }
"""


def test_there_are_example_scenarios() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {"baseline", "trial-yield", "trial-agitation", "trial-no-effect", "faults"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_shipped_scenario_loads(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.planned_runs >= 1
    for n in range(1, scenario.planned_runs + 2):  # and one beyond the plan
        plan = scenario.run_plan(n)
        assert plan.fermenter.mu_max > 0


def _broken(text: str, tmp_path: Path) -> str:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "mu_max = 0.05",
            "mu_maxx = 0.05",
            "campaigns[0].variability.mu_maxx: 'mu_maxx' is not a parameter (did you mean 'mu_max'?)",
        ),
        (
            '"capture.step_yield"',
            '"capture.step_yeld"',
            "campaigns[0].variability.capture.step_yeld: 'step_yeld' is not a parameter"
            " (did you mean 'step_yield'?)",
        ),
        ('"capture.step_yield"', '"capturing.step_yield"', "'capturing' is not a recovery unit kind"),
        (
            "product_yield = 0.06",
            "product_yeld = 0.06",
            "campaigns[1].effects: 'product_yeld' is not a known effect",
        ),
        ('code = "TR"', 'code = "BL"', "campaigns: code 'BL' is used twice"),
        ("seed = 5", "seed = 5\nstart = 2025-01-01T00:00:00", "scenario.start: give the time zone"),
        ("seed = 5", "seed = 5\nsample_interval_s = 25.0", "must be a multiple of model_step_s"),
        ("runs = 2", "runs = 0", "campaigns[0].runs: Input should be greater than or equal to 1"),
        ("runs = 2", "runs = 2\nrepeats = 3", "campaigns[0].repeats: unknown key (misspelled?)"),
    ],
)
def test_a_broken_scenario_fails_with_one_line_naming_the_key(
    old: str, new: str, expected: str, tmp_path: Path
) -> None:
    assert MINIMAL.count(old) == 1
    assert expected in _broken(MINIMAL.replace(old, new), tmp_path)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (
            'kind = "dropout"\nsignal = "F-101/DissolvedOxygen"\nat_h = 1.0',
            "faults[0]: a dropout fault needs duration_h > 0",
        ),
        (
            'kind = "dropout"\nsignal = "F-101/Oxygen"\nat_h = 1.0\nduration_h = 1.0',
            "faults[0].signal: 'F-101/Oxygen' names no simulated signal",
        ),
        ('kind = "drift"\nsignal = "F-101/pH"\nduration_h = 1.0', "a drift fault needs rate_per_h"),
        ('kind = "clock_skew"\nsource = "F-101/offgas"', "a clock_skew fault needs skew_s"),
        (
            'kind = "malformed"\nsource = "F-101/gas"',
            "faults[0].source: 'F-101/gas': expected 'opcua' or '<equipment>/<channel>'",
        ),
        ('kind = "restart"', "faults[0].kind: 'restart' is not allowed"),
        ('kind = "feed_pump"\nduration_h = 1.0', "a feed_pump fault needs equipment = '<fermenter>'"),
        (
            'kind = "oxygen_transfer"\nequipment = "F-101"\nduration_h = 1.0',
            "an oxygen_transfer fault needs factor in (0, 1)",
        ),
        ('kind = "feed_pump"\nequipment = "F-101"', "a feed_pump fault needs duration_h > 0"),
    ],
)
def test_a_broken_fault_fails_with_one_line(fault: str, expected: str, tmp_path: Path) -> None:
    assert expected in _broken(MINIMAL + "\n[[faults]]\n" + fault + "\n", tmp_path)


@pytest.fixture
def scenario() -> Scenario:
    return parse_scenario(MINIMAL)


def test_runs_follow_the_campaigns_and_the_last_one_continues(scenario: Scenario) -> None:
    plans = [scenario.run_plan(n) for n in range(1, 6)]
    assert [(p.campaign.code, p.number_in_campaign) for p in plans] == [
        ("BL", 1),
        ("BL", 2),
        ("TR", 1),
        ("TR", 2),
        ("TR", 3),
    ]
    assert plans[0].batch_id("F101-250106T0600") == "F101-250106T0600-BL01"


def test_variability_is_seeded_per_run_and_bounded(scenario: Scenario) -> None:
    base = FermenterParams()
    one, again, two = scenario.run_plan(1), scenario.run_plan(1), scenario.run_plan(2)
    assert one == again  # reproducible: the draw depends on (seed, run number) only
    assert one.fermenter.mu_max != two.fermenter.mu_max
    draws = [scenario.run_plan(n).fermenter.mu_max / base.mu_max - 1 for n in (1, 2)]
    assert all(0 < abs(d) <= 3 * 0.05 for d in draws)  # z clipped to ±3 SD
    capture = one.units[UnitKind.CAPTURE].step_yield / default_params(UnitKind.CAPTURE).step_yield - 1
    assert 0 < abs(capture) <= 3 * 0.02
    assert one.units[UnitKind.UF_DF] == default_params(UnitKind.UF_DF)  # not varied
    assert one.counterfactual is None  # baseline runs have no twin
    other_seed = parse_scenario(MINIMAL.replace("seed = 5", "seed = 6")).run_plan(1)
    assert other_seed.fermenter.mu_max != one.fermenter.mu_max


def test_a_trial_run_carries_its_change_and_its_twin(scenario: Scenario) -> None:
    plan = scenario.run_plan(3)
    twin = plan.counterfactual
    assert twin is not None and plan.counterfactual_units is not None
    assert plan.fermenter.product_factor == pytest.approx(twin.product_factor * 1.06)
    assert plan.fermenter.agitator_power_factor == pytest.approx(twin.agitator_power_factor * 0.88)
    assert plan.fermenter.do_set == 20.0 and twin.do_set == FermenterParams().do_set
    assert plan.units[UnitKind.UF_DF].diavolumes == 7.0
    assert plan.counterfactual_units[UnitKind.UF_DF].diavolumes == default_params(UnitKind.UF_DF).diavolumes
    # everything else is the twin's
    changed = {"product_factor", "agitator_power_factor", "do_set"}
    for f in dataclasses.fields(FermenterParams):
        if f.name not in changed:
            assert getattr(plan.fermenter, f.name) == getattr(twin, f.name), f.name


def test_drift_compounds_through_the_scenario_and_the_twin_drifts_too() -> None:
    """[drift] product_factor = 0.01: run k has product_factor × 1.01^(k − 1) on top of its draw, in every
    campaign; a trial run's counterfactual twin drifts with it (the drift is not the startup's effect)."""
    s = load_scenario(REPO / "config" / "scenarios" / "trial-drifting-baseline.toml")
    assert s.drift == {"product_factor": 0.01}
    for n in (1, 4, 8, 9, 11):
        plan = s.run_plan(n)
        assert plan.fermenter.product_factor == pytest.approx(1.01 ** (n - 1))
    trial = s.run_plan(10)
    assert trial.counterfactual is not None and trial.counterfactual.product_factor == pytest.approx(1.01**9)
    # the draws of the variability are the same as without drift
    still = Scenario.model_validate({**s.model_dump(), "drift": {}})
    assert still.run_plan(5).fermenter.mu_max == s.run_plan(5).fermenter.mu_max
    assert still.run_plan(5).fermenter.product_factor == 1.0


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        (
            "product_factr = 0.01",
            "drift.product_factr: 'product_factr' is not a parameter (did you mean 'product_factor'?)",
        ),
        (
            "product_factor = 0.5",
            "drift: product_factor: a relative change per run in (-0.2, 0.2), got 0.5",
        ),
    ],
)
def test_a_broken_drift_fails_in_one_line(drift: str, expected: str, tmp_path: Path) -> None:
    message = _broken(MINIMAL + f"\n[drift]\n{drift}\n", tmp_path)
    assert expected.replace("Value error, ", "") in message
