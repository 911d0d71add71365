"""processing/plausibility.py: the stoichiometric maxima of yields and the share of negative readings,
against values worked out by hand from the formulas (elemental compositions per C-mol: glucose CH2O
30.026 g/C-mol, γ = 4; biomass CH1.8O0.5N0.2 24.6 g/C-mol, γ = 4 + 1.8 − 2·0.5 − 3·0.2 = 4.2)."""

from __future__ import annotations

import numpy as np
import pytest

from processing import plausibility as pl


def test_biomass_yield_maximum_from_the_degree_of_reduction() -> None:
    # glucose: electrons bind (4 < 4.2): 4/4.2 · 24.6/30.026 = 0.95238 · 0.81929 = 0.78028 g/g
    assert pl.max_biomass_yield_g_per_g(pl.SUBSTRATES["glucose"]) == pytest.approx(0.78028, rel=1e-4)
    # methanol: γ 6 > 4.2, carbon binds: 1 C-mol/C-mol · 24.6/32.042 = 0.76774 g/g
    assert pl.max_biomass_yield_g_per_g(pl.SUBSTRATES["methanol"]) == pytest.approx(0.76774, rel=1e-4)
    # glycerol: γ 4.667 > 4.2: carbon binds, 24.6/30.697 = 0.80138 g/g
    assert pl.max_biomass_yield_g_per_g(pl.SUBSTRATES["glycerol"]) == pytest.approx(0.80138, rel=1e-4)


def test_product_yield_maximum_from_carbon() -> None:
    assert pl.carbon_bound_yield_g_per_g(0.4, 0.5) == pytest.approx(
        0.8
    )  # glucose → BioPilot's default product
    # penicillin G C16H18N2O4S (334.4 g/mol, 16 · 12.011 = 192.18 g C → 0.5747 g C/g): 0.4 / 0.5747 = 0.696
    assert pl.carbon_bound_yield_g_per_g(0.4, 192.18 / 334.4) == pytest.approx(0.696, rel=1e-3)


def test_limits_take_the_config_first_then_the_balances() -> None:
    lim = pl.yield_limits("glucose", 0.4, 0.5)
    assert (lim.biomass, lim.biomass_basis) == (pytest.approx(0.78028, rel=1e-4), "elemental_balance")
    assert (lim.product, lim.product_basis) == (pytest.approx(0.8), "carbon_balance")
    # an unknown substrate (a plant oil at 0.77 g C/g): carbon bounds biomass, 0.77 / (12.011/24.6) = 1.577
    oil = pl.yield_limits("soybean oil", 0.77, 0.5)
    assert (oil.biomass, oil.biomass_basis) == (pytest.approx(0.77 * 24.6 / 12.011), "carbon_balance")
    configured = pl.yield_limits("glucose", 0.4, 0.5, max_biomass=0.6, max_product=0.3)
    assert (configured.biomass, configured.product, configured.product_basis) == (0.6, 0.3, "config")


def test_negative_share_counts_usable_samples_only() -> None:
    values = np.array([5.0, -2.0, 0.0, -1.0, -9.0, np.nan])
    status = np.array([0, 0, 0, 0, 0x80000000, 0])  # −9 is bad, NaN unusable: 2 of 4 usable are negative
    assert pl.negative_share(values, status) == 0.5
    assert pl.negative_share(np.array([]), np.array([], dtype=np.int64)) == 0.0
    assert [pl.percent(x) for x in (0.12, 0.004, 0.0, 1.0)] == ["12%", "<1%", "0%", "100%"]
