"""Money of a trial: cost per kg of product per run, the difference trial − baseline with its interval,
annual savings at the plant's throughput and the payback of the startup's quoted price. Pure functions.

Money is shown only as ranges: every aggregate is a `Range` (low, high, and the point estimate as part of
the record, never alone). Prices come from the charter (biopilot.charter.Prices), each with its source.

Cost of one run [€] = Σ substrates fed [kg] × €/kg + electricity [kWh] × €/kWh + steam [kg] / 1000 × €/t
+ water [m³] × €/m³ + batch duration [h] × €/h, each amount a KPI of the run (the price's `kpi`); cost per
kg = cost / product [kg] (prices.product_kpi). A priced amount the run lacks (no record, no value, flagged
implausible or missing_input, under the charter's min_coverage, or in another unit than expected) makes the
run's cost not a number, naming what is missing; an amount without a price is left out and listed as not
priced (Peters, Timmerhaus & West 2003, Plant Design and Economics for Chemical Engineers, ch. 6: variable
costs as consumption × unit price, plus a facility-time charge).

The difference of cost per kg, trial − baseline, and its interval are Welch's (processing.stats.welch, the
method of the primary KPI) at 1 − α of the charter. Savings per kg = −difference. Annual savings =
savings per kg × kg per year, kg per year being the charter's kg_per_year, or batches_per_year × the trial
runs' mean product per batch (that mean's own uncertainty is not propagated). Payback [years] = quoted
price / annual savings: its range comes from the savings' range, unbounded (JSON null, with a note) when
the savings' low end is not above 0.

JSON (`money_to_json`, part of the verdict's JSON under "money"):
  {"currency": "EUR", "level": 0.95, "product_kpi", "prices": {component: {"price", "unit", "kpi",
   "source"}}, "not_priced": [component], "runs": [{"run", "group", "eur_per_kg", "eur", "product_kg",
   "parts": {component: €}, "missing": [str]}], "missing": [str], "reason": str | null,
   "cost_trial", "cost_baseline", "difference", "saving_per_kg", "annual_savings", "payback_years":
   null | {"low", "high", "estimate", "unit", "level", "note"}, "throughput": {...} | null,
   "quote": {...} | null}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats as sps

from biopilot.charter import Charter, Prices, Quote, Throughput
from processing import stats
from processing.trial_inputs import Exclusion, RunRecord, usable_problem

# component -> (price attribute, price unit, expected KPI unit, KPI amount → price unit)
_UTILITIES = {
    "electricity": ("eur_per_kwh", "€/kWh", "kWh", 1.0),
    "steam": ("eur_per_t", "€/t", "kg", 1e-3),
    "water": ("eur_per_m3", "€/m³", "m3", 1.0),
    "batch_hour": ("eur_per_h", "€/h", "h", 1.0),
}
PRODUCT_UNIT = "kg"
SUBSTRATE_UNIT = "kg"


@dataclass(frozen=True)
class Range:
    """A money figure as a range: [low, high] at `level` with the point estimate inside (never shown alone).
    high may be math.inf (payback that the interval does not bound)."""

    low: float
    high: float
    estimate: float
    unit: str
    level: float
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "low": num(self.low),
            "high": num(self.high),
            "estimate": num(self.estimate),
            "unit": self.unit,
            "level": self.level,
            "note": self.note,
        }


@dataclass(frozen=True)
class RunCost:
    """One run's cost: € per component, product [kg], €/kg; None when an input is missing (named)."""

    run_id: str
    group: str  # "trial" or "baseline"
    parts: dict[str, float]  # component -> € (the components it could price)
    product_kg: float | None
    missing: tuple[str, ...]

    @property
    def eur(self) -> float | None:
        return None if self.missing else sum(self.parts.values())

    @property
    def eur_per_kg(self) -> float | None:
        if self.missing or not self.product_kg:
            return None
        return sum(self.parts.values()) / self.product_kg


def priced_components(prices: Prices) -> dict[str, tuple[float, str, str, str, float, str]]:
    """component -> (price, price unit, KPI, expected KPI unit, KPI → price-unit factor, source)."""
    out: dict[str, tuple[float, str, str, str, float, str]] = {}
    for name, sp in sorted(prices.substrates.items()):
        out[f"substrate:{name}"] = (sp.eur_per_kg, "€/kg", sp.kpi, SUBSTRATE_UNIT, 1.0, sp.source)
    for name, (attr, price_unit, kpi_unit, factor) in _UTILITIES.items():
        price = getattr(prices, name)
        if price is not None:
            out[name] = (getattr(price, attr), price_unit, price.kpi, kpi_unit, factor, price.source)
    return out


def not_priced(prices: Prices) -> list[str]:
    """Utilities without a price (their cost is left out, not taken as 0 silently)."""
    return [name for name in _UTILITIES if getattr(prices, name) is None]


def run_cost(run: RunRecord, prices: Prices, *, group: str = "", min_coverage: float = 0.0) -> RunCost:
    """The cost of one run from its KPIs and the prices (see the module docstring)."""
    parts: dict[str, float] = {}
    missing: list[str] = []
    for component, (price, _, kpi, unit, factor, _) in priced_components(prices).items():
        amount, problem = _amount(run, kpi, unit, min_coverage)
        if problem:
            missing.append(f"{component}: {kpi} {problem}")
        else:
            parts[component] = amount * factor * price
    product, problem = _amount(run, prices.product_kpi, PRODUCT_UNIT, min_coverage)
    if problem is None and product <= 0:
        problem = f"is {product:.3g} kg (no product to divide by)"
    if problem:
        missing.append(f"product: {prices.product_kpi} {problem}")
    return RunCost(run.run_id, group, parts, None if problem else product, tuple(missing))


def _amount(run: RunRecord, kpi: str, unit: str, min_coverage: float) -> tuple[float, str | None]:
    rec = run.kpis.get(kpi)
    problem = usable_problem(rec, min_coverage)
    if problem is not None or rec is None or rec.value is None:
        return math.nan, problem or "has no value"
    if rec.unit != unit:
        return math.nan, f"is in {rec.unit!r}, expected {unit!r}"
    return float(rec.value), None


def mean_range(values: Sequence[float], level: float, unit: str) -> Range:
    """The mean with its one-sample t interval (scipy.stats.ttest_1samp(...).confidence_interval)."""
    v = np.asarray(values, float)
    ci = sps.ttest_1samp(v, 0.0).confidence_interval(confidence_level=level)
    return Range(float(ci.low), float(ci.high), float(np.mean(v)), unit, level)


def cost_difference(
    trial_eur_per_kg: Sequence[float], baseline_eur_per_kg: Sequence[float], level: float
) -> Range:
    """Cost per kg, trial − baseline [€/kg], with Welch's interval at `level` (negative: the trial is
    cheaper); the method of the primary KPI (processing.stats.welch)."""
    w = stats.welch(np.asarray(trial_eur_per_kg, float), np.asarray(baseline_eur_per_kg, float), level)
    return Range(w.ci[0], w.ci[1], w.difference, "€/kg", level, f"Welch, df = {w.df:.1f}")


def saving_per_kg(difference: Range) -> Range:
    """Savings per kg [€/kg] = −(trial − baseline): positive when the trial is cheaper."""
    d = difference
    return Range(-d.high, -d.low, -d.estimate, "€/kg", d.level, d.note)


def kg_per_year(throughput: Throughput, kg_per_batch: float | None) -> float | None:
    """Product per year [kg]: kg_per_year, or batches_per_year × kg per batch (None without it)."""
    if throughput.kg_per_year is not None:
        return throughput.kg_per_year
    if throughput.batches_per_year is None or kg_per_batch is None:
        return None
    return throughput.batches_per_year * kg_per_batch


def annual_savings(saving: Range, kg_year: float) -> Range:
    """Savings per year [€/year] = savings per kg [€/kg] × product per year [kg/year] (a positive factor:
    the range maps end to end)."""
    return Range(
        saving.low * kg_year,
        saving.high * kg_year,
        saving.estimate * kg_year,
        "€/year",
        saving.level,
        f"at {kg_year:.4g} kg/year",
    )


def payback_years(quote_eur: float, annual: Range) -> Range | None:
    """Years until the quoted price [€] is saved back: quote / annual savings, over the savings' range.
    None when even the high end saves nothing; high = inf when the low end is not above 0."""
    if annual.high <= 0:
        return None
    low = quote_eur / annual.high
    high = quote_eur / annual.low if annual.low > 0 else math.inf
    estimate = quote_eur / annual.estimate if annual.estimate > 0 else math.inf
    note = "" if math.isfinite(high) else "the low end of the savings is not above 0: no payback bound"
    return Range(low, high, estimate, "years", annual.level, note)


@dataclass(frozen=True)
class Money:
    prices: Prices
    level: float
    runs: tuple[RunCost, ...]
    missing: tuple[str, ...]  # "<run>: <component>: <kpi> <problem>" for every run without a cost
    reason: str | None  # why there is no difference range (None when there is one)
    cost_trial: Range | None
    cost_baseline: Range | None
    difference: Range | None  # trial − baseline [€/kg]
    saving: Range | None  # baseline − trial [€/kg]
    annual: Range | None  # [€/year]
    payback: Range | None  # [years]
    throughput: Throughput | None
    quote: Quote | None


def assess_money(
    charter: Charter,
    trial: Sequence[RunRecord],
    baseline: Sequence[RunRecord],
    *,
    exclusions: Sequence[Exclusion] = (),
) -> Money:
    """The trial's money by its charter's prices, throughput and quote, over the runs the verdict counts
    (excluded runs are left out), at the charter's 1 − α."""
    level = 1 - charter.alpha
    out = {e.run_id for e in exclusions}
    costs = [
        run_cost(r, charter.prices, group=g, min_coverage=charter.min_coverage)
        for g, runs in (("trial", trial), ("baseline", baseline))
        for r in runs
        if r.run_id not in out
    ]
    missing = tuple(f"{c.run_id}: {m}" for c in costs for m in c.missing)
    t = [c.eur_per_kg for c in costs if c.group == "trial" and c.eur_per_kg is not None]
    b = [c.eur_per_kg for c in costs if c.group == "baseline" and c.eur_per_kg is not None]
    empty = Money(
        charter.prices,
        level,
        tuple(costs),
        missing,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        charter.throughput,
        charter.quote,
    )
    if missing:
        n = len({c.run_id for c in costs if c.missing})
        return _with(empty, reason=f"cost per kg is not a number for {n} run(s): {missing[0]}")
    if len(t) < 2 or len(b) < 2:
        return _with(
            empty, reason=f"{len(t)} trial and {len(b)} baseline runs have a cost; a range needs 2 of each"
        )
    if np.ptp(t) == 0 and np.ptp(b) == 0:
        return _with(empty, reason="every run has the same cost per kg: no interval")
    diff = cost_difference(t, b, level)
    saving = saving_per_kg(diff)
    annual = payback = None
    if charter.throughput is not None:
        products = [c.product_kg for c in costs if c.group == "trial" and c.product_kg is not None]
        kg_year = kg_per_year(charter.throughput, float(np.mean(products)) if products else None)
        if kg_year is not None:
            annual = annual_savings(saving, kg_year)
            if charter.quote is not None:
                payback = payback_years(charter.quote.eur, annual)
    return _with(
        empty,
        cost_trial=mean_range(t, level, "€/kg"),
        cost_baseline=mean_range(b, level, "€/kg"),
        difference=diff,
        saving=saving,
        annual=annual,
        payback=payback,
    )


def _with(m: Money, **changes: Any) -> Money:
    return replace(m, **changes)


def money_to_json(m: Money) -> dict[str, Any]:
    """Money as JSON (schema in the module docstring)."""

    def rng(r: Range | None) -> dict[str, Any] | None:
        return None if r is None else r.to_json()

    return {
        "currency": "EUR",
        "level": m.level,
        "product_kpi": m.prices.product_kpi,
        "prices": {
            name: {"price": price, "unit": unit, "kpi": kpi, "source": source}
            for name, (price, unit, kpi, _, _, source) in priced_components(m.prices).items()
        },
        "not_priced": not_priced(m.prices),
        "runs": [
            {
                "run": c.run_id,
                "group": c.group,
                "eur_per_kg": c.eur_per_kg,
                "eur": c.eur,
                "product_kg": c.product_kg,
                "parts": dict(c.parts),
                "missing": list(c.missing),
            }
            for c in m.runs
        ],
        "missing": list(m.missing),
        "reason": m.reason,
        "cost_trial": rng(m.cost_trial),
        "cost_baseline": rng(m.cost_baseline),
        "difference": rng(m.difference),
        "saving_per_kg": rng(m.saving),
        "annual_savings": rng(m.annual),
        "payback_years": rng(m.payback),
        "throughput": None if m.throughput is None else m.throughput.model_dump(mode="json"),
        "quote": None if m.quote is None else m.quote.model_dump(mode="json"),
    }
