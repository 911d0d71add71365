"""Utility KPIs of any run (processing.energy): electricity per consumer and in total, steam, water,
CO2-equivalent, and each per kg of product.

Electricity: ∫P dt of power tags [kW] and differenced energy totalizers [kWh]. Steam: ∫ of steam_flow tags
[kg/h]. Water [m³]: ∫ of cooling_water_flow, heating_water_flow and water_flow (dilution water) tags.
CO2e: Σ amount × the site's emission factor of each utility (config [[emission_factors]], with its source).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from biopilot import units
from biopilot.config import EmissionFactor, Role, emission_factor
from processing.energy import energy_from_totalizer, integrate_trapezoid, specific_consumption
from processing.kpi.inputs import Kpi, RunData, Signal, kpi

WATER_ROLES = (Role.COOLING_WATER_FLOW, Role.HEATING_WATER_FLOW, Role.WATER_FLOW)
_M3_PER_L = units.factor("L", "m3")


@dataclass(frozen=True)
class Counter:
    """An energy totalizer [kWh] with the value it wraps at [kWh]."""

    signal: Signal
    rollover_kwh: float | None


@dataclass(frozen=True)
class UtilityInputs:
    run_h: float
    power: tuple[Signal, ...]  # [kW]
    counters: tuple[Counter, ...]
    steam: tuple[Signal, ...]  # [kg/h]
    water: tuple[Signal, ...]  # [m³/h]
    factors: dict[str, EmissionFactor]  # utility → the site's factor
    any_factors: bool


def gather(data: RunData) -> UtilityInputs:
    config = data.config
    counters = tuple(
        Counter(
            data.quantity(t, "kWh"),
            t.counter_rollover * units.factor(t.unit, "kWh") if t.counter_rollover is not None else None,
        )
        for t in data.tags(Role.ENERGY)
    )
    water = tuple(
        data.signal(t, _scaled(data.liquid_flow_conversion(t), _M3_PER_L))
        for r in WATER_ROLES
        for t in data.tags(r)
    )
    factors = {
        u: f for u in ("electricity", "steam", "water") if (f := emission_factor(config, u)) is not None
    }
    return UtilityInputs(
        data.run_h,
        tuple(data.quantity(t, "kW") for t in data.tags(Role.POWER)),
        counters,
        tuple(data.quantity(t, "kg/h") for t in data.tags(Role.STEAM_FLOW)),
        water,
        factors,
        bool(config.emission_factors),
    )


def _scaled(c: units.Conversion, k: float) -> units.Conversion:
    return units.Conversion(c.factor * k, c.offset * k)


def compute(
    inp: UtilityInputs, product_kg: float | None, product_inputs: Mapping[str, float] | None = None
) -> tuple[Kpi, ...]:
    """product_kg: the run's product (formed, or out of a recovery step) for the per-kg KPIs; None: the
    run has no product accounting (no per-kg KPIs), NaN: unknown. product_inputs: the coverage of what
    the product rests on (the per-kg KPIs rest on it too)."""
    out: list[Kpi] = []
    per_kg = dict(product_inputs or {})
    if product_kg is not None and not math.isfinite(product_kg) and not any(v == 0 for v in per_kg.values()):
        per_kg["product"] = 0.0

    def cov(covered_h: float) -> float:
        return min(covered_h / inp.run_h, 1.0) if inp.run_h > 0 else 0.0

    total, inputs, any_unc, flags_total = 0.0, {}, False, []
    for s in inp.power:
        integral = integrate_trapezoid(s.t, s.v, s.status, s.gap_limits)
        c = cov(integral.covered_h)
        out.append(
            kpi(
                f"energy.{s.tag}",
                integral.value,
                {s.tag: c},
                ["uncertain_inputs"] if integral.uncertain else [],
            )
        )
        total += integral.value
        inputs[s.tag] = c
        any_unc |= integral.uncertain
    for counter in inp.counters:
        s = counter.signal
        tot = energy_from_totalizer(s.t, s.v, s.status, counter.rollover_kwh)
        c = cov(tot.covered_h)
        flags = (["counter_reset"] if tot.resets else []) + (["uncertain_inputs"] if tot.uncertain else [])
        out.append(kpi(f"energy.{s.tag}", tot.value, {s.tag: c}, flags))
        total += tot.value
        inputs[s.tag] = c
        any_unc |= tot.uncertain
        flags_total += [f for f in flags if f not in flags_total]
    if any_unc and "uncertain_inputs" not in flags_total:
        flags_total.append("uncertain_inputs")
    amounts: dict[str, float] = {}
    if inp.power or inp.counters:
        out.append(kpi("energy.total", total, inputs, flags_total))
        amounts["electricity"] = total
        if product_kg is not None:
            out.append(kpi("specific_energy", specific_consumption(total, product_kg), {**inputs, **per_kg}))
    steam_inputs = _amount(inp.steam, cov, amounts, "steam")
    if steam_inputs:
        out.append(kpi("steam", amounts["steam"], steam_inputs))
        if product_kg is not None:
            out.append(
                kpi(
                    "steam_specific",
                    specific_consumption(amounts["steam"], product_kg),
                    {**steam_inputs, **per_kg},
                )
            )
    water_inputs = _amount(inp.water, cov, amounts, "water")
    if water_inputs:
        out.append(kpi("water", amounts["water"], water_inputs))
        if product_kg is not None:
            out.append(
                kpi(
                    "water_specific",
                    specific_consumption(amounts["water"], product_kg),
                    {**water_inputs, **per_kg},
                )
            )
    if amounts and inp.any_factors:
        flags = [f"no_emission_factor:{u}" for u, a in amounts.items() if u not in inp.factors and a > 0]
        co2e = sum(amounts[u] * inp.factors[u].factor for u in amounts if u in inp.factors)
        all_inputs = {**inputs, **steam_inputs, **water_inputs}
        out.append(kpi("co2e", co2e, all_inputs, flags))
        if product_kg is not None:
            out.append(
                kpi("co2e_specific", specific_consumption(co2e, product_kg), {**all_inputs, **per_kg}, flags)
            )
    return tuple(out)


def _amount(
    signals: tuple[Signal, ...], cov: Callable[[float], float], amounts: dict[str, float], utility: str
) -> dict[str, float]:
    """Σ ∫ of the signals into amounts[utility]; their coverage by tag."""
    inputs: dict[str, float] = {}
    for s in signals:
        integral = integrate_trapezoid(s.t, s.v, s.status, s.gap_limits)
        amounts[utility] = amounts.get(utility, 0.0) + integral.value
        inputs[s.tag] = cov(integral.covered_h)
    return inputs
