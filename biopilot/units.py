"""Units: BioPilot's one pint registry, the kinds of quantity roles accept, conversions and tag transforms.

Every unit a site config, a lab result or a historian export names is parsed here, and every conversion
in processing, the lab path, the importers and the dashboard goes through `conversion()`: there is no
other table of factors, and an unknown unit is refused, never taken as factor 1.

The registry is BioPilot's own `pint.UnitRegistry` (pint's global one is left alone), with the plant units
pint lacks:

- **NL, Nm3** (normal litre, normal cubic metre): a volume of gas at the *normal* reference conditions of
  DIN 1343, 0 °C and 1.01325 bar, where an ideal gas takes 22.414 L/mol. As a unit they are litres and
  cubic metres (NL/min converts 1:1 to L/min); turning a gas flow into moles uses the molar volume at the
  meter's reference, `[[process]] gas_molar_volume` (default 22.414 L/mol: a meter in NL/min or Nm3/h;
  24.04 for a "standard" litre at 20 °C and 1.01325 bar, 24.47 at 25 °C).
- **m3, cm3, dm3** and m³ (pint spells them m**3).
- **barg** (bar gauge): absolute pressure − 1.01325 bar (so 0 barg = 1.01325 bar absolute); **psig** likewise.
- **pH**, a dimension of its own (nothing converts to or from it); **NTU**, **FTU**, **FNU** (turbidity, one
  dimension: formazin units read the same scale).
- pint's own: %, ppm and mol/mol (dimensionless fractions), rpm, mS/cm, µg/mL (also ug/mL), kWh, t (tonne)…

Conversions are affine (value × factor + offset: °C ↔ K, barg ↔ bar) and computed once per (from, to)
pair, then applied to whole numpy arrays: never a pint object per sample.

A tag's transform (`scale`, `offset` in [[tags]]) turns the raw value of an export that differs from the
plant's convention into the stored value: stored = raw × scale + offset, applied where a raw value becomes a
stored sample (the collectors' sink, the historian importer). A historian that writes broth discharges as
negative L/h gets `scale = -1`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from biopilot.errors import BioPilotError
from biopilot.samples import Sample

if TYPE_CHECKING:
    import pint

NORMAL_TEMPERATURE_C = 0.0  # [°C] DIN 1343 normal conditions of NL and Nm3
NORMAL_PRESSURE_BAR = 1.01325  # [bar]
NORMAL_MOLAR_VOLUME = 22.414  # [L/mol] an ideal gas at 0 °C and 1.01325 bar
WATER_DENSITY = 1.0  # [kg/L] water flows given as mass (kg/h): 1.000 at 4 °C, 0.998 at 20 °C (−0.2 %)

# Added to pint's default definitions (pint's definition syntax). The reference conditions of NL and Nm3
# are stated in the module docstring; as units they are volumes.
_DEFINITIONS = (
    "normal_liter = liter = NL = Nl",
    "normal_cubic_meter = meter ** 3 = Nm3",
    "cubic_meter_ = meter ** 3 = m3",
    "cubic_decimeter_ = decimeter ** 3 = dm3",
    "cubic_centimeter_ = centimeter ** 3 = cm3",
    f"bar_gauge = bar; offset: {NORMAL_PRESSURE_BAR} = barg",
    "psi_gauge = psi; offset: 14.6959488 = psig",
    "pH = [acidity]",
    "nephelometric_turbidity_unit = [turbidity] = NTU",
    "formazin_turbidity_unit = NTU = FTU",
    "formazin_nephelometric_unit = NTU = FNU",
)
_SUPERSCRIPTS = str.maketrans({"²": "2", "³": "3"})


class UnitError(BioPilotError):
    """A unit that pint cannot read, or a conversion between units of different dimensions."""


@functools.cache
def registry() -> pint.UnitRegistry:
    """BioPilot's unit registry (built once per process, ~0.3 s; pint's global registry is not used)."""
    import pint

    ureg = pint.UnitRegistry(cache_folder=None, autoconvert_offset_to_baseunit=False)
    for line in _DEFINITIONS:
        ureg.define(line)
    return ureg


def _spelled(unit: str) -> str:
    return unit.strip().translate(_SUPERSCRIPTS)


@functools.cache
def parse(unit: str) -> pint.Unit:
    """The pint unit of a unit string ("L/h", "m3/min", "ug/mL", "%"); UnitError if pint cannot read it.
    An empty string is dimensionless."""
    import pint

    text = _spelled(unit)
    try:
        return registry().parse_units(text) if text else registry().dimensionless
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError) as exc:
        raise UnitError(f"{unit!r} is not a unit BioPilot knows ({exc})") from None
    except (ValueError, TypeError, AttributeError, SyntaxError, AssertionError) as exc:
        raise UnitError(f"{unit!r} is not a unit ({exc})") from None


def known(unit: str) -> bool:
    try:
        parse(unit)
    except UnitError:
        return False
    return True


# -- kinds of quantity ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """A kind of quantity a role accepts: a name, and units of it (the first sets its dimension; all are
    shown when a unit is refused)."""

    name: str
    examples: tuple[str, ...]

    @property
    def dimensionality(self) -> object:
        return parse(self.examples[0]).dimensionality

    def fits(self, unit: str) -> bool:
        """Is `unit` (a string pint reads) of this kind?"""
        try:
            return parse(unit).dimensionality == self.dimensionality
        except UnitError:
            return False

    def __str__(self) -> str:
        return f"{self.name} ({', '.join(self.examples)}…)"


TEMPERATURE = Kind("temperature", ("degC", "K", "degF"))
ACIDITY = Kind("pH", ("pH",))
FRACTION = Kind("fraction", ("%", "mol/mol", "ppm"))
ROTATION = Kind("rotational speed", ("rpm", "1/s"))
VOLUME_FLOW = Kind("volume flow", ("L/h", "mL/min", "L/min", "m3/h"))
GAS_FLOW = Kind("gas volume flow", ("NL/min", "Nm3/h", "L/min", "m3/h"))  # VOLUME_FLOW's dimension
MASS_FLOW = Kind("mass flow", ("kg/h", "g/h", "t/h"))
PRESSURE = Kind("pressure", ("bar", "barg", "mbar", "kPa"))
VOLUME = Kind("volume", ("L", "m3", "mL"))
MASS = Kind("mass", ("kg", "t", "g"))
LENGTH = Kind("length", ("m", "cm", "mm"))
POWER = Kind("power", ("kW", "W", "MW"))
ENERGY = Kind("energy", ("kWh", "MWh", "MJ", "GJ"))
CONCENTRATION = Kind("mass concentration", ("g/L", "mg/L", "ug/mL", "kg/m3"))
TURBIDITY = Kind("turbidity", ("NTU", "FTU", "FNU"))
CONDUCTIVITY = Kind("conductivity", ("mS/cm", "uS/cm", "S/m"))
# named only to say what a refused unit is
MOLAR_CONCENTRATION = Kind("molar concentration", ("mol/L", "mmol/L"))
MOLAR_FLOW = Kind("molar flow", ("mol/h", "kmol/h"))
TIME = Kind("time", ("h", "min", "s"))
ALL_KINDS = (
    TEMPERATURE,
    ACIDITY,
    FRACTION,
    ROTATION,
    VOLUME_FLOW,
    MASS_FLOW,
    PRESSURE,
    VOLUME,
    MASS,
    LENGTH,
    POWER,
    ENERGY,
    CONCENTRATION,
    TURBIDITY,
    CONDUCTIVITY,
    MOLAR_CONCENTRATION,
    MOLAR_FLOW,
    TIME,
)


def kind_of(unit: str, kinds: Iterable[Kind]) -> Kind | None:
    """The first of `kinds` that `unit` is of; None when none (or pint cannot read it)."""
    return next((k for k in kinds if k.fits(unit)), None)


def check(unit: str, kinds: Sequence[Kind], what: str = "it") -> str | None:
    """Why `unit` does not fit any of `kinds` (one clause for a one-line error: the unit, and the kinds
    `what` accepts), or None when it fits. No kinds: the value is text and takes no unit.
    Example: check("bar", (TEMPERATURE,), "role 'temperature'") → "'bar' (pressure) is not a unit for role
    'temperature', which accepts temperature (degC, K, degF…)"."""
    if not kinds:
        return None if unit == "" else f"{unit!r}: {what} is text and takes no unit"
    accepts = "; ".join(str(k) for k in kinds)
    if unit.strip() == "":
        return f"no unit given; {what} accepts {accepts}"
    try:
        got = parse(unit)
    except UnitError as exc:
        return f"{exc}; {what} accepts {accepts}"
    if kind_of(unit, kinds) is None:
        return f"{unit!r} ({_describe(got)}) is not a unit for {what}, which accepts {accepts}"
    return None


def _describe(unit: pint.Unit) -> str:
    """The kind a unit is of, in words: "pressure", "dimensionless", else its dimensions."""
    kind = next((k for k in ALL_KINDS if k.dimensionality == unit.dimensionality), None)
    if kind is not None:
        return kind.name
    return "dimensionless" if not dict(unit.dimensionality) else str(unit.dimensionality)


# -- conversions ----------------------------------------------------------------------------------------
A = TypeVar("A", float, np.ndarray)


@dataclass(frozen=True)
class Conversion:
    """to = from × factor + offset (affine: every conversion between units of one dimension that pint
    defines for BioPilot's kinds, offset units like °C and barg included)."""

    factor: float = 1.0
    offset: float = 0.0

    @property
    def identity(self) -> bool:
        return self.factor == 1.0 and self.offset == 0.0

    def __call__(self, values: A) -> A:
        if self.identity:
            return values
        if isinstance(values, np.ndarray):
            out = values.astype(np.float64) * self.factor
            return out + self.offset if self.offset else out
        return values * self.factor + self.offset


@functools.cache
def conversion(from_unit: str, to_unit: str) -> Conversion:
    """The conversion from one unit to another (cached per pair); UnitError if pint cannot read either
    or their dimensions differ. Example: conversion("m3/min", "L/h") = × 60 000; ("K", "degC") = − 273.15."""
    import pint

    a, b = parse(from_unit), parse(to_unit)
    if a == b:
        return Conversion()
    ureg = registry()
    try:
        zero = ureg.Quantity(0.0, a).to(b).magnitude
        one = ureg.Quantity(1.0, a).to(b).magnitude
    except pint.errors.DimensionalityError:
        raise UnitError(
            f"cannot convert {from_unit!r} ({a.dimensionality}) to {to_unit!r} ({b.dimensionality})"
        ) from None
    factor, offset = float(one - zero), float(zero)
    if not (math.isfinite(factor) and math.isfinite(offset)) or factor == 0:
        raise UnitError(f"cannot convert {from_unit!r} to {to_unit!r}")
    # 15 significant digits: pint's float arithmetic leaves 59999.99999999999 for m3/min → L/h
    return Conversion(_round15(factor), _round15(offset) if abs(offset) > 1e-12 * abs(factor) else 0.0)


def _round15(x: float) -> float:
    return float(f"{x:.15g}")


def convert(values: A, from_unit: str, to_unit: str) -> A:
    """values [from_unit] in to_unit (a float or a whole numpy array, one factor for all)."""
    return conversion(from_unit, to_unit)(values)


def factor(from_unit: str, to_unit: str) -> float:
    """The factor of a conversion without offset (1 kg in g: 1000); UnitError for °C and other offset
    units."""
    c = conversion(from_unit, to_unit)
    if c.offset:
        raise UnitError(f"{from_unit!r} → {to_unit!r} is not a plain factor (offset {c.offset:g})")
    return c.factor


def liquid_flow_l_per_h(unit: str, density_kg_per_l: float | None) -> Conversion:
    """The conversion of a liquid flow to L/h: a volume flow directly, a mass flow (kg/h, g/h…) through
    the liquid's density [kg/L]. UnitError for a mass flow without a density or a unit of neither kind."""
    if VOLUME_FLOW.fits(unit):
        return conversion(unit, "L/h")
    if MASS_FLOW.fits(unit):
        if density_kg_per_l is None or density_kg_per_l <= 0:
            raise UnitError(f"a flow in {unit!r} needs the liquid's density to become L/h")
        return Conversion(conversion(unit, "kg/h").factor / density_kg_per_l)
    raise UnitError(f"{unit!r} is neither a volume flow nor a mass flow")


# How control systems label some units (OPC UA EUInformation display names) → BioPilot's spelling. Only
# spellings: no factor. "C" next to a value is a temperature in a plant, not a coulomb.
_PLANT_SPELLINGS = {"C": "degC", "°C": "degC", "bar(g)": "barg", "l/h": "L/h", "l/min": "L/min", "l": "L"}


def normalize(text: str) -> str:
    """A unit as a plant's control system labels it, in BioPilot's spelling ("°C" → "degC", "bar(g)" →
    "barg"); other text unchanged (check() says whether pint can read it)."""
    text = text.strip()
    return _PLANT_SPELLINGS.get(text, text)


def display(unit: str) -> str:
    """A unit as people write it (°C, m³/h, µg/mL) for labels; the unit string itself if pint cannot read
    it. Litres keep their capital L; pH, a scale, is written without a unit."""
    if unit in ("", "pH"):
        return ""
    try:
        parsed = parse(unit)
    except UnitError:
        return unit
    text = f"{parsed:~P}"
    text = re.sub(r"(?<![A-Za-z])([mµnkdc]?)l(?![A-Za-z])", r"\1L", text)
    return text.replace("m3", "m³").replace("cm3", "cm³").replace("dm3", "dm³").replace("Nm3", "Nm³")


# -- tag transforms -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transform:
    """stored = raw × scale + offset, in the tag's unit. scale = -1 turns a historian's negative outflow
    convention into BioPilot's positive flows."""

    scale: float = 1.0
    offset: float = 0.0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def __call__(self, values: A) -> A:
        if self.identity:
            return values
        if isinstance(values, np.ndarray):
            return values.astype(np.float64) * self.scale + self.offset
        return values * self.scale + self.offset


def transform_samples(samples: Iterable[Sample], transforms: Mapping[str, Transform]) -> list[Sample]:
    """The samples with each series' transform applied to its numeric values (text, None and series
    without a transform pass unchanged)."""
    if not transforms:
        return list(samples)
    out = []
    for s in samples:
        t = transforms.get(s.series)
        if t is not None and isinstance(s.value, float | int) and not isinstance(s.value, bool):
            s = s._replace(value=t(float(s.value)))
        out.append(s)
    return out
