"""Downstream recovery KPIs (pure): step yields, overall yield and its check, purity, concentration factor,
mass-balance closure (../shared/domain/kpis.md, "Downstream recovery"; Harrison, Todd, Rudge & Petrides,
*Bioseparations Science and Engineering*, 2nd ed., Oxford 2015, ch. 1).

Masses in [g], volumes in [L]; yields, purities and closures are fractions [–].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CLOSURE_LOW = 0.95
CLOSURE_HIGH = 1.05


def product_from_totalizer_g(volume_l: float, flow_times_conc_g: float, flow_l: float) -> float:
    """Product [g] in a stream = V · C̄: V [L] from the stream's flow totalizer, C̄ = ∫F·C dt / ∫F dt [g/L]
    the flow-weighted mean concentration from the sampled flow F [L/h] and concentration C [g/L].

    Why not ∫F·C dt alone: a valve that opens or closes between two readings puts up to half a sampling
    interval of flow on the wrong side of the edge (a 15 min elution read once a minute: up to ±3 %).
    The same error sits in ∫F·C dt and in ∫F dt and cancels in their ratio while C is constant over the
    flow, and the totalizer counts every litre. NaN when the flow signal saw no flow but the totalizer did.
    Example (hand-computed): 1000 L totalized, ∫F·C = 4750 g over ∫F = 990 L → C̄ = 4.79798 g/L
    → 4797.98 g."""
    if not (math.isfinite(volume_l) and math.isfinite(flow_times_conc_g) and math.isfinite(flow_l)):
        return math.nan
    if volume_l == 0:
        return 0.0
    return volume_l * flow_times_conc_g / flow_l if flow_l > 0 else math.nan


def step_yield(product_in_g: float, product_out_g: float) -> float:
    """Y_i = product out of step i / product into step i [–]; NaN when nothing went in."""
    if not (math.isfinite(product_in_g) and math.isfinite(product_out_g)) or product_in_g <= 0:
        return math.nan
    return product_out_g / product_in_g


def overall_yield(step_yields: Sequence[float]) -> float:
    """Π Y_i [–] over the steps; NaN if any step is unknown or there are none.
    Example (hand-computed): 0.95 · 0.90 · 0.80 = 0.684."""
    if not step_yields or not all(math.isfinite(y) for y in step_yields):
        return math.nan
    return math.prod(step_yields)


@dataclass(frozen=True)
class OverallCheck:
    product_of_steps: float  # Π Y_i
    direct: float  # product out of the last step / product into the first
    relative_difference: float  # |Π Y_i − direct| / direct

    @property
    def consistent(self) -> bool:
        """The two agree within 1 % (they differ when a step's outlet is not the next step's feed)."""
        return math.isfinite(self.relative_difference) and self.relative_difference <= 0.01


def check_overall_yield(step_yields: Sequence[float], first_in_g: float, last_out_g: float) -> OverallCheck:
    """Π Y_i against product out of the last step / product into the first step."""
    product = overall_yield(step_yields)
    direct = step_yield(first_in_g, last_out_g)
    diff = abs(product - direct) / direct if math.isfinite(product) and direct > 0 else math.nan
    return OverallCheck(product, direct, diff)


def purity(target_g: float, total_g: float) -> float:
    """Purity = target / total [–] (mass of the product over all solutes, or over total protein)."""
    return target_g / total_g if total_g > 0 and math.isfinite(target_g) else math.nan


def purification_factor(purity_in: float, purity_out: float) -> float:
    """Purity out / purity in [–]."""
    return purity_out / purity_in if purity_in > 0 and math.isfinite(purity_out) else math.nan


def concentration_factor(v_feed_l: float, v_retentate_l: float) -> float:
    """V_feed / V_retentate [–] (equivalently C_out / C_in for a step without losses)."""
    return v_feed_l / v_retentate_l if v_retentate_l > 0 and math.isfinite(v_feed_l) else math.nan


def mass_balance_closure(product_in_g: float, product_outlets_g: Sequence[float]) -> float:
    """(Σ product in all outlet streams) / product in the feed [–]; flag outside CLOSURE_LOW..CLOSURE_HIGH.
    Example (hand-computed): 100 g in, 93 g in the product stream and 4 g in the waste: 0.97."""
    if product_in_g <= 0 or not all(math.isfinite(x) for x in product_outlets_g):
        return math.nan
    return sum(product_outlets_g) / product_in_g


def closure_ok(closure: float, low: float = CLOSURE_LOW, high: float = CLOSURE_HIGH) -> bool:
    return math.isfinite(closure) and low <= closure <= high
