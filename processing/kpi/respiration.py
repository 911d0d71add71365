"""Off-gas KPIs of a fermenter run (processing.offgas: the inert-gas balance): O2 consumed, CO2 produced,
RQ, OUR and CER per litre of broth, and the carbon balance over the upstream mass account.

The air flow is converted to L/min at the flow meter's reference and to mol/h with [[process]]
gas_molar_volume (22.414 L/mol for NL/min and Nm3/h: 0 °C, 1.01325 bar, DIN 1343).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from biopilot.config import ProcessSpec, Role
from processing import offgas, recovery
from processing.energy import integrate_trapezoid
from processing.kpi.inputs import Kpi, RunData, Signal, kpi
from processing.kpi.upstream import MassAccount
from processing.signals import covered_hours


@dataclass(frozen=True)
class OffgasInputs:
    spec: ProcessSpec
    run_h: float
    air: Signal | None  # [L/min at the meter's reference]
    o2: Signal | None  # [mol/mol] dry outlet gas
    co2: Signal | None  # [mol/mol]
    volume: Signal | None  # [L]


def gather(data: RunData) -> OffgasInputs:
    air, o2, co2 = data.tags(Role.AIR_FLOW), data.tags(Role.OFFGAS_O2), data.tags(Role.OFFGAS_CO2)
    complete = bool(air and o2 and co2)
    return OffgasInputs(
        data.spec,
        data.run_h,
        data.quantity(air[0], "L/min") if complete else None,
        data.quantity(o2[0], "mol/mol") if complete else None,
        data.quantity(co2[0], "mol/mol") if complete else None,
        data.volume() if complete else None,
    )


def compute(inp: OffgasInputs, mass: MassAccount | None) -> tuple[Kpi, ...]:
    if inp.air is None or inp.o2 is None or inp.co2 is None:
        return ()
    spec = inp.spec
    t = inp.o2.t
    a_o2, a_co2, a_air = inp.o2.at(t), inp.co2.at(t), inp.air.at(t)
    # molar fluxes [mol/h] need no volume: the cumulative O2 and CO2 are defined while the vessel is empty
    n_in = offgas.gas_flow_mol_per_h(a_air.values, spec.gas_molar_volume)
    flux_o2, flux_co2 = offgas.our_cer(
        n_in, a_o2.values, a_co2.values, np.ones(len(t)), spec.inlet_o2, spec.inlet_co2
    )
    covered = np.isfinite(flux_o2) & np.isfinite(flux_co2)
    max_gap = inp.o2.gap_limits

    def cov(covered_mask: np.ndarray) -> float:
        h = covered_hours(t, covered_mask, max_gap)
        return min(h / inp.run_h, 1.0) if inp.run_h > 0 else 0.0

    inputs = {inp.o2.tag: cov(a_o2.covered), inp.co2.tag: cov(a_co2.covered), inp.air.tag: cov(a_air.covered)}
    unc = (
        ["uncertain_inputs"] if np.any((a_o2.uncertain | a_co2.uncertain | a_air.uncertain) & covered) else []
    )
    o2_mol = offgas.cumulative_mol(t, flux_o2, np.ones(len(t)), max_gap).value
    co2_mol = offgas.cumulative_mol(t, flux_co2, np.ones(len(t)), max_gap).value
    out = [
        kpi("o2_consumed", o2_mol, inputs, unc),
        kpi("co2_produced", co2_mol, inputs, unc),
        kpi("rq", offgas.rate_weighted_rq(o2_mol, co2_mol), inputs, unc),
    ]
    vol = inp.volume
    if vol is not None:
        a_v = vol.at(t)
        v = a_v.values
        filled = v > 0.05 * np.nanmax(v) if np.any(np.isfinite(v)) else np.zeros(len(t), bool)
        our = np.where(filled, flux_o2 / np.where(filled, v, 1.0), np.nan)
        cer = np.where(filled, flux_co2 / np.where(filled, v, 1.0), np.nan)
        v_inputs = {**inputs, vol.tag: cov(a_v.covered)}
        out.append(kpi("our_max", float(np.nanmax(our)) if np.any(np.isfinite(our)) else None, v_inputs, unc))
        out.append(kpi("our_mean", _time_mean(t, our, max_gap), v_inputs, unc))
        out.append(kpi("cer_mean", _time_mean(t, cer, max_gap), v_inputs, unc))
    if mass is not None:
        c_out = (
            offgas.biomass_carbon_g(mass.biomass_g)
            + mass.product_g * spec.product_carbon_fraction
            + co2_mol * offgas.C_G_PER_MOL
            + mass.substrate_carbon_left_g
        )
        closure = offgas.carbon_balance_closure(mass.carbon_in_g, c_out)
        flags = [] if not math.isfinite(closure) or recovery.closure_ok(closure) else ["closure_out_of_range"]
        out.append(kpi("carbon_balance_closure", closure, {**inputs, **mass.inputs}, flags + unc))
    return tuple(out)


def _time_mean(t: np.ndarray, x: np.ndarray, max_gap_h: np.ndarray) -> float | None:
    integral = integrate_trapezoid(t, x, np.zeros(len(t), np.int64), max_gap_h)
    return integral.value / integral.covered_h if integral.covered_h > 0 else None
