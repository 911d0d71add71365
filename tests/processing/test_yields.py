"""processing/yields.py: fed-batch mass accounting on hand-computed cases (arithmetic in each comment)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD
from processing import yields


def test_substrate_fed_is_flow_times_concentration() -> None:
    # 2 L/h for 5 h of a 500 g/L feed: 2 · 5 · 500 = 5000 g.
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    r = yields.substrate_fed_g(t, np.full(6, 2.0), np.zeros(6, np.int64), 500.0)
    assert r.value == pytest.approx(5000.0)
    assert r.coverage == pytest.approx(1.0)


def test_substrate_fed_does_not_bridge_a_bad_sample() -> None:
    # Hourly 0..4 h at 1 L/h of 400 g/L; the sample at 2 h is bad: [1,2] and [2,3] are lost,
    # fed = 2 h · 1 L/h · 400 g/L = 800 g; coverage 2/4.
    t = np.arange(5.0)
    status = np.array([GOOD, GOOD, BAD_SENSOR_FAILURE, GOOD, GOOD])
    r = yields.substrate_fed_g(t, np.ones(5), status, 400.0, max_gap_h=2.0)
    assert r.value == pytest.approx(800.0)
    assert r.coverage == pytest.approx(0.5)


def test_product_formed_counts_samples_and_discharges() -> None:
    # 800 L at 5 g/L = 4000 g; samples 0.1 L at 2 g/L and 0.1 L at 4 g/L = 0.6 g; 50 g discharged → 4050.6 g
    m = yields.product_formed_g(800.0, 5.0, np.array([0.1, 0.1]), np.array([2.0, 4.0]), 50.0)
    assert m == pytest.approx(4050.6)
    assert yields.product_formed_g(800.0, 5.0) == pytest.approx(4000.0)  # nothing removed


def test_discharged_product_uses_the_concentration_at_each_time() -> None:
    # 10 L/h out from 0 to 2 h; P = 1 g/L at 0 h rising linearly to 3 g/L at 2 h (lab values).
    # ∫ 10 · (1 + t) dt over [0, 2] = 10 · (2 + 2) = 40 g; the trapezoid is exact for a line.
    t = np.array([0.0, 1.0, 2.0])
    r = yields.discharged_g(
        t, np.full(3, 10.0), np.zeros(3, np.int64), np.array([0.0, 2.0]), np.array([1.0, 3.0])
    )
    assert r.value == pytest.approx(40.0)


def test_discharge_without_any_concentration_is_unknown_unless_nothing_left() -> None:
    t = np.array([0.0, 1.0])
    none = np.array([])
    assert math.isnan(yields.discharged_g(t, np.full(2, 5.0), np.zeros(2, np.int64), none, none).value)
    assert yields.discharged_g(t, np.zeros(2), np.zeros(2, np.int64), none, none).value == 0.0


def test_substrate_consumed_balance() -> None:
    # V0·S0 = 600 L · 20 g/L = 12000 g; fed 60000 g; left 900 L · 0.5 g/L = 450 g; removed 50 g
    # consumed = 12000 + 60000 − 450 − 50 = 71500 g
    assert yields.substrate_consumed_g(600.0, 20.0, 60000.0, 900.0, 0.5, 50.0) == pytest.approx(71500.0)


def test_ratio_is_undefined_on_nothing() -> None:
    assert yields.ratio(10.0, 40.0) == pytest.approx(0.25)
    assert math.isnan(yields.ratio(10.0, 0.0))
    assert math.isnan(yields.ratio(10.0, -1.0))
    assert math.isnan(yields.ratio(math.nan, 1.0))


def test_mean_volume_and_productivity() -> None:
    # V = 600 L at 0 h rising linearly to 900 L at 10 h: mean 750 L. 4500 g in 10 h → 4500 / (750 · 10) = 0.6
    t = np.linspace(0.0, 10.0, 11)
    v = 600.0 + 30.0 * t
    v_mean = yields.mean_volume_l(t, v, np.zeros(11, np.int64))
    assert v_mean == pytest.approx(750.0)
    assert yields.volumetric_productivity_g_per_l_h(4500.0, v_mean, 10.0) == pytest.approx(0.6)
    assert math.isnan(yields.volumetric_productivity_g_per_l_h(4500.0, v_mean, 0.0))


def test_max_specific_growth_rate_on_total_biomass() -> None:
    # 10 g → 20 g in 2 h: ln 2 / 2 = 0.34657; 20 g → 30 g in 1 h: ln 1.5 = 0.405465 → μmax = 0.405465 1/h
    mu = yields.max_specific_growth_rate_per_h(np.array([0.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]))
    assert mu == pytest.approx(math.log(1.5))
    # pairs closer than min_interval_h are skipped: only the 2 h pair remains
    mu = yields.max_specific_growth_rate_per_h(
        np.array([0.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]), min_interval_h=1.5
    )
    assert mu == pytest.approx(math.log(2) / 2)
    assert math.isnan(yields.max_specific_growth_rate_per_h(np.array([1.0]), np.array([5.0])))
    assert math.isnan(yields.max_specific_growth_rate_per_h(np.array([]), np.array([])))


def test_dilution_does_not_bias_growth_rate() -> None:
    # Concentration constant at 10 g/L while the volume doubles from 100 to 200 L in 1 h: the cells grew,
    # μ = ln(2000 / 1000) / 1 = 0.6931 1/h, though X alone says 0.
    t_lab = np.array([0.0, 1.0])
    m = yields.total_mass_at(
        t_lab, np.array([10.0, 10.0]), np.array([0.0, 1.0]), np.array([100.0, 200.0]), np.zeros(2, np.int64)
    )
    assert list(m) == [1000.0, 2000.0]
    assert yields.max_specific_growth_rate_per_h(t_lab, m) == pytest.approx(math.log(2))


def test_titer_is_the_last_value_up_to_harvest() -> None:
    t = np.array([1.0, 5.0, 9.0])
    p = np.array([0.5, 3.0, 4.0])
    assert yields.titer_g_per_l(t, p, 8.0) == 3.0
    assert yields.titer_g_per_l(t, p, 9.0) == 4.0
    assert math.isnan(yields.titer_g_per_l(t, p, 0.5))
    assert math.isnan(yields.titer_g_per_l(np.array([]), np.array([]), 10.0))


def test_biomass_formed_counts_samples_and_discharges_net_of_the_inoculum() -> None:
    # 800 L at 40 g/L, one 0.1 L sample at 20 g/L, 100 g discharged, 500 L at 1 g/L at inoculation:
    # 32 000 + 2 + 100 − 500 = 31 602 g
    formed = yields.biomass_formed_g(800.0, 40.0, 500.0, 1.0, np.array([0.1]), np.array([20.0]), 100.0)
    assert formed == pytest.approx(31602.0)
    assert yields.biomass_formed_g(800.0, 40.0, 500.0, 1.0) == pytest.approx(31500.0)
