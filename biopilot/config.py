"""Site configuration: TOML in, frozen typed models out, validated once at start.

A bad file fails with one line naming the file, the key path and what was expected
(`ConfigError`), never with a traceback. `config/example.toml` documents every section.
"""

from __future__ import annotations

import difflib
import tomllib
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from biopilot.errors import ConfigError


class Role(StrEnum):
    """What a tag measures. KPI code asks for roles, never for a plant's tag names."""

    TEMPERATURE = "temperature"
    PH = "ph"
    DISSOLVED_OXYGEN = "dissolved_oxygen"
    AGITATION_SPEED = "agitation_speed"
    AIR_FLOW = "air_flow"
    PRESSURE = "pressure"
    OFFGAS_O2 = "offgas_o2"
    OFFGAS_CO2 = "offgas_co2"
    FEED_RATE = "feed_rate"
    BASE_FLOW = "base_flow"
    VOLUME = "volume"
    WEIGHT = "weight"
    LEVEL = "level"
    POWER = "power"
    ENERGY = "energy"
    COOLING_WATER_FLOW = "cooling_water_flow"
    STEAM_FLOW = "steam_flow"
    FLOW = "flow"
    SPEED = "speed"
    CONCENTRATION = "concentration"
    TURBIDITY = "turbidity"
    CONDUCTIVITY = "conductivity"
    BATCH_ID = "batch_id"
    PHASE = "phase"


TEXT_ROLES = frozenset({Role.BATCH_ID, Role.PHASE})

# Units each role may carry. KPI code converts from these; anything else is refused at load time.
ROLE_UNITS: dict[Role, tuple[str, ...]] = {
    Role.TEMPERATURE: ("degC", "K"),
    Role.PH: ("pH",),
    Role.DISSOLVED_OXYGEN: ("%", "mg/L"),
    Role.AGITATION_SPEED: ("rpm",),
    Role.AIR_FLOW: ("NL/min", "L/min", "Nm3/h", "m3/h"),
    Role.PRESSURE: ("bar", "barg", "mbar", "kPa"),
    Role.OFFGAS_O2: ("%", "mol/mol"),
    Role.OFFGAS_CO2: ("%", "mol/mol"),
    Role.FEED_RATE: ("L/h", "mL/min", "kg/h", "g/h"),
    Role.BASE_FLOW: ("L/h", "mL/min", "kg/h", "g/h"),
    Role.VOLUME: ("L", "m3"),
    Role.WEIGHT: ("kg", "t"),
    Role.LEVEL: ("%", "m"),
    Role.POWER: ("kW", "W"),
    Role.ENERGY: ("kWh", "MWh"),
    Role.COOLING_WATER_FLOW: ("L/min", "m3/h", "kg/h"),
    Role.STEAM_FLOW: ("kg/h",),
    Role.FLOW: ("L/h", "L/min", "m3/h"),
    Role.SPEED: ("rpm",),
    Role.CONCENTRATION: ("g/L", "mg/L"),
    Role.TURBIDITY: ("NTU", "FTU"),
    Role.CONDUCTIVITY: ("mS/cm", "uS/cm"),
    Role.BATCH_ID: ("",),
    Role.PHASE: ("",),
}


class EquipmentKind(StrEnum):
    FERMENTER = "fermenter"
    RECOVERY = "recovery"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Site(_Model):
    name: str = Field(min_length=1)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (for example 'Europe/Copenhagen')") from None
        return value


class StorageConfig(_Model):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "biopilot.db"  # relative paths are taken from the data directory


class OpcUaServer(_Model):
    endpoint: str
    namespace: str | None = None  # namespace URI that browse paths are resolved in
    publishing_interval_ms: int = Field(default=250, gt=0)
    sampling_interval_ms: int = Field(default=0, ge=0)  # 0: as fast as the server samples
    queue_size: int = Field(default=100, ge=1)

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError(f"an OPC UA endpoint starts with 'opc.tcp://', got {value!r}")
        return value


class MqttBroker(_Model):
    host: str
    port: int = Field(default=1883, gt=0, lt=65536)
    client_id: str = "biopilot-collector"
    keepalive_s: int = Field(default=30, ge=5)


class OpcUaSection(_Model):
    servers: dict[str, OpcUaServer] = {}


class MqttSection(_Model):
    brokers: dict[str, MqttBroker] = {}


class Equipment(_Model):
    id: str = Field(min_length=1)
    kind: EquipmentKind
    name: str = ""


class OpcUaSource(_Model):
    protocol: Literal["opcua"]
    server: str
    browse_path: str | None = None  # "F-101/Temperature", below the Objects folder, in the server's namespace
    node_id: str | None = None  # "ns=2;s=F-101.Temperature"; the namespace index may change on restart


class MqttSource(_Model):
    protocol: Literal["mqtt"]
    broker: str
    topic: str = Field(min_length=1)
    format: Literal["json", "number"] = "json"
    field: str = "value"  # JSON: the key holding this tag's value
    time_field: str | None = "ts"  # JSON: ISO-8601 or epoch seconds; None: arrival time
    status_field: str | None = "status"  # JSON: OPC UA status code (int) or good/uncertain/bad

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, value: str) -> str:
        if "+" in value or "#" in value:
            raise ValueError("a tag's topic is one concrete topic, without the wildcards + or #")
        return value


Source = Annotated[OpcUaSource | MqttSource, Field(discriminator="protocol")]


class Tag(_Model):
    name: str = Field(min_length=1)
    equipment: str
    role: Role
    unit: str = ""
    description: str = ""
    source: Source

    @property
    def is_text(self) -> bool:
        return self.role in TEXT_ROLES


class SimulatedUnit(_Model):
    equipment: str
    model: EquipmentKind
    upstream: str | None = None  # recovery units process the harvest of this fermenter


class SimulatorConfig(_Model):
    seed: int = 42
    interval_s: float = Field(default=1.0, gt=0)  # wall-clock seconds between published samples
    speed: float = Field(default=60.0, ge=1.0, le=100_000.0)  # simulated seconds per wall second
    opcua_server: str | None = None  # the configured server whose endpoint the simulator serves
    mqtt_broker: str | None = None
    mqtt_topic_prefix: str = "biopilot-sim"
    units: list[SimulatedUnit] = []


class SiteConfig(_Model):
    site: Site
    storage: StorageConfig = StorageConfig()
    opcua: OpcUaSection = OpcUaSection()
    mqtt: MqttSection = MqttSection()
    equipment: list[Equipment]
    tags: list[Tag] = []
    simulator: SimulatorConfig | None = None

    def equipment_by_id(self, equipment_id: str) -> Equipment:
        for eq in self.equipment:
            if eq.id == equipment_id:
                return eq
        raise KeyError(equipment_id)

    def tags_of(self, equipment_id: str) -> list[Tag]:
        return [t for t in self.tags if t.equipment == equipment_id]

    def tag(self, name: str) -> Tag:
        for t in self.tags:
            if t.name == name:
                return t
        raise KeyError(name)

    def role_tags(self, equipment_id: str, role: Role) -> list[Tag]:
        return [t for t in self.tags if t.equipment == equipment_id and t.role == role]


def load_config(path: str | Path) -> SiteConfig:
    """Read and validate a site configuration file; raise ConfigError with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_config(text, path)


def parse_config(text: str, path: str | Path = "<config>") -> SiteConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        config = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc, raw)}") from None
    problem = _cross_check(config)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return config


def _describe(exc: ValidationError, raw: dict[str, Any]) -> str:
    errors = exc.errors()
    # A misspelled key shows up twice: as an unknown key and as the required key it should have been.
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = list(first["loc"])
    # pydantic puts the discriminator in the path ("source.opcua.server"); the user wrote "source.server"
    if len(loc) >= 2 and loc[-2] in ("opcua", "mqtt") and "source" in loc:
        loc.pop(loc.index("source") + 1)
    key = _key_path(loc)
    where = _tag_label(loc, raw)
    message = first["msg"]
    if first["type"] == "missing":
        message = "missing (required)"
    elif first["type"] == "extra_forbidden":
        message = "unknown key (misspelled?)"
        siblings = [
            e["loc"][-1] for e in errors if e["type"] == "missing" and e["loc"][:-1] == first["loc"][:-1]
        ]
        close = difflib.get_close_matches(str(first["loc"][-1]), [str(k) for k in siblings], n=1)
        if close:
            message = f"unknown key (did you mean {close[0]!r}?)"
            errors = [
                e
                for e in errors
                if not (e["type"] == "missing" and e["loc"] == (*first["loc"][:-1], close[0]))
            ]
    elif first["type"] == "enum" and isinstance(first.get("input"), str):
        expected = first.get("ctx", {}).get("expected", "")
        options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",") if o.strip(" '")]
        message = f"{first['input']!r} is not allowed; expected one of: {', '.join(options)}"
        close = difflib.get_close_matches(first["input"], options, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    elif first["type"] == "union_tag_invalid":
        message = f"{first['input']!r} is not a protocol; expected 'opcua' or 'mqtt'"
    elif first["type"] == "union_tag_not_found":
        message = "missing 'protocol' (expected 'opcua' or 'mqtt')"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{key}{where}: {message}{more}"


def _key_path(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _tag_label(loc: list[Any], raw: dict[str, Any]) -> str:
    if len(loc) >= 2 and loc[0] == "tags" and isinstance(loc[1], int):
        try:
            name = raw["tags"][loc[1]].get("name")
        except (KeyError, IndexError, AttributeError):
            return ""
        if isinstance(name, str):
            return f" (tag {name!r})"
    return ""


def _cross_check(config: SiteConfig) -> str | None:
    """References between sections; returns the first problem as 'key: message'."""
    equipment_ids = [eq.id for eq in config.equipment]
    for eq_id, count in Counter(equipment_ids).items():
        if count > 1:
            return f"equipment: id {eq_id!r} is used {count} times; ids must be unique"
    seen: set[str] = set()
    for i, tag in enumerate(config.tags):
        key = f"tags[{i}]"
        who = f" (tag {tag.name!r})"
        if tag.name in seen:
            return f"{key}.name{who}: {tag.name!r} is used twice; tag names must be unique"
        seen.add(tag.name)
        if tag.equipment not in equipment_ids:
            known = _one_of(equipment_ids)
            return f"{key}.equipment{who}: {tag.equipment!r} is not a configured equipment id ({known})"
        allowed = ROLE_UNITS[tag.role]
        if tag.unit not in allowed:
            expected = "no unit" if allowed == ("",) else _one_of(list(allowed))
            return f"{key}.unit{who}: {tag.unit!r} is not a unit for role {tag.role.value!r} ({expected})"
        src = tag.source
        if isinstance(src, OpcUaSource):
            if src.server not in config.opcua.servers:
                return (
                    f"{key}.source.server{who}: {src.server!r} is not a configured OPC UA server "
                    f"([opcua.servers.NAME]: {_one_of(list(config.opcua.servers))})"
                )
            if (src.browse_path is None) == (src.node_id is None):
                return f"{key}.source{who}: give exactly one of browse_path or node_id"
            if src.browse_path is not None and config.opcua.servers[src.server].namespace is None:
                return f"opcua.servers.{src.server}.namespace: required by browse_path in {key}{who}"
        elif src.broker not in config.mqtt.brokers:
            return (
                f"{key}.source.broker{who}: {src.broker!r} is not a configured MQTT broker "
                f"([mqtt.brokers.NAME]: {_one_of(list(config.mqtt.brokers))})"
            )
    for eq_id in equipment_ids:
        for role in (Role.BATCH_ID, Role.PHASE):
            if len(config.role_tags(eq_id, role)) > 1:
                return f"tags: equipment {eq_id!r} has more than one {role.value!r} tag"
    sim = config.simulator
    if sim is not None:
        if sim.opcua_server is not None and sim.opcua_server not in config.opcua.servers:
            return f"simulator.opcua_server: {sim.opcua_server!r} is not a configured OPC UA server"
        if sim.mqtt_broker is not None and sim.mqtt_broker not in config.mqtt.brokers:
            return f"simulator.mqtt_broker: {sim.mqtt_broker!r} is not a configured MQTT broker"
        for i, unit in enumerate(sim.units):
            if unit.equipment not in equipment_ids:
                return f"simulator.units[{i}].equipment: {unit.equipment!r} is not a configured equipment id"
            if unit.upstream is not None and unit.upstream not in equipment_ids:
                return f"simulator.units[{i}].upstream: {unit.upstream!r} is not a configured equipment id"
    return None


def _one_of(options: list[str]) -> str:
    if not options:
        return "none are configured"
    return "expected one of: " + ", ".join(repr(o) for o in options)
