"""The verdict engine (processing/verdict.py): the worked check of kpis.md, every word from a constructed
case, not judgeable naming its runs, exclusions, secondary KPIs under Holm, the baseline's stability, the
JSON form, and properties (hypothesis). Each test says where its numbers come from."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from biopilot.charter import Charter, load_charter
from biopilot.errors import ConfigError
from biopilot.records import KpiRecord
from processing.verdict import Exclusion, RunRecord, judge, verdict_to_json

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "trials" / "example-charter.toml"
KPI = "yield_product_substrate_consumed"
T0 = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)

BASELINE = [0.30, 0.32, 0.31, 0.29, 0.33]  # kpis.md worked check
TRIAL = [0.27, 0.28, 0.26]


def charter(**changes: Any) -> Charter:
    """The example charter (config/trials/example-charter.toml), without money or secondaries unless asked."""
    base = load_charter(EXAMPLE).model_dump()
    return Charter.model_validate({**base, "secondary_kpis": [], "prices": {}, **changes})


def rec(
    value: float | None,
    unit: str = "g/g",
    coverage: float = 1.0,
    flags: Sequence[str] = (),
    final: bool = True,
    name: str = KPI,
) -> KpiRecord:
    return KpiRecord(name, value, unit, coverage, tuple(flags), final)


def runs(values: Sequence[float | None], prefix: str, day0: int = 0, **kw: Any) -> list[RunRecord]:
    return [
        RunRecord(f"F-101:{prefix}{i + 1:02d}", T0 + timedelta(days=day0 + 2 * i), {KPI: rec(v, **kw)})
        for i, v in enumerate(values)
    ]


def worked(**changes: Any) -> tuple[list[RunRecord], list[RunRecord], Charter]:
    return runs(TRIAL, "TR", 20), runs(BASELINE, "BL"), charter(**changes)


# -- the worked check -------------------------------------------------------------------------------------
def test_worked_check_is_worse_for_a_superiority_charter() -> None:
    """kpis.md: baseline 0.30, 0.32, 0.31, 0.29, 0.33 and trial 0.27, 0.28, 0.26: difference −0.04
    (−12.9 % of the baseline mean), exact permutation p = 2/56 over C(8, 3) = 56 relabellings: "worse" at
    α 0.05. Recomputed here with scipy.stats directly (not through processing.stats)."""
    trial, baseline, c = worked(margin_unit="g/g")
    v = judge(c, trial, baseline)
    p = v.primary
    assert v.word == p.word == "worse"
    assert p.difference == pytest.approx(-0.04)
    assert 100 * p.difference / p.mean_baseline == pytest.approx(-12.9, abs=0.05)
    welch = sps.ttest_ind(TRIAL, BASELINE, equal_var=False)
    assert p.p_welch == pytest.approx(welch.pvalue)
    ci = welch.confidence_interval(0.95)
    assert p.ci == pytest.approx((ci.low, ci.high))
    perm = sps.permutation_test(
        (TRIAL, BASELINE), lambda a, b, axis: a.mean(axis) - b.mean(axis), vectorized=True, n_resamples=np.inf
    )
    assert p.p_permutation == pytest.approx(perm.pvalue) and perm.pvalue == pytest.approx(2 / 56)
    assert (p.permutation.method, p.permutation.count) == ("exact", 56)
    assert "worse" in v.reason and "−12.9 %" in v.reason
    assert p.disagreement is None and v.warnings == ()  # 'better' is not "supported" by a p on the wrong side
    # per cent via logs: the ratio of geometric means, by hand
    gm = math.exp(np.mean(np.log(TRIAL)) - np.mean(np.log(BASELINE)))
    assert p.difference_pct == pytest.approx(100 * (gm - 1))
    assert p.ci_pct[0] < p.difference_pct < p.ci_pct[1] < 0


def test_worked_check_is_worse_with_a_relative_margin_too() -> None:
    """The same runs judged on the log ratio (margin_unit "%"): the Welch interval of the logs lies below 0
    and the permutation test of the logs has the same extreme split, p = 2/56."""
    trial, baseline, c = worked()
    v = judge(c, trial, baseline)
    assert v.word == "worse" and v.primary.scale == "log_ratio"
    lw = sps.ttest_ind(np.log(TRIAL), np.log(BASELINE), equal_var=False)
    assert v.primary.p_welch == pytest.approx(lw.pvalue)
    assert v.primary.p_permutation == pytest.approx(2 / 56)
    # the ratio's interval via logs, by hand: exp of Welch's interval of ln(trial) − ln(baseline), minus 1
    ci = lw.confidence_interval(0.95)
    assert v.primary.ci_pct == pytest.approx((100 * (math.exp(ci.low) - 1), 100 * (math.exp(ci.high) - 1)))


def test_lower_is_better_per_cent_is_the_saving() -> None:
    """Lower is better (say, specific energy): trial 0.90, 0.91, 0.89 against BL8 is 10 % lower, shown as
    +10 % (better): 100·(1 − GM_trial/GM_baseline), the interval likewise from Welch's interval [a, b] of
    ln(trial) − ln(baseline): [100·(1 − e^b), 100·(1 − e^a)]."""
    t = [0.90, 0.91, 0.89]
    v = judge(charter(direction="lower"), runs(t, "TR", 20), runs(BL8, "BL"))
    gm = math.exp(np.mean(np.log(t)) - np.mean(np.log(BL8)))
    assert v.primary.difference_pct == pytest.approx(100 * (1 - gm))
    ci = sps.ttest_ind(np.log(t), np.log(BL8), equal_var=False).confidence_interval(0.95)
    assert v.primary.ci_pct == pytest.approx((100 * (1 - math.exp(ci.high)), 100 * (1 - math.exp(ci.low))))
    assert v.primary.difference == pytest.approx(np.mean(BL8) - np.mean(t))
    assert v.word == "better" and "(lower is better, so + is better)" in v.reason


# -- every word -------------------------------------------------------------------------------------------
BL8 = [1.00, 1.02, 0.99, 1.01, 0.98, 1.00, 1.03, 0.97]  # mean 1.0, SD 0.0200


def test_better() -> None:
    """Trial 1.10, 1.12, 1.11 against BL8: +11 %, Welch interval far above 0, permutation p = 2/165
    (the trial the 3 largest of 11 values: the extreme split)."""
    v = judge(charter(), runs([1.10, 1.12, 1.11], "TR", 20), runs(BL8, "BL"))
    assert v.word == "better"
    assert v.primary.ci_pct[0] > 0 and v.primary.p_permutation == pytest.approx(2 / 165)
    assert v.reason.startswith(f"{KPI} is better: trial 1.11 vs baseline 1 g/g, +11.0 %")


def test_better_by_a_margin_needs_the_whole_interval_above_it() -> None:
    """The same +11 % trial with a superiority margin of 5 % is better; with 10 %, the lower bound
    (about +8 %) is not above the margin: inconclusive."""
    trial, baseline = runs([1.10, 1.12, 1.11], "TR", 20), runs(BL8, "BL")
    assert judge(charter(margin=5.0), trial, baseline).word == "better"
    v = judge(charter(margin=10.0), trial, baseline)
    assert v.word == "inconclusive" and v.primary.ci_pct[0] < 10


def test_inconclusive_states_the_mde() -> None:
    """Trial 1.01, 0.99, 1.02 against BL8: no difference found; the MDE at power 0.8 is d·s_pooled with d
    the Welch-df MDE of 3 vs 8 runs (processing.stats), and the reason says so."""
    v = judge(charter(), runs([1.01, 0.99, 1.02], "TR", 20), runs(BL8, "BL"))
    p = v.primary
    assert v.word == "inconclusive"
    assert f"could only have detected ±{p.mde_pct:.1f} %" in v.reason
    assert p.mde_pct == pytest.approx(100 * p.mde / p.mean_baseline)


def test_not_worse_and_worse_under_non_inferiority() -> None:
    """Non-inferiority by 5 %: trial 0.995, 1.00, 1.005 (−0.1 %) has its lower bound above −5 %: not worse;
    trial 0.85, 0.86, 0.84 has its whole interval below −5 %: worse."""
    c = charter(hypothesis="non_inferiority", margin=5.0)
    baseline = runs(BL8, "BL")
    v = judge(c, runs([0.995, 1.00, 1.005], "TR", 20), baseline)
    assert v.word == "not worse" and v.primary.ci_pct[0] > -5
    w = judge(c, runs([0.85, 0.86, 0.84], "TR", 20), baseline)
    assert w.word == "worse" and w.primary.ci_pct[1] < -5


def test_equivalent_better_and_worse_under_equivalence() -> None:
    """Equivalence within ±5 %: five trial runs around the baseline mean give a 90 % interval inside ±5 %
    (TOST p and both one-sided permutation tests below 0.05); +11 % is better, −15 % worse (the 95 %
    interval beyond the margin)."""
    c = charter(hypothesis="equivalence", margin=5.0, planned_runs=5)
    baseline = runs(BL8, "BL")
    v = judge(c, runs([1.00, 1.01, 0.99, 1.00, 1.005], "TR", 20), baseline)
    assert v.word == "equivalent"
    assert v.primary.ci_2alpha_pct[0] > -5 and v.primary.ci_2alpha_pct[1] < 5 and v.primary.p_tost < 0.05
    assert judge(c, runs([1.10, 1.12, 1.11, 1.11, 1.10], "TR", 20), baseline).word == "better"
    assert judge(c, runs([0.85, 0.86, 0.84, 0.85, 0.86], "TR", 20), baseline).word == "worse"


def test_disagreement_takes_the_conservative_word() -> None:
    """The worked check without baseline run 2 (3 vs 4 runs, C(7, 3) = 35 relabellings): Welch's interval
    is below 0 but the permutation test cannot go below 2/35 = 0.057 ≥ 0.05: inconclusive, saying so."""
    trial, baseline, c = worked(margin_unit="g/g")
    v = judge(c, trial, baseline, exclusions=[Exclusion("F-101:BL02", "feed pump failed at 20 h")])
    assert v.primary.ci[1] < 0 and v.primary.p_permutation == pytest.approx(2 / 35)
    assert v.word == "inconclusive"
    assert "Welch says 'worse' but the permutation test does not" in v.reason
    assert any("cannot reach p < 0.05" in w for w in v.warnings)
    assert v.without_exclusions is not None and v.without_exclusions.word == "worse"


# -- not judgeable ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "says"),
    [
        (rec(None, flags=("missing_input",)), "F-101:BL03 has no value (missing_input)"),
        (
            rec(0.31, flags=("implausible:yield_above_max",)),
            "F-101:BL03 is flagged implausible:yield_above_max",
        ),
        (rec(0.31, coverage=0.82), "F-101:BL03 covers 82 % of its inputs (< 95 %)"),
        (rec(0.31, final=False), "F-101:BL03 is provisional"),
        (None, "F-101:BL03 has no value (not computed)"),
    ],
    ids=["missing", "implausible", "low-coverage", "provisional", "absent"],
)
def test_not_judgeable_names_the_run(record: KpiRecord | None, says: str) -> None:
    """A baseline run whose KPI is missing, flagged implausible, under min_coverage (0.95 in the example
    charter), provisional or not computed makes the verdict not judgeable, naming that run, never a word."""
    trial, baseline, c = worked()
    kpis = {} if record is None else {KPI: record}
    baseline[2] = RunRecord(baseline[2].run_id, baseline[2].start, kpis)
    v = judge(c, trial, baseline)
    assert v.word == "not judgeable"
    assert says in v.reason
    assert v.primary.ci is None and v.primary.p_welch is None
    assert [u["run"] for u in verdict_to_json(v)["primary"]["unusable"]] == ["F-101:BL03"]


def test_not_judgeable_trial_run_and_too_few_runs() -> None:
    """A trial run's implausible KPI is named too; one trial run alone cannot be judged."""
    trial, baseline, c = worked()
    trial[1] = RunRecord(trial[1].run_id, trial[1].start, {KPI: rec(0.9, flags=("implausible:yield",))})
    assert "F-101:TR02 is flagged implausible:yield" in judge(c, trial, baseline).reason
    v = judge(c, trial[:1], baseline)
    assert v.word == "not judgeable" and "1 trial and 5 baseline runs count" in v.reason


def test_an_excluded_bad_run_makes_it_judgeable_and_without_exclusions_not() -> None:
    """Excluding the run with the missing value (with a reason) gives a verdict; the result with every run
    is not judgeable and says so."""
    trial, baseline, c = worked()
    baseline[2] = RunRecord(baseline[2].run_id, baseline[2].start, {KPI: rec(None, flags=("missing_input",))})
    v = judge(c, trial, baseline, exclusions=[Exclusion("F-101:BL03", "lab titer lost", by="anna")])
    assert v.word in ("worse", "inconclusive")
    assert v.without_exclusions is not None and v.without_exclusions.word == "not judgeable"
    doc = verdict_to_json(v)
    assert doc["exclusions"] == [{"run": "F-101:BL03", "reason": "lab titer lost", "by": "anna", "at": None}]
    assert doc["primary"]["excluded"] == [{"run": "F-101:BL03", "reason": "lab titer lost"}]
    assert any("with every run the verdict is 'not judgeable'" in w for w in v.warnings)


def test_absolute_margin_in_another_unit_is_a_config_error() -> None:
    trial, baseline, c = worked(margin_unit="g/L", margin=0.01)
    with pytest.raises(
        ConfigError, match="margin_unit 'g/L' is not the unit of yield_product_substrate_consumed"
    ):
        judge(c, trial, baseline)


# -- secondary KPIs, stability, warnings --------------------------------------------------------------------
def test_secondary_kpis_are_holm_corrected() -> None:
    """Two secondary KPIs, 3 trial vs 8 baseline runs: titer clearly higher (permutation p = 2/165, Holm
    2·2/165 < 0.05) and specific energy (lower is better) not different. Holm by hand for two p-values
    p(1) ≤ p(2): adjusted 2·p(1) and max(2·p(1), p(2))."""
    c = charter(
        secondary_kpis=[
            {"kpi": "titer", "direction": "higher"},
            {"kpi": "specific_energy", "direction": "lower"},
        ]
    )
    titer_t, titer_b = [8.9, 9.0, 9.1], [8.0, 8.1, 7.9, 8.2, 8.0, 8.1, 7.9, 8.0]
    energy_t, energy_b = [60.0, 61.0, 63.0], [61.0, 63.0, 62.0, 64.0, 60.0, 62.5, 61.5, 63.5]
    trial, baseline = runs([1.0, 1.01, 0.99], "TR", 20), runs(BL8, "BL")
    for r, t, e in zip(trial, titer_t, energy_t, strict=True):
        r.kpis.update(
            titer=rec(t, "g/L", name="titer"), specific_energy=rec(e, "kWh/kg", name="specific_energy")
        )
    for r, t, e in zip(baseline, titer_b, energy_b, strict=True):
        r.kpis.update(
            titer=rec(t, "g/L", name="titer"), specific_energy=rec(e, "kWh/kg", name="specific_energy")
        )
    v = judge(c, trial, baseline)
    titer, energy = v.secondary
    p1 = sps.ttest_ind(titer_t, titer_b, equal_var=False).pvalue
    p2 = sps.ttest_ind(energy_b, energy_t, equal_var=False).pvalue
    lo, hi = sorted([p1, p2])
    adj = {lo: min(1, 2 * lo), hi: min(1, max(2 * lo, hi))}
    assert titer.p_welch_holm == pytest.approx(adj[p1]) and energy.p_welch_holm == pytest.approx(adj[p2])
    assert titer.word == "better" and energy.word == "inconclusive"
    assert energy.difference == pytest.approx(np.mean(energy_b) - np.mean(energy_t))  # lower is better
    assert "Holm-corrected over 2 secondary KPIs" in titer.reason


def test_drifting_baseline_is_flagged() -> None:
    """Baseline 0.290, 0.295, ..., 0.325 (eight runs, each higher than the last): Nelson's rule 3 flags
    the trend and the verdict warns of a drifting baseline; the span is 14 days (runs every 2 days)."""
    baseline = runs([0.290 + 0.005 * i for i in range(8)], "BL")
    v = judge(charter(), runs([0.33, 0.335, 0.34], "TR", 20), baseline)
    assert not v.stability.stable and len(v.stability.chart.trend) == 8
    assert v.stability.span_days == pytest.approx(14)
    assert any("a drifting baseline" in w for w in v.warnings)
    doc = verdict_to_json(v)["baseline_stability"]
    assert doc["trend"] == [r.run_id for r in baseline] and doc["stable"] is False


def test_interim_and_changed_charter_are_warned() -> None:
    trial, baseline, c = worked(planned_runs=4)
    v = judge(c, trial, baseline, charter_version=2, charter_changed_after_start=True)
    assert v.warnings[0].startswith("THE CHARTER WAS CHANGED AFTER THE FIRST TRIAL RUN STARTED")
    assert "interim verdict: 3 of 4 planned trial runs" in v.warnings
    doc = verdict_to_json(v)
    assert doc["charter_version"] == 2 and doc["charter_changed_after_start"] is True


# -- JSON ---------------------------------------------------------------------------------------------------
PRIMARY_KEYS = {
    "kpi", "n_trial", "n_baseline", "mean_trial", "mean_baseline", "difference", "difference_pct", "ci",
    "ci_pct", "p_welch", "p_permutation", "hedges_g", "mde_pct", "excluded",
}  # fmt: skip


def test_json_form_is_stable_and_plain() -> None:
    """The keys the issue fixes, two-element intervals, the charter's hash, and strict JSON (no NaN)."""
    from biopilot.charter import charter_sha256

    c = charter(secondary_kpis=[{"kpi": "titer", "direction": "higher"}])
    trial, baseline = runs(TRIAL, "TR", 20), runs(BASELINE, "BL")
    for r in (*trial, *baseline):
        r.kpis["titer"] = rec(8.0 + 0.1 * len(r.run_id) + 0.01 * int(r.run_id[-1]), "g/L", name="titer")
    doc = verdict_to_json(judge(c, trial, baseline, charter_version=3))
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text) == doc
    assert {"word", "reason", "charter_version", "charter_sha256"} <= set(doc)
    assert doc["charter_sha256"] == charter_sha256(c) and doc["charter_version"] == 3
    for k in (doc["primary"], *doc["secondary"]):
        assert set(k) >= PRIMARY_KEYS
        assert len(k["ci"]) == 2 and len(k["ci_pct"]) == 2
    assert doc["primary"]["kpi"] == KPI and doc["secondary"][0]["kpi"] == "titer"


# -- properties ---------------------------------------------------------------------------------------------
values = st.lists(st.floats(0.5, 1.5, allow_nan=False), min_size=2, max_size=6)


def _design(t: list[float], b: list[float]) -> bool:
    return np.ptp(t) > 1e-6 and np.ptp(b) > 1e-6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=values, b=values, hyp=st.sampled_from(["superiority", "non_inferiority", "equivalence"]))
def test_swapping_direction_and_negating_values_changes_nothing(
    t: list[float], b: list[float], hyp: str
) -> None:
    """With an absolute margin, judging −x with 'lower is better' is judging x with 'higher is better':
    the same word, difference, interval and p-values."""
    if not _design(t, b):
        return
    margin = 0.0 if hyp == "superiority" else 0.05
    up = judge(charter(hypothesis=hyp, margin=margin, margin_unit="g/g"), runs(t, "T", 20), runs(b, "B"))
    down = judge(
        charter(hypothesis=hyp, margin=margin, margin_unit="g/g", direction="lower"),
        runs([-v for v in t], "T", 20),
        runs([-v for v in b], "B"),
    )
    assert up.word == down.word
    assert up.primary.difference == pytest.approx(down.primary.difference)
    assert up.primary.ci == pytest.approx(down.primary.ci)
    assert up.primary.p_permutation == pytest.approx(down.primary.p_permutation)


@settings(max_examples=40, deadline=None)
@given(t=values, b=values, margin=st.sampled_from([0.0, 2.0, 5.0]))
# Found by hypothesis in CI: the log-ratio interval (the judged scale of a % charter) is +32.6 % .. and
# excludes 0, while Welch's interval of the raw difference, reported beside it, reaches −0.031 g/g (the
# trial's SD of 0.29 on 3 runs, 2 degrees of freedom). The word rests on the judged scale only.
@example(t=[1.0, 1.0, 1.5], b=[0.5, 0.5, 0.5, 0.5, 0.75], margin=0.0)
def test_permutation_p_is_a_probability_and_better_excludes_zero(
    t: list[float], b: list[float], margin: float
) -> None:
    """The permutation p-value lies in (0, 1]; "better" never comes with an interval on the judged scale
    (the log ratio, in % of the baseline, for a % margin) that includes 0 (or the margin)."""
    if not _design(t, b):
        return
    v = judge(charter(margin=margin), runs(t, "T", 20), runs(b, "B"))
    assert v.primary.scale == "log_ratio"
    assert 0 < v.primary.p_permutation <= 1
    if v.word == "better":
        assert v.primary.ci_pct[0] > margin
        assert margin > 0 or v.primary.p_permutation < 0.05  # the permutation test agreed
    if v.word == "worse":
        assert v.primary.ci_pct[1] < 0


@settings(max_examples=25, deadline=None)
@given(t=values, b=values, scale=st.floats(0.01, 100))
def test_relative_verdict_does_not_depend_on_the_unit_scale(
    t: list[float], b: list[float], scale: float
) -> None:
    """A relative (%) charter judges ratios: multiplying every value by the same factor (g/g to mg/g, say)
    changes no word and no per-cent figure."""
    if not _design(t, b):
        return
    a = judge(charter(), runs(t, "T", 20), runs(b, "B"))
    z = judge(charter(), runs([v * scale for v in t], "T", 20), runs([v * scale for v in b], "B"))
    assert a.word == z.word
    assert a.primary.difference_pct == pytest.approx(z.primary.difference_pct, abs=1e-9)
    assert a.primary.ci_pct == pytest.approx(z.primary.ci_pct, abs=1e-9)
