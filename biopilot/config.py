"""Site configuration: TOML in, frozen typed models out, validated once at start.

A bad file fails with one line naming the file, the key path and what was expected
(`ConfigError`), never with a traceback. `config/example.toml` documents every section.
"""

from __future__ import annotations

import difflib
import re
import ssl
import tomllib
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    FLOW_TOTAL = "flow_total"  # a flow totalizer: the volume that has passed [L]
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
    Role.FLOW_TOTAL: ("L", "m3"),
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


class ArchiveConfig(_Model):
    """[storage.archive]: the Parquet archive of closed runs beside the embedded database."""

    path: str = "archive"  # relative paths are taken from the data directory
    after_s: float = Field(default=30.0, ge=0)  # processing archives a run this long after it saw it close
    keep_raw_days: float = Field(default=7.0, ge=0)  # raw rows kept in SQLite after archiving
    compact_after_s: float = Field(default=60.0, ge=0)  # late samples folded into the files once this old


class StorageConfig(_Model):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "biopilot.db"  # relative paths are taken from the data directory
    archive: ArchiveConfig = ArchiveConfig()
    # The catalog (runs, KPIs, trials, users, audit): None keeps it in the SQLite file above; a
    # "postgresql://user@host:5432/db" URL puts it on a PostgreSQL server, with the password taken from the
    # environment variable named by catalog_password_env (never written in this file).
    catalog: str | None = None
    catalog_password_env: str | None = None

    @field_validator("catalog")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError(
                f"a catalog URL looks like 'postgresql://user@host:5432/biopilot', got {value!r}"
            )
        if parts.password is not None:
            raise ValueError(
                "the catalog URL carries a password; remove it and name the environment variable that "
                "holds it in storage.catalog_password_env"
            )
        return value

    @model_validator(mode="after")
    def _password_needs_catalog(self) -> StorageConfig:
        if self.catalog_password_env is not None and self.catalog is None:
            raise ValueError("catalog_password_env needs a postgresql:// catalog URL in storage.catalog")
        return self


class OpcUaServer(_Model):
    endpoint: str
    namespace: str | None = None  # namespace URI that browse paths are resolved in
    publishing_interval_ms: int = Field(default=250, gt=0)
    sampling_interval_ms: int = Field(default=0, ge=0)  # 0: as fast as the server samples
    queue_size: int = Field(default=100, ge=1)
    deadband: float = Field(default=0.0, ge=0.0)  # absolute deadband of numeric items; 0: every change
    history_backfill: bool = True  # after an outage, read what was missed from the server's history
    # Security: Basic256Sha256 with Sign or SignAndEncrypt uses <data-dir>/pki (see `biopilot certs`).
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password_env: str | None = None  # the environment variable that holds the password (not the password)

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError(f"an OPC UA endpoint starts with 'opc.tcp://', got {value!r}")
        return value

    @model_validator(mode="after")
    def _coherent_security(self) -> OpcUaServer:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy and security_mode go together: both 'None', or 'Basic256Sha256' with "
                "security_mode 'Sign' or 'SignAndEncrypt'"
            )
        if self.password_env is not None and self.username is None:
            raise ValueError("password_env needs a username")
        return self


MqttFormat = Literal["json", "number", "influx", "sparkplug"]


class MqttPayload(_Model):
    """How a message carries a tag's value: the format and the keys it uses (shared by a tag's MQTT source
    and a topic template). Which keys each format uses: MQTT_FORMAT_KEYS."""

    format: MqttFormat = "json"
    field: str = "value"  # json: the key holding the value; influx: the field key
    time_field: str | None = "ts"  # json: ISO-8601 or epoch seconds; None: arrival time
    status_field: str | None = "status"  # json, influx: OPC UA status code (int) or good/uncertain/bad
    measurement: str | None = None  # influx: only lines of this measurement (None: any)
    match_tags: dict[str, str] = {}  # influx: only lines whose tag set has these tags
    precision: Literal["ns", "us", "ms", "s"] = "ns"  # influx: the unit of the line's timestamp
    metric: str | None = None  # sparkplug: the metric's name (aliases are learnt from the BIRTH messages)


# The keys of MqttPayload each format uses; setting another one is a configuration error.
MQTT_FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "json": ("field", "time_field", "status_field"),
    "number": (),
    "influx": ("field", "measurement", "match_tags", "precision", "status_field"),
    "sparkplug": ("metric",),
}
_PAYLOAD_KEYS = ("field", "time_field", "status_field", "measurement", "match_tags", "precision", "metric")
SPARKPLUG_DATA_TOPIC = re.compile(r"spBv1\.0/[^/]+/(NDATA/[^/]+|DDATA/[^/]+/[^/]+)")


class MqttTemplate(MqttPayload):
    """Topics of one pattern, subscribed once with wildcards: "hall3/{equipment}/{signal}". {equipment} is
    a configured equipment id; {signal} (optional) selects the tag, which names it in `signal`. Without
    {signal}, a tag's `signal` is the field in the payload (json key or influx field). + matches any
    segment."""

    topic: str = Field(min_length=1)


class MqttTls(_Model):
    """TLS to the broker. Relative paths are taken from the configuration file's folder."""

    ca_file: str | None = None  # PEM: the CA that signed the broker's certificate (None: the system's CAs)
    cert_file: str | None = None  # PEM client certificate, for brokers that require one
    key_file: str | None = None  # its private key, unencrypted PEM (None: in cert_file)
    insecure: bool = False  # true: do not check that the broker's certificate names `host` (tests only)


class MqttBroker(_Model):
    host: str
    port: int = Field(default=1883, gt=0, lt=65536)  # default 8883 with tls
    client_id: str = "biopilot-collector"
    keepalive_s: int = Field(default=30, ge=5)
    username: str | None = None
    password_env: str | None = None  # the environment variable that holds the password (not the password)
    tls: MqttTls | None = None
    templates: dict[str, MqttTemplate] = {}

    @model_validator(mode="before")
    @classmethod
    def _tls_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tls" in data and "port" not in data:
            return {**data, "port": 8883}
        return data


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


class MqttSource(MqttPayload):
    protocol: Literal["mqtt"]
    broker: str
    topic: str | None = Field(default=None, min_length=1)  # one concrete topic; or:
    template: str | None = None  # a template of the broker (its format keys apply) ...
    signal: str | None = None  # ... and this tag's {signal} segment (or payload field) in it

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, value: str | None) -> str | None:
        if value is not None and ("+" in value or "#" in value):
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
    feed: FeedSpec | None = None  # feed_rate tags: what the feed carries (substrate fed = flow × conc.)
    counter_rollover: float | None = Field(default=None, gt=0)  # energy and flow totalizers: where they wrap
    stream: Literal["feed", "product", "waste"] | None = None  # recovery flow/total/concentration tags
    lab: LabTag | None = None  # concentration tags that carry offline lab results (a LIMS over MQTT)
    # Report-by-exception tags stay silent while unchanged: a silence longer than this (with the source
    # alive) makes the tag stale. None: the tag is stale only when its source is gone.
    max_age_s: float | None = Field(default=None, gt=0)

    @property
    def is_text(self) -> bool:
        return self.role in TEXT_ROLES


class SimulatedUnit(_Model):
    equipment: str
    model: EquipmentKind
    # recovery units: the unit operation, and the unit whose output they process (a fermenter's harvest,
    # or the product pool of the recovery unit before them)
    operation: Literal["centrifuge", "uf_df", "capture", "polish"] | None = None  # default: centrifuge
    upstream: str | None = None


class SimulatorConfig(_Model):
    seed: int = 42  # of the default scenario (a scenario file has its own)
    interval_s: float = Field(default=1.0, gt=0)  # wall-clock seconds between published samples
    speed: float = Field(default=60.0, ge=1.0, le=100_000.0)  # simulated seconds per wall second
    opcua_server: str | None = None  # the configured server whose endpoint the simulator serves
    mqtt_broker: str | None = None
    mqtt_topic_prefix: str = "biopilot-sim"
    mqtt_format: Literal["json", "number", "both"] = "json"  # number: each field alone on <topic>/<field>
    scenario: str | None = None  # scenario file (simulators/scenario.py), relative to this config file
    history_h: float = Field(default=0.0, ge=0, le=24 * 365)  # live mode starts with this much history
    units: list[SimulatedUnit] = []


# -- KPI inputs: feeds, process data per equipment, emission factors, historian imports ----------------
class FeedSpec(_Model):
    """What a feed_rate tag's feed carries: substrate fed [g] = ∫ flow [L/h] · concentration [g/L] dt."""

    substrate: str = Field(default="glucose", min_length=1)  # the yield on [[process]].main_substrate uses it
    concentration: float = Field(gt=0)  # [g substrate / L feed]
    carbon_fraction: float = Field(default=0.4, gt=0, le=1)  # [g C / g substrate]; glucose 72/180 = 0.400
    density: float | None = Field(default=None, gt=0)  # [kg/L] feed; required for kg/h and g/h flow units


class LabTag(_Model):
    """A concentration tag whose samples are offline lab results (a LIMS or lab robot publishing them).

    Processing reads each usable sample as one lab result of `analyte` at the sample's source timestamp
    (which must be the sampling time, not the report time), exactly like a result entered with
    `biopilot lab`; a catalog lab result of the same analyte at the same time takes precedence."""

    # titer (or product), biomass (or dcw), substrate (or the main substrate's name, e.g. glucose)
    analyte: str = Field(min_length=1)
    sample_volume_l: float = Field(default=0.0, ge=0)  # [L] broth removed with each sample (mass accounting)


class ProcessSpec(_Model):
    """Per-equipment process data the KPIs need and no signal carries. One [[process]] table per equipment;
    an equipment without one gets these defaults."""

    equipment: str
    product: str = ""  # product name (runs get it unless a run names its own)
    main_substrate: str = "glucose"  # yield on the main substrate uses the feeds of this substrate
    broth_density: float = Field(default=1.0, gt=0)  # [kg/L] volume = weight / density without a volume tag
    initial_substrate: float | None = Field(default=None, ge=0)  # [g/L] S_0 without a lab value at start
    product_carbon_fraction: float = Field(default=0.5, gt=0, le=1)  # [g C / g product], carbon balance
    gas_molar_volume: float = Field(default=22.414, gt=0)  # [L/mol] at the air flow meter's reference
    inlet_o2: float = Field(default=0.2095, gt=0, lt=1)  # [mol/mol] dry inlet gas
    inlet_co2: float = Field(default=0.0004, ge=0, lt=1)  # [mol/mol]
    inoculation_phase: str = "batch"  # phase whose start is inoculation (productivity time base)
    harvest_phase: str = "harvest"  # phase whose start ends growth
    # recovery units: the equipment whose product this unit processes (the recovery unit before it); None:
    # the fermenter that ran the same batch id. Overall yields multiply along these links.
    upstream: str | None = None


class ProcessingConfig(_Model):
    """The processing service: how often it looks at the store, and how often a live run's provisional
    KPIs are recomputed (a closed run's final KPIs are computed when it closes, whatever these say)."""

    interval_s: float = Field(default=2.0, gt=0)  # [s] wall clock between passes (run starts and ends)
    provisional_interval_s: float = Field(default=30.0, ge=0)  # [s] wall clock; 0: every pass


class EmissionFactor(_Model):
    """kg CO2-equivalent per unit of a utility, with where the number comes from."""

    utility: Literal["electricity", "steam", "water"]
    factor: float = Field(ge=0)  # [kg CO2e/kWh] electricity, [kg CO2e/kg] steam, [kg CO2e/m³] water
    source: str = Field(min_length=1)  # required: the publication, its table and year
    year: int | None = None


class HistorianMapping(_Model):
    """How historian export files map to tags ([historian] in the site config, or a --mapping file)."""

    time_column: str | None = None  # default: the first column
    time_format: Literal["iso", "elapsed_h"] = "iso"  # ISO-8601, or hours since --start
    timezone: str | None = None  # zone of naive ISO times (default: [site].timezone)
    columns: dict[str, str] = {}  # file column (wide) or tag value (long) -> configured tag name

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else Site._known_zone(value)


def process_spec(config: SiteConfig, equipment: str) -> ProcessSpec:
    """The [[process]] table of an equipment, or the defaults."""
    for spec in config.process:
        if spec.equipment == equipment:
            return spec
    return ProcessSpec(equipment=equipment)


def emission_factor(config: SiteConfig, utility: str) -> EmissionFactor | None:
    return next((f for f in config.emission_factors if f.utility == utility), None)


def _check_kpi_inputs(config: SiteConfig) -> str | None:
    """References and units of the KPI sections; the first problem as 'key: message'."""
    equipment_ids = [eq.id for eq in config.equipment]
    for i, tag in enumerate(config.tags):
        who = f"tags[{i}] (tag {tag.name!r})"
        if tag.feed is not None:
            if tag.role != Role.FEED_RATE:
                return f"{who}.feed: only a feed_rate tag has a feed, not a {tag.role.value!r} tag"
            if tag.unit in ("kg/h", "g/h") and tag.feed.density is None:
                return f"{who}.feed.density: required for a feed measured in {tag.unit} (kg feed per L)"
        if tag.counter_rollover is not None and tag.role not in (Role.ENERGY, Role.FLOW_TOTAL):
            return f"{who}.counter_rollover: only a totalizer rolls over, not a {tag.role.value!r} tag"
        if tag.lab is not None and tag.role != Role.CONCENTRATION:
            return f"{who}.lab: only a concentration tag carries lab results, not a {tag.role.value!r} tag"
    seen: set[str] = set()
    for i, spec in enumerate(config.process):
        if spec.equipment not in equipment_ids:
            return f"process[{i}].equipment: {spec.equipment!r} is not a configured equipment id"
        if spec.equipment in seen:
            return f"process[{i}].equipment: {spec.equipment!r} has more than one [[process]] table"
        seen.add(spec.equipment)
        if spec.inlet_o2 + spec.inlet_co2 >= 1:
            return f"process[{i}]: inlet_o2 + inlet_co2 must be below 1 (mole fractions)"
        if spec.upstream is not None and (
            spec.upstream not in equipment_ids or spec.upstream == spec.equipment
        ):
            return f"process[{i}].upstream: {spec.upstream!r} is not another configured equipment id"
    utilities = [f.utility for f in config.emission_factors]
    for utility, count in Counter(utilities).items():
        if count > 1:
            return f"emission_factors: {utility!r} has {count} factors; give one per utility"
    tag_names = {t.name for t in config.tags}
    for column, tag_name in config.historian.columns.items():
        if tag_name not in tag_names:
            return f"historian.columns.{column}: {tag_name!r} is not a configured tag name"
    return None


class CollectorConfig(_Model):
    spool_max_mb: int = Field(default=1024, ge=1)  # samples not yet in the store; an alarm from 80 %
    fsync_interval_s: float = Field(default=1.0, gt=0)  # the spool survives a power loss up to this late
    health_interval_s: float = Field(default=2.0, gt=0)  # how often health is written for the dashboard
    # Source timestamps further ahead of the collector's clock, or older, are rejected (counted by reason).
    # A simulated plant running faster than real time needs a large max_future_s.
    max_future_s: float = Field(default=600.0, gt=0)
    max_past_days: float = Field(default=3650.0, gt=0)


class SiteConfig(_Model):
    site: Site
    storage: StorageConfig = StorageConfig()
    collector: CollectorConfig = CollectorConfig()
    opcua: OpcUaSection = OpcUaSection()
    mqtt: MqttSection = MqttSection()
    equipment: list[Equipment]
    tags: list[Tag] = []
    simulator: SimulatorConfig | None = None
    process: list[ProcessSpec] = []
    processing: ProcessingConfig = ProcessingConfig()
    emission_factors: list[EmissionFactor] = []
    historian: HistorianMapping = HistorianMapping()

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


def read_text(path: str | Path) -> str:
    """A configuration file's text; ConfigError (one line) when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


M = TypeVar("M", bound=BaseModel)


def validate_toml(model: type[M], text: str, path: str | Path) -> tuple[M, dict[str, Any]]:
    """Parse TOML text into a model; ConfigError naming the file, the key and what was expected."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return model.model_validate(raw), raw
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc, raw)}") from None


def load_config(path: str | Path) -> SiteConfig:
    """Read and validate a site configuration file; raise ConfigError with a one-line message."""
    return parse_config(read_text(path), path)


def parse_config(text: str, path: str | Path = "<config>") -> SiteConfig:
    config, _ = validate_toml(SiteConfig, text, path)
    config = _resolve_mqtt_files(config, Path(path).parent)
    problem = _cross_check(config) or _check_mqtt(config) or _check_kpi_inputs(config)
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
        simulated = {u.equipment: u for u in sim.units}
        fed: dict[str, str] = {}
        for i, unit in enumerate(sim.units):
            key = f"simulator.units[{i}]"
            if unit.equipment not in equipment_ids:
                return f"{key}.equipment: {unit.equipment!r} is not a configured equipment id"
            if unit.upstream is not None and unit.upstream not in equipment_ids:
                return f"{key}.upstream: {unit.upstream!r} is not a configured equipment id"
            if unit.model == EquipmentKind.FERMENTER:
                if unit.upstream is not None or unit.operation is not None:
                    return f"{key}: a simulated fermenter has no upstream and no operation"
                continue
            if unit.upstream is None:
                continue
            if unit.upstream not in simulated or unit.upstream == unit.equipment:
                return f"{key}.upstream: {unit.upstream!r} is not another simulated unit"
            if unit.upstream in fed:
                return (
                    f"{key}.upstream: {unit.upstream!r} already feeds {fed[unit.upstream]!r};"
                    " a unit hands its output to one unit"
                )
            fed[unit.upstream] = unit.equipment
    return None


def _resolve_mqtt_files(config: SiteConfig, base: Path) -> SiteConfig:
    """The config with the brokers' TLS files relative to `base` (the config file's folder) made absolute."""
    brokers = dict(config.mqtt.brokers)
    changed = False
    for name, broker in brokers.items():
        tls = broker.tls
        if tls is None:
            continue
        files = {
            k: str((base / v).resolve())
            for k in ("ca_file", "cert_file", "key_file")
            if (v := getattr(tls, k)) is not None and not Path(v).is_absolute()
        }
        if files:
            brokers[name] = broker.model_copy(update={"tls": tls.model_copy(update=files)})
            changed = True
    if not changed:
        return config
    return config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"brokers": brokers})})


def _check_mqtt(config: SiteConfig) -> str | None:
    """Brokers (credentials, TLS files), templates and the MQTT sources of tags; the first problem."""
    for b, broker in config.mqtt.brokers.items():
        key = f"mqtt.brokers.{b}"
        if broker.password_env is not None:
            if broker.username is None:
                return f"{key}.password_env: needs a username"
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", broker.password_env):
                return (
                    f"{key}.password_env: names the environment variable that holds the password "
                    "(letters, digits and _), not the password itself"
                )
        if broker.tls is not None:
            problem = _check_tls(broker.tls, f"{key}.tls")
            if problem:
                return problem
        filters: dict[str, list[str]] = {}
        for t, template in broker.templates.items():
            tkey = f"{key}.templates.{t}"
            problem = _check_template(template, tkey) or _check_payload(template, tkey, "")
            if problem:
                return problem
            segments = template.topic.split("/")
            if "{signal}" not in segments and "field" in template.model_fields_set:
                return f"{tkey}.field: not used without {{signal}} in the topic (a tag's signal is the field)"
            for other, other_segments in filters.items():
                if _filters_overlap(segments, other_segments):
                    return f"{tkey}.topic: {template.topic!r} overlaps template {other!r}"
            filters[t] = segments
    taken: dict[tuple[str, str, str, str], str] = {}
    for i, tag in enumerate(config.tags):
        src = tag.source
        if not isinstance(src, MqttSource):
            continue
        key = f"tags[{i}].source"
        who = f" (tag {tag.name!r})"
        if (src.topic is None) == (src.template is None):
            return f"{key}{who}: give exactly one of topic or template"
        if src.topic is not None:
            if src.signal is not None:
                return f"{key}.signal{who}: only with a template"
            problem = _check_payload(src, key, who)
            if problem:
                return problem
            if src.format == "sparkplug" and not SPARKPLUG_DATA_TOPIC.fullmatch(src.topic):
                return (
                    f"{key}.topic{who}: format 'sparkplug' needs a DATA topic, spBv1.0/<group>/NDATA/<edge>"
                    f" or spBv1.0/<group>/DDATA/<edge>/<device>; got {src.topic!r}"
                )
            continue
        templates = config.mqtt.brokers[src.broker].templates
        assert src.template is not None
        if src.template not in templates:
            return (
                f"{key}.template{who}: {src.template!r} is not a template of broker {src.broker!r} "
                f"([mqtt.brokers.{src.broker}.templates.NAME]: {_one_of(list(templates))})"
            )
        for k in ("format", *_PAYLOAD_KEYS):
            if k in src.model_fields_set:
                return f"{key}.{k}{who}: set it on the template {src.template!r}, not on a tag that uses it"
        if not src.signal:
            return f"{key}.signal{who}: required with a template (the {{signal}} segment or payload field)"
        has_signal = "{signal}" in templates[src.template].topic.split("/")
        if has_signal and any(c in src.signal for c in "/+#"):
            return f"{key}.signal{who}: {src.signal!r} is one topic segment, without / + #"
        slot = (src.broker, src.template, tag.equipment, src.signal)
        if slot in taken:
            return f"{key}.signal{who}: {src.signal!r} of {tag.equipment!r} is also tag {taken[slot]!r}"
        taken[slot] = tag.name
    return None


def _check_payload(p: MqttPayload, key: str, who: str) -> str | None:
    allowed = MQTT_FORMAT_KEYS[p.format]
    for k in _PAYLOAD_KEYS:
        if k in p.model_fields_set and k not in allowed:
            uses = ", ".join(allowed) or "none of these keys"
            return f"{key}.{k}{who}: not used by format {p.format!r} (it uses {uses})"
    if p.format == "sparkplug" and not p.metric:
        return f"{key}.metric{who}: required by format 'sparkplug' (the metric's name)"
    return None


def _check_template(template: MqttTemplate, key: str) -> str | None:
    if template.format == "sparkplug":
        return f"{key}.format: Sparkplug topics have their own layout; give tags a topic and a metric instead"
    segments = template.topic.split("/")
    for segment in segments:
        if segment in ("+", "{equipment}", "{signal}"):
            continue
        if any(c in segment for c in "+#{}"):
            return (
                f"{key}.topic: segment {segment!r} of {template.topic!r}: a segment is literal text, +, "
                "{equipment} or {signal} (# is not allowed)"
            )
    if segments.count("{equipment}") != 1 or segments.count("{signal}") > 1:
        return f"{key}.topic: {template.topic!r} needs {{equipment}} once and {{signal}} at most once"
    return None


def template_filter(topic: str) -> str:
    """The subscription of a template: its placeholders become +."""
    return "/".join("+" if s in ("{equipment}", "{signal}") else s for s in topic.split("/"))


def _filters_overlap(a: list[str], b: list[str]) -> bool:
    """Could one topic match both templates (segments literal or a placeholder/+)?"""
    wild = ("+", "{equipment}", "{signal}")
    return len(a) == len(b) and all(x == y or x in wild or y in wild for x, y in zip(a, b, strict=True))


def _check_tls(tls: MqttTls, key: str) -> str | None:
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is not None and not Path(path).is_file():
            return f"{key}.{name}: {path} does not exist"
    if tls.key_file is not None and tls.cert_file is None:
        return f"{key}.key_file: needs cert_file (the client certificate the key belongs to)"
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (ssl.SSLError, OSError) as exc:
        return f"{key}.ca_file: {tls.ca_file}: not a PEM CA certificate ({exc})"
    if tls.cert_file is not None:
        try:  # an encrypted key gets an empty password instead of a prompt on the terminal
            context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            return (
                f"{key}.cert_file: {tls.cert_file} with key {tls.key_file or '(in the same file)'}: not a "
                f"PEM certificate and its unencrypted private key ({exc})"
            )
    return None


def _one_of(options: list[str]) -> str:
    if not options:
        return "none are configured"
    return "expected one of: " + ", ".join(repr(o) for o in options)
