"""biopilot/units.py: BioPilot's pint registry, the kinds roles accept, conversions and tag transforms.

Expected values are worked out by hand beside each assertion (SI definitions: 1 m³ = 1000 L, 1 h = 60 min,
0 °C = 273.15 K, 1 atm = 1.01325 bar).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest

from biopilot import units
from biopilot.samples import Sample


@pytest.mark.parametrize(
    ("frm", "to", "value", "expected"),
    [
        ("m3/min", "L/h", 1.0, 60_000.0),  # 1000 L × 60 min/h
        ("m3/h", "L/h", 0.5, 500.0),
        ("m³/h", "L/h", 0.5, 500.0),  # the superscript spelling
        ("mL/min", "L/h", 10.0, 0.6),  # 0.01 L × 60
        ("Nm3/h", "L/min", 6.0, 100.0),  # 6000 L / 60 min
        ("NL/min", "L/min", 800.0, 800.0),  # a normal litre is a litre at 0 °C, 1.01325 bar
        ("K", "degC", 303.15, 30.0),
        ("degF", "degC", 212.0, 100.0),
        ("barg", "bar", 0.5, 1.51325),  # gauge: + 1.01325 bar
        ("ug/mL", "g/L", 5000.0, 5.0),  # 5000 µg/mL = 5 mg/mL = 5 g/L
        ("mg/L", "g/L", 250.0, 0.25),
        ("%", "mol/mol", 20.95, 0.2095),
        ("ppm", "mol/mol", 400.0, 0.0004),
        ("W", "kW", 1500.0, 1.5),
        ("MWh", "kWh", 0.2, 200.0),
        ("GJ", "kWh", 3.6, 1000.0),  # 1 kWh = 3.6 MJ
        ("t/h", "kg/h", 1.2, 1200.0),
        ("uS/cm", "mS/cm", 1500.0, 1.5),
        ("FTU", "NTU", 12.0, 12.0),
    ],
)
def test_conversions(frm: str, to: str, value: float, expected: float) -> None:
    assert units.convert(value, frm, to) == pytest.approx(expected, rel=1e-12)


def test_a_whole_array_is_converted_with_one_factor_and_offset() -> None:
    assert units.conversion("K", "degC") == units.Conversion(1.0, -273.15)
    assert units.conversion("m3/min", "L/h") == units.Conversion(60_000.0)  # no float noise (59999.99…)
    values = np.linspace(0.0, 10.0, 1_000_000)
    units.convert(values[:2], "m3/min", "L/h")  # the pair's factor is cached from here on
    t0 = time.perf_counter()
    out = units.convert(values, "m3/min", "L/h")
    elapsed = time.perf_counter() - t0
    assert out[-1] == pytest.approx(600_000.0) and out.dtype == np.float64
    # one multiplication over a million values (numpy: a few ms), never a pint object per sample (seconds);
    # 0.5 s leaves room for a loaded machine
    assert elapsed < 0.5, elapsed


def test_a_conversion_between_dimensions_or_from_an_unknown_unit_is_refused() -> None:
    with pytest.raises(units.UnitError, match="cannot convert 'kg/h'"):
        units.conversion("kg/h", "L/h")
    with pytest.raises(units.UnitError, match="'wibbles/h' is not a unit BioPilot knows"):
        units.conversion("wibbles/h", "L/h")
    with pytest.raises(units.UnitError, match="not a plain factor"):
        units.factor("degC", "K")


def test_kinds_and_the_one_clause_a_refusal_gives() -> None:
    assert units.kind_of("m3/min", (units.VOLUME_FLOW, units.MASS_FLOW)) is units.VOLUME_FLOW
    assert units.kind_of("kg/h", (units.VOLUME_FLOW, units.MASS_FLOW)) is units.MASS_FLOW
    assert units.check("NL/min", (units.GAS_FLOW,)) is None
    assert units.check("pH", (units.ACIDITY,)) is None
    assert units.check("", ()) is None  # text takes no unit
    assert units.check("bar", (units.TEMPERATURE,), "role 'temperature'") == (
        "'bar' (pressure) is not a unit for role 'temperature', which accepts temperature (degC, K, degF…)"
    )
    # pH is a dimension of its own: a percentage is not a pH
    assert "'%' (fraction) is not a unit for" in str(units.check("%", (units.ACIDITY,)))
    assert units.check("", (units.VOLUME_FLOW,), "role 'flow'") == (
        "no unit given; role 'flow' accepts volume flow (L/h, mL/min, L/min, m3/h…)"
    )
    unknown = units.check("lph", (units.VOLUME_FLOW,))
    assert unknown is not None and unknown.startswith("'lph' is not a unit BioPilot knows")
    assert units.check("degC", ()) == "'degC': it is text and takes no unit"


def test_liquid_flows_in_mass_units_need_a_density() -> None:
    # 120 kg/h of a 1.2 kg/L feed = 100 L/h
    assert units.liquid_flow_l_per_h("kg/h", 1.2)(120.0) == pytest.approx(100.0)
    assert units.liquid_flow_l_per_h("m3/h", None)(0.1) == pytest.approx(100.0)
    with pytest.raises(units.UnitError, match="needs the liquid's density"):
        units.liquid_flow_l_per_h("kg/h", None)


def test_transforms_turn_raw_values_into_stored_ones() -> None:
    negative_outflow = units.Transform(scale=-1.0)
    assert negative_outflow(-250.0) == 250.0
    np.testing.assert_array_equal(negative_outflow(np.array([-1.0, 0.0, -3.5])), [1.0, -0.0, 3.5])
    # raw 4–20 mA scaled to 0–100 %: (12 mA) × 6.25 − 25 = 50 %
    assert units.Transform(6.25, -25.0)(12.0) == pytest.approx(50.0)
    assert units.Transform().identity and not negative_outflow.identity
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    samples = [
        Sample("out", ts, -2.0),
        Sample("out", ts, None, 0x80000000),
        Sample("phase", ts, "fed"),
        Sample("t", ts, 3.0),
    ]
    got = units.transform_samples(samples, {"out": negative_outflow, "phase": negative_outflow})
    assert [s.value for s in got] == [2.0, None, "fed", 3.0]  # text, None and untransformed tags pass


def test_display_and_plant_spellings() -> None:
    assert [units.display(u) for u in ("degC", "m3/h", "Nm3/h", "ug/mL", "g/L", "L/h", "pH", "")] == [
        "°C",
        "m³/h",
        "Nm³/h",
        "µg/mL",
        "g/L",
        "L/h",
        "",
        "",
    ]
    assert units.display("not a unit") == "not a unit"
    # OPC UA EUInformation display names
    assert [units.normalize(t) for t in ("°C", "C", "bar(g)", "l/h", " kW ")] == [
        "degC",
        "degC",
        "barg",
        "L/h",
        "kW",
    ]


def test_the_registry_is_biopilots_own() -> None:
    import pint

    assert units.registry() is units.registry()
    assert units.registry() is not pint.get_application_registry().get()
    with pytest.raises(pint.errors.UndefinedUnitError):
        pint.get_application_registry().get().parse_units("barg")
