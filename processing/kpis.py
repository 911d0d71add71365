"""The KPI engine: one run's stored signals, phases and lab results in, KpiRecords out.

It asks for roles, never for tag names, reads each tag once and converts it once to the engine's units
(biopilot.units), and runs the KPI families of the run's equipment kind (FAMILIES, in processing/kpi/):
upstream mass accounting, off-gas, recovery, utilities. Each family gathers its inputs into a frozen
dataclass and hands them to the pure functions of processing.yields / offgas / recovery / energy; what a
later family needs from an earlier one (the mass account for the carbon balance, the product for the
per-kg intensities) is passed explicitly (Accounts). Then the checks below run over every KPI.

Each KPI carries the coverage of each input it needed (share of the run, or of inoculation → harvest,
with usable data; a lab value counts 1 when present, 0 when missing) and flags:

  provisional               the run is live; the value will change
  incomplete                an input it needed covers less than COMPLETE (99 %) of its window
  missing_input:<input>     a configured input (a tag, lab:<analyte>, the product…) has no usable data
                            at all in its window: the value is null, never a number computed from zeros
  missing_input             the value could not be computed for another reason (null)
  implausible:above_stoichiometric_max=<Y>   a yield above its stoichiometric maximum Y [g/g] ([[process]]
                            max_yield_*, or processing.plausibility's elemental balances): null
  implausible:negative      a mass, volume, yield or other quantity that cannot be negative came out
                            negative (a sign convention, or a mis-mapped tag): null
  implausible:<analyte>_above_broth_density   a titer, biomass or substrate value above the broth's
                            density (a unit mistake: µg/mL declared as g/L): null, with every KPI using it
  negative_values:<tag>=<share>   that input tag has negative readings (share of its usable samples)
                            although its role cannot be negative; the value stands, flagged
  closure_out_of_range      this balance (volume, carbon, recovery mass) is outside 0.95–1.05
  closure_out_of_range:<balance>  a KPI that rests on that balance; it keeps its value
  uncertain_inputs          an uncertain-status sample entered the value
  assumed:<what>            a documented default stood in for a measurement
                            (e.g. assumed:residual_substrate=0)
  refused_lab_unit:<unit>   lab results in a unit that is not a mass concentration were left out
  overall_yield_mismatch    Π step yields ≠ product out / product in by more than 1 %
  counter_reset             a totalizer went down without a configured rollover (treated as a reset to 0)
  no_emission_factor:<utility>   a utility was used but the site has no factor for it

KPI names and units are listed in KPI_UNITS (the stable interface of `biopilot kpis --json`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from biopilot.config import NON_NEGATIVE_ROLES, EquipmentKind, SiteConfig
from biopilot.records import KpiRecord, LabResult, Phase, Run
from processing import plausibility
from processing.kpi import downstream, respiration, upstream, utilities
from processing.kpi.inputs import Kpi, Reader, RunData
from processing.kpi.names import KPI_UNITS, RESTS_ON, SIGNED
from processing.kpi.upstream import MassAccount

__all__ = ["COMPLETE", "FAMILIES", "KPI_UNITS", "KPI_VERSION", "compute_run_kpis"]

KPI_VERSION = "kpi-3"
COMPLETE = 0.99  # an input covering less of its window than this makes the KPI incomplete


@dataclass(frozen=True)
class Accounts:
    """What the families hand on: the upstream mass account, the run's product [kg] (None: no product
    accounting; NaN: unknown) and the stoichiometric maxima of the yields (KPI → (max, basis))."""

    mass: MassAccount | None = None
    product_kg: float | None = None
    product_inputs: Mapping[str, float] = field(default_factory=dict)
    limits: Mapping[str, tuple[float, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str
    kinds: frozenset[EquipmentKind]
    run: Callable[[RunData, Accounts], tuple[tuple[Kpi, ...], Accounts]]


def _upstream(data: RunData, acc: Accounts) -> tuple[tuple[Kpi, ...], Accounts]:
    r = upstream.compute(upstream.gather(data))
    return r.kpis, replace(
        acc, mass=r.mass, product_kg=r.product_kg, product_inputs=r.product_inputs, limits=r.limits
    )


def _offgas(data: RunData, acc: Accounts) -> tuple[tuple[Kpi, ...], Accounts]:
    return respiration.compute(respiration.gather(data), acc.mass), acc


def _recovery(data: RunData, acc: Accounts) -> tuple[tuple[Kpi, ...], Accounts]:
    kpis, product_kg, product_inputs = downstream.compute(downstream.gather(data))
    return kpis, replace(acc, product_kg=product_kg, product_inputs=product_inputs)


def _utilities(data: RunData, acc: Accounts) -> tuple[tuple[Kpi, ...], Accounts]:
    return utilities.compute(utilities.gather(data), acc.product_kg, acc.product_inputs), acc


_F, _R = EquipmentKind.FERMENTER, EquipmentKind.RECOVERY
FAMILIES: tuple[Family, ...] = (
    Family("upstream mass accounting", frozenset({_F}), _upstream),
    Family("off-gas", frozenset({_F}), _offgas),
    Family("recovery", frozenset({_R}), _recovery),
    Family("utilities", frozenset({_F, _R}), _utilities),
)


def compute_run_kpis(
    config: SiteConfig,
    run: Run,
    end: datetime,
    read: Reader,
    *,
    phases: Sequence[Phase] = (),
    lab: Sequence[LabResult] = (),
    upstream: dict[str, KpiRecord] | None = None,
    harvested: KpiRecord | None = None,
) -> list[KpiRecord]:
    """All KPIs of a run over [run.start, end] (end: the run's end, or its clock while it is live).

    read(tag, start, end): stored samples (start ≤ ts < end); lab: the catalog's lab results of the run
    (tags with a `lab` table and titer tags are read here and added); upstream: the KPIs of the run this
    (recovery) run processed; harvested: product_harvested of the fermentation at the head of its chain
    (checks the overall yield)."""
    data = RunData(config, run, end, read, phases=phases, lab=lab, upstream=upstream, harvested=harvested)
    kpis: list[Kpi] = []
    acc = Accounts()
    for family in FAMILIES:
        if data.kind in family.kinds:
            out, acc = family.run(data, acc)
            kpis += out
    kpis = [_implausible(_missing(k), acc.limits) for k in kpis]
    kpis = _negative_readings(kpis, data)
    kpis = _balances(kpis)
    return _records(kpis, final=run.end is not None)


# -- the checks --------------------------------------------------------------------------------------------
def _missing(k: Kpi) -> Kpi:
    """An input without any usable data in its window makes the KPI null, naming the input."""
    absent = [name for name, c in k.inputs.items() if c == 0.0]
    if absent:
        return k.flagged(*(f"missing_input:{name}" for name in absent), drop_value=True)
    if k.value is None and not any(f.startswith("missing_input") for f in k.flags):
        return k.flagged("missing_input")
    return k


def _implausible(k: Kpi, limits: Mapping[str, tuple[float, str]]) -> Kpi:
    """A yield above its stoichiometric maximum, a negative value that cannot be, or a value a family marked
    implausible (implausible:… flag) is not a result."""
    if k.value is None:
        return k
    if any(f.startswith("implausible:") for f in k.flags):
        return k.flagged(drop_value=True)
    if k.name in limits:
        maximum, _basis = limits[k.name]
        if k.value > maximum * (1 + 1e-9):
            return k.flagged(f"implausible:above_stoichiometric_max={maximum:.3g}", drop_value=True)
    if k.value < 0 and k.name not in SIGNED:
        return k.flagged("implausible:negative", drop_value=True)
    return k


def _negative_readings(kpis: list[Kpi], data: RunData) -> list[Kpi]:
    """negative_values:<tag>=<share> on every KPI that read a tag whose role cannot be negative and whose
    readings in the run were partly negative."""
    shares: dict[str, float] = {}
    for name in {n for k in kpis for n in k.inputs}:
        try:
            tag = data.config.tag(name)
        except KeyError:
            continue  # lab:…, upstream:…, <tag>@inoculation
        if tag.role in NON_NEGATIVE_ROLES and name in data.read_tags:
            share = plausibility.negative_share(*data.stored(tag))
            if share > 0:
                shares[name] = share
    if not shares:
        return kpis
    out = []
    for k in kpis:
        flags = [f"negative_values:{n}={plausibility.percent(shares[n])}" for n in k.inputs if n in shares]
        out.append(k.flagged(*flags) if flags else k)
    return out


def _balances(kpis: list[Kpi]) -> list[Kpi]:
    """A balance outside 0.95–1.05 flags every KPI that rests on it (processing.kpi.names.RESTS_ON)."""
    open_balances = {k.name for k in kpis if k.name in RESTS_ON and "closure_out_of_range" in k.flags}
    if not open_balances:
        return kpis
    out = []
    for k in kpis:
        flags = [f"closure_out_of_range:{b}" for b in sorted(open_balances) if k.name in RESTS_ON[b]]
        out.append(k.flagged(*flags) if flags else k)
    return out


def _records(kpis: list[Kpi], final: bool) -> list[KpiRecord]:
    out = []
    for k in kpis:
        flags: list[str] = [] if final else ["provisional"]
        coverage = min(k.inputs.values()) if k.inputs else (1.0 if k.value is not None else 0.0)
        if k.inputs and coverage < COMPLETE:
            flags.append("incomplete")
        flags += [f for f in k.flags if f not in flags]
        value = None if k.value is None else round(k.value, 6 - _magnitude(k.value))
        out.append(
            KpiRecord(
                k.name, value, k.unit, coverage, tuple(flags), final, KPI_VERSION, inputs=dict(k.inputs)
            )
        )
    return out


def _magnitude(x: float) -> int:
    return math.floor(math.log10(abs(x))) if x != 0.0 and math.isfinite(x) else 0
