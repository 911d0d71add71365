"""Money of a trial (processing/money.py) against hand-computed values; every aggregate is a range."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from biopilot.charter import Charter, Prices, load_charter
from biopilot.records import KpiRecord
from processing import money
from processing.trial_inputs import Exclusion, RunRecord
from processing.verdict import judge, verdict_to_json

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "trials" / "example-charter.toml"
T0 = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
UNITS = {
    "substrate_fed": "kg",
    "energy.total": "kWh",
    "steam": "kg",
    "water": "m3",
    "batch_duration": "h",
    "product_formed": "kg",
    "yield_product_substrate_consumed": "g/g",
}


def run(run_id: str, day: int, **values: float | None) -> RunRecord:
    kpis = {
        name.replace("__", "."): KpiRecord(
            name.replace("__", "."), v, UNITS[name.replace("__", ".")], 1.0, (), True
        )
        for name, v in values.items()
    }
    return RunRecord(run_id, T0 + timedelta(days=day), kpis)


def standard(run_id: str, day: int, product: float, hours: float = 48.0) -> RunRecord:
    """100 kg glucose, 500 kWh, 2 t steam, 10 m³ water, `hours` h, `product` kg."""
    return run(
        run_id, day, substrate_fed=100.0, energy__total=500.0, steam=2000.0, water=10.0,
        batch_duration=hours, product_formed=product, yield_product_substrate_consumed=product / 100,
    )  # fmt: skip


def test_run_cost_by_hand() -> None:
    """Prices of the example charter: glucose 0.40 €/kg, electricity 0.18 €/kWh, steam 35 €/t, water
    2.0 €/m³, batch hour 120 €/h. 100 kg + 500 kWh + 2 t + 10 m³ + 48 h = 40 + 90 + 70 + 20 + 5760 =
    5980 €; over 6 kg of product 996.67 €/kg."""
    prices = load_charter(EXAMPLE).prices
    c = money.run_cost(standard("R1", 0, 6.0), prices, group="trial")
    assert c.parts == pytest.approx(
        {"substrate:glucose": 40.0, "electricity": 90.0, "steam": 70.0, "water": 20.0, "batch_hour": 5760.0}
    )
    assert c.eur == pytest.approx(5980.0) and c.eur_per_kg == pytest.approx(5980 / 6)
    assert c.missing == ()


def test_a_missing_input_makes_the_cost_not_a_number_and_names_it() -> None:
    prices = load_charter(EXAMPLE).prices
    r = standard("R1", 0, 6.0)
    kpis = dict(r.kpis)
    del kpis["steam"]
    kpis["water"] = KpiRecord("water", 10.0, "L", 1.0, (), True)
    kpis["product_formed"] = KpiRecord("product_formed", 6.0, "kg", 0.5, ("incomplete",), True)
    c = money.run_cost(RunRecord("R1", r.start, kpis), prices, min_coverage=0.95)
    assert c.eur_per_kg is None and c.eur is None
    assert c.missing == (
        "steam: steam has no value (not computed)",
        "water: water is in 'L', expected 'm3'",
        "product: product_formed covers 50 % of its inputs (< 95 %)",
    )


def test_unpriced_utilities_are_listed_not_zero() -> None:
    prices = Prices(substrates=load_charter(EXAMPLE).prices.substrates)
    assert money.not_priced(prices) == ["electricity", "steam", "water", "batch_hour"]
    c = money.run_cost(standard("R1", 0, 5.0), prices)
    assert c.parts == {"substrate:glucose": pytest.approx(40.0)} and c.eur_per_kg == pytest.approx(8.0)


def test_cost_difference_is_welch() -> None:
    """Welch by hand on €/kg: trial 900, 910, 905; baseline 960, 950, 970, 955, 965: d = −56.67; interval
    d ± t(0.975, ν)·√(s_T²/3 + s_B²/5) with the Welch–Satterthwaite ν."""
    t, b = [900.0, 910.0, 905.0], [960.0, 950.0, 970.0, 955.0, 965.0]
    r = money.cost_difference(t, b, 0.95)
    vt, vb = np.var(t, ddof=1) / 3, np.var(b, ddof=1) / 5
    nu = (vt + vb) ** 2 / (vt**2 / 2 + vb**2 / 4)
    half = sps.t.ppf(0.975, nu) * math.sqrt(vt + vb)
    d = np.mean(t) - np.mean(b)
    assert (r.low, r.estimate, r.high) == pytest.approx((d - half, d, d + half))
    assert r.unit == "€/kg" and r.level == 0.95
    s = money.saving_per_kg(r)
    assert (s.low, s.estimate, s.high) == pytest.approx((-d - half, -d, -d + half))


def test_annual_savings_and_payback_by_hand() -> None:
    """Savings 40 to 70 €/kg (estimate 55) at 260 kg/year: 10 400 to 18 200 €/year; a 40 000 € quote pays
    back in 40 000/18 200 = 2.20 to 40 000/10 400 = 3.85 years (estimate 2.80)."""
    saving = money.Range(40.0, 70.0, 55.0, "€/kg", 0.95)
    annual = money.annual_savings(saving, 260.0)
    assert (annual.low, annual.estimate, annual.high) == pytest.approx((10_400, 14_300, 18_200))
    pb = money.payback_years(40_000, annual)
    assert pb is not None
    assert (pb.low, pb.estimate, pb.high) == pytest.approx(
        (40_000 / 18_200, 40_000 / 14_300, 40_000 / 10_400)
    )
    # a range of savings that reaches 0 bounds the payback only from below; one that never saves, not at all
    open_ended = money.payback_years(40_000, money.Range(-1000.0, 5000.0, 2000.0, "€/year", 0.95))
    assert open_ended is not None and open_ended.low == 8.0 and open_ended.high == math.inf
    assert open_ended.to_json()["high"] is None and "no payback bound" in open_ended.note
    assert money.payback_years(40_000, money.Range(-5000.0, -1000.0, -3000.0, "€/year", 0.95)) is None


def test_kg_per_year_from_batches() -> None:
    from biopilot.charter import Throughput

    assert money.kg_per_year(Throughput(batches_per_year=40, source="plan"), 6.5) == 260.0
    assert money.kg_per_year(Throughput(kg_per_year=300, source="plan"), 6.5) == 300.0
    assert money.kg_per_year(Throughput(batches_per_year=40, source="plan"), None) is None


def _charter() -> Charter:
    return load_charter(EXAMPLE).model_copy(update={"secondary_kpis": []})


def test_assess_money_end_to_end_is_only_ranges() -> None:
    """Three trial runs with 6.6, 6.5, 6.7 kg and five baseline runs with 6.0–6.2 kg, the same costs
    otherwise (5980 €): cheaper per kg; the annual savings at 40 batches × the trial's mean 6.6 kg = 264
    kg/year, and the payback of the 40 000 € quote; excluded runs are left out."""
    trial = [standard(f"T{i}", 20 + i, p) for i, p in enumerate([6.6, 6.5, 6.7])]
    baseline = [standard(f"B{i}", i, p) for i, p in enumerate([6.0, 6.1, 6.2, 6.05, 6.15, 3.0])]
    m = money.assess_money(_charter(), trial, baseline, exclusions=[Exclusion("B5", "contaminated")])
    assert m.reason is None and len(m.runs) == 8
    t = [5980 / p for p in (6.6, 6.5, 6.7)]
    b = [5980 / p for p in (6.0, 6.1, 6.2, 6.05, 6.15)]
    assert m.difference.estimate == pytest.approx(np.mean(t) - np.mean(b))
    assert m.saving.low > 0
    assert m.annual.note == "at 264 kg/year"
    assert m.annual.estimate == pytest.approx(-m.difference.estimate * 264)
    assert m.payback.estimate == pytest.approx(40_000 / m.annual.estimate)
    doc = money.money_to_json(m)
    json.dumps(doc, allow_nan=False)
    for key in (
        "cost_trial",
        "cost_baseline",
        "difference",
        "saving_per_kg",
        "annual_savings",
        "payback_years",
    ):
        assert set(doc[key]) == {"low", "high", "estimate", "unit", "level", "note"}
        assert doc[key]["low"] <= doc[key]["estimate"] <= doc[key]["high"]
    assert doc["prices"]["steam"] == {
        "price": 35.0,
        "unit": "€/t",
        "kpi": "steam",
        "source": "example: site utility price list 2025",
    }


def test_assess_money_refuses_a_range_with_a_missing_input() -> None:
    trial = [standard(f"T{i}", 20 + i, p) for i, p in enumerate([6.6, 6.5, 6.7])]
    baseline = [standard(f"B{i}", i, p) for i, p in enumerate([6.0, 6.1, 6.2])]
    kpis = dict(baseline[1].kpis)
    kpis["energy.total"] = KpiRecord("energy.total", None, "kWh", 0.0, ("missing_input",), True)
    baseline[1] = RunRecord("B1", baseline[1].start, kpis)
    m = money.assess_money(_charter(), trial, baseline)
    assert m.difference is None and m.annual is None and m.payback is None
    assert (
        m.reason == "cost per kg is not a number for 1 run(s): B1: electricity: energy.total has no value "
        "(missing_input)"
    )


def test_the_verdict_carries_the_money() -> None:
    trial = [standard(f"T{i}", 20 + i, p) for i, p in enumerate([6.6, 6.5, 6.7])]
    baseline = [standard(f"B{i}", i, p) for i, p in enumerate([6.0, 6.1, 6.2, 6.05, 6.15])]
    doc = verdict_to_json(judge(_charter(), trial, baseline))
    assert doc["word"] == "better"
    assert doc["money"]["annual_savings"]["low"] > 0 and doc["money"]["currency"] == "EUR"
