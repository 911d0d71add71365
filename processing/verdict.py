"""The verdict of a trial against its baseline, by the charter fixed before the trial (biopilot.charter).

Pure: the charter and the runs' KPI records in, a `Verdict` out; no storage, no clock. Part of issue 10;
the formulas and the table of words are in kpis.md, "Comparing a trial with the baseline".

How a KPI is judged (`judge`, `compare_kpi`)
- A run counts when its KPI has a finite value, no `implausible…` or `missing_input…` flag, a coverage of
  at least the charter's min_coverage, and is final (the run is closed). Any other run makes the KPI
  `not judgeable`, naming the run and why; so do fewer than two usable runs on either side, or no variance
  at all. Excluded runs (a written reason each) are left out, and the verdict is also computed with every
  run (`without_exclusions`).
- Values are signed so that positive is better: d = trial − baseline when higher is better, baseline −
  trial when lower is better.
- The scale: a relative margin (margin_unit "%") is judged on the log ratio: Welch's t on the logs of the
  values, the interval back-transformed to per cent of the baseline (the ratio of geometric means; Kieser
  & Hauschke 1999, Stat Med 18: 93–105). An absolute margin is judged on the difference of means, in the
  KPI's unit. Secondary KPIs are judged on the difference of means.
- Welch's interval (processing.stats.welch): [L, U] at 1 − α, [L2, U2] at 1 − 2α. The words, checked in
  this order (Δ the margin on the judged scale):
    superiority      better: L > Δ;  worse: U < 0
    non_inferiority  not worse: L > −Δ;  worse: U < −Δ
    equivalence      equivalent: −Δ < L2 and U2 < Δ (TOST at α);  better: L > Δ;  worse: U < −Δ
    otherwise        inconclusive, with the minimum detectable effect of the design (power 0.8)
  A word stands only when the permutation test agrees at α: the exact (or Monte Carlo) permutation test
  against the same boundary (two-sided; for equivalence the two one-sided tests). Where the two disagree the
  verdict says so and takes the next word in the table (the more conservative one, in the end inconclusive).
- Secondary KPIs: better / worse / inconclusive / not judgeable by Welch and permutation p-values against
  no difference, each Holm-corrected over the judgeable secondary KPIs (statsmodels multipletests; Holm 1979,
  Scand J Stat 6: 65–70); both must be below α.
- Baseline stability: an individuals chart (processing.stats.individuals_chart) of the primary KPI of the
  baseline runs in start order; a run outside the limits or a trend of six is a warning, and the dates the
  baseline spans are reported.

The JSON form (`verdict_to_json`; format "biopilot-verdict-1"; stable: keys are only ever added)
  {
    "format": "biopilot-verdict-1",
    "word": "better" | "worse" | "equivalent" | "not worse" | "inconclusive" | "not judgeable",
    "reason": str,                     one sentence with the numbers the word rests on
    "charter_version": int, "charter_sha256": str (hex), "charter_changed_after_start": bool,
    "title": str, "hypothesis": str, "margin": float, "margin_unit": str, "alpha": float,
    "planned_runs": int, "min_coverage": float,
    "primary": KPI,
    "secondary": [KPI, ...],           in the charter's order
    "baseline_stability": {"kpi", "runs": [run ids in start order], "values": [..], "centre", "mr_bar",
        "lower", "upper", "mr_upper", "outside": [run ids], "trend": [run ids], "stable": bool,
        "first_start", "last_start" (ISO-8601), "span_days"}     (chart keys null with < 2 values)
    "exclusions": [{"run", "reason", "by", "at"}],
    "without_exclusions": null | {"word", "reason", "primary": KPI, "secondary": [KPI, ...]},
    "money": null | processing.money.money_to_json,
    "warnings": [str, ...]             e.g. the charter changed after the first trial run, an interim
                                       verdict, an unstable baseline, a Welch/permutation disagreement
  }
  KPI = {
    "kpi", "role" ("primary" | "secondary"), "unit", "direction", "word", "reason",
    "n_trial", "n_baseline",           usable runs counted
    "mean_trial", "mean_baseline", "sd_trial", "sd_baseline",      in the KPI's unit, as measured
    "difference",                      signed: positive is better (see above), in the KPI's unit
    "difference_pct",                  the same in per cent of the baseline: ratio of geometric means − 1
                                       ("pct_method": "log_ratio"), or difference / |mean_baseline| when a
                                       value is ≤ 0 ("pct_method": "baseline_mean")
    "ci", "ci_pct": [low, high],       Welch–Satterthwaite interval at "ci_level" = 1 − α of difference and
                                       of difference_pct (via logs)
    "ci_2alpha", "ci_2alpha_pct": [low, high],   the same at 1 − 2α (equivalence)
    "df_welch",
    "scale": "log_ratio" | "difference",         the scale the word and the p-values are on
    "p_welch", "p_permutation",        two-sided, against no difference, on "scale"
    "permutation": {"method": "exact" | "monte_carlo", "count", "seed"},
    "p_tost",                          equivalence only (Welch TOST p on "scale")
    "p_welch_holm", "p_permutation_holm",        secondary KPIs only
    "hedges_g", "hedges_g_ci": [low, high],      on the signed values, interval at 1 − α
    "mde", "mde_pct", "mde_power": 0.8,          smallest true difference the design detects with that
                                                 power (KPI unit and %)
    "disagreement": null | str,        where the Welch interval and the permutation test disagreed
    "unusable": [{"run", "problem"}],  runs that make it not judgeable
    "excluded": [{"run", "reason"}],
    "runs": [{"run", "group" ("trial" | "baseline"), "start", "value", "coverage", "flags", "problem",
              "excluded"}]
  }
  Numbers that do not exist (a not judgeable KPI's statistics) are null; floats are plain JSON numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
from statsmodels.stats.multitest import multipletests

from biopilot.charter import Charter, Direction, Hypothesis, charter_sha256
from biopilot.errors import ConfigError
from processing import stats
from processing.money import Money, assess_money, money_to_json
from processing.trial_inputs import Exclusion, RunRecord, usable_problem

__all__ = [
    "FORMAT",
    "WORDS",
    "Exclusion",
    "KpiVerdict",
    "RunRecord",
    "RunValue",
    "Stability",
    "Verdict",
    "compare_kpi",
    "hide_runs",
    "holm",
    "judge",
    "kpi_to_json",
    "run_values",
    "stability_to_json",
    "verdict_to_json",
]

FORMAT = "biopilot-verdict-1"
WORDS = ("not judgeable", "better", "worse", "equivalent", "not worse", "inconclusive")
MDE_POWER = 0.8


# -- results ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunValue:
    """One run's value of one KPI as the verdict used it (or why it could not)."""

    run_id: str
    group: str  # "trial" or "baseline"
    start: datetime
    value: float | None
    coverage: float | None
    flags: tuple[str, ...]
    problem: str | None  # why this run's value cannot be used; None when it can
    excluded: str | None  # the exclusion reason; None when the run counts

    @property
    def usable(self) -> bool:
        return self.problem is None and self.excluded is None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "group": self.group,
            "start": self.start.isoformat(),
            "value": _num(self.value),
            "coverage": _num(self.coverage),
            "flags": list(self.flags),
            "problem": self.problem,
            "excluded": self.excluded,
        }


@dataclass(frozen=True)
class KpiVerdict:
    """One KPI of the trial against the baseline (see the module docstring for every field)."""

    kpi: str
    role: str
    unit: str
    direction: str
    word: str
    reason: str
    runs: tuple[RunValue, ...]
    n_trial: int = 0
    n_baseline: int = 0
    mean_trial: float | None = None
    mean_baseline: float | None = None
    sd_trial: float | None = None
    sd_baseline: float | None = None
    difference: float | None = None
    difference_pct: float | None = None
    ci: tuple[float, float] | None = None
    ci_pct: tuple[float, float] | None = None
    ci_level: float = 0.95
    ci_2alpha: tuple[float, float] | None = None
    ci_2alpha_pct: tuple[float, float] | None = None
    df_welch: float | None = None
    scale: str = "difference"
    pct_method: str | None = None
    p_welch: float | None = None
    p_permutation: float | None = None
    permutation: stats.Permutation | None = None
    p_tost: float | None = None
    p_welch_holm: float | None = None
    p_permutation_holm: float | None = None
    hedges_g: float | None = None
    hedges_g_ci: tuple[float, float] | None = None
    mde: float | None = None
    mde_pct: float | None = None
    disagreement: str | None = None

    @property
    def unusable(self) -> list[RunValue]:
        return [r for r in self.runs if r.excluded is None and r.problem is not None]

    @property
    def excluded(self) -> list[RunValue]:
        return [r for r in self.runs if r.excluded is not None]

    def values(self, group: str) -> list[float]:
        """Usable values of one group ("trial" or "baseline"), in the order given."""
        return [float(r.value) for r in self.runs if r.group == group and r.usable and r.value is not None]


@dataclass(frozen=True)
class Stability:
    """The baseline's individuals chart (primary KPI, start order) and the dates it spans."""

    kpi: str
    run_ids: tuple[str, ...]
    chart: stats.IndividualsChart | None  # None with fewer than two values
    first_start: datetime | None
    last_start: datetime | None

    @property
    def span_days(self) -> float | None:
        if self.first_start is None or self.last_start is None:
            return None
        return (self.last_start - self.first_start).total_seconds() / 86400

    @property
    def stable(self) -> bool:
        return self.chart is None or self.chart.stable

    def messages(self) -> list[str]:
        """One sentence per finding of the chart."""
        c = self.chart
        if c is None:
            return []
        out = [
            f"baseline run {self.run_ids[i]} ({_g(c.values[i])}) is outside the baseline's natural process "
            f"limits {_g(c.lower)} to {_g(c.upper)} of {self.kpi}"
            for i in c.outside
        ]
        if c.trend:
            first, last = self.run_ids[c.trend[0]], self.run_ids[c.trend[-1]]
            up = c.values[c.trend[-1]] > c.values[c.trend[0]]
            out.append(
                f"the baseline's {self.kpi} {'rises' if up else 'falls'} steadily over {len(c.trend)} runs "
                f"in a row ({first} to {last}): a drifting baseline"
            )
        return out


@dataclass(frozen=True)
class Verdict:
    word: str
    reason: str
    charter: Charter
    charter_version: int
    charter_sha256: str
    charter_changed_after_start: bool
    primary: KpiVerdict
    secondary: tuple[KpiVerdict, ...]
    stability: Stability
    exclusions: tuple[Exclusion, ...]
    without_exclusions: Verdict | None
    warnings: tuple[str, ...]
    money: Money | None = None


# -- judging ------------------------------------------------------------------------------------------
def judge(
    charter: Charter,
    trial: Sequence[RunRecord],
    baseline: Sequence[RunRecord],
    *,
    exclusions: Sequence[Exclusion] = (),
    charter_version: int = 1,
    charter_changed_after_start: bool = False,
    seed: int = 0,
    with_money: bool = True,
) -> Verdict:
    """The trial's verdict by its charter: the primary KPI's word decides; secondary KPIs, the baseline's
    stability, the money (when the charter has prices) and the warnings come with it. With exclusions, the
    verdict without them (every run counted) is computed too. `seed` seeds Monte Carlo permutation tests
    (only used beyond 100 000 relabellings)."""
    excluded = {e.run_id: e.reason for e in exclusions}
    primary, secondary = _judge_kpis(charter, trial, baseline, excluded, seed)
    without = None
    if exclusions:
        p_all, s_all = _judge_kpis(charter, trial, baseline, {}, seed)
        without = Verdict(
            p_all.word,
            p_all.reason,
            charter,
            charter_version,
            charter_sha256(charter),
            charter_changed_after_start,
            p_all,
            s_all,
            _stability(p_all),
            (),
            None,
            (),
        )
    stability = _stability(primary)
    warnings = _warnings(charter, primary, secondary, stability, exclusions, trial, baseline, without)
    if charter_changed_after_start:
        warnings.insert(
            0,
            f"THE CHARTER WAS CHANGED AFTER THE FIRST TRIAL RUN STARTED: this verdict uses version "
            f"{charter_version}; judge it against the version locked before the trial",
        )
    money = None
    if with_money and not charter.prices.empty:
        money = assess_money(charter, trial, baseline, exclusions=exclusions)
    return Verdict(
        primary.word,
        primary.reason,
        charter,
        charter_version,
        charter_sha256(charter),
        charter_changed_after_start,
        primary,
        secondary,
        stability,
        tuple(exclusions),
        without,
        tuple(warnings),
        money,
    )


def _judge_kpis(
    charter: Charter,
    trial: Sequence[RunRecord],
    baseline: Sequence[RunRecord],
    excluded: Mapping[str, str],
    seed: int,
) -> tuple[KpiVerdict, tuple[KpiVerdict, ...]]:
    primary = compare_kpi(
        charter.primary_kpi,
        charter.direction,
        trial,
        baseline,
        hypothesis=charter.hypothesis,
        margin=charter.margin,
        relative=charter.relative,
        alpha=charter.alpha,
        min_coverage=charter.min_coverage,
        excluded=excluded,
        seed=seed,
    )
    if not charter.relative and primary.unit and primary.unit != charter.margin_unit:
        raise ConfigError(
            f"charter: margin_unit {charter.margin_unit!r} is not the unit of {charter.primary_kpi} "
            f"({primary.unit!r}); give the margin in {primary.unit} or in %"
        )
    secondary = [
        compare_kpi(
            s.kpi,
            s.direction,
            trial,
            baseline,
            alpha=charter.alpha,
            min_coverage=charter.min_coverage,
            excluded=excluded,
            seed=seed,
            role="secondary",
        )
        for s in charter.secondary_kpis
    ]
    return primary, tuple(holm(secondary, charter.alpha))


def run_values(
    kpi: str,
    trial: Sequence[RunRecord],
    baseline: Sequence[RunRecord],
    *,
    min_coverage: float,
    excluded: Mapping[str, str] = {},
    positive: bool = False,
) -> list[RunValue]:
    """Each run's value of `kpi` and the problem that keeps it out, if any (see `usable_problem`)."""
    out = []
    for group, runs in (("trial", trial), ("baseline", baseline)):
        for run in runs:
            rec = run.kpis.get(kpi)
            problem = usable_problem(rec, min_coverage, positive=positive)
            out.append(
                RunValue(
                    run.run_id,
                    group,
                    run.start,
                    rec.value if rec is not None else None,
                    rec.coverage if rec is not None else None,
                    tuple(rec.flags) if rec is not None else (),
                    problem,
                    excluded.get(run.run_id),
                )
            )
    return out


def compare_kpi(
    kpi: str,
    direction: Direction,
    trial: Sequence[RunRecord],
    baseline: Sequence[RunRecord],
    *,
    hypothesis: Hypothesis = Hypothesis.SUPERIORITY,
    margin: float = 0.0,
    relative: bool = False,
    alpha: float,
    min_coverage: float,
    excluded: Mapping[str, str] = {},
    seed: int = 0,
    role: str = "primary",
) -> KpiVerdict:
    """One KPI of the trial against the baseline: the statistics and the word (see the module docstring).

    margin: Δ ≥ 0 in per cent when `relative`, else in the KPI's unit. Secondary KPIs (role "secondary")
    get their word from `holm` afterwards; here they get the uncorrected statistics."""
    direction, hypothesis = Direction(direction), Hypothesis(hypothesis)
    s = direction.sign
    runs = run_values(kpi, trial, baseline, min_coverage=min_coverage, excluded=excluded, positive=relative)
    units = {rec.unit for r in (*trial, *baseline) if (rec := r.kpis.get(kpi)) is not None and rec.unit}
    unit = sorted(units)[0] if units else ""
    base = KpiVerdict(kpi, role, unit, direction.value, "not judgeable", "", tuple(runs), ci_level=1 - alpha)
    if len(units) > 1:
        return replace(
            base,
            reason=f"{kpi} is not judgeable: its runs give it in different units "
            f"({', '.join(sorted(units))})",
        )
    bad = [r for r in runs if r.excluded is None and r.problem is not None]
    if bad:
        named = "; ".join(f"{r.run_id} {r.problem}" for r in bad)
        return replace(base, reason=f"{kpi} is not judgeable: {named}")
    x_t = np.array([r.value for r in runs if r.group == "trial" and r.usable], dtype=float)
    x_b = np.array([r.value for r in runs if r.group == "baseline" and r.usable], dtype=float)
    base = replace(base, n_trial=len(x_t), n_baseline=len(x_b))
    if len(x_t) < 2 or len(x_b) < 2:
        return replace(
            base,
            reason=f"{kpi} is not judgeable: {len(x_t)} trial and {len(x_b)} baseline runs count; a verdict "
            "needs at least 2 of each",
        )
    if np.ptp(x_t) == 0 and np.ptp(x_b) == 0:
        return replace(
            base, reason=f"{kpi} is not judgeable: every trial run and every baseline run has the same value"
        )
    a = _analyse(x_t, x_b, s, relative=relative, alpha=alpha, seed=seed)
    k = replace(
        base,
        mean_trial=float(np.mean(x_t)),
        mean_baseline=float(np.mean(x_b)),
        sd_trial=float(np.std(x_t, ddof=1)),
        sd_baseline=float(np.std(x_b, ddof=1)),
        difference=a.abs1.difference,
        difference_pct=a.difference_pct(),
        ci=a.abs1.ci,
        ci_pct=a.ci_pct(),
        ci_2alpha=a.abs2.ci,
        ci_2alpha_pct=a.ci_pct(two_alpha=True),
        df_welch=a.judged.df,
        scale="log_ratio" if relative else "difference",
        pct_method=a.pct_method,
        p_welch=a.judged.p,
        p_permutation=a.perm0.p,
        permutation=a.perm0,
        hedges_g=a.g.g,
        hedges_g_ci=a.g.ci,
        mde=a.mde,
        mde_pct=a.mde_pct,
    )
    if role != "primary":
        return k
    return _word(k, a, hypothesis, margin, relative, alpha, seed)


@dataclass(frozen=True)
class _Analysis:
    """The statistics of one KPI on the absolute scale (the signed values), on the log scale (the signed logs,
    when every value is above 0) and on the judged scale (log for a relative margin, else absolute)."""

    z_t: np.ndarray  # judged-scale trial values
    z_b: np.ndarray
    sign: int
    relative: bool
    baseline_mean: float
    abs1: stats.Welch  # at 1 − α
    abs2: stats.Welch  # at 1 − 2α
    log1: stats.Welch | None
    log2: stats.Welch | None
    perm0: stats.Permutation
    g: stats.EffectSize
    mde: float
    mde_pct: float | None

    @property
    def judged(self) -> stats.Welch:
        return self.log1 if self.relative and self.log1 is not None else self.abs1

    @property
    def judged2(self) -> stats.Welch:
        return self.log2 if self.relative and self.log2 is not None else self.abs2

    @property
    def pct_method(self) -> str | None:
        if self.log1 is not None:
            return "log_ratio"
        return "baseline_mean" if self.baseline_mean != 0 else None

    def difference_pct(self) -> float | None:
        if self.log1 is not None:
            return _log_to_pct(self.log1.difference, self.sign)
        return 100 * self.abs1.difference / abs(self.baseline_mean) if self.baseline_mean != 0 else None

    def ci_pct(self, two_alpha: bool = False) -> tuple[float, float] | None:
        log = self.log2 if two_alpha else self.log1
        if log is not None:
            return (_log_to_pct(log.ci[0], self.sign), _log_to_pct(log.ci[1], self.sign))
        if self.baseline_mean == 0:
            return None
        lo, hi = (self.abs2 if two_alpha else self.abs1).ci
        return (100 * lo / abs(self.baseline_mean), 100 * hi / abs(self.baseline_mean))

    def threshold(self, margin: float) -> float:
        """A margin (± Δ, in % when relative) on the judged scale."""
        return _pct_to_log(margin, self.sign) if self.relative else margin


def _analyse(
    x_t: np.ndarray, x_b: np.ndarray, s: int, *, relative: bool, alpha: float, seed: int
) -> _Analysis:
    y_t, y_b = s * x_t, s * x_b
    log1 = log2 = None
    if np.all(x_t > 0) and np.all(x_b > 0):
        l_t, l_b = s * np.log(x_t), s * np.log(x_b)
        log1, log2 = stats.welch(l_t, l_b, 1 - alpha), stats.welch(l_t, l_b, 1 - 2 * alpha)
    z_t, z_b = (l_t, l_b) if relative else (y_t, y_b)
    d_mde = stats.minimum_detectable_effect(len(x_t), len(x_b), alpha, MDE_POWER)
    mde = d_mde * stats.pooled_sd(y_t, y_b)
    mean_b = float(np.mean(x_b))
    return _Analysis(
        z_t,
        z_b,
        s,
        relative,
        mean_b,
        stats.welch(y_t, y_b, 1 - alpha),
        stats.welch(y_t, y_b, 1 - 2 * alpha),
        log1,
        log2,
        stats.permutation_test(z_t, z_b, seed=seed),
        stats.hedges_g(y_t, y_b, 1 - alpha),
        mde,
        100 * mde / abs(mean_b) if mean_b != 0 else None,
    )


def _log_to_pct(v: float, sign: int) -> float:
    """A signed log ratio ℓ = sign·ln(trial/baseline) as a signed per cent: sign·(trial/baseline − 1)."""
    return 100 * (math.exp(v) - 1) if sign > 0 else 100 * (1 - math.exp(-v))


def _pct_to_log(p: float, sign: int) -> float:
    """Inverse of _log_to_pct."""
    return math.log1p(p / 100) if sign > 0 else -math.log1p(-p / 100)


@dataclass(frozen=True)
class _Candidate:
    """A word of the table: Welch's condition, and the Welch and permutation p-values against the same
    boundary (two-sided with the estimate on the word's side, or for equivalence the TOST and the larger of
    the two one-sided permutation p-values)."""

    word: str
    welch_ok: bool
    welch_p: float
    perm_p: float
    perm_side_ok: bool  # the estimate lies on the word's side of the boundary
    where: str


def _word(
    k: KpiVerdict, a: _Analysis, h: Hypothesis, margin: float, relative: bool, alpha: float, seed: int
) -> KpiVerdict:
    """The primary KPI's word by the table of kpis.md, each word checked against the permutation test."""
    lo, hi = a.threshold(-margin), a.threshold(margin)
    (low, high), (low2, high2) = a.judged.ci, a.judged2.ci
    est = a.judged.difference
    level = a.judged.level

    def perm(null: float, alternative: str = "two-sided") -> float:
        return stats.permutation_test(a.z_t, a.z_b, null=null, alternative=alternative, seed=seed).p

    def welch(null: float) -> float:
        return stats.welch(a.z_t, a.z_b, level, null=null).p

    def above(word: str, bound: float, where: str) -> _Candidate:
        return _Candidate(word, low > bound, welch(bound), perm(bound), est > bound, where)

    def below(word: str, bound: float, where: str) -> _Candidate:
        return _Candidate(word, high < bound, welch(bound), perm(bound), est < bound, where)

    m = f"{_g(margin)} %" if relative else f"{_g(margin)} {k.unit}".rstrip()
    neg_m = f"−{m}" if margin else m
    candidates: list[Any] = []  # each built when it is reached: a word found ends the search
    if h is Hypothesis.SUPERIORITY:
        candidates = [
            lambda: above(
                "better", hi, f"the whole interval above {'the margin of ' + m if margin else '0'}"
            ),
            lambda: below("worse", 0.0, "the whole interval below 0"),
        ]
    elif h is Hypothesis.NON_INFERIORITY:
        candidates = [
            lambda: above("not worse", lo, f"the lower bound above the margin of {neg_m}"),
            lambda: below("worse", lo, f"the whole interval below the margin of {neg_m}"),
        ]
    else:
        candidates = [
            lambda: _Candidate(
                "equivalent",
                lo < low2 and high2 < hi,
                stats.tost(a.z_t, a.z_b, lo, hi),
                max(perm(lo, "greater"), perm(hi, "less")),
                True,
                f"the {100 * (1 - 2 * alpha):g} % interval inside ±{m}",
            ),
            lambda: above("better", hi, f"the whole interval above the margin of {m}"),
            lambda: below("worse", lo, f"the whole interval below the margin of {neg_m}"),
        ]
    p_tost = stats.tost(a.z_t, a.z_b, lo, hi) if h is Hypothesis.EQUIVALENCE else None
    disagreements = []
    for make in candidates:
        c: _Candidate = make()
        perm_ok = c.perm_p < alpha and c.perm_side_ok
        tests = "TOST" if c.word == "equivalent" else "Welch"
        if c.welch_ok and perm_ok:
            equiv = c.word == "equivalent"
            interval = k.ci_2alpha_pct if equiv else k.ci_pct
            abs_interval = k.ci_2alpha if equiv else k.ci
            lvl = 1 - 2 * alpha if equiv else 1 - alpha
            reason = (
                f"{k.kpi} is {c.word}: {_effect(k, interval, abs_interval, lvl, relative)}, {c.where} "
                f"({tests} {_peq(c.welch_p)}, permutation {_peq(c.perm_p)} against "
                f"{'the margins' if equiv else 'that boundary'})"
            )
            return replace(k, word=c.word, reason=reason, p_tost=p_tost, disagreement=_join(disagreements))
        if c.welch_ok != perm_ok and c.perm_side_ok:
            says, not_says = (
                (tests, "the permutation test") if c.welch_ok else ("the permutation test", tests)
            )
            disagreements.append(
                f"{says} says {c.word!r} but {not_says} does not ({tests} {_peq(c.welch_p)}, permutation "
                f"{_peq(c.perm_p)}, α = {_g(alpha)}): the more conservative word is used"
            )
    mde = f"±{k.mde_pct:.1f} %" if k.mde_pct is not None else f"±{_g(k.mde)} {k.unit}"
    reason = (
        f"{k.kpi} is inconclusive: {_effect(k, k.ci_pct, k.ci, 1 - alpha, relative)}; with {k.n_trial} "
        f"trial and {k.n_baseline} baseline runs the trial could only have detected {mde} "
        f"(power {MDE_POWER:g})"
    )
    if disagreements:
        reason += "; " + disagreements[0]
    return replace(k, word="inconclusive", reason=reason, p_tost=p_tost, disagreement=_join(disagreements))


def holm(secondary: Sequence[KpiVerdict], alpha: float) -> list[KpiVerdict]:
    """Words for secondary KPIs: Welch and permutation p-values against no difference, each Holm-corrected
    over the judgeable ones (statsmodels multipletests, method "holm"); better or worse when both corrected
    p-values are below α, else inconclusive (with the MDE). Not judgeable ones keep their word."""
    judgeable = [i for i, k in enumerate(secondary) if k.p_welch is not None and k.p_permutation is not None]
    out = list(secondary)
    if not judgeable:
        return out
    pw = multipletests([secondary[i].p_welch for i in judgeable], alpha=alpha, method="holm")[1]
    pp = multipletests([secondary[i].p_permutation for i in judgeable], alpha=alpha, method="holm")[1]
    n = len(judgeable)
    for j, i in enumerate(judgeable):
        k = secondary[i]
        w_ok, p_ok = pw[j] < alpha, pp[j] < alpha
        better = (k.difference or 0) > 0
        ps = (
            f"Holm-corrected over {n} secondary KPI{'s' if n > 1 else ''}: Welch {_peq(pw[j])}, "
            f"permutation {_peq(pp[j])}"
        )
        effect = _effect(k, k.ci_pct, k.ci, k.ci_level, False)
        disagreement = None
        if w_ok and p_ok:
            word = "better" if better else "worse"
            reason = f"{k.kpi} is {word}: {effect} ({ps})"
        else:
            word = "inconclusive"
            mde = f"±{k.mde_pct:.1f} %" if k.mde_pct is not None else f"±{_g(k.mde)} {k.unit}"
            reason = f"{k.kpi} is inconclusive: {effect} ({ps}); the trial could only have detected {mde}"
            if w_ok != p_ok:
                disagreement = (
                    f"the {'Welch' if w_ok else 'permutation'} test finds a difference but the "
                    f"{'permutation' if w_ok else 'Welch'} test does not (Holm-corrected, α = {_g(alpha)})"
                )
                reason += f"; {disagreement}"
        out[i] = replace(
            k,
            word=word,
            reason=reason,
            p_welch_holm=float(pw[j]),
            p_permutation_holm=float(pp[j]),
            disagreement=disagreement,
        )
    return out


def _stability(primary: KpiVerdict) -> Stability:
    base = sorted((r for r in primary.runs if r.group == "baseline" and r.usable), key=lambda r: r.start)
    all_base = sorted(
        (r for r in primary.runs if r.group == "baseline" and r.excluded is None), key=lambda r: r.start
    )
    first = all_base[0].start if all_base else None
    last = all_base[-1].start if all_base else None
    chart = stats.individuals_chart(np.array([r.value for r in base], float)) if len(base) >= 2 else None
    return Stability(primary.kpi, tuple(r.run_id for r in base), chart, first, last)


def _warnings(
    charter: Charter,
    primary: KpiVerdict,
    secondary: Sequence[KpiVerdict],
    stability: Stability,
    exclusions: Sequence[Exclusion],
    trial: Sequence[RunRecord],
    baseline: Sequence[RunRecord],
    without: Verdict | None,
) -> list[str]:
    out: list[str] = []
    n_trial = sum(1 for r in trial if r.run_id not in {e.run_id for e in exclusions})
    if n_trial < charter.planned_runs:
        out.append(f"interim verdict: {n_trial} of {charter.planned_runs} planned trial runs")
    elif n_trial > charter.planned_runs:
        out.append(f"{n_trial} trial runs, more than the {charter.planned_runs} planned")
    if primary.n_trial >= 1 and primary.n_baseline >= 1:
        total = stats.relabellings(primary.n_trial, primary.n_baseline)
        floor = (1 if charter.hypothesis is Hypothesis.EQUIVALENCE else 2) / total
        if floor >= charter.alpha:
            out.append(
                f"with {primary.n_trial} trial and {primary.n_baseline} baseline runs the permutation "
                f"test cannot reach p < {_g(charter.alpha)} (its smallest p is {_g(floor)}, {total} "
                "relabellings): no word but inconclusive is possible"
            )
    out += stability.messages()
    for k in (primary, *secondary):
        if k.disagreement:
            out.append(f"{k.kpi}: {k.disagreement}")
    known = {r.run_id for r in (*trial, *baseline)}
    for e in exclusions:
        if e.run_id not in known:
            out.append(f"excluded run {e.run_id} is neither a trial nor a baseline run of this verdict")
    if exclusions and without is not None:
        n = len(exclusions)
        same = "the same" if without.word == primary.word else f"{without.word!r}"
        out.append(f"{n} run{'s' if n > 1 else ''} excluded; with every run the verdict is {same}")
    return out


# -- wording ------------------------------------------------------------------------------------------
def _g(v: float | None) -> str:
    """A number with 3 significant digits (and a real minus sign)."""
    if v is None:
        return "n/a"
    return f"{v:.3g}".replace("-", "−")


def _peq(p: float) -> str:
    """'p = 0.036' or 'p < 0.001'."""
    return f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"


def _pct(v: float) -> str:
    return f"{v:+.1f} %".replace("-", "−")


def _effect(
    k: KpiVerdict,
    pct: tuple[float, float] | None,
    absolute: tuple[float, float] | None,
    level: float,
    relative: bool,
) -> str:
    """'trial 0.27 vs baseline 0.31 g/g, −12.9 % (95 % CI −18.6 to −7.0 %)', the CI in % when relative."""
    unit = f" {k.unit}" if k.unit else ""
    means = f"trial {_g(k.mean_trial)} vs baseline {_g(k.mean_baseline)}{unit}"
    if k.direction == Direction.LOWER.value:
        means += " (lower is better, so + is better)"
    lvl = f"{100 * level:g} % CI"
    if pct is not None and k.difference_pct is not None and (relative or absolute is None):
        return f"{means}, {_pct(k.difference_pct)} ({lvl} {_pct(pct[0])} to {_pct(pct[1])})"
    assert absolute is not None
    d = f"{'+' if (k.difference or 0) >= 0 else ''}{_g(k.difference)}{unit}"
    tail = f", {_pct(k.difference_pct)}" if k.difference_pct is not None else ""
    return f"{means}, {d}{tail} ({lvl} {_g(absolute[0])} to {_g(absolute[1])}{unit})"


def _join(items: list[str]) -> str | None:
    return "; ".join(items) if items else None


# -- JSON ---------------------------------------------------------------------------------------------
def _num(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _pair(v: tuple[float, float] | None) -> list[float | None] | None:
    return None if v is None else [_num(v[0]), _num(v[1])]


def kpi_to_json(k: KpiVerdict) -> dict[str, Any]:
    """One KPI's verdict as JSON (the module docstring's KPI object)."""
    perm = k.permutation
    return {
        "kpi": k.kpi,
        "role": k.role,
        "unit": k.unit,
        "direction": k.direction,
        "word": k.word,
        "reason": k.reason,
        "n_trial": k.n_trial,
        "n_baseline": k.n_baseline,
        "mean_trial": _num(k.mean_trial),
        "mean_baseline": _num(k.mean_baseline),
        "sd_trial": _num(k.sd_trial),
        "sd_baseline": _num(k.sd_baseline),
        "difference": _num(k.difference),
        "difference_pct": _num(k.difference_pct),
        "ci": _pair(k.ci),
        "ci_pct": _pair(k.ci_pct),
        "ci_level": k.ci_level,
        "ci_2alpha": _pair(k.ci_2alpha),
        "ci_2alpha_pct": _pair(k.ci_2alpha_pct),
        "df_welch": _num(k.df_welch),
        "scale": k.scale,
        "pct_method": k.pct_method,
        "p_welch": _num(k.p_welch),
        "p_permutation": _num(k.p_permutation),
        "permutation": None
        if perm is None
        else {"method": perm.method, "count": perm.count, "seed": perm.seed},
        "p_tost": _num(k.p_tost),
        "p_welch_holm": _num(k.p_welch_holm),
        "p_permutation_holm": _num(k.p_permutation_holm),
        "hedges_g": _num(k.hedges_g),
        "hedges_g_ci": _pair(k.hedges_g_ci),
        "mde": _num(k.mde),
        "mde_pct": _num(k.mde_pct),
        "mde_power": MDE_POWER,
        "disagreement": k.disagreement,
        "unusable": [{"run": r.run_id, "problem": r.problem} for r in k.unusable],
        "excluded": [{"run": r.run_id, "reason": r.excluded} for r in k.excluded],
        "runs": [r.to_json() for r in k.runs],
    }


def stability_to_json(s: Stability) -> dict[str, Any]:
    c = s.chart
    ids = s.run_ids
    return {
        "kpi": s.kpi,
        "runs": list(ids),
        "values": list(c.values) if c else [],
        "centre": _num(c.centre) if c else None,
        "mr_bar": _num(c.mr_bar) if c else None,
        "lower": _num(c.lower) if c else None,
        "upper": _num(c.upper) if c else None,
        "mr_upper": _num(c.mr_upper) if c else None,
        "outside": [ids[i] for i in c.outside] if c else [],
        "trend": [ids[i] for i in c.trend] if c else [],
        "stable": s.stable,
        "first_start": s.first_start.isoformat() if s.first_start else None,
        "last_start": s.last_start.isoformat() if s.last_start else None,
        "span_days": _num(s.span_days),
    }


def verdict_to_json(v: Verdict) -> dict[str, Any]:
    """The verdict as the stable JSON of `biopilot verdict --json` (schema in the module docstring)."""
    c = v.charter
    w = v.without_exclusions
    return {
        "format": FORMAT,
        "word": v.word,
        "reason": v.reason,
        "charter_version": v.charter_version,
        "charter_sha256": v.charter_sha256,
        "charter_changed_after_start": v.charter_changed_after_start,
        "title": c.title,
        "hypothesis": c.hypothesis.value,
        "margin": c.margin,
        "margin_unit": c.margin_unit,
        "alpha": c.alpha,
        "planned_runs": c.planned_runs,
        "min_coverage": c.min_coverage,
        "primary": kpi_to_json(v.primary),
        "secondary": [kpi_to_json(k) for k in v.secondary],
        "baseline_stability": stability_to_json(v.stability),
        "exclusions": [e.to_json() for e in v.exclusions],
        "without_exclusions": None
        if w is None
        else {
            "word": w.word,
            "reason": w.reason,
            "primary": kpi_to_json(w.primary),
            "secondary": [kpi_to_json(k) for k in w.secondary],
        },
        "money": money_to_json(v.money) if v.money is not None else None,
        "warnings": list(v.warnings),
    }


def hide_runs(doc: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A verdict JSON without the runs a viewer may not see (`names`: run id -> "baseline run K" / "trial
    run K"): every per-run list loses their entries (the KPIs' and the money's "runs"); when a baseline run
    is among them, the stability chart keeps its centre, limits, findings and dates but not the runs'
    values; every such run id is replaced by its name — in the lists and in the sentences, where a run's
    value in brackets after it is dropped too. For a startup or a partner: the baseline as aggregates."""

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            out = {}
            for key, value in x.items():
                if key == "runs" and isinstance(value, list) and value and isinstance(value[0], dict):
                    value = [r for r in value if r.get("run") not in names]
                out[key] = walk(value)
            return out
        if isinstance(x, list):
            return [walk(i) for i in x]
        if isinstance(x, str):
            return _rename(x)
        return x

    ids = sorted(names, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(i) for i in ids)) if ids else None

    def _rename(text: str) -> str:
        if pattern is None:
            return text
        renamed = pattern.sub(lambda m: names[m.group(0)], text)
        return re.sub(r"((?:baseline|trial) run \d+) \([^)]*\)", r"\1", renamed)

    stability = dict(doc.get("baseline_stability") or {})
    if stability and any(r in names for r in stability.get("runs", [])):
        stability["values"] = []
        stability["runs"] = []
    return walk({**doc, "baseline_stability": stability})  # type: ignore[no-any-return]
