"""The KPIs BioPilot computes, with their units (the stable list of `biopilot kpis --json`), and which KPIs
rest on which balance (a balance outside 0.95–1.05 flags them)."""

from __future__ import annotations

# energy.<tag> per consumer, like energy.total, is in kWh.
KPI_UNITS: dict[str, str] = {
    # upstream mass accounting (fermenters)
    "batch_duration": "h",
    "growth_duration": "h",
    "titer": "g/L",
    "product_formed": "kg",
    "product_harvested": "kg",
    "substrate_fed": "kg",
    "carbon_fed": "kg C",
    "substrate_consumed": "kg",
    "biomass_formed": "kg",
    "yield_product_substrate_consumed": "g/g",
    "yield_product_substrate_fed": "g/g",
    "yield_product_carbon": "g/g C",
    "yield_biomass_substrate_consumed": "g/g",
    "yield_biomass_substrate_fed": "g/g",
    "yield_product_biomass": "g/g",
    "volumetric_productivity": "g/L/h",
    "mean_working_volume": "L",
    "mu_max": "1/h",
    "volume_balance_closure": "",
    # off-gas (fermenters)
    "our_max": "mol/L/h",
    "our_mean": "mol/L/h",
    "cer_mean": "mol/L/h",
    "rq": "mol/mol",
    "o2_consumed": "mol",
    "co2_produced": "mol",
    "carbon_balance_closure": "",
    # recovery steps
    "feed_volume": "L",
    "product_in": "kg",
    "product_out": "kg",
    "step_yield": "",
    "overall_yield": "",
    "mass_balance_closure": "",
    "concentration_factor": "",
    "purity": "",
    # utilities (every equipment)
    "energy.total": "kWh",
    "specific_energy": "kWh/kg",
    "steam": "kg",
    "steam_specific": "kg/kg",
    "water": "m3",
    "water_specific": "m3/kg",
    "co2e": "kg CO2e",
    "co2e_specific": "kg CO2e/kg",
}

_PER_KG = ("specific_energy", "steam_specific", "water_specific", "co2e_specific")
MASS_ACCOUNT = (
    "product_formed",
    "substrate_consumed",
    "biomass_formed",
    "yield_product_substrate_consumed",
    "yield_product_substrate_fed",
    "yield_product_carbon",
    "yield_biomass_substrate_consumed",
    "yield_biomass_substrate_fed",
    "yield_product_biomass",
    "volumetric_productivity",
    *_PER_KG,
)
# balance KPI -> the KPIs that rest on it
RESTS_ON: dict[str, tuple[str, ...]] = {
    "volume_balance_closure": MASS_ACCOUNT,
    "carbon_balance_closure": MASS_ACCOUNT,
    "mass_balance_closure": ("product_out", "step_yield", "overall_yield", *_PER_KG),
}
# KPIs that may be negative (every other one below zero is implausible)
SIGNED: frozenset[str] = frozenset({"mu_max"})


def unit_of(name: str) -> str:
    """The unit of a KPI: KPI_UNITS', kWh for energy.<tag>."""
    return KPI_UNITS.get(name, "kWh" if name.startswith("energy.") else "")
