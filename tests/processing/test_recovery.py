"""processing/recovery.py: hand-computed recovery yields, purity and closures."""

from __future__ import annotations

import math

import pytest

from processing import recovery


def test_step_and_overall_yield() -> None:
    # 1000 g in, 950 g out: 0.95; three steps 0.95 · 0.90 · 0.80 = 0.684
    assert recovery.step_yield(1000.0, 950.0) == pytest.approx(0.95)
    assert recovery.overall_yield([0.95, 0.90, 0.80]) == pytest.approx(0.684)
    assert math.isnan(recovery.step_yield(0.0, 5.0))
    assert math.isnan(recovery.overall_yield([]))
    assert math.isnan(recovery.overall_yield([0.9, math.nan]))


def test_overall_yield_check_against_first_in_and_last_out() -> None:
    # Steps 1000 → 950 → 855: Π = 0.95 · 0.9 = 0.855 = 855 / 1000: consistent
    ok = recovery.check_overall_yield([0.95, 0.9], 1000.0, 855.0)
    assert ok.product_of_steps == pytest.approx(0.855)
    assert ok.direct == pytest.approx(0.855)
    assert ok.consistent
    # 800 g came out instead (product lost between the steps): direct 0.8, |0.855 − 0.8| / 0.8 = 6.9 %
    bad = recovery.check_overall_yield([0.95, 0.9], 1000.0, 800.0)
    assert bad.relative_difference == pytest.approx(0.06875)
    assert not bad.consistent


def test_purity_and_purification_factor() -> None:
    # 45 g target in 60 g total: 0.75; from 0.3 to 0.75: factor 2.5
    assert recovery.purity(45.0, 60.0) == pytest.approx(0.75)
    assert recovery.purification_factor(0.3, 0.75) == pytest.approx(2.5)
    assert math.isnan(recovery.purity(1.0, 0.0))


def test_concentration_factor() -> None:
    # 1000 L fed, 50 L retentate: 20×
    assert recovery.concentration_factor(1000.0, 50.0) == pytest.approx(20.0)
    assert math.isnan(recovery.concentration_factor(1000.0, 0.0))


def test_mass_balance_closure_and_its_range() -> None:
    # 100 g in; 93 g product stream + 4 g waste = 0.97 (inside 0.95–1.05); 93 g alone = 0.93 (outside)
    c = recovery.mass_balance_closure(100.0, [93.0, 4.0])
    assert c == pytest.approx(0.97)
    assert recovery.closure_ok(c)
    assert not recovery.closure_ok(recovery.mass_balance_closure(100.0, [93.0]))
    assert recovery.closure_ok(1.05) and not recovery.closure_ok(1.0501)
    assert not recovery.closure_ok(math.nan)
    assert math.isnan(recovery.mass_balance_closure(0.0, [1.0]))


def test_product_from_a_totalizer_and_the_flow_weighted_concentration() -> None:
    # 1000 L totalized; the sampled flow gives ∫F·C = 4750 g over ∫F = 990 L → C̄ = 4.79798 g/L → 4797.98 g
    assert recovery.product_from_totalizer_g(1000.0, 4750.0, 990.0) == pytest.approx(4797.9798, rel=1e-7)
    # a short pulse read too coarsely: the trapezoid says 300 L at 10 g/L = 3000 g, the totalizer 250 L;
    # the concentration is constant, so the product is 250 · 10 = 2500 g exactly
    assert recovery.product_from_totalizer_g(250.0, 3000.0, 300.0) == pytest.approx(2500.0)
    assert recovery.product_from_totalizer_g(0.0, 0.0, 0.0) == 0.0  # nothing flowed
    assert math.isnan(recovery.product_from_totalizer_g(10.0, 0.0, 0.0))  # the flow signal saw nothing
    assert math.isnan(recovery.product_from_totalizer_g(math.nan, 1.0, 1.0))
