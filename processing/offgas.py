"""Off-gas KPIs by the inert-gas balance (pure): OUR, CER, RQ, cumulative O2 and CO2, carbon balance.

With dry-gas mole fractions y and the inert (N2 + Ar) balance giving the outlet flow
(../shared/domain/kpis.md, "Off-gas"; Heinzle, Dunn, Furukawa, Rhodes & Biwer in *Bioprocess Engineering*,
Wiley; Villadsen, Nielsen & Lidén 2011, ch. 12):

    y_inert,in = 1 − y_O2,in − y_CO2,in ;  y_inert,out = 1 − y_O2,out − y_CO2,out
    OUR = (F_gas,in / V_m) · (y_O2,in − y_O2,out · y_inert,in / y_inert,out) / V_L      [mol/L/h]
    CER = (F_gas,in / V_m) · (y_CO2,out · y_inert,in / y_inert,out − y_CO2,in) / V_L    [mol/L/h]
    RQ  = CER / OUR

V_m is the molar volume at the gas flow meter's reference conditions: 22.414 L/mol at 0 °C and 1 atm.
"""

from __future__ import annotations

import math

import numpy as np

from biopilot import units
from processing.energy import Integral, integrate_trapezoid

MOLAR_VOLUME_STP = units.NORMAL_MOLAR_VOLUME  # [L/mol] 0 °C, 1.01325 bar (NL, Nm3: DIN 1343)
_MIN_PER_H = units.factor("1/min", "1/h")  # 60
Y_O2_AIR = 0.2095  # [mol/mol] dry air
Y_CO2_AIR = 0.0004  # [mol/mol]
C_BIOMASS_G_PER_CMOL = 24.6  # [g/C-mol] biomass CH1.8O0.5N0.2 (with ~5 % ash)
C_G_PER_MOL = 12.011  # [g/mol] carbon


def gas_flow_mol_per_h(
    flow_l_per_min: np.ndarray, molar_volume_l_per_mol: float = MOLAR_VOLUME_STP
) -> np.ndarray:
    """Inlet gas [mol/h] from a flow [L/min at the meter's reference conditions] and the molar volume
    there [L/mol]."""
    return np.asarray(flow_l_per_min, dtype=np.float64) * _MIN_PER_H / molar_volume_l_per_mol


def our_cer(
    gas_in_mol_per_h: np.ndarray,
    y_o2_out: np.ndarray,
    y_co2_out: np.ndarray,
    volume_l: np.ndarray,
    y_o2_in: float = Y_O2_AIR,
    y_co2_in: float = Y_CO2_AIR,
) -> tuple[np.ndarray, np.ndarray]:
    """OUR and CER [mol/L/h] by the inert balance, element-wise on aligned arrays.

    Mole fractions are dry, in mol/mol. NaN where an input is NaN or the volume is not positive.
    Example (hand-computed): 100 mol/h of air in, out y_O2 = 0.19, y_CO2 = 0.02, 1000 L:
    inert in 0.7901, out 0.79 → ratio 1.000127; OUR = 100·(0.2095 − 0.19·1.000127)/1000 = 1.9476e-3,
    CER = 100·(0.02·1.000127 − 0.0004)/1000 = 1.9603e-3 mol/L/h."""
    n_in = np.asarray(gas_in_mol_per_h, dtype=np.float64)
    o2 = np.asarray(y_o2_out, dtype=np.float64)
    co2 = np.asarray(y_co2_out, dtype=np.float64)
    v = np.asarray(volume_l, dtype=np.float64)
    inert_in = 1.0 - y_o2_in - y_co2_in
    inert_out = 1.0 - o2 - co2
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(inert_out > 0, inert_in / inert_out, np.nan)
        v_ok = np.where(v > 0, v, np.nan)
        our = n_in * (y_o2_in - o2 * k) / v_ok
        cer = n_in * (co2 * k - y_co2_in) / v_ok
    return our, cer


def respiratory_quotient(our: np.ndarray, cer: np.ndarray, min_our: float = 1e-6) -> np.ndarray:
    """RQ = CER / OUR [mol/mol]; NaN where OUR is below min_our [mol/L/h] (no respiration: RQ undefined)."""
    our = np.asarray(our, dtype=np.float64)
    cer = np.asarray(cer, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(our > min_our, cer / our, np.nan)


def cumulative_mol(
    t_h: np.ndarray, rate_mol_per_l_h: np.ndarray, volume_l: np.ndarray, max_gap_h: float | None = None
) -> Integral:
    """∫ rate · V dt [mol] (e.g. O2 consumed from OUR, CO2 produced from CER), never across a gap or NaN."""
    flux = np.asarray(rate_mol_per_l_h, dtype=np.float64) * np.asarray(volume_l, dtype=np.float64)
    return integrate_trapezoid(t_h, flux, np.zeros(len(flux), dtype=np.int64), max_gap_h)


def rate_weighted_rq(o2_mol: float, co2_mol: float) -> float:
    """The run's RQ as CO2 produced / O2 consumed [mol/mol]: the mean weighted by respiration."""
    return co2_mol / o2_mol if o2_mol > 0 and math.isfinite(co2_mol) else math.nan


def carbon_balance_closure(carbon_in_g: float, carbon_out_g: float) -> float:
    """Carbon out / carbon in [–]; trust yields when it is within about 0.95–1.05. NaN if nothing came in.

    Carbon out: biomass (V·X / 24.6 g/C-mol · 12.011 g C/C-mol), product, CO2 (∫CER·V dt · 12.011),
    residual substrate; carbon in: substrate at inoculation plus substrate fed."""
    return carbon_out_g / carbon_in_g if carbon_in_g > 0 and math.isfinite(carbon_out_g) else math.nan


def biomass_carbon_g(biomass_g: float) -> float:
    """Carbon in biomass [g C] for the standard composition CH1.8O0.5N0.2 at 24.6 g/C-mol."""
    return biomass_g / C_BIOMASS_G_PER_CMOL * C_G_PER_MOL
