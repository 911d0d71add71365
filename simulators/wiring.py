"""From the site config to the simulated plant: which units exist, how they are chained, and which
configured tag collects each simulated signal (so historical data is stored under the same series names
the collectors would use)."""

from __future__ import annotations

from dataclasses import dataclass

from biopilot import units
from biopilot.config import EquipmentKind, MqttSource, OpcUaSource, SimulatorConfig, SiteConfig
from biopilot.errors import ConfigError
from simulators.engine import UnitSpec
from simulators.signals import BY_NAME, OFFGAS_FIELD


@dataclass(frozen=True)
class Address:
    """Where a simulated signal is published."""

    equipment: str
    signal: str  # the simulator's signal name (fault key "<equipment>/<signal>")
    source: str  # "opcua" or the MQTT channel "<equipment>/<offgas|state|lab>"
    field: str  # the OPC UA variable or the JSON field

    @property
    def key(self) -> str:
        return f"{self.equipment}/{self.signal}"


def simulator_of(config: SiteConfig) -> SimulatorConfig:
    if config.simulator is None:
        raise ConfigError("the site config has no [simulator] section: there is nothing to simulate")
    return config.simulator


def units_of(config: SiteConfig) -> list[UnitSpec]:
    out = []
    for u in simulator_of(config).units:
        if u.model == EquipmentKind.FERMENTER:
            out.append(UnitSpec(u.equipment, "fermenter"))
        else:
            out.append(UnitSpec(u.equipment, u.operation or "centrifuge", u.upstream))
    return out


def topic(sim: SimulatorConfig, equipment: str, channel: str) -> str:
    return f"{sim.mqtt_topic_prefix}/{equipment}/{channel}"


def tag_map(config: SiteConfig) -> dict[tuple[str, str], str]:
    """(equipment, simulator signal) -> the configured tag that collects it. ConfigError when a tag's unit
    is not the unit the simulator serves that signal in (the KPIs would read its numbers in the wrong
    unit)."""
    out = _tag_map(config)
    for (equipment, signal), name in out.items():
        served = BY_NAME.get(signal)
        tag = config.tag(name)
        if served is None or served.text or tag.is_text:
            continue
        try:
            same = units.conversion(served.unit, tag.unit).identity
        except units.UnitError:
            same = False
        if not same:
            raise ConfigError(
                f"tags: {name!r} collects the simulated {equipment}/{signal}, served in {served.unit!r},"
                f" but its unit is {tag.unit!r} (set unit = {served.unit!r})"
            )
    return out


def _tag_map(config: SiteConfig) -> dict[tuple[str, str], str]:
    sim = simulator_of(config)
    prefix = sim.mqtt_topic_prefix + "/"
    from_field = {f: s for s, f in OFFGAS_FIELD.items()}
    out: dict[tuple[str, str], str] = {}
    for tag in config.tags:
        src = tag.source
        if isinstance(src, OpcUaSource):
            if src.server != sim.opcua_server or src.browse_path is None or "/" not in src.browse_path:
                continue
            equipment, signal = src.browse_path.split("/", 1)
            out[(equipment, signal)] = tag.name
        elif isinstance(src, MqttSource):
            if src.broker != sim.mqtt_broker or src.topic is None or not src.topic.startswith(prefix):
                continue
            parts = src.topic[len(prefix) :].split("/")
            if len(parts) == 2:
                equipment, channel = parts
                signal = from_field.get(src.field, src.field) if channel == "offgas" else src.field
                out[(equipment, signal)] = tag.name
            elif len(parts) == 3 and parts[1] in ("offgas", "state", "lab"):  # plain numbers, one per topic
                equipment, channel, fld = parts
                signal = from_field.get(fld, fld) if channel == "offgas" else fld
                out[(equipment, signal)] = tag.name
    return out
