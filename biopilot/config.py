"""Site configuration: TOML in, frozen typed models out, validated once at start.

A bad file fails with one line naming the file, the key path and what was expected
(`ConfigError`), never with a traceback. `config/example.toml` documents every section.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import ssl
import stat
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from biopilot import units
from biopilot.errors import ConfigError
from biopilot.ids import check_equipment_id, check_tag_name


class Role(StrEnum):
    """What a tag measures. KPI code asks for roles, never for a plant's tag names. ROLE_KINDS says which
    kinds of quantity (and so which units) each role accepts; README "Roles and the KPIs they feed" says
    which KPIs read it."""

    TEMPERATURE = "temperature"
    PH = "ph"
    DISSOLVED_OXYGEN = "dissolved_oxygen"
    AGITATION_SPEED = "agitation_speed"
    AIR_FLOW = "air_flow"
    PRESSURE = "pressure"
    OFFGAS_O2 = "offgas_o2"
    OFFGAS_CO2 = "offgas_co2"
    FEED_RATE = "feed_rate"  # substrate feed into a fermenter (with `feed`: what it carries)
    BASE_FLOW = "base_flow"  # pH control, into the broth
    ACID_FLOW = "acid_flow"  # pH control, into the broth
    ANTIFOAM_FLOW = "antifoam_flow"  # into the broth
    WATER_FLOW = "water_flow"  # dilution water into the broth
    DISCHARGE_FLOW = "discharge_flow"  # broth leaving a fermenter: bleeds, draw-offs, harvest pumping
    VOLUME = "volume"
    WEIGHT = "weight"
    LEVEL = "level"
    POWER = "power"
    ENERGY = "energy"
    COOLING_WATER_FLOW = "cooling_water_flow"
    HEATING_WATER_FLOW = "heating_water_flow"
    STEAM_FLOW = "steam_flow"
    FLOW = "flow"  # recovery units: a stream (`stream`); on a fermenter: shown, never counted as broth out
    FLOW_TOTAL = "flow_total"  # a flow totalizer: the volume that has passed [L]
    SPEED = "speed"
    CONCENTRATION = "concentration"
    TITER = "titer"  # an online product concentration in the broth, counted as titer (no lab table)
    TURBIDITY = "turbidity"
    CONDUCTIVITY = "conductivity"
    BATCH_ID = "batch_id"
    PHASE = "phase"


TEXT_ROLES = frozenset({Role.BATCH_ID, Role.PHASE})

# The kinds of quantity each role accepts (biopilot.units): a tag's unit is parsed by pint when the config
# loads and refused if it is of none of them. Text roles take no unit.
_LIQUID = (units.VOLUME_FLOW, units.MASS_FLOW)  # a mass flow needs a density (liquid_density)
ROLE_KINDS: dict[Role, tuple[units.Kind, ...]] = {
    Role.TEMPERATURE: (units.TEMPERATURE,),
    Role.PH: (units.ACIDITY,),
    Role.DISSOLVED_OXYGEN: (units.FRACTION, units.CONCENTRATION),
    Role.AGITATION_SPEED: (units.ROTATION,),
    Role.AIR_FLOW: (units.GAS_FLOW,),
    Role.PRESSURE: (units.PRESSURE,),
    Role.OFFGAS_O2: (units.FRACTION,),
    Role.OFFGAS_CO2: (units.FRACTION,),
    Role.FEED_RATE: _LIQUID,
    Role.BASE_FLOW: _LIQUID,
    Role.ACID_FLOW: _LIQUID,
    Role.ANTIFOAM_FLOW: _LIQUID,
    Role.WATER_FLOW: _LIQUID,
    Role.DISCHARGE_FLOW: _LIQUID,
    Role.VOLUME: (units.VOLUME,),
    Role.WEIGHT: (units.MASS,),
    Role.LEVEL: (units.FRACTION, units.LENGTH),
    Role.POWER: (units.POWER,),
    Role.ENERGY: (units.ENERGY,),
    Role.COOLING_WATER_FLOW: _LIQUID,
    Role.HEATING_WATER_FLOW: _LIQUID,
    Role.STEAM_FLOW: (units.MASS_FLOW,),
    Role.FLOW: _LIQUID,
    Role.FLOW_TOTAL: (units.VOLUME,),
    Role.SPEED: (units.ROTATION,),
    Role.CONCENTRATION: (units.CONCENTRATION,),
    Role.TITER: (units.CONCENTRATION,),
    Role.TURBIDITY: (units.TURBIDITY,),
    Role.CONDUCTIVITY: (units.CONDUCTIVITY,),
    Role.BATCH_ID: (),
    Role.PHASE: (),
}
# Liquid flows: in a mass unit (kg/h) they need a density to become L/h (liquid_density).
LIQUID_FLOW_ROLES = frozenset(r for r, kinds in ROLE_KINDS.items() if kinds == _LIQUID)
WATER_ROLES = frozenset({Role.WATER_FLOW, Role.COOLING_WATER_FLOW, Role.HEATING_WATER_FLOW})
# Roles whose values cannot be negative: a negative value is flagged on every KPI that reads the tag
# (negative_values:<tag>=<share of its samples>). Temperature, pressure (gauge) and pH may be.
NON_NEGATIVE_ROLES = frozenset(set(Role) - TEXT_ROLES - {Role.TEMPERATURE, Role.PRESSURE, Role.PH})

# Lab analytes the KPIs read as concentrations (their unit must be a mass concentration): titer, biomass,
# substrate (and the main substrate and feed substrates by name, concentration_analytes), total protein.
TITER_ANALYTES = ("titer", "product")
BIOMASS_ANALYTES = ("biomass", "dcw", "x")
SUBSTRATE_ANALYTES = ("substrate",)
PROTEIN_ANALYTES = ("total_protein",)


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


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InfluxConfig(_Model):
    """[storage.influxdb]: the InfluxDB 2 server that holds the time series (storage.backend = "influxdb")."""

    url: str  # http(s)://host:8086
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)  # its retention decides how long raw samples are kept
    token_env: str  # the environment variable that holds the API token (never the token itself)
    measurement: str = "biopilot"  # every sample is a point of this measurement, tagged series=<tag name>
    timeout_s: float = Field(default=10.0, gt=0)  # one HTTP request
    batch_lines: int = Field(default=5000, ge=1, le=100_000)  # points per write request
    retry_s: float = Field(default=10.0, ge=0)  # a write retries a slow or absent server this long, then
    # the store writer keeps the samples in the spool and tries again later (nothing is dropped)

    @model_validator(mode="before")
    @classmethod
    def _no_token_here(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" in data:
            raise ValueError(
                "do not write the API token in this file: put it in an environment variable (in a "
                "docker-compose deployment, INFLUXDB_TOKEN in the .env file) and name that variable in "
                "storage.influxdb.token_env"
            )
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an InfluxDB URL looks like 'http://influxdb:8086', got {value!r}")
        if parts.username is not None or parts.password is not None or parts.query:
            raise ValueError(
                "the InfluxDB URL carries credentials or a query; give only scheme, host and port, "
                "and the token through storage.influxdb.token_env"
            )
        return value.rstrip("/")

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError(
                "names the environment variable that holds the token (letters, digits and _, "
                "e.g. INFLUXDB_TOKEN), not the token itself"
            )
        return value

    @field_validator("measurement")
    @classmethod
    def _plain_measurement(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", value):
            raise ValueError(
                f"{value!r} is not a plain measurement name (a letter, then letters, digits, '_', '.', '-')"
            )
        return value


def _inside_data_dir(value: str) -> str:
    parts = Path(value).parts
    if not value.strip() or Path(value).is_absolute() or ".." in parts or not parts or parts[-1] == ".":
        raise ValueError(
            f"{value!r} leads outside the data directory; give a name inside it (to keep the data elsewhere,"
            " point --data-dir there)"
        )
    return value


class ArchiveConfig(_Model):
    """[storage.archive]: the Parquet archive of closed runs beside the embedded database (backend sqlite)."""

    path: str = "archive"  # a folder inside the data directory
    after_s: float = Field(default=30.0, ge=0)  # processing archives a run this long after it saw it close
    keep_raw_days: float = Field(default=7.0, ge=0)  # raw rows kept in SQLite after archiving
    compact_after_s: float = Field(default=60.0, ge=0)  # late samples folded into the files once this old

    @field_validator("path")
    @classmethod
    def _path_inside(cls, value: str) -> str:
        return _inside_data_dir(value)


class StorageConfig(_Model):
    backend: Literal["sqlite", "influxdb"] = "sqlite"
    path: str = "biopilot.db"  # a file inside the data directory (--data-dir); another place: move that
    archive: ArchiveConfig = ArchiveConfig()  # backend sqlite: closed runs as Parquet (storage/tiered.py)
    # The catalog (runs, KPIs, trials, users, audit): None keeps it in the SQLite file above; a
    # "postgresql://user@host:5432/db" URL puts it on a PostgreSQL server, with the password taken from the
    # environment variable named by catalog_password_env (never written in this file).
    catalog: str | None = None
    catalog_password_env: str | None = None
    # backend = "influxdb": the time series go to this InfluxDB 2 server; health (and the catalog, unless
    # it is on PostgreSQL) stay in the SQLite file above.
    influxdb: InfluxConfig | None = None

    @field_validator("path")
    @classmethod
    def _inside_data_dir(cls, value: str) -> str:
        parts = Path(value).parts
        if not value.strip() or Path(value).is_absolute() or ".." in parts or not parts or parts[-1] == ".":
            raise ValueError(
                f"{value!r} leads outside the data directory; give a file name inside it (to keep the"
                " database elsewhere, point --data-dir there)"
            )
        return value

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
        if self.backend == "influxdb" and self.influxdb is None:
            raise ValueError(
                "backend 'influxdb' needs a [storage.influxdb] section with url, org, bucket and token_env"
            )
        if self.backend != "influxdb" and self.influxdb is not None:
            raise ValueError("a [storage.influxdb] section is used only with backend = 'influxdb'")
        return self


_PASSWORD_ENV_NOT_A_NAME = (
    "password_env names the environment variable that holds the password (letters, digits and _), "
    "not the password itself"
)
# keys that would put a secret into the config file: refused with where secrets go instead
_SECRET_KEYS = re.compile(r"(?i)(pass(word|wd|phrase)?|secret|token|api_?key|credential)s?$")
SECRETS_GO_ELSEWHERE = (
    "secrets are never written in the site config: put the password in an environment variable (or in a "
    "0600 file named by VARIABLE_FILE) and name the variable in password_env"
)


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
        netloc = value[len("opc.tcp://") :].split("/", 1)[0]
        if "@" in netloc:  # never echo it: the part before @ may be a password
            raise ValueError(
                "the endpoint carries a user name or password before '@'; remove them, set username and "
                "name the environment variable that holds the password in password_env"
            )
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
        if self.password_env is not None and not _ENV_NAME.fullmatch(self.password_env):
            raise ValueError(_PASSWORD_ENV_NOT_A_NAME)
        return self


MqttFormat = Literal["json", "number", "influx", "sparkplug"]


class MqttPayload(_Model):
    """How a message carries a tag's value: the format and the keys it uses (shared by a tag's MQTT source
    and a topic template). Which keys each format uses: MQTT_FORMAT_KEYS."""

    format: MqttFormat = "json"
    field: str = "value"  # json: the key holding the value; influx: the field key
    time_field: str | None = "ts"  # json: ISO-8601 text or an epoch number (epoch_unit); None: arrival time
    epoch_unit: Literal["s", "ms", "us", "ns"] = "s"  # json: the unit of an epoch number in time_field
    # json: OPC UA status code (int) or good/uncertain/bad; default "status". influx: a field holding one,
    # only when set (a line's "status" field may mean something else, e.g. status="running").
    status_field: str | None = "status"
    numeric_strings: bool = False  # json, influx, sparkplug: accept a number sent as text ("12.5")
    measurement: str | None = None  # influx: only lines of this measurement (None: any)
    match_tags: dict[str, str] = {}  # influx: only lines whose tag set has these tags
    precision: Literal["ns", "us", "ms", "s"] = "ns"  # influx: the unit of the line's timestamp
    metric: str | None = None  # sparkplug: the metric's name (aliases are learnt from the BIRTH messages)

    @model_validator(mode="before")
    @classmethod
    def _influx_status_only_when_set(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == "influx" and "status_field" not in data:
            return {**data, "status_field": None}
        return data


# The keys of MqttPayload each format uses; setting another one is a configuration error.
MQTT_FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "json": ("field", "time_field", "epoch_unit", "status_field", "numeric_strings"),
    "number": (),
    "influx": ("field", "measurement", "match_tags", "precision", "status_field", "numeric_strings"),
    "sparkplug": ("metric", "numeric_strings"),
}
_PAYLOAD_KEYS = (
    "field",
    "time_field",
    "epoch_unit",
    "status_field",
    "numeric_strings",
    "measurement",
    "match_tags",
    "precision",
    "metric",
)
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


class SparkplugHost(_Model):
    """BioPilot as a Sparkplug B host application on a broker (used when tags have format "sparkplug")."""

    # Ask an edge node to send its BIRTH again (NCMD "Node Control/Rebirth") when its DATA cannot be resolved.
    # Off by default: BioPilot is read-only toward the plant, and this publishes a command to it.
    rebirth_requests: bool = False
    rebirth_interval_s: float = Field(default=60.0, gt=0)  # at most one request per edge node this often
    # DATA that no BIRTH resolves yet is kept on disk (and replayed when the BIRTH comes) up to this size;
    # beyond it, the collector stops taking messages from the broker, which keeps them.
    parked_max_mb: int = Field(default=64, ge=1)


class MqttBroker(_Model):
    host: str
    port: int = Field(default=1883, gt=0, lt=65536)  # default 8883 with tls
    client_id: str = "biopilot-collector"
    keepalive_s: int = Field(default=30, ge=5)
    username: str | None = None
    password_env: str | None = None  # the environment variable that holds the password (not the password)
    tls: MqttTls | None = None
    templates: dict[str, MqttTemplate] = {}
    sparkplug: SparkplugHost = SparkplugHost()

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
    id: str
    kind: EquipmentKind
    name: str = ""

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return check_equipment_id(value)


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
    name: str
    equipment: str
    role: Role
    unit: str = ""
    description: str = ""
    source: Source | None = None  # None: an import-only tag (historian files), never collected live
    feed: FeedSpec | None = None  # feed_rate tags: what the feed carries (substrate fed = flow × conc.)
    counter_rollover: float | None = Field(default=None, gt=0)  # energy and flow totalizers: where they wrap
    stream: Literal["feed", "product", "waste"] | None = None  # recovery flow/total/concentration tags
    lab: LabTag | None = None  # concentration tags that carry offline lab results (a LIMS over MQTT)
    # Report-by-exception tags stay silent while unchanged: a silence longer than this (with the source
    # alive) makes the tag stale. None: the tag is stale only when its source is gone.
    max_age_s: float | None = Field(default=None, gt=0)
    # An export or source whose convention differs from the plant's: stored value = raw × scale + offset,
    # in `unit` (a historian writing broth discharges as negative L/h: scale = -1). biopilot.units.Transform
    scale: float = Field(default=1.0, allow_inf_nan=False)
    offset: float = Field(default=0.0, allow_inf_nan=False)
    # [kg/L] of the liquid, for a liquid flow given as mass (kg/h); default: water 1.0 for the water roles,
    # [[process]] broth_density for discharge_flow; feed_rate tags give it in feed.density
    density: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @field_validator("unit")
    @classmethod
    def _unit_fits_role(cls, value: str, info: ValidationInfo) -> str:
        role = info.data.get("role")
        if role is not None:
            problem = units.check(value, ROLE_KINDS[role], f"role {role.value!r}")
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("scale")
    @classmethod
    def _nonzero_scale(cls, value: float) -> float:
        if value == 0:
            raise ValueError("0 would store every value as the offset; the default is 1")
        return value

    @model_validator(mode="after")
    def _numeric_transform(self) -> Tag:
        if self.is_text and not self.transform.identity:
            raise ValueError(f"scale and offset apply to numbers, not to a {self.role.value!r} tag")
        return self

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_tag_name(value)

    @property
    def is_text(self) -> bool:
        return self.role in TEXT_ROLES

    @property
    def source_label(self) -> str | None:
        """ "opcua:<server>" or "mqtt:<broker>" (the collector that reads the tag); None: import-only."""
        if isinstance(self.source, OpcUaSource):
            return f"opcua:{self.source.server}"
        if isinstance(self.source, MqttSource):
            return f"mqtt:{self.source.broker}"
        return None

    @property
    def transform(self) -> units.Transform:
        """raw → stored value (identity unless the tag sets scale or offset)."""
        return units.Transform(self.scale, self.offset)


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
    # [L/mol] at the air flow meter's reference: 22.414 for NL/min and Nm3/h (0 °C, 1.01325 bar, DIN 1343)
    gas_molar_volume: float = Field(default=units.NORMAL_MOLAR_VOLUME, gt=0)
    inlet_o2: float = Field(default=0.2095, gt=0, lt=1)  # [mol/mol] dry inlet gas
    inlet_co2: float = Field(default=0.0004, ge=0, lt=1)  # [mol/mol]
    inoculation_phase: str = "batch"  # phase whose start is inoculation (productivity time base)
    harvest_phase: str = "harvest"  # phase whose start ends growth
    # Stoichiometric maxima of the yields on the main substrate [g/g]: a yield above one is not a result
    # (value null, flag implausible:…). None: processing.plausibility's defaults, from the carbon and
    # degree-of-reduction balances (glucose → biomass 0.78 g/g; → product: its carbon, 0.4 / 0.5 = 0.8).
    max_yield_biomass: float | None = Field(default=None, gt=0)
    max_yield_product: float | None = Field(default=None, gt=0)
    # recovery units: the equipment whose product this unit processes (the recovery unit before it); None:
    # the fermenter that ran the same batch id. Overall yields multiply along these links.
    upstream: str | None = None
    # live runs whose batch id matches this pattern (fnmatch: * any text, ? one character) are recorded as
    # kind "baseline" when they are first detected (others stay "other" until marked); None: none are
    baseline_batches: str | None = None


class ProcessingConfig(_Model):
    """The processing service: how often it looks at the store, and how often a live run's provisional
    KPIs are recomputed (a closed run's final KPIs are computed when it closes, whatever these say)."""

    interval_s: float = Field(default=2.0, gt=0)  # [s] wall clock between passes (run starts and ends)
    provisional_interval_s: float = Field(default=30.0, ge=0)  # [s] wall clock; 0: every pass
    # build golden-batch envelopes and an MSPC model for an equipment + product that has none stored and at
    # least 5 closed baseline runs (processing/live_alarms.py); live runs are then judged against them
    auto_references: bool = True


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


def liquid_density(config: SiteConfig, tag: Tag) -> float | None:
    """[kg/L] that turns a liquid flow tag given as mass (kg/h) into L/h: the tag's `density`, else for a
    feed its feed.density, for water roles water (biopilot.units.WATER_DENSITY), for a discharge the broth
    ([[process]] broth_density); None when nothing says."""
    if tag.density is not None:
        return tag.density
    if tag.role == Role.FEED_RATE:
        return tag.feed.density if tag.feed is not None else None
    if tag.role in WATER_ROLES:
        return units.WATER_DENSITY
    if tag.role == Role.DISCHARGE_FLOW:
        return process_spec(config, tag.equipment).broth_density
    return None


def concentration_analytes(config: SiteConfig) -> frozenset[str]:
    """Lab analytes (lower case) the KPIs read as mass concentrations: titer, biomass, substrate, total
    protein, and every main substrate and feed substrate the config names."""
    names = {*TITER_ANALYTES, *BIOMASS_ANALYTES, *SUBSTRATE_ANALYTES, *PROTEIN_ANALYTES, "glucose"}
    names |= {spec.main_substrate.lower() for spec in config.process}
    names |= {t.feed.substrate.lower() for t in config.tags if t.feed is not None}
    return frozenset(names)


def lab_unit_problem(config: SiteConfig, analyte: str, unit: str) -> str | None:
    """Why a lab result's unit is refused (one clause), or None: pint must read it, and an analyte the KPIs
    read as a concentration (concentration_analytes) must be a mass concentration (5000 ug/mL is 5 g/L)."""
    if analyte.strip().lower() in concentration_analytes(config):
        return units.check(unit, (units.CONCENTRATION,), f"analyte {analyte!r}")
    try:
        units.parse(unit)
    except units.UnitError as exc:
        return str(exc)
    return None


def emission_factor(config: SiteConfig, utility: str) -> EmissionFactor | None:
    return next((f for f in config.emission_factors if f.utility == utility), None)


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

    def transforms(self) -> dict[str, units.Transform]:
        """The tags whose raw values are transformed before they are stored (scale, offset), by name."""
        return {t.name: t.transform for t in self.tags if not t.transform.identity}


# -- reading and validating a file ---------------------------------------------------------------------
# Every problem of a file is reported, one line each ("file: key: message"): first what the schema
# (pydantic) finds, then what the checks below find in the rest of the file (the items the schema refused
# are left out of those checks, so one mistake is not reported again as a dangling reference).

MAX_CONFIG_BYTES = 4 << 20  # a site config is kilobytes; anything this big is not one
MAX_NESTING = 32  # arrays and tables inside each other; a site config needs 5


def read_text(path: str | Path) -> str:
    """A configuration file's text; ConfigError (one line) when it cannot be read as UTF-8 text."""
    p = Path(path)
    try:
        info = p.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{path}: is a directory, not a configuration file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: is not a regular file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: {info.st_size / 1e6:.1f} MB is too large for a configuration file"
                f" (at most {MAX_CONFIG_BYTES >> 20} MB)"
            )
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


M = TypeVar("M", bound=BaseModel)


def config_error(path: str | Path, problems: list[str]) -> ConfigError:
    """One ConfigError for the problems ("key: message") of a file: their lines, each naming the file."""
    lines = [f"{path}: {p}" for p in dict.fromkeys(problems)]
    if len(lines) == 1:
        return ConfigError(lines[0], lines)
    return ConfigError(f"{path}: {len(lines)} problems:\n" + "\n".join(lines), lines)


def parse_toml(text: str, path: str | Path) -> dict[str, Any]:
    """TOML text as a dict; ConfigError (one line) for bad syntax or absurd nesting."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: arrays or tables nested too deeply (at most {MAX_NESTING})") from None
    depth = _nesting(raw)
    if depth > MAX_NESTING:
        raise ConfigError(f"{path}: arrays or tables nested {depth} deep (at most {MAX_NESTING})")
    return raw


def _nesting(value: object) -> int:
    """How deep arrays and tables nest in a parsed document (iteratively: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_NESTING:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def validate_toml(model: type[M], text: str, path: str | Path) -> tuple[M, dict[str, Any]]:
    """Parse TOML text into a model; ConfigError naming the file, the key and what was expected (every
    problem the schema finds, one line each)."""
    raw = parse_toml(text, path)
    try:
        return model.model_validate(raw), raw
    except ValidationError as exc:
        raise config_error(path, describe_errors(exc, raw)) from None


def load_config(path: str | Path) -> SiteConfig:
    """Read and validate a site configuration file; ConfigError listing every problem."""
    return parse_config(read_text(path), path)


def parse_config(text: str, path: str | Path = "<config>") -> SiteConfig:
    """A site config from TOML text; ConfigError listing every problem (see config_error)."""
    raw = parse_toml(text, path)
    problems: list[str] = []
    pruned = _Pruned()
    config: SiteConfig | None
    try:
        config = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        problems += describe_errors(exc, raw)
        config = _valid_part(raw, exc, pruned)
    if config is not None:
        config = _resolve_mqtt_files(config, Path(path).parent)
        for problem in site_problems(config):
            problem = pruned.renumber(problem)
            if not pruned.hides(problem):
                problems.append(problem)
    if problems:
        raise config_error(path, problems)
    assert config is not None
    return config


def site_problems(config: SiteConfig) -> Iterator[str]:
    """Every problem the schema cannot see (references between sections, units, MQTT layouts…)."""
    for check in SITE_CHECKS:
        yield from check(config)


def config_warnings(config: SiteConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """What will not stop a command but weakens security or may stop a collector: logins without
    encryption, private keys readable by others, password variables that are not set. check-config prints
    these and the collector logs them."""
    env = os.environ if environ is None else environ
    out = _security_warnings(config)
    named = [(f"opcua.servers.{n}.password_env", s.password_env) for n, s in config.opcua.servers.items()]
    named += [(f"mqtt.brokers.{n}.password_env", b.password_env) for n, b in config.mqtt.brokers.items()]
    for key, variable in named:
        if variable is not None and variable not in env:
            out.append(
                f"{key}: the environment variable {variable} is not set here; the collector needs it (the"
                " password) where it runs"
            )
    variable = config.storage.catalog_password_env
    if variable is not None and variable not in env:
        out.append(
            f"storage.catalog_password_env: the environment variable {variable} is not set here; every"
            " command that opens the catalog needs it"
        )
    return out


# -- schema errors -------------------------------------------------------------------------------------
def describe_errors(exc: ValidationError, raw: dict[str, Any]) -> list[str]:
    """Each schema error as "key (tag 'name'): message"; a misspelled key is one problem, not two."""
    errors = exc.errors()
    # A misspelled key shows up twice: as an unknown key and as the required key it should have been.
    hints: dict[int, str] = {}
    explained: set[tuple[Any, ...]] = set()
    for i, e in enumerate(errors):
        if e["type"] != "extra_forbidden":
            continue
        siblings = [x["loc"][-1] for x in errors if x["type"] == "missing" and x["loc"][:-1] == e["loc"][:-1]]
        close = difflib.get_close_matches(str(e["loc"][-1]), [str(k) for k in siblings], n=1)
        if close:
            hints[i] = close[0]
            explained.add((*e["loc"][:-1], close[0]))
    return [
        _describe(e, raw, hints.get(i))
        for i, e in enumerate(errors)
        if not (e["type"] == "missing" and tuple(e["loc"]) in explained)
    ]


def _describe(error: Any, raw: dict[str, Any], hint: str | None) -> str:
    loc = list(error["loc"])
    # pydantic puts the discriminator in the path ("source.opcua.server"); the user wrote "source.server"
    at = loc.index("source") + 1 if "source" in loc else 0
    if 0 < at < len(loc) and loc[at] in ("opcua", "mqtt"):
        loc.pop(at)
    key = _key_path(loc)
    where = _tag_label(loc, raw)
    kind = error["type"]
    message = error["msg"]
    if kind == "missing":
        message = "missing (required)"
    elif kind == "extra_forbidden" and _SECRET_KEYS.fullmatch(str(error["loc"][-1])):
        message = SECRETS_GO_ELSEWHERE  # the secret's value is never echoed
    elif kind == "extra_forbidden":
        message = f"unknown key (did you mean {hint!r}?)" if hint else "unknown key (misspelled?)"
    elif kind == "enum" and isinstance(error.get("input"), str):
        expected = error.get("ctx", {}).get("expected", "")
        options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",") if o.strip(" '")]
        message = f"{_short(error['input'])} is not allowed; expected one of: {', '.join(options)}"
        close = difflib.get_close_matches(error["input"], options, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    elif kind == "union_tag_invalid":
        message = f"{_short(error['input'])} is not a protocol; expected 'opcua' or 'mqtt'"
    elif kind == "union_tag_not_found":
        message = "missing 'protocol' (expected 'opcua' or 'mqtt')"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return f"{key}{where}: {message}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


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
        except (KeyError, IndexError, AttributeError, TypeError):
            return ""
        if isinstance(name, str) and len(name) <= 128 and name.isprintable():
            return f" (tag {name!r})"
    return ""


# Where a schema error can be cut out of the file so the checks still see the rest: an item of these lists
# or an entry of these tables; any other error takes its whole top-level section (its defaults stand in).
_ITEM_LISTS = (("simulator", "units"), ("equipment",), ("tags",), ("process",), ("emission_factors",))
_ITEM_TABLES = (("opcua", "servers"), ("mqtt", "brokers"))
_INDEXED = re.compile(r"\b(simulator\.units|equipment|tags|process|emission_factors)\[(\d+)\]")


@dataclass
class _Pruned:
    """What _valid_part cut out: the kept positions of each list (to give the checks' keys the file's
    positions back) and the names of the items cut (problems naming them are the schema error again)."""

    kept: dict[str, list[int]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)

    def renumber(self, problem: str) -> str:
        def back(m: re.Match[str]) -> str:
            kept = self.kept.get(m.group(1))
            i = int(m.group(2))
            return f"{m.group(1)}[{kept[i] if kept is not None and i < len(kept) else i}]"

        return _INDEXED.sub(back, problem) if self.kept else problem

    def hides(self, problem: str) -> bool:
        return any(repr(name) in problem for name in self.names)


def _valid_part(raw: dict[str, Any], exc: ValidationError, pruned: _Pruned) -> SiteConfig | None:
    """The config without the items and sections the schema refused, for the checks (None: too broken)."""
    items: dict[tuple[str, ...], set[Any]] = {}
    sections: set[str] = set()
    for error in exc.errors():
        loc = tuple(error["loc"])
        for prefix in (*_ITEM_LISTS, *_ITEM_TABLES):
            if loc[: len(prefix)] == prefix and len(loc) > len(prefix):
                items.setdefault(prefix, set()).add(loc[len(prefix)])
                break
        else:
            if not loc or loc[0] == "equipment":
                return None
            sections.add(str(loc[0]))
    data = copy.deepcopy(raw)
    for section in sections:
        if section == "site":
            data["site"] = {"name": "site"}  # no check looks at it
        else:
            data.pop(section, None)
    for prefix, keys in items.items():
        parent: Any = data
        for part in prefix[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        container = parent.get(prefix[-1]) if isinstance(parent, dict) else None
        if isinstance(container, list):
            kept = [i for i in range(len(container)) if i not in keys]
            for i in keys:
                if isinstance(i, int) and i < len(container) and isinstance(container[i], dict):
                    name = container[i].get("id", container[i].get("name"))
                    if isinstance(name, str) and name:
                        pruned.names.add(name)
            pruned.kept[".".join(prefix)] = kept
            parent[prefix[-1]] = [container[i] for i in kept]
        elif isinstance(container, dict):
            for key in keys:
                pruned.names.add(str(key))
                container.pop(key, None)
    try:
        return SiteConfig.model_validate(data)
    except ValidationError:
        return None


# -- the checks: each yields its problems as "key: message" -------------------------------------------
def _check_equipment(config: SiteConfig) -> Iterator[str]:
    for eq_id, count in Counter(eq.id for eq in config.equipment).items():
        if count > 1:
            yield f"equipment: id {eq_id!r} is used {count} times; ids must be unique"


def _tag_key(i: int, tag: Tag) -> tuple[str, str]:
    return f"tags[{i}]", f" (tag {tag.name!r})"


def _check_tags(config: SiteConfig) -> Iterator[str]:
    """Unique names, a configured equipment (the unit fits the role: Tag's validator, biopilot.units)."""
    equipment_ids = [eq.id for eq in config.equipment]
    seen: set[str] = set()
    for i, tag in enumerate(config.tags):
        key, who = _tag_key(i, tag)
        if tag.name in seen:
            yield f"{key}.name{who}: {tag.name!r} is used twice; tag names must be unique"
        seen.add(tag.name)
        if tag.equipment not in equipment_ids:
            known = _one_of(equipment_ids)
            yield f"{key}.equipment{who}: {tag.equipment!r} is not a configured equipment id ({known})"


def _check_tag_sources(config: SiteConfig) -> Iterator[str]:
    """A tag's source names a configured server or broker (tags without a source are import-only)."""
    for i, tag in enumerate(config.tags):
        key, who = _tag_key(i, tag)
        src = tag.source
        if isinstance(src, OpcUaSource):
            if src.server not in config.opcua.servers:
                yield (
                    f"{key}.source.server{who}: {src.server!r} is not a configured OPC UA server "
                    f"([opcua.servers.NAME]: {_one_of(list(config.opcua.servers))})"
                )
            elif (src.browse_path is None) == (src.node_id is None):
                yield f"{key}.source{who}: give exactly one of browse_path or node_id"
            elif src.browse_path is not None and config.opcua.servers[src.server].namespace is None:
                yield f"opcua.servers.{src.server}.namespace: required by browse_path in {key}{who}"
        elif isinstance(src, MqttSource) and src.broker not in config.mqtt.brokers:
            yield (
                f"{key}.source.broker{who}: {src.broker!r} is not a configured MQTT broker "
                f"([mqtt.brokers.NAME]: {_one_of(list(config.mqtt.brokers))})"
            )


def _check_singleton_roles(config: SiteConfig) -> Iterator[str]:
    for eq in config.equipment:
        for role in (Role.BATCH_ID, Role.PHASE):
            if len(config.role_tags(eq.id, role)) > 1:
                yield f"tags: equipment {eq.id!r} has more than one {role.value!r} tag"


def _check_simulator(config: SiteConfig) -> Iterator[str]:
    sim = config.simulator
    if sim is None:
        return
    equipment_ids = [eq.id for eq in config.equipment]
    if sim.opcua_server is not None and sim.opcua_server not in config.opcua.servers:
        yield f"simulator.opcua_server: {sim.opcua_server!r} is not a configured OPC UA server"
    if sim.mqtt_broker is not None and sim.mqtt_broker not in config.mqtt.brokers:
        yield f"simulator.mqtt_broker: {sim.mqtt_broker!r} is not a configured MQTT broker"
    simulated = {u.equipment: u for u in sim.units}
    fed: dict[str, str] = {}
    for i, unit in enumerate(sim.units):
        key = f"simulator.units[{i}]"
        if unit.equipment not in equipment_ids:
            yield f"{key}.equipment: {unit.equipment!r} is not a configured equipment id"
        if unit.upstream is not None and unit.upstream not in equipment_ids:
            yield f"{key}.upstream: {unit.upstream!r} is not a configured equipment id"
            continue
        if unit.model == EquipmentKind.FERMENTER:
            if unit.upstream is not None or unit.operation is not None:
                yield f"{key}: a simulated fermenter has no upstream and no operation"
            continue
        if unit.upstream is None:
            continue
        if unit.upstream not in simulated or unit.upstream == unit.equipment:
            yield f"{key}.upstream: {unit.upstream!r} is not another simulated unit"
        elif unit.upstream in fed:
            yield (
                f"{key}.upstream: {unit.upstream!r} already feeds {fed[unit.upstream]!r};"
                " a unit hands its output to one unit"
            )
        else:
            fed[unit.upstream] = unit.equipment


def _check_brokers(config: SiteConfig) -> Iterator[str]:
    """Brokers: credentials, TLS files, templates."""
    for b, broker in config.mqtt.brokers.items():
        key = f"mqtt.brokers.{b}"
        if broker.password_env is not None:
            if broker.username is None:
                yield f"{key}.password_env: needs a username"
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", broker.password_env):
                yield (
                    f"{key}.password_env: names the environment variable that holds the password "
                    "(letters, digits and _), not the password itself"
                )
        if broker.tls is not None:
            yield from _check_tls(broker.tls, f"{key}.tls")
        filters: dict[str, list[str]] = {}
        for t, template in broker.templates.items():
            tkey = f"{key}.templates.{t}"
            problems = [*_check_template(template, tkey), *_check_payload(template, tkey, "")]
            yield from problems
            if problems:
                continue
            segments = template.topic.split("/")
            if "{signal}" not in segments and "field" in template.model_fields_set:
                yield f"{tkey}.field: not used without {{signal}} in the topic (a tag's signal is the field)"
            for other, other_segments in filters.items():
                if _filters_overlap(segments, other_segments):
                    yield f"{tkey}.topic: {template.topic!r} overlaps template {other!r}"
            filters[t] = segments


def _check_mqtt_sources(config: SiteConfig) -> Iterator[str]:
    """The MQTT sources of tags: a topic or a template, the keys their format uses."""
    taken: dict[tuple[str, str, str, str], str] = {}
    for i, tag in enumerate(config.tags):
        src = tag.source
        if not isinstance(src, MqttSource) or src.broker not in config.mqtt.brokers:
            continue
        key = f"tags[{i}].source"
        who = f" (tag {tag.name!r})"
        if (src.topic is None) == (src.template is None):
            yield f"{key}{who}: give exactly one of topic or template"
            continue
        if src.topic is not None:
            if src.signal is not None:
                yield f"{key}.signal{who}: only with a template"
            yield from _check_payload(src, key, who)
            if src.format == "sparkplug" and not SPARKPLUG_DATA_TOPIC.fullmatch(src.topic):
                yield (
                    f"{key}.topic{who}: format 'sparkplug' needs a DATA topic, spBv1.0/<group>/NDATA/<edge>"
                    f" or spBv1.0/<group>/DDATA/<edge>/<device>; got {src.topic!r}"
                )
            continue
        templates = config.mqtt.brokers[src.broker].templates
        assert src.template is not None
        if src.template not in templates:
            yield (
                f"{key}.template{who}: {src.template!r} is not a template of broker {src.broker!r} "
                f"([mqtt.brokers.{src.broker}.templates.NAME]: {_one_of(list(templates))})"
            )
            continue
        for k in ("format", *_PAYLOAD_KEYS):
            if k in src.model_fields_set:
                yield f"{key}.{k}{who}: set it on the template {src.template!r}, not on a tag that uses it"
        if not src.signal:
            yield f"{key}.signal{who}: required with a template (the {{signal}} segment or payload field)"
            continue
        has_signal = "{signal}" in templates[src.template].topic.split("/")
        if has_signal and any(c in src.signal for c in "/+#"):
            yield f"{key}.signal{who}: {src.signal!r} is one topic segment, without / + #"
        slot = (src.broker, src.template, tag.equipment, src.signal)
        if slot in taken:
            yield f"{key}.signal{who}: {src.signal!r} of {tag.equipment!r} is also tag {taken[slot]!r}"
        taken[slot] = tag.name


def _check_payload(p: MqttPayload, key: str, who: str) -> Iterator[str]:
    allowed = MQTT_FORMAT_KEYS[p.format]
    for k in _PAYLOAD_KEYS:
        if k in p.model_fields_set and k not in allowed:
            uses = ", ".join(allowed) or "none of these keys"
            yield f"{key}.{k}{who}: not used by format {p.format!r} (it uses {uses})"
    if p.format == "sparkplug" and not p.metric:
        yield f"{key}.metric{who}: required by format 'sparkplug' (the metric's name)"


def _check_template(template: MqttTemplate, key: str) -> Iterator[str]:
    if template.format == "sparkplug":
        yield f"{key}.format: Sparkplug topics have their own layout; give tags a topic and a metric instead"
        return
    segments = template.topic.split("/")
    for segment in segments:
        if segment in ("+", "{equipment}", "{signal}"):
            continue
        if any(c in segment for c in "+#{}"):
            yield (
                f"{key}.topic: segment {segment!r} of {template.topic!r}: a segment is literal text, +, "
                "{equipment} or {signal} (# is not allowed)"
            )
            return
    if segments.count("{equipment}") != 1 or segments.count("{signal}") > 1:
        yield f"{key}.topic: {template.topic!r} needs {{equipment}} once and {{signal}} at most once"


def _check_tls(tls: MqttTls, key: str) -> Iterator[str]:
    missing = False
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name)
        if path is not None and not Path(path).is_file():
            yield f"{key}.{name}: {path} does not exist"
            missing = True
    if tls.key_file is not None and tls.cert_file is None:
        yield f"{key}.key_file: needs cert_file (the client certificate the key belongs to)"
        return
    if missing:
        return
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (ssl.SSLError, OSError) as exc:
        yield f"{key}.ca_file: {tls.ca_file}: not a PEM CA certificate ({exc})"
        return
    if tls.cert_file is not None:
        try:  # an encrypted key gets an empty password instead of a prompt on the terminal
            context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            yield (
                f"{key}.cert_file: {tls.cert_file} with key {tls.key_file or '(in the same file)'}: not a "
                f"PEM certificate and its unencrypted private key ({exc})"
            )


def _check_tag_kpi_keys(config: SiteConfig) -> Iterator[str]:
    """feed, density, counter_rollover and lab belong to tags of certain roles."""
    for i, tag in enumerate(config.tags):
        who = f"tags[{i}] (tag {tag.name!r})"
        if tag.feed is not None:
            if tag.role != Role.FEED_RATE:
                yield f"{who}.feed: only a feed_rate tag has a feed, not a {tag.role.value!r} tag"
            elif units.MASS_FLOW.fits(tag.unit) and tag.feed.density is None:
                yield f"{who}.feed.density: required for a feed measured in {tag.unit} (kg feed per L)"
        if tag.density is not None and tag.role not in LIQUID_FLOW_ROLES - {Role.FEED_RATE}:
            where = "feed.density" if tag.role == Role.FEED_RATE else "a liquid flow tag"
            yield f"{who}.density: only for {where}, not on a {tag.role.value!r} tag"
        elif (
            tag.role in LIQUID_FLOW_ROLES - {Role.FEED_RATE}
            and units.MASS_FLOW.fits(tag.unit)
            and liquid_density(config, tag) is None
        ):
            yield f"{who}.density: required for a flow measured in {tag.unit} (kg of the liquid per L)"
        if tag.counter_rollover is not None and tag.role not in (Role.ENERGY, Role.FLOW_TOTAL):
            yield f"{who}.counter_rollover: only a totalizer rolls over, not a {tag.role.value!r} tag"
        if tag.lab is not None and tag.role != Role.CONCENTRATION:
            yield f"{who}.lab: only a concentration tag carries lab results, not a {tag.role.value!r} tag"


def _check_process(config: SiteConfig) -> Iterator[str]:
    equipment_ids = [eq.id for eq in config.equipment]
    seen: set[str] = set()
    for i, spec in enumerate(config.process):
        if spec.equipment not in equipment_ids:
            yield f"process[{i}].equipment: {spec.equipment!r} is not a configured equipment id"
        elif spec.equipment in seen:
            yield f"process[{i}].equipment: {spec.equipment!r} has more than one [[process]] table"
        seen.add(spec.equipment)
        if spec.inlet_o2 + spec.inlet_co2 >= 1:
            yield f"process[{i}]: inlet_o2 + inlet_co2 must be below 1 (mole fractions)"
        if spec.upstream is not None and (
            spec.upstream not in equipment_ids or spec.upstream == spec.equipment
        ):
            yield f"process[{i}].upstream: {spec.upstream!r} is not another configured equipment id"


def _check_emission_factors(config: SiteConfig) -> Iterator[str]:
    for utility, count in Counter(f.utility for f in config.emission_factors).items():
        if count > 1:
            yield f"emission_factors: {utility!r} has {count} factors; give one per utility"


def _check_historian(config: SiteConfig) -> Iterator[str]:
    tag_names = {t.name for t in config.tags}
    for column, tag_name in config.historian.columns.items():
        if tag_name not in tag_names:
            yield f"historian.columns.{column}: {tag_name!r} is not a configured tag name"


SITE_CHECKS: tuple[Callable[[SiteConfig], Iterator[str]], ...] = (
    _check_equipment,
    _check_tags,
    _check_tag_sources,
    _check_singleton_roles,
    _check_simulator,
    _check_brokers,
    _check_mqtt_sources,
    _check_tag_kpi_keys,
    _check_process,
    _check_emission_factors,
    _check_historian,
)


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


def _security_warnings(config: SiteConfig) -> list[str]:
    """What is allowed but weakens security (config_warnings)."""
    out = []
    for name, srv in config.opcua.servers.items():
        if srv.username is not None and srv.security_policy == "None":
            out.append(
                f"opcua.servers.{name}: user {srv.username!r} logs in over security_policy 'None': the "
                "password is protected only if the server encrypts the user token, and the data is neither "
                "signed nor encrypted; use security_policy 'Basic256Sha256' with security_mode "
                "'SignAndEncrypt' (see `biopilot certs`)"
            )
    for name, broker in config.mqtt.brokers.items():
        key_file = broker.tls.key_file if broker.tls is not None else None
        if key_file is not None and Path(key_file).exists() and Path(key_file).stat().st_mode & 0o077:
            out.append(
                f"mqtt.brokers.{name}.tls.key_file: {key_file} is readable by others; "
                f"make it private with `chmod 600 {key_file}`"
            )
        if broker.username is not None and broker.tls is None:
            out.append(
                f"mqtt.brokers.{name}: user {broker.username!r} logs in without TLS: the password crosses "
                "the network in clear text; add [mqtt.brokers.NAME.tls]"
            )
    return out


def template_filter(topic: str) -> str:
    """The subscription of a template: its placeholders become +."""
    return "/".join("+" if s in ("{equipment}", "{signal}") else s for s in topic.split("/"))


def _filters_overlap(a: list[str], b: list[str]) -> bool:
    """Could one topic match both templates (segments literal or a placeholder/+)?"""
    wild = ("+", "{equipment}", "{signal}")
    return len(a) == len(b) and all(x == y or x in wild or y in wild for x, y in zip(a, b, strict=True))


def _one_of(options: list[str]) -> str:
    if not options:
        return "none are configured"
    return "expected one of: " + ", ".join(repr(o) for o in options)
