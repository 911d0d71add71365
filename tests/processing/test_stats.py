"""processing/stats.py against published and hand-computed values; each test names its source."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from processing import stats

# kpis.md, "Comparing a trial with the baseline", worked check
BASELINE = np.array([0.30, 0.32, 0.31, 0.29, 0.33])
TRIAL = np.array([0.27, 0.28, 0.26])

# The "clinic" data of R's equivalence package (Robinson), as recorded in statsmodels'
# stats/tests/test_tost.py: columns id, group, var1..var5; rows 1-15 group 1, rows 16-30 group 2.
CLINIC_VAR1 = (
    [2.84, 2.51, 2.41, 2.95, 3.14, 3.79, 4.14, 3.85, 3.02, 3.45, 5.37, 3.81, 4.19, 3.16, 3.84],
    [2.60, 2.82, 2.18, 3.46, 4.01, 3.04, 3.47, 4.06, 2.91, 3.59, 4.51, 3.16, 3.86, 3.31, 3.02],
)
CLINIC_VAR2 = (
    [4.00, 3.26, 4.14, 3.42, 3.25, 4.34, 4.97, 4.31, 3.11, 3.41, 5.02, 4.21, 4.59, 5.30, 4.32],
    [3.76, 3.66, 3.65, 3.60, 3.48, 2.87, 3.24, 3.92, 3.99, 4.21, 4.21, 3.31, 3.61, 2.97, 2.73],
)


def _sample(mean: float, sd: float, n: int, seed: int) -> np.ndarray:
    """n values with exactly this mean and sample SD (a standardized random draw, rescaled)."""
    z = np.random.default_rng(seed).standard_normal(n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


# -- Welch ----------------------------------------------------------------------------------------------
def test_welch_matches_the_nist_handbook_example() -> None:
    """NIST/SEMATECH e-Handbook of Statistical Methods, §1.3.5.3 (two-sample t-test, AUTO83B.DAT: US cars
    n = 249, mean 20.14458, SD 6.41470; Japanese cars n = 79, mean 30.48101, SD 6.10771): without equal
    variances T = −12.94627 with ν = 136.8750 degrees of freedom."""
    us, jp = _sample(20.14458, 6.41470, 249, 1), _sample(30.48101, 6.10771, 79, 2)
    w = stats.welch(us, jp, 0.95)
    assert w.t == pytest.approx(-12.94627, abs=5e-5)
    assert w.df == pytest.approx(136.8750, abs=5e-4)
    # the interval by hand: d ± t(0.975, ν)·√(s1²/n1 + s2²/n2)
    se = math.sqrt(6.41470**2 / 249 + 6.10771**2 / 79)
    half = sps.t.ppf(0.975, 136.8750) * se
    d = 20.14458 - 30.48101
    assert w.ci == pytest.approx((d - half, d + half), abs=1e-4)


def test_welch_on_the_worked_check() -> None:
    """kpis.md worked check: difference −0.04; the interval and df by hand from the Welch formulas
    (s_T² = 1e-4, s_B² = 2.5e-4: se² = 1e-4/3 + 2.5e-4/5, ν = se⁴ / ((1e-4/3)²/2 + (2.5e-4/5)²/4))."""
    w = stats.welch(TRIAL, BASELINE, 0.95)
    assert w.difference == pytest.approx(-0.04)
    a, b = 1e-4 / 3, 2.5e-4 / 5
    df = (a + b) ** 2 / (a * a / 2 + b * b / 4)
    assert w.df == pytest.approx(df) and df == pytest.approx(5.882353, rel=1e-6)
    half = sps.t.ppf(0.975, df) * math.sqrt(a + b)
    assert w.ci == pytest.approx((-0.04 - half, -0.04 + half))
    assert w.ci[1] < 0  # the whole interval below 0: "worse" for a superiority charter


def test_welch_against_a_null_at_the_interval_bound_has_p_alpha() -> None:
    """Duality of test and interval (hand-derived): testing the difference against the lower bound of the
    95 % interval gives p = 0.05 exactly."""
    w = stats.welch(TRIAL, BASELINE, 0.95)
    assert stats.welch(TRIAL, BASELINE, 0.95, null=w.ci[0]).p == pytest.approx(0.05)
    assert stats.welch(TRIAL, BASELINE, 0.95, null=w.ci[0]).ci == pytest.approx(w.ci)


# -- permutation --------------------------------------------------------------------------------------
def test_permutation_is_exact_on_the_worked_check() -> None:
    """kpis.md worked check: all C(8, 3) = 56 relabellings; the observed split is the most extreme of
    them (trial = the three smallest yields), so p = 2/56 two-sided."""
    p = stats.permutation_test(TRIAL, BASELINE)
    assert (p.method, p.count, p.seed) == ("exact", 56, None)
    assert p.p == pytest.approx(2 / 56)


def _enumerated(x: np.ndarray, y: np.ndarray, null: float = 0.0) -> tuple[float, float]:
    """One-sided permutation p-values (greater, less) by listing every relabelling (the definition)."""
    pooled = np.concatenate([x - null, y])
    observed = np.mean(x - null) - np.mean(y)
    n = len(pooled)
    greater = less = 0
    combos = list(itertools.combinations(range(n), len(x)))
    for idx in combos:
        mask = np.zeros(n, bool)
        mask[list(idx)] = True
        d = pooled[mask].mean() - pooled[~mask].mean()
        greater += d >= observed - 1e-12
        less += d <= observed + 1e-12
    return greater / len(combos), less / len(combos)


def test_permutation_matches_enumeration_with_a_null_shift() -> None:
    """Hand enumeration of the 165 relabellings of 3 vs 8 runs, against a shifted null (shift model)."""
    x = np.array([1.12, 1.31, 1.27])
    y = np.array([1.02, 1.10, 0.97, 1.15, 1.05, 1.21, 0.99, 1.08])
    for null in (0.0, 0.05, 0.2):
        g, le = _enumerated(x, y, null)
        assert stats.permutation_test(x, y, null=null, alternative="greater").p == pytest.approx(g)
        assert stats.permutation_test(x, y, null=null, alternative="less").p == pytest.approx(le)
        assert stats.permutation_test(x, y, null=null).p == pytest.approx(min(1.0, 2 * min(g, le)))


def test_permutation_goes_monte_carlo_beyond_100000_relabellings() -> None:
    """10 vs 10 runs: C(20, 10) = 184 756 > 100 000 relabellings, so a seeded Monte Carlo of 99 999 draws;
    its p is within 4 binomial SDs of the exact p (enumerated here with numpy), and repeatable."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(0.5, 1, 10), rng.normal(0, 1, 10)
    p = stats.permutation_test(x, y, seed=7)
    assert (p.method, p.count, p.seed) == ("monte_carlo", 99_999, 7)
    assert stats.relabellings(10, 10) == 184_756
    pooled = np.concatenate([x, y])
    idx = np.array(list(itertools.combinations(range(20), 10)))
    mask = np.zeros((len(idx), 20), bool)
    np.put_along_axis(mask, idx, True, axis=1)
    sums = (mask * pooled).sum(axis=1)
    diffs = sums / 10 - (pooled.sum() - sums) / 10
    obs = x.mean() - y.mean()
    exact = min(1.0, 2 * min(np.mean(diffs >= obs - 1e-12), np.mean(diffs <= obs + 1e-12)))
    assert abs(p.p - exact) < 4 * math.sqrt(exact * (1 - exact) / 99_999) * 2 + 1e-5
    assert stats.permutation_test(x, y, seed=7).p == p.p
    assert 0 < p.p <= 1


# -- TOST -----------------------------------------------------------------------------------------------
def test_tost_matches_r_equivalence_on_the_clinic_data() -> None:
    """R package equivalence, tost(clinic$var1[1:15], clinic$var1[16:30], eps = 0.6) (Welch): difference
    0.1646667, 90 % interval (−0.2666863, 0.5960196), df 26.74848, p = 0.04853084 ("rejected": equivalent
    at α 0.05); for var2: interval (0.1949163, 0.9304171), p = 0.4317937 (values recorded in statsmodels'
    stats/tests/test_tost.py)."""
    x, y = map(np.array, CLINIC_VAR1)
    assert stats.tost(x, y, -0.6, 0.6) == pytest.approx(0.04853083976236974, rel=1e-9)
    w = stats.welch(x, y, 0.90)
    assert w.difference == pytest.approx(0.1646666666666667)
    assert w.ci == pytest.approx((-0.2666862980722534, 0.596019631405587), rel=1e-9)
    assert w.df == pytest.approx(26.7484787582315, rel=1e-9)
    x2, y2 = map(np.array, CLINIC_VAR2)
    assert stats.tost(x2, y2, -0.6, 0.6) == pytest.approx(0.4317936812594803, rel=1e-9)
    assert stats.welch(x2, y2, 0.90).ci == pytest.approx((0.194916250699966, 0.930417082633366), rel=1e-9)


def test_tost_on_logs_matches_r_equivalence() -> None:
    """R: tost(log(clinic$var1[1:15]), log(clinic$var1[16:30]), eps = log(1.25)): p = 0.01047086, 90 %
    interval (−0.08198519, 0.1682299). A relative margin of 25 % on the log scale has the lower bound
    ln(0.75), farther out than −ln(1.25), so the binding (upper) test and the p-value are the same."""
    x, y = np.log(CLINIC_VAR1[0]), np.log(CLINIC_VAR1[1])
    assert stats.tost(x, y, -math.log(1.25), math.log(1.25)) == pytest.approx(0.01047085593138891, rel=1e-9)
    assert stats.tost(x, y, math.log(0.75), math.log(1.25)) == pytest.approx(0.01047085593138891, rel=1e-9)
    assert stats.welch(x, y, 0.90).ci == pytest.approx((-0.0819851930203655, 0.1682298566654122), rel=1e-9)


# -- Hedges' g ------------------------------------------------------------------------------------------
def test_hedges_g_matches_borenstein() -> None:
    """Borenstein, Hedges, Higgins & Rothstein (2009), Introduction to Meta-Analysis, ch. 4 worked example:
    means 103 and 100, SDs 5.5 and 4.5, 50 per group: d = 0.5970, J = 0.9923, g = 0.5924. The variance is
    statsmodels' N/(n1·n2) + g²/(2(N − 3.94)), computed here by hand (Borenstein's J²·V_d gives 0.0411)."""
    e = stats.hedges_g_summary(103, 5.5, 50, 100, 4.5, 50, 0.95)
    assert e.g == pytest.approx(0.5924, abs=5e-5)
    var = 100 / 2500 + e.g**2 / (2 * (100 - 3.94))
    assert e.variance == pytest.approx(var)
    assert e.ci == pytest.approx((e.g - 1.959964 * math.sqrt(var), e.g + 1.959964 * math.sqrt(var)), rel=1e-6)
    same = stats.hedges_g(_sample(103, 5.5, 50, 3), _sample(100, 4.5, 50, 4), 0.95)
    assert same.g == pytest.approx(e.g)


def test_hedges_g_on_the_worked_check() -> None:
    """By hand: pooled SD √((2·1e-4 + 4·2.5e-4)/6) = 0.0141421, d = −0.04/0.0141421 = −2.828427,
    J = 1 − 3/(4·8 − 9) = 0.869565, g = −2.459502."""
    e = stats.hedges_g(TRIAL, BASELINE, 0.95)
    assert stats.pooled_sd(TRIAL, BASELINE) == pytest.approx(math.sqrt(1.2e-3 / 6))
    assert e.g == pytest.approx(-0.04 / math.sqrt(1.2e-3 / 6) * (1 - 3 / 23))


# -- power and the minimum detectable effect ------------------------------------------------------------
def test_power_matches_cohens_table() -> None:
    """Cohen (1988), Statistical Power Analysis for the Behavioral Sciences, Table 2.4.1 (two-tailed
    α = .05): d = 0.80 needs n = 26 per group for power .80 (25 is not enough). With equal groups the
    Welch df of equal variances is the pooled df, 2(n − 1)."""
    assert stats.welch_df_equal_variances(26, 26) == pytest.approx(50)
    assert stats.design_power(0.8, 26, 26, 0.05) >= 0.80 > stats.design_power(0.8, 25, 25, 0.05)
    assert stats.minimum_detectable_effect(26, 26, 0.05) == pytest.approx(0.7923, abs=1e-4)


def test_mde_of_three_against_eight_by_the_noncentral_t() -> None:
    """By hand for 3 trial vs 8 baseline runs: Welch df of equal variances (1/3 + 1/8)² / ((1/3)²/2 +
    (1/8)²/7) = 3.635; power = P(|T'| > t(0.975, df)), T' ~ noncentral t(df, d/√(1/3 + 1/8)), equal to
    0.8 at the MDE."""
    df = (1 / 3 + 1 / 8) ** 2 / ((1 / 3) ** 2 / 2 + (1 / 8) ** 2 / 7)
    assert stats.welch_df_equal_variances(3, 8) == pytest.approx(df) and df == pytest.approx(
        3.635193, rel=1e-6
    )
    d = stats.minimum_detectable_effect(3, 8, 0.05)
    nc = d / math.sqrt(1 / 3 + 1 / 8)
    crit = sps.t.ppf(0.975, df)
    power = sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc)
    assert power == pytest.approx(0.8, abs=1e-6)
    assert (
        2.5 < d < 2.8
    )  # "with 3 vs 10 runs that is about 2 standard deviations" (pooled t); Welch needs more


# -- individuals chart ----------------------------------------------------------------------------------
def test_individuals_chart_by_hand() -> None:
    """10, 12, 11, 13, 9: x̄ = 11, moving ranges 2, 1, 2, 4, MR̄ = 2.25, limits 11 ∓ 2.66·2.25 = 5.015 and
    16.985, moving-range limit 3.268·2.25 = 7.353; nothing outside, no trend."""
    c = stats.individuals_chart(np.array([10, 12, 11, 13, 9.0]))
    assert (c.centre, c.mr_bar) == (11, 2.25)
    assert (c.lower, c.upper) == pytest.approx((5.015, 16.985))
    assert c.mr_upper == pytest.approx(7.353)
    assert c.stable and c.outside == () and c.trend == ()


def test_individuals_chart_flags_a_point_outside() -> None:
    """10, 11, 10, 11, 10, 11, 10, 20: x̄ = 11.625, MR̄ = (6·1 + 10)/7 = 2.2857, upper limit 17.705: the
    20 is outside."""
    c = stats.individuals_chart(np.array([10, 11, 10, 11, 10, 11, 10, 20.0]))
    assert c.upper == pytest.approx(11.625 + 2.66 * 16 / 7)
    assert c.outside == (7,) and not c.stable


def test_individuals_chart_flags_six_in_a_row() -> None:
    """Nelson's rule 3: six points steadily increasing (five rises) are a trend, five points are not; a tie
    breaks the run."""
    assert stats.individuals_chart(np.array([5, 1, 2, 3, 4, 5, 6.0])).trend == (1, 2, 3, 4, 5, 6)
    assert stats.individuals_chart(np.array([1, 2, 3, 4, 5.0])).trend == ()
    assert stats.individuals_chart(np.array([6, 5, 4, 3, 2, 1.0])).trend == (0, 1, 2, 3, 4, 5)
    assert stats.individuals_chart(np.array([1, 2, 3, 3, 4, 5, 6.0])).trend == ()
