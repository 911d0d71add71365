"""processing/offgas.py: the inert balance on a hand-computed case and the simulator's exact inverse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processing import offgas


def test_our_cer_hand_computed() -> None:
    # 100 mol/h of air (y_O2 0.2095, y_CO2 0.0004) into 1000 L; out y_O2 = 0.19, y_CO2 = 0.02.
    # inert in = 1 − 0.2095 − 0.0004 = 0.7901; out = 1 − 0.19 − 0.02 = 0.79; ratio = 1.000126582
    # OUR = 100 · (0.2095 − 0.19 · 1.000126582) / 1000 = 1.947595e-3 mol/L/h
    # CER = 100 · (0.02 · 1.000126582 − 0.0004) / 1000 = 1.960253e-3 mol/L/h; RQ = 1.006499
    our, cer = offgas.our_cer(np.array([100.0]), np.array([0.19]), np.array([0.02]), np.array([1000.0]))
    assert our[0] == pytest.approx(1.947595e-3, rel=1e-6)
    assert cer[0] == pytest.approx(1.960253e-3, rel=1e-6)
    assert offgas.respiratory_quotient(our, cer)[0] == pytest.approx(1.006499, rel=1e-6)


def test_our_cer_inverts_the_outlet_composition_exactly() -> None:
    # Build the outlet from a known OUR/CER by mole counts (as a mass balance, independent of the formula):
    # 800 NL/min air = 800·60/22.414 = 2141.51 mol/h; OUR 0.05 mol/L/h, CER 0.055 in 700 L.
    n_in = 800 * 60 / 22.414
    o2 = n_in * 0.2095 - 0.05 * 700
    co2 = n_in * 0.0004 + 0.055 * 700
    inert = n_in * (1 - 0.2095 - 0.0004)
    total = o2 + co2 + inert
    gas = offgas.gas_flow_mol_per_h(np.array([800.0]), 22.414)
    assert gas[0] == pytest.approx(n_in)
    our, cer = offgas.our_cer(gas, np.array([o2 / total]), np.array([co2 / total]), np.array([700.0]))
    assert our[0] == pytest.approx(0.05, rel=1e-12)
    assert cer[0] == pytest.approx(0.055, rel=1e-12)


def test_no_volume_or_nan_gives_nan_not_a_crash() -> None:
    our, cer = offgas.our_cer(
        np.array([100.0, 100.0, np.nan]),
        np.array([0.2, 0.2, 0.2]),
        np.array([0.01] * 3),
        np.array([0.0, -5.0, 100.0]),
    )
    assert np.all(np.isnan(our)) and np.all(np.isnan(cer))


def test_rq_is_undefined_without_respiration() -> None:
    rq = offgas.respiratory_quotient(np.array([0.0, 0.01]), np.array([0.0, 0.0103]))
    assert math.isnan(rq[0])
    assert rq[1] == pytest.approx(1.03)


def test_cumulative_mol_and_rate_weighted_rq() -> None:
    # OUR 0.02 mol/L/h in 500 L for 4 h: 40 mol O2; CER 0.021 → 42 mol CO2; RQ = 42/40 = 1.05
    t = np.linspace(0, 4, 9)
    o2 = offgas.cumulative_mol(t, np.full(9, 0.02), np.full(9, 500.0))
    co2 = offgas.cumulative_mol(t, np.full(9, 0.021), np.full(9, 500.0))
    assert o2.value == pytest.approx(40.0)
    assert co2.value == pytest.approx(42.0)
    assert offgas.rate_weighted_rq(o2.value, co2.value) == pytest.approx(1.05)
    assert math.isnan(offgas.rate_weighted_rq(0.0, 1.0))


def test_cumulative_does_not_bridge_nan() -> None:
    # hourly 0..3 h, 1 mol/L/h in 1 L, NaN at 1 h: only [2,3] counts → 1 mol
    r = offgas.cumulative_mol(np.arange(4.0), np.array([1.0, np.nan, 1.0, 1.0]), np.ones(4), max_gap_h=2.0)
    assert r.value == pytest.approx(1.0)
    assert r.covered_h == pytest.approx(1.0)


def test_carbon_balance_closure() -> None:
    # biomass 246 g = 10 C-mol = 120.11 g C
    assert offgas.biomass_carbon_g(246.0) == pytest.approx(120.11)
    # 400 g C in, 120.11 + 100 + 170 g C out = 390.11 → 0.975275
    assert offgas.carbon_balance_closure(400.0, 390.11) == pytest.approx(0.975275)
    assert math.isnan(offgas.carbon_balance_closure(0.0, 1.0))
