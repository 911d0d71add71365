"""What the simulated plant serves: every signal's name, unit, sensor noise and resolution, and where it
is published (the wiring of a real plant, fixed):

- a fermenter's control-system signals: OPC UA variables Objects/<equipment>/<Signal>;
- its off-gas analyser: MQTT <prefix>/<equipment>/offgas, JSON fields o2, co2 [% dry gas];
- its lab results: MQTT <prefix>/<equipment>/lab, JSON fields titer, dcw, glucose [g/L] (or CSV files);
- a recovery unit: MQTT <prefix>/<equipment>/state, JSON fields named as in RECOVERY_SIGNALS.

A JSON message is {"ts": ISO-8601 source time, "status": OPC UA status code, <field>: value, ...}; one
status covers the message (a dropout of one field of an analyser marks its whole message bad).
Sensor noise is Gaussian with the listed SD, then the reading is clipped to its physical range and
rounded to its resolution; a value that is exactly 0 (a stopped pump, motor or flow) reads exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulators.recovery import UnitKind


@dataclass(frozen=True)
class Signal:
    name: str
    unit: str = ""
    noise: float = 0.0  # [unit] SD of the sensor noise
    decimals: int = 3
    low: float | None = 0.0  # lowest reading
    text: bool = False


def _s(name: str, unit: str, noise: float, decimals: int, low: float | None = 0.0) -> Signal:
    return Signal(name, unit, noise, decimals, low)


FERMENTER_OPCUA: tuple[Signal, ...] = (
    Signal("BatchId", text=True),
    Signal("Phase", text=True),
    _s("Temperature", "degC", 0.05, 3, None),
    _s("pH", "pH", 0.01, 3),
    _s("DissolvedOxygen", "%", 0.4, 2),
    _s("AgitatorSpeed", "rpm", 0.5, 1),
    _s("AirFlow", "NL/min", 2.0, 1),
    _s("Pressure", "barg", 0.005, 3, -0.1),
    _s("FeedRate", "L/h", 0.01, 3),
    _s("BaseFlow", "L/h", 0.002, 4),
    _s("DischargeFlow", "L/h", 1.0, 1),
    _s("HarvestFlow", "L/h", 3.0, 1),
    _s("Volume", "L", 0.5, 1),
    _s("Weight", "kg", 0.5, 1),
    _s("AgitatorPower", "kW", 0.02, 3),
    _s("CompressorPower", "kW", 0.01, 3),
    _s("ChillerPower", "kW", 0.01, 3),
    _s("CoolingWaterFlow", "L/min", 0.2, 2),
    _s("SteamFlow", "kg/h", 0.5, 1),
)
OFFGAS: tuple[tuple[Signal, str], ...] = (
    (_s("OffgasO2", "%", 0.005, 4), "o2"),
    (_s("OffgasCO2", "%", 0.003, 4), "co2"),
)
LAB: tuple[Signal, ...] = (
    _s("titer", "g/L", 0.0, 3),
    _s("dcw", "g/L", 0.0, 2),
    _s("glucose", "g/L", 0.0, 3),
)
_COMMON_RECOVERY: tuple[Signal, ...] = (
    Signal("batch_id", text=True),
    Signal("phase", text=True),
    _s("feed_flow", "L/h", 3.0, 1),
    _s("outlet_flow", "L/h", 3.0, 1),
    _s("buffer_flow", "L/h", 1.0, 1),
    _s("water_flow", "L/h", 1.0, 1),
    _s("power", "kW", 0.1, 2),
    _s("feed_total", "L", 0.0, 1),
    _s("outlet_total", "L", 0.0, 1),
    _s("product_in", "g/L", 0.03, 3),
    _s("product", "g/L", 0.03, 3),
    _s("purity", "%", 0.3, 1),
)
RECOVERY_SIGNALS: dict[UnitKind, tuple[Signal, ...]] = {
    UnitKind.CENTRIFUGE: (*_COMMON_RECOVERY, _s("bowl_speed", "rpm", 5.0, 0), _s("turbidity", "NTU", 1.5, 1)),
    UnitKind.UF_DF: (*_COMMON_RECOVERY, _s("tmp", "bar", 0.02, 2)),
    UnitKind.CAPTURE: (*_COMMON_RECOVERY, _s("conductivity", "mS/cm", 0.2, 1)),
    UnitKind.POLISH: (*_COMMON_RECOVERY, _s("conductivity", "mS/cm", 0.2, 1)),
}

BY_NAME: dict[str, Signal] = {
    s.name: s
    for s in (
        *FERMENTER_OPCUA,
        *(sig for sig, _ in OFFGAS),
        *LAB,
        *(s for group in RECOVERY_SIGNALS.values() for s in group),
    )
}
OFFGAS_FIELD = {sig.name: f for sig, f in OFFGAS}


def known_signal(name: str) -> bool:
    return name in BY_NAME


def opcua_signal_types() -> dict[str, tuple[str, str]]:
    """The OPC UA variables of a fermenter: name -> (kind 'float'|'text', unit)."""
    return {s.name: ("text" if s.text else "float", s.unit) for s in FERMENTER_OPCUA}


def measure(signal: Signal, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Readings of true values (an array): noise, clipping, resolution; exact zeros stay zero."""
    values = np.asarray(values, dtype=float)
    out = values + rng.normal(0.0, signal.noise, values.shape) if signal.noise > 0 else values.copy()
    if signal.low is not None:
        np.maximum(out, signal.low, out=out)
        out[values == 0.0] = 0.0
    return np.round(out, signal.decimals)


def measure_one(signal: Signal, value: float, rng: np.random.Generator) -> float:
    """measure() of one value (live mode)."""
    reading = value + rng.normal(0.0, signal.noise) if signal.noise > 0 else value
    if signal.low is not None:
        reading = 0.0 if value == 0.0 else max(reading, signal.low)
    return round(float(reading), signal.decimals)
