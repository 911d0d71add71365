"""Payload decoders: bytes from a broker → values, source timestamps and status codes.

A decoder never raises for bad input: it returns a `Rejected` with a reason that is counted by the
collector. Timestamps without a zone are read in the site's time zone. Formats: JSON objects, plain numbers,
InfluxDB line protocol, Sparkplug B (its payload decoded by protobuf, schema: collectors/sparkplug_b.proto).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from google.protobuf.message import DecodeError

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE
from collectors import sparkplug_b_pb2 as _sparkplug_pb2

_STATUS_WORDS = {"good": GOOD, "uncertain": UNCERTAIN_LAST_USABLE_VALUE, "bad": BAD_SENSOR_FAILURE}
MAX_PAYLOAD = 256 * 1024  # bytes; a plant message is a few hundred
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rejected:
    reason: str  # short and stable: counted by it
    detail: str


def parse_json_object(payload: bytes) -> dict[str, object] | Rejected:
    if len(payload) > MAX_PAYLOAD:
        return Rejected("payload_too_large", f"{len(payload)} bytes")
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # ValueError: also an integer beyond Python's digit limit
        return Rejected("undecodable_json", f"{exc}: {payload[:80]!r}")
    if not isinstance(obj, dict):
        return Rejected("not_a_json_object", repr(payload[:80]))
    return obj


def parse_number(payload: bytes) -> float | Rejected:
    if len(payload) > 64:
        return Rejected("undecodable_number", repr(payload[:80]))
    try:
        value = float(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return Rejected("undecodable_number", repr(payload[:80]))
    if not math.isfinite(value):
        return Rejected("not_finite", repr(payload[:80]))
    return value


EPOCH_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}  # per second
# Epoch numbers of the years 1990 to 2200 in each unit, to tell which unit a number is in.
_EPOCH_SPANS = {unit: (631_152_000 * per_s, 7_258_118_400 * per_s) for unit, per_s in EPOCH_UNITS.items()}
_EPOCH_PLAUSIBLE = (datetime(1980, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


def parse_time(raw: object, tz: tzinfo, epoch_unit: str = "s") -> datetime | Rejected:
    """ISO-8601 text (a naive time is read in tz) or a Unix epoch number in `epoch_unit` (s, ms, us, ns).
    An epoch number that gives no time between 1980 and 2200 in its unit, but would in another, is rejected
    with a hint naming that unit (epoch milliseconds read as seconds are the common mistake)."""
    if isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError:
            return Rejected("bad_timestamp", repr(raw[:64]))
        return ts.replace(tzinfo=tz).astimezone(UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        ts = None
        try:  # an int too large for a float overflows in isfinite
            if math.isfinite(raw):
                per_s = EPOCH_UNITS[epoch_unit]
                if isinstance(raw, int):
                    ts = _EPOCH + timedelta(microseconds=raw * 1_000_000 // per_s)
                else:
                    ts = _EPOCH + timedelta(microseconds=round(raw * 1_000_000 / per_s))
        except (OverflowError, OSError, ValueError):
            pass
        guess = _epoch_unit_of(raw)
        if ts is not None and (guess is None or guess == epoch_unit or _plausible(ts)):
            return ts
        hint = ""
        if guess is not None and guess != epoch_unit:
            hint = f" (it looks like epoch {_UNIT_WORDS[guess]}: set epoch_unit = {guess!r})"
        return Rejected("bad_timestamp", f"{raw!r:.40} as epoch {_UNIT_WORDS[epoch_unit]}{hint}")
    return Rejected("bad_timestamp", repr(raw)[:64])


_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def _epoch_unit_of(raw: float) -> str | None:
    """The unit in which an epoch number falls between 1990 and 2200, if one does."""
    try:
        for unit, (low, high) in _EPOCH_SPANS.items():
            if low <= raw < high:
                return unit
    except TypeError:
        pass
    return None


def _plausible(ts: datetime) -> bool:
    return _EPOCH_PLAUSIBLE[0] <= ts < _EPOCH_PLAUSIBLE[1]


@dataclass(frozen=True)
class TimeWindow:
    """Source timestamps a collector accepts, relative to its own clock at arrival."""

    max_future: timedelta = timedelta(minutes=10)
    max_past: timedelta = timedelta(days=3650)

    def check(self, ts: datetime, now: datetime) -> Rejected | None:
        if ts - now > self.max_future:
            return Rejected(
                "timestamp_in_future", f"{ts.isoformat()} is {ts - now} ahead of {now.isoformat()}"
            )
        if now - ts > self.max_past:
            return Rejected("timestamp_too_old", f"{ts.isoformat()} is older than {self.max_past.days} days")
        return None


def parse_status(raw: object) -> int | Rejected:
    if raw is None:
        return GOOD
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**32:
        return raw
    if isinstance(raw, str) and raw.lower() in _STATUS_WORDS:
        return _STATUS_WORDS[raw.lower()]
    return Rejected("bad_status", repr(raw)[:64])


def numeric_value(raw: object, *, strings: bool = False) -> float | Rejected:
    """A number as a float. Booleans are numbers here: true 1.0, false 0.0 (pump on/off, valve states).
    With strings=True, text that is a decimal number ("12.5") is one too."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if strings and isinstance(raw, str):
        try:
            raw = float(raw.strip()) if len(raw) <= 64 else raw
        except ValueError:
            return Rejected("wrong_type", f"expected a number, got text {raw!r:.40}")
    if not isinstance(raw, int | float):
        hint = " (numeric_strings = true accepts numbers sent as text)" if isinstance(raw, str) else ""
        return Rejected("wrong_type", f"expected a number, got {type(raw).__name__} {raw!r:.40}{hint}")
    try:
        value = float(raw)
    except OverflowError:  # an int too large for a float
        return Rejected("not_finite", f"{raw!r:.40}")
    if not math.isfinite(value):
        return Rejected("not_finite", repr(raw))
    return value


def rounded(raw: object, value: object) -> bool:
    """Was an integer changed by becoming a float (beyond 2**53 not every integer is a float)?"""
    return type(raw) is int and isinstance(value, float) and abs(raw) > 2**53 and int(value) != raw


def text_value(raw: object) -> str | Rejected:
    if isinstance(raw, str):
        return raw[:256]
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    return Rejected("wrong_type", f"expected text, got {type(raw).__name__} {raw!r:.40}")


# -- InfluxDB line protocol ------------------------------------------------------------------------
# measurement[,tag=value...] field=value[,field=value...] [timestamp]   (one point per line)
# https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/

PRECISION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_LP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_LP_INT = re.compile(r"[-+]?\d{1,20}i|\d{1,20}u")
_LP_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_LP_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
# characters a backslash escapes: in the measurement, in tag keys, tag values and field keys
_LP_MEASUREMENT_ESC = ", \\"
_LP_KEY_ESC = ",= \\"

LineValue = float | int | str | bool


@dataclass(frozen=True)
class LinePoint:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, LineValue]
    ts: datetime | None  # None: the line has no timestamp (the arrival time applies)


class _MalformedError(Exception):
    """Internal to the decoders: never leaves this module."""


class _BadTimeError(_MalformedError):
    """A well-formed timestamp out of the representable range."""


def parse_line_protocol(payload: bytes, precision: str = "ns") -> list[LinePoint | Rejected] | Rejected:
    """Every line of the message as a point, or a Rejected (reason `undecodable_line_protocol`) for a line
    that is not line protocol. Blank lines and # comments are skipped. The whole message is rejected when
    it is too large, not UTF-8 or has no point at all."""
    if len(payload) > MAX_PAYLOAD:
        return Rejected("payload_too_large", f"{len(payload)} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("undecodable_line_protocol", f"not UTF-8 ({exc.reason}): {payload[:80]!r}")
    unit = PRECISION_NS.get(precision, 1)
    out: list[LinePoint | Rejected] = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        try:
            out.append(_line(line, unit))
        except _MalformedError as exc:
            reason = "bad_timestamp" if isinstance(exc, _BadTimeError) else "undecodable_line_protocol"
            out.append(Rejected(reason, f"line {number}: {exc}: {line[:80]!r}"))
    if not out:
        return Rejected("undecodable_line_protocol", f"no line: {payload[:80]!r}")
    return out


def _scan(line: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    """The token from i up to the first unescaped stop character (or the end), unescaped."""
    parts: list[str] = []
    start = i
    n = len(line)
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n and line[i + 1] in escapable:
            parts.append(line[start:i])
            start = i + 1  # keep the escaped character, drop the backslash
            i += 2
            continue
        if c in stops:
            break
        i += 1
    parts.append(line[start:i])
    return "".join(parts), i


def _line(line: str, unit: int) -> LinePoint:
    measurement, i = _scan(line, 0, ", ", _LP_MEASUREMENT_ESC)
    if not measurement:
        raise _MalformedError("no measurement")
    n = len(line)
    tags: dict[str, str] = {}
    while i < n and line[i] == ",":
        key, i = _scan(line, i + 1, ",= ", _LP_KEY_ESC)
        if i >= n or line[i] != "=" or not key:
            raise _MalformedError("a tag is not key=value")
        value, i = _scan(line, i + 1, ", ", _LP_KEY_ESC)
        if not value:
            raise _MalformedError(f"tag {key!r} has no value")
        tags[key] = value
    if i >= n or line[i] != " ":
        raise _MalformedError("no fields")
    while i < n and line[i] == " ":
        i += 1
    fields: dict[str, LineValue] = {}
    while True:
        key, i = _scan(line, i, ",= ", _LP_KEY_ESC)
        if i >= n or line[i] != "=" or not key:
            raise _MalformedError("a field is not key=value")
        i += 1
        if i < n and line[i] == '"':
            value, i = _string(line, i + 1)
            fields[key] = value
        else:
            start = i
            while i < n and line[i] not in ", ":
                i += 1
            fields[key] = _field_value(line[start:i], key)
        if i < n and line[i] == ",":
            i += 1
            continue
        break
    rest = line[i:].strip(" \t")
    if not rest:
        return LinePoint(measurement, tags, fields, None)
    if not re.fullmatch(r"-?\d{1,19}", rest):
        raise _MalformedError(f"bad timestamp {rest[:30]!r}")
    return LinePoint(measurement, tags, fields, _epoch_ns(int(rest) * unit))


def _string(line: str, i: int) -> tuple[str, int]:
    """A string field value from just after its opening quote; returns it and the index after its close."""
    parts: list[str] = []
    start = i
    n = len(line)
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n and line[i + 1] in '"\\':
            parts.append(line[start:i])
            start = i + 1
            i += 2
            continue
        if c == '"':
            parts.append(line[start:i])
            return "".join(parts), i + 1
        i += 1
    raise _MalformedError("unterminated string")


def _field_value(raw: str, key: str) -> LineValue:
    if _LP_FLOAT.fullmatch(raw):
        return float(raw)  # may be inf for 1e999: numeric_value rejects it as not_finite
    if _LP_INT.fullmatch(raw):
        return int(raw[:-1])
    if raw in _LP_TRUE:
        return True
    if raw in _LP_FALSE:
        return False
    raise _MalformedError(f"field {key!r} has no valid value ({raw[:30]!r})")


def _epoch_ns(ns: int) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=ns // 1000)
    except OverflowError:
        raise _BadTimeError(f"timestamp {ns} ns is out of range") from None


# -- Sparkplug B -----------------------------------------------------------------------------------
# The protobuf Payload of Eclipse Sparkplug B (collectors/sparkplug_b.proto), decoded by protobuf.

# Sparkplug data types (the basic ones a tag can hold)
SP_INT8, SP_INT16, SP_INT32, SP_INT64 = 1, 2, 3, 4
SP_UINT8, SP_UINT16, SP_UINT32, SP_UINT64 = 5, 6, 7, 8
SP_FLOAT, SP_DOUBLE, SP_BOOLEAN, SP_STRING, SP_DATETIME, SP_TEXT, SP_UUID = 9, 10, 11, 12, 13, 14, 15
_SP_BITS = {SP_INT8: 8, SP_INT16: 16, SP_INT32: 32, SP_INT64: 64}  # signed, carried as uint32/uint64
_SP_UNSIGNED = {SP_UINT8: 8, SP_UINT16: 16, SP_UINT32: 32, SP_UINT64: 64, SP_DATETIME: 64}
# Without a datatype (none in the metric, no BIRTH seen): what the value field says, integers signed.
_SP_BY_FIELD = {
    "int_value": SP_INT32,
    "long_value": SP_INT64,
    "float_value": SP_FLOAT,
    "double_value": SP_DOUBLE,
    "boolean_value": SP_BOOLEAN,
    "string_value": SP_STRING,
}
# The "Quality" property (Cirrus Link / Ignition convention): 192 good, 500 stale, 0 bad.
_SP_QUALITY_GOOD, _SP_QUALITY_STALE = 192, 500
SP_BIRTH = ("NBIRTH", "DBIRTH")
SP_DATA = ("NDATA", "DDATA")
SP_DEATH = ("NDEATH", "DDEATH")


@dataclass(frozen=True)
class SparkplugMetric:
    name: str | None
    alias: int | None
    timestamp_ms: int | None
    datatype: int | None
    is_null: bool
    value_field: str | None  # the name of the value's field in the oneof (int_value, ...), None without
    raw: int | float | bool | str | bytes | None  # the value as decoded from its field
    quality: int | None  # the "Quality" property, if any


@dataclass(frozen=True)
class SparkplugPayload:
    timestamp_ms: int | None
    seq: int | None
    metrics: list[SparkplugMetric]

    def metric(self, name: str) -> SparkplugMetric | None:
        return next((m for m in self.metrics if m.name == name), None)


_SCALAR_FIELDS = frozenset(_SP_BY_FIELD) | {"bytes_value"}


def parse_sparkplug(payload: bytes) -> SparkplugPayload | Rejected:
    """A Sparkplug B payload, or Rejected `undecodable_sparkplug`. DataSets, templates and arrays decode
    (protobuf reads every field of the schema), but a tag holds none of them: sparkplug_value refuses them."""
    if len(payload) > MAX_PAYLOAD:
        return Rejected("payload_too_large", f"{len(payload)} bytes")
    message = _sparkplug_pb2.Payload()
    try:
        message.ParseFromString(payload)
        metrics = [_metric(m) for m in message.metrics]
    except (DecodeError, UnicodeDecodeError, ValueError) as exc:
        return Rejected("undecodable_sparkplug", f"{exc}: {payload[:40].hex()}")
    return SparkplugPayload(
        message.timestamp if message.HasField("timestamp") else None,
        message.seq if message.HasField("seq") else None,
        metrics,
    )


def _metric(m: _sparkplug_pb2.Payload.Metric) -> SparkplugMetric:
    field = m.WhichOneof("value")
    raw = getattr(m, field) if field in _SCALAR_FIELDS else None
    name = m.name if m.HasField("name") else None
    if isinstance(name, bytes) or (field == "string_value" and isinstance(raw, bytes)):
        raise ValueError("a string is not UTF-8")  # proto2 leaves that check to the reader
    quality = None
    if m.HasField("properties"):
        props = m.properties
        for key, value in zip(props.keys, props.values, strict=False):
            if key == "Quality":
                kind = value.WhichOneof("value")
                quality = value.int_value if kind == "int_value" else value.long_value if kind else None
                break
    return SparkplugMetric(
        name,
        m.alias if m.HasField("alias") else None,
        m.timestamp if m.HasField("timestamp") else None,
        m.datatype if m.HasField("datatype") else None,
        m.is_null,
        field,
        raw,
        quality,
    )


def sparkplug_status(quality: int | None) -> int:
    """OPC UA status of a metric's Quality property: 192 good, 500 (stale) uncertain, other OPC DA codes by
    their quality bits (11 good, 01 uncertain), anything else bad. No property: good."""
    if quality is None:
        return GOOD
    if quality == _SP_QUALITY_STALE:
        return UNCERTAIN_LAST_USABLE_VALUE
    if 0 <= quality < 256:
        bits = quality & 0xC0
        if bits == 0xC0:
            return GOOD
        if bits == 0x40:
            return UNCERTAIN_LAST_USABLE_VALUE
    return BAD_SENSOR_FAILURE


def sparkplug_value(metric: SparkplugMetric, datatype: int | None) -> float | int | str | bool | Rejected:
    """The metric's value by its datatype (the metric's own, else the one its BIRTH declared, else the one
    its value field implies). Signed integers travel in the uint32/uint64 fields as two's complement."""
    field = metric.value_field
    if field is None:
        return Rejected("missing_value", f"metric {metric.name or metric.alias!r} has no value")
    kind = datatype if datatype is not None else _SP_BY_FIELD.get(field)
    raw = metric.raw
    if kind in _SP_BITS or kind in _SP_UNSIGNED:
        if field not in ("int_value", "long_value") or not isinstance(raw, int):
            return Rejected("wrong_type", f"datatype {kind} in value field {field}")
        if kind in _SP_BITS:
            bits = _SP_BITS[kind]
            raw &= (1 << bits) - 1
            return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw
        return raw & ((1 << _SP_UNSIGNED[kind]) - 1)
    if kind in (SP_FLOAT, SP_DOUBLE):
        if field not in ("float_value", "double_value"):
            return Rejected("wrong_type", f"datatype {kind} in value field {field}")
        return raw  # type: ignore[return-value]
    if kind == SP_BOOLEAN:
        if field != "boolean_value":
            return Rejected("wrong_type", f"datatype {kind} in value field {field}")
        return bool(raw)
    if kind in (SP_STRING, SP_TEXT, SP_UUID):
        if field != "string_value" or not isinstance(raw, str):
            return Rejected("wrong_type", f"datatype {kind} in value field {field}")
        return raw
    return Rejected(
        "unsupported_datatype", f"Sparkplug datatype {kind} in {field} (a tag holds a number or text)"
    )


def sparkplug_time(ms: int) -> datetime | Rejected:
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return Rejected("bad_timestamp", f"{ms} ms")
