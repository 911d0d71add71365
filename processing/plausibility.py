"""Plausibility of KPI inputs and results (pure): negative readings, stoichiometric maxima of yields.

A KPI that cannot be true is not presented as a result (processing.kpis turns it into value null with
an `implausible:<reason>` flag). Two physical bounds are checked here:

- **Negative readings** of quantities that cannot be negative (flows, volumes, concentrations…): their
  share of a tag's usable samples is reported (`negative_values:<tag>=12%`); a historian that writes
  outflows as negative numbers shows up here (fix: the tag's `scale = -1`).
- **Maximum yields on a substrate** [g/g], from the elemental balances (Villadsen, Nielsen & Lidén,
  *Bioreaction Engineering Principles*, 3rd ed., Springer 2011, ch. 3; Roels, *Energetics and Kinetics in
  Biotechnology*, Elsevier 1983): with substrate and biomass on a C-mol basis,
  - carbon: no more C-mol can leave in biomass (or product) than the substrate brought in, Y ≤ 1 C-mol/C-mol;
  - degree of reduction (available electrons per C-mol, γ: C 4, H 1, O −2, N −3 with NH3 as N source):
    all of the substrate's electrons at most end up in the biomass, Y_X/S ≤ γ_S / γ_X.
  So Y_X/S,max = min(1, γ_S/γ_X) · M_X / M_S [g/g], M the mass per C-mol. Biomass CH1.8O0.5N0.2 (24.6 g/C-mol
  with 5 % ash, γ_X = 4.2): on glucose (CH2O, 30.03 g/C-mol, γ 4) Y_X/S,max = 4/4.2 · 24.6/30.03 = 0.780 g/g.
  For a product without a stated formula, its carbon bounds it: Y_P/S,max = w_C,S / w_C,P [g/g] with w_C the
  carbon mass fractions (glucose 0.400, BioPilot's default product 0.5 → 0.8 g/g). A site that knows a
  tighter maximum (e.g. from a metabolic network) states it in [[process]] max_yield_product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from processing.offgas import C_BIOMASS_G_PER_CMOL, C_G_PER_MOL
from processing.signals import usable

GAMMA_BIOMASS = 4.2  # degree of reduction of CH1.8O0.5N0.2 with NH3 as nitrogen source
BIOMASS_CARBON_FRACTION = C_G_PER_MOL / C_BIOMASS_G_PER_CMOL  # [g C/g] 0.488


@dataclass(frozen=True)
class Substrate:
    """A carbon source per C-mol: its mass [g/C-mol] and degree of reduction γ [e-mol/C-mol]."""

    g_per_cmol: float
    gamma: float

    @property
    def carbon_fraction(self) -> float:
        return C_G_PER_MOL / self.g_per_cmol


# Elemental compositions (formula per C-mol; γ = 4 + h − 2·o). Villadsen, Nielsen & Lidén 2011, table 3.1.
SUBSTRATES: dict[str, Substrate] = {
    "glucose": Substrate(30.026, 4.0),  # C6H12O6 → CH2O
    "fructose": Substrate(30.026, 4.0),
    "xylose": Substrate(30.026, 4.0),  # C5H10O5 → CH2O
    "sucrose": Substrate(28.525, 4.0),  # C12H22O11 → CH1.833O0.917
    "lactose": Substrate(28.525, 4.0),
    "maltose": Substrate(28.525, 4.0),
    "glycerol": Substrate(30.697, 4.667),  # C3H8O3 → CH2.667O
    "acetate": Substrate(30.026, 4.0),  # acetic acid C2H4O2 → CH2O
    "ethanol": Substrate(23.034, 6.0),  # C2H6O → CH3O0.5
    "methanol": Substrate(32.042, 6.0),  # CH4O
}


def max_biomass_yield_g_per_g(substrate: Substrate) -> float:
    """Y_X/S,max [g biomass/g substrate] = min(1, γ_S/γ_X) · M_X/M_S from the carbon and degree-of-reduction
    balances. Example (hand-computed): glucose 4/4.2 · 24.6/30.026 = 0.7803; methanol (γ 6 > 4.2, carbon
    binds) 1 · 24.6/32.042 = 0.7677."""
    return min(1.0, substrate.gamma / GAMMA_BIOMASS) * C_BIOMASS_G_PER_CMOL / substrate.g_per_cmol


def carbon_bound_yield_g_per_g(substrate_carbon_fraction: float, product_carbon_fraction: float) -> float:
    """The most product [g] a gram of substrate can give by its carbon alone: w_C,S / w_C,P [g/g].
    Example (hand-computed): glucose 0.4 g C/g, product 0.5 g C/g → 0.8 g/g."""
    return substrate_carbon_fraction / product_carbon_fraction


@dataclass(frozen=True)
class YieldLimits:
    """Maxima [g/g on the main substrate] and where each comes from (said in the implausible flag)."""

    biomass: float
    biomass_basis: str
    product: float
    product_basis: str


def yield_limits(
    main_substrate: str,
    feed_carbon_fraction: float | None,
    product_carbon_fraction: float,
    max_biomass: float | None = None,
    max_product: float | None = None,
) -> YieldLimits:
    """The stoichiometric maxima of yields on the main substrate: configured values first; else biomass
    from the elemental balances of a known substrate (SUBSTRATES) or, for another, the carbon bound with
    the feed's carbon fraction (default 0.4); product from the carbon bound."""
    known = SUBSTRATES.get(main_substrate.strip().lower())
    w_s = (
        feed_carbon_fraction
        if feed_carbon_fraction is not None
        else (known or SUBSTRATES["glucose"]).carbon_fraction
    )
    if max_biomass is not None:
        biomass, b_basis = max_biomass, "config"
    elif known is not None:
        biomass, b_basis = max_biomass_yield_g_per_g(known), "elemental_balance"
    else:
        biomass, b_basis = carbon_bound_yield_g_per_g(w_s, BIOMASS_CARBON_FRACTION), "carbon_balance"
    if max_product is not None:
        product, p_basis = max_product, "config"
    else:
        product, p_basis = carbon_bound_yield_g_per_g(w_s, product_carbon_fraction), "carbon_balance"
    return YieldLimits(biomass, b_basis, product, p_basis)


def negative_share(values: np.ndarray, status: np.ndarray) -> float:
    """Share of the usable samples (status not bad, value finite) that are below zero [0..1]; 0 without
    usable samples. Example: readings 5, −2, 0, −1 → 0.5."""
    v = np.asarray(values, dtype=np.float64)
    ok = usable(v, status)
    n = int(ok.sum())
    return float(np.count_nonzero(v[ok] < 0)) / n if n else 0.0


def percent(share: float) -> str:
    """A share as the flags show it: 12%, <1% for a share under half a percent (never 0% for a nonzero)."""
    if share <= 0 or not math.isfinite(share):
        return "0%"
    return "<1%" if share < 0.005 else f"{share:.0%}"
