"""Foreign exports: historian files written the way OTHER historians write them, imported with
`biopilot import` and `biopilot lab import`, give KPIs equal to values computed by hand here from the
numbers written into the files — or the documented flag or refusal, never a number computed from missing
or implausible inputs (issue 8).

The plant: fermenter P-1 of another site, exported every 12 minutes (0.2 h) for 10 h, in its own column
names (mapped in [historian.columns]) and its own units and conventions:
- VOL_M3 [m³]: 500 L until 2 h, then linear to 744 L at 9 h (harvest start), then drained to 0 at 10 h;
- FEED_KGH [kg/h]: 60 kg/h of a 500 g/L glucose feed of density 1.2 kg/L (= 50 L/h) from 2.0 to 8.8 h;
- DISCH_LPH [L/h]: broth discharged at 100 L/h from 5.0 to 6.0 h, written NEGATIVE (-100) as that
  historian writes outflows: the tag has scale = -1;
- ACID_LPH [L/h]: 2 L/h of acid from 2.0 to 8.8 h, mapped as acid_flow (into the broth, never broth out);
- XFER_LPH [L/h]: a 300 L/h recirculation loop mapped as a generic `flow`: counted nowhere;
- AIR_M3MIN [m³/min]: 2 m³/min of air (a meter referenced to 0 °C, 1.01325 bar: 22.414 L/mol);
- O2_PCT, CO2_PCT [%]: the outlet for R mol/h of O2 taken up and R mol/h of CO2 given off, R chosen so
  that the carbon balance closes (below);
- TEMP_K [K]: 303.15 K (no KPI reads it; stored as exported, 30 °C);
- TITER_UGML [µg/mL]: an online product analyser mapped as `titer`: 1000·(t − 2) µg/mL from 2 to 9 h
  (1 g/L per h), 7000 µg/mL from 9 h;
- CW_LPH [L/h]: cooling water 600 L/h; HW_M3H [m³/h]: heating water 0.06 m³/h;
- PHASE: "batch" (inoculation at 0 h) until 9 h, then "harvest" (until the run's end, 10 h).
Lab (LIMS export, `biopilot lab import`): glucose 20 000 mg/L at 0 h, 500 mg/L at 2 h and 9 h; dry cell
weight 1 g/L at 0 h, 15 at 5 h, 18 at 6 h, 30 at 9 h; no sample volumes.

Hand computation (trapezoid rule on the 0.2 h samples; inoculation 0 h, harvest start 9 h):
- feed over the run: 50 L/h · 6.8 h + two edges ½ · 0.2 h · 50 L/h = 350 L → 350 · 500 = 175 000 g fed;
  acid over 0–9 h: 2 · 6.8 + 2 · ½ · 0.2 · 2 = 14 L; discharged: 100 L/h · 1 h + 2 · ½ · 0.2 · 100 = 120 L;
- volume balance (V_end + out) / (V_0 + in) = (744 + 120) / (500 + 350 + 14) = 1;
- product discharged ∫F·P dt: P = t − 2 g/L on the discharge: 100 · 3.5 (5–6 h) + ½·0.2·300 + ½·0.2·400
  = 420 g; product formed = 744 L · 7 g/L + 420 = 5628 g; harvested 744 · 7 = 5208 g;
- substrate discharged: 120 L · 0.5 g/L = 60 g; consumed = 500 · 20 + 175 000 − 744 · 0.5 − 60 = 184 568 g;
- biomass discharged: X linear 15 → 18 g/L over 5–6 h: 100 · 16.5 + ½·0.2·1500 + ½·0.2·1800 = 1980 g;
  biomass formed = 744 · 30 + 1980 − 500 · 1 = 23 800 g;
- carbon in = 0.4 · (175 000 + 500 · 20) = 74 000 g C; out = biomass 23 800 / 24.6 · 12.011 + product
  5628 · 0.5 + substrate left 0.4 · (744 · 0.5 + 60) + CO2 → R = the rest / 12.011 / 10 h;
- mean working volume over 0–9 h = (500 · 2 + (500 + 744) / 2 · 7) / 9 = 5354 / 9 L;
- water = 600 L/h · 10 h + 0.06 m³/h · 10 h = 6.6 m³.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from biopilot import units
from biopilot.app.cli import main
from biopilot.config import load_config
from storage.sqlite import SqliteStore

T0 = datetime(2024, 3, 1, tzinfo=UTC)
HOURS = [round(0.2 * i, 10) for i in range(51)]  # 0 … 10 h every 12 min
RUN = "P-1:B-7"

# the hand-computed figures of the module docstring
FED_G = 350 * 500.0
V0, V_END = 500.0, 744.0
PRODUCT_G = V_END * 7.0 + 420.0  # 5628
CONSUMED_G = V0 * 20.0 + FED_G - V_END * 0.5 - 60.0  # 184 568
BIOMASS_G = V_END * 30.0 + 1980.0 - V0 * 1.0  # 23 800
CARBON_IN_G = 0.4 * (FED_G + V0 * 20.0)  # 74 000
SUBSTRATE_LEFT_C_G = 0.4 * (V_END * 0.5 + 60.0)
CO2_MOL = (CARBON_IN_G - (BIOMASS_G / 24.6 * 12.011 + PRODUCT_G * 0.5 + SUBSTRATE_LEFT_C_G)) / 12.011
R = CO2_MOL / 10.0  # [mol/h] O2 taken up = CO2 given off over the 10 h
AIR_MOL_H = 2.0 * 1000 * 60 / 22.414  # 2 m³/min at 22.414 L/mol


def volume_l(h: float) -> float:
    if h <= 2.0:
        return V0
    if h <= 9.0:
        return V0 + (V_END - V0) * (h - 2.0) / 7.0
    return V_END * (10.0 - h)


def outlet_percent() -> tuple[float, float]:
    o2, co2, inert = AIR_MOL_H * 0.2095 - R, AIR_MOL_H * 0.0004 + R, AIR_MOL_H * (1 - 0.2095 - 0.0004)
    total = o2 + co2 + inert
    return 100 * o2 / total, 100 * co2 / total


COLUMNS = ["Time", "PHASE", "VOL_M3", "FEED_KGH", "DISCH_LPH", "ACID_LPH", "XFER_LPH", "AIR_M3MIN"]
COLUMNS += ["O2_PCT", "CO2_PCT", "TEMP_K", "TITER_UGML", "CW_LPH", "HW_M3H"]


def historian_csv(path: Path, *, feed: bool = True) -> Path:
    """The export; feed=False leaves the FEED_KGH column empty (the historian lost the feed tag)."""
    o2, co2 = outlet_percent()
    lines = [",".join(COLUMNS)]
    for h in HOURS:
        on = 2.0 <= h <= 8.8
        row = [
            (T0 + timedelta(hours=h)).isoformat().replace("+00:00", "Z"),
            "batch" if h < 9.0 else "harvest",
            repr(volume_l(h) / 1000),
            ("60.0" if on else "0.0") if feed else "",
            "-100.0" if 5.0 <= h <= 6.0 else "0.0",
            "2.0" if on else "0.0",
            "300.0",
            "2.0",
            repr(o2),
            repr(co2),
            "303.15",
            repr(0.0 if h < 2.0 else 1000.0 * (min(h, 9.0) - 2.0)),
            "600.0",
            "0.06",
        ]
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lab_csv(path: Path) -> Path:
    rows = ["time,analyte,value,unit"]
    for h, value in ((0.0, 20000.0), (2.0, 500.0), (9.0, 500.0)):
        rows.append(f"{(T0 + timedelta(hours=h)).isoformat()},glucose,{value},mg/L")
    for h, value in ((0.0, 1.0), (5.0, 15.0), (6.0, 18.0), (9.0, 30.0)):
        rows.append(f"{(T0 + timedelta(hours=h)).isoformat()},dcw,{value},g/L")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def site_toml(
    *,
    discharge_scale: str = "scale = -1  # that historian writes outflows as negative numbers\n",
    titer_unit: str = "ug/mL",
    process_extra: str = "",
) -> str:
    def tag(name: str, role: str, unit: str, extra: str = "") -> str:
        unit_line = f'unit = "{unit}"\n' if unit else ""
        return (
            f'\n[[tags]]\nname = "P-1.{name}"\nequipment = "P-1"\nrole = "{role}"\n{unit_line}{extra}'
            f'source = {{ protocol = "opcua", server = "dcs", node_id = "ns=2;s={name}" }}\n'
        )

    return (
        '[site]\nname = "Another plant"\ntimezone = "UTC"\n\n'
        '[opcua.servers.dcs]\nendpoint = "opc.tcp://127.0.0.1:4840/"\n\n'
        '[[equipment]]\nid = "P-1"\nkind = "fermenter"\n\n'
        f'[[process]]\nequipment = "P-1"\nproduct = "penicillin"\n{process_extra}'
        + tag("phase", "phase", "")
        + tag("volume", "volume", "m3")
        + tag(
            "sugar_feed",
            "feed_rate",
            "kg/h",
            'feed = { substrate = "glucose", concentration = 500.0, density = 1.2 }\n',
        )
        + tag("discharge", "discharge_flow", "L/h", discharge_scale)
        + tag("acid", "acid_flow", "L/h")
        + tag("recirculation", "flow", "L/h")
        + tag("air", "air_flow", "m3/min")
        + tag("offgas_o2", "offgas_o2", "%")
        + tag("offgas_co2", "offgas_co2", "%")
        + tag("temperature", "temperature", "K")
        + tag("titer", "titer", titer_unit)
        + tag("cooling_water", "cooling_water_flow", "L/h")
        + tag("heating_water", "heating_water_flow", "m3/h")
        + '\n[historian]\ntime_column = "Time"\n[historian.columns]\n'
        + "\n".join(
            f'"{c}" = "P-1.{t}"'
            for c, t in (
                ("PHASE", "phase"),
                ("VOL_M3", "volume"),
                ("FEED_KGH", "sugar_feed"),
                ("DISCH_LPH", "discharge"),
                ("ACID_LPH", "acid"),
                ("XFER_LPH", "recirculation"),
                ("AIR_M3MIN", "air"),
                ("O2_PCT", "offgas_o2"),
                ("CO2_PCT", "offgas_co2"),
                ("TEMP_K", "temperature"),
                ("TITER_UGML", "titer"),
                ("CW_LPH", "cooling_water"),
                ("HW_M3H", "heating_water"),
            )
        )
        + "\n"
    )


@dataclass
class Site:
    config: Path
    data: Path
    capsys: pytest.CaptureFixture[str]

    def cli(self, *argv: str) -> tuple[int, str, str]:
        rc = main([*argv, "--config", str(self.config), "--data-dir", str(self.data)])
        out, err = self.capsys.readouterr()
        return rc, out, err

    def kpis(self) -> dict[str, dict]:
        rc, out, err = self.cli("kpis", RUN, "--recompute", "--json")
        assert rc == 0, err
        return {k["name"]: k for k in json.loads(out)["kpis"]}


def imported(tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, *, feed: bool = True) -> Site:
    site = Site(tmp_path / "site.toml", tmp_path / "data", capsys)
    site.config.write_text(toml, encoding="utf-8")
    rc, _, err = site.cli(
        "import", str(historian_csv(tmp_path / "b7.csv", feed=feed)), "--equipment", "P-1", "--run-id", "B-7"
    )
    assert rc == 0, err
    rc, _, err = site.cli("lab", "import", str(lab_csv(tmp_path / "lims.csv")), "--run", RUN)
    assert rc == 0, err
    return site


def test_a_foreign_export_gives_the_hand_computed_kpis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = imported(tmp_path, capsys, site_toml())
    k = site.kpis()
    expected = {
        "batch_duration": 10.0,
        "growth_duration": 9.0,
        "titer": 7.0,  # 7000 µg/mL
        "product_formed": PRODUCT_G / 1000,  # 5.628 kg: the discharge, written negative, counts positive
        "product_harvested": V_END * 7.0 / 1000,
        "substrate_fed": FED_G / 1000,  # 60 kg/h ÷ 1.2 kg/L = 50 L/h
        "substrate_consumed": CONSUMED_G / 1000,
        "biomass_formed": BIOMASS_G / 1000,
        "yield_product_substrate_consumed": PRODUCT_G / CONSUMED_G,
        "yield_product_substrate_fed": PRODUCT_G / FED_G,
        "yield_product_carbon": PRODUCT_G / (CARBON_IN_G - SUBSTRATE_LEFT_C_G),
        "yield_biomass_substrate_consumed": BIOMASS_G / CONSUMED_G,
        "yield_biomass_substrate_fed": BIOMASS_G / FED_G,
        "yield_product_biomass": PRODUCT_G / BIOMASS_G,
        "mean_working_volume": 5354 / 9,
        "volumetric_productivity": PRODUCT_G / 5354,  # m_P / (V̄ · 9 h)
        "volume_balance_closure": 1.0,  # acid in, the recirculation loop nowhere
        "o2_consumed": 10 * R,  # air in m³/min
        "co2_produced": 10 * R,
        "rq": 1.0,
        "carbon_balance_closure": 1.0,
        "water": 6.6,  # cooling water in L/h + heating water in m³/h
        "water_specific": 6.6 / (PRODUCT_G / 1000),
    }
    for name, value in expected.items():
        assert k[name]["value"] == pytest.approx(value, rel=1e-5), (name, k[name])
        assert k[name]["flags"] == [], (name, k[name])
        assert k[name]["coverage"] == pytest.approx(1.0), (name, k[name])
    # μ_max on total biomass V·X: 500 · 1 g (0 h) → V(5 h) · 15 g (5 h) → V(6 h) · 18 (6 h) → 744 · 30 (9 h)
    m = [V0 * 1.0, volume_l(5.0) * 15.0, volume_l(6.0) * 18.0, V_END * 30.0]
    mu = max(math.log(m[1] / m[0]) / 5, math.log(m[2] / m[1]) / 1, math.log(m[3] / m[2]) / 3)
    assert k["mu_max"]["value"] == pytest.approx(mu, rel=1e-5)
    # the inputs: the discharge and the acid feed the accounts; the generic flow feeds nothing
    assert "P-1.discharge" in k["product_formed"]["inputs"]
    assert {"P-1.acid", "P-1.discharge", "P-1.sugar_feed"} <= set(k["volume_balance_closure"]["inputs"])
    assert not any("P-1.recirculation" in x["inputs"] for x in k.values())
    # temperature in K is stored as exported (no KPI reads it); through biopilot.units it is 30 °C
    config = load_config(site.config)
    store = SqliteStore(site.data / config.storage.path)
    try:
        kelvin = store.read("P-1.temperature", T0, T0 + timedelta(hours=11)).values
        discharge = store.read("P-1.discharge", T0, T0 + timedelta(hours=11)).values
    finally:
        store.close()
    assert set(kelvin.tolist()) == {303.15}
    assert units.convert(kelvin, "K", "degC") == pytest.approx(30.0)
    assert discharge.max() == 100.0 and discharge.min() == 0.0  # stored = raw × −1


def test_negative_outflows_without_the_scale_are_flagged_not_hidden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same file with a config that does not know the historian's sign convention: the discharge
    subtracts its product (5208 − 420 = 4788 g, 15 % low) — but the KPI says why it cannot be trusted: the
    discharge tag read negative on 6 of its 51 samples (12 %), and the volume balance does not close:
    (744 − 120) / 864 = 0.722."""
    k = imported(tmp_path, capsys, site_toml(discharge_scale="")).kpis()
    assert k["volume_balance_closure"]["value"] == pytest.approx(624 / 864, rel=1e-6)
    assert "closure_out_of_range" in k["volume_balance_closure"]["flags"]
    product = k["product_formed"]
    assert product["value"] == pytest.approx((V_END * 7.0 - 420.0) / 1000, rel=1e-6)
    assert "negative_values:P-1.discharge=12%" in product["flags"]
    assert "closure_out_of_range:volume_balance_closure" in product["flags"]
    for name in ("biomass_formed", "yield_product_substrate_consumed", "substrate_consumed"):
        assert "closure_out_of_range:volume_balance_closure" in k[name]["flags"], k[name]
    assert k["product_harvested"]["flags"] == []  # V_end · titer does not rest on the discharge


def test_a_sugar_feed_without_data_gives_missing_input_and_no_yield(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The historian lost the feed tag: its column is empty. Computed from zeros, the substrate consumed
    would be 500 · 20 − 744 · 0.5 − 60 = 9568 g and the yield 5628 / 9568 = 0.59 g/g — a number that looks
    like a result. Instead every KPI that needs the feed is null and names it."""
    k = imported(tmp_path, capsys, site_toml(), feed=False).kpis()
    for name in (
        "substrate_fed",
        "substrate_consumed",
        "yield_product_substrate_consumed",
        "yield_product_substrate_fed",
        "yield_biomass_substrate_consumed",
        "yield_product_carbon",
        "volume_balance_closure",
    ):
        assert k[name]["value"] is None, k[name]
        assert "missing_input:P-1.sugar_feed" in k[name]["flags"], k[name]
    assert k["product_formed"]["value"] == pytest.approx(PRODUCT_G / 1000, rel=1e-6)  # it needs no feed


def test_a_titer_unit_mistake_is_implausible_not_a_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The titer column is in µg/mL but the config says g/L: 7000 "g/L" is more than the broth's own density
    (1000 g/L), so titer, product and every yield on it are null with the reason (and a yield on
    7000 g/L would be 28 g/g, far above glucose's carbon bound of 0.8 g/g)."""
    k = imported(tmp_path, capsys, site_toml(titer_unit="g/L")).kpis()
    for name in (
        "titer",
        "product_formed",
        "product_harvested",
        "yield_product_substrate_consumed",
        "volumetric_productivity",
    ):
        assert k[name]["value"] is None, k[name]
        assert "implausible:titer_above_broth_density" in k[name]["flags"], k[name]
    assert k["biomass_formed"]["value"] == pytest.approx(BIOMASS_G / 1000, rel=1e-6)  # no titer in it


def test_a_yield_above_its_stoichiometric_maximum_is_not_a_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[[process]] max_yield_product = 0.02 g/g: the yield on substrate consumed, 5628 / 184 568 = 0.0305, is
    above it; on substrate fed the product may also come from the 10 000 g of glucose in the broth at
    inoculation, so its maximum is 0.02 · (175 000 + 10 000) / 175 000 = 0.0211 < 5628 / 175 000 = 0.0322."""
    k = imported(tmp_path, capsys, site_toml(process_extra="max_yield_product = 0.02\n")).kpis()
    consumed, fed = k["yield_product_substrate_consumed"], k["yield_product_substrate_fed"]
    assert consumed["value"] is None and "implausible:above_stoichiometric_max=0.02" in consumed["flags"]
    assert fed["value"] is None and "implausible:above_stoichiometric_max=0.0211" in fed["flags"]
    assert k["yield_biomass_substrate_consumed"]["value"] == pytest.approx(BIOMASS_G / CONSUMED_G, rel=1e-6)


def test_lab_units_are_checked_when_results_enter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = imported(tmp_path, capsys, site_toml())
    bad = tmp_path / "bad-lims.csv"
    bad.write_text(
        "time,analyte,value,unit\n"
        f"{T0.isoformat()},titer,5000,ug\n"  # a mass is not a concentration
        f"{T0.isoformat()},glucose,2,%\n",  # nor is a fraction
        encoding="utf-8",
    )
    rc, out, err = site.cli("lab", "import", str(bad), "--run", RUN)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "row 2, column 'unit': 'ug' is refused: 'ug' (mass) is not a unit for analyte 'titer'" in err
    assert "row 3, column 'unit': '%' is refused: '%' (fraction) is not a unit for analyte 'glucose'" in err
    rc, _, err = site.cli(
        "lab", "add", RUN, "--time", T0.isoformat(), "--analyte", "dcw", "--value", "3", "--unit", "gpl"
    )
    assert rc == 2 and "--unit: 'gpl' is not a unit BioPilot knows" in err
    # 5000 µg/mL is 5 g/L: a lab titer at the end of the harvest is the run's titer
    end = (T0 + timedelta(hours=10)).isoformat()
    rc, _, err = site.cli(
        "lab", "add", RUN, "--time", end, "--analyte", "titer", "--value", "5000", "--unit", "ug/mL"
    )
    assert rc == 0, err
    assert site.kpis()["titer"]["value"] == pytest.approx(5.0)
