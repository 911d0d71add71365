"""Payload decoders: bytes from a broker → values, source timestamps and status codes.

A decoder never raises for bad input: it returns a `Rejected` with a reason that is counted by the
collector. Timestamps without a zone are read in the site's time zone. Formats: JSON objects, plain numbers,
InfluxDB line protocol, Sparkplug B (its protobuf payload read here from the wire format, no dependency).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE

_STATUS_WORDS = {"good": GOOD, "uncertain": UNCERTAIN_LAST_USABLE_VALUE, "bad": BAD_SENSOR_FAILURE}
MAX_PAYLOAD = 256 * 1024  # bytes; a plant message is a few hundred


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


def parse_time(raw: object, tz: tzinfo) -> datetime | Rejected:
    """ISO-8601 text (a naive time is read in tz) or Unix epoch seconds as a number."""
    if isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError:
            return Rejected("bad_timestamp", repr(raw[:64]))
        return ts.replace(tzinfo=tz).astimezone(UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:  # an int too large for a float overflows in isfinite
            if math.isfinite(raw):
                return datetime.fromtimestamp(raw, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return Rejected("bad_timestamp", repr(raw)[:64])


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


def numeric_value(raw: object) -> float | Rejected:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return Rejected("wrong_type", f"expected a number, got {type(raw).__name__} {raw!r:.40}")
    try:
        value = float(raw)
    except OverflowError:  # an int too large for a float
        return Rejected("not_finite", f"{raw!r:.40}")
    if not math.isfinite(value):
        return Rejected("not_finite", repr(raw))
    return value


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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
# The protobuf Payload of Eclipse Sparkplug B (sparkplug_b.proto), read straight from the wire format:
# Payload {1 timestamp uint64, 2 metrics repeated Metric, 3 seq uint64}; Metric {1 name, 2 alias,
# 3 timestamp (ms), 4 datatype, 5 is_historical, 7 is_null, 9 properties PropertySet, 10 int_value uint32,
# 11 long_value uint64, 12 float_value, 13 double_value, 14 boolean_value, 15 string_value, 16 bytes, ...}.

# Sparkplug data types (the basic ones a tag can hold)
SP_INT8, SP_INT16, SP_INT32, SP_INT64 = 1, 2, 3, 4
SP_UINT8, SP_UINT16, SP_UINT32, SP_UINT64 = 5, 6, 7, 8
SP_FLOAT, SP_DOUBLE, SP_BOOLEAN, SP_STRING, SP_DATETIME, SP_TEXT, SP_UUID = 9, 10, 11, 12, 13, 14, 15
_SP_BITS = {SP_INT8: 8, SP_INT16: 16, SP_INT32: 32, SP_INT64: 64}  # signed, carried as uint32/uint64
_SP_UNSIGNED = {SP_UINT8: 8, SP_UINT16: 16, SP_UINT32: 32, SP_UINT64: 64, SP_DATETIME: 64}
# Without a datatype (none in the metric, no BIRTH seen): what the value field says, integers signed.
_SP_BY_FIELD = {10: SP_INT32, 11: SP_INT64, 12: SP_FLOAT, 13: SP_DOUBLE, 14: SP_BOOLEAN, 15: SP_STRING}
# The "Quality" property (Cirrus Link / Ignition convention): 192 good, 500 stale, 0 bad.
_SP_QUALITY_GOOD, _SP_QUALITY_STALE = 192, 500
SP_BIRTH = ("NBIRTH", "DBIRTH")
SP_DATA = ("NDATA", "DDATA")


@dataclass(frozen=True)
class SparkplugMetric:
    name: str | None
    alias: int | None
    timestamp_ms: int | None
    datatype: int | None
    is_null: bool
    value_field: int | None  # the field number of the value (10-19), None without a value
    raw: int | float | bytes | None  # the value as on the wire: varint, fixed32/64 float, bytes
    quality: int | None  # the "Quality" property, if any


@dataclass(frozen=True)
class SparkplugPayload:
    timestamp_ms: int | None
    seq: int | None
    metrics: list[SparkplugMetric]


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    n = len(buf)
    while True:
        if i >= n:
            raise _MalformedError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, i
        shift += 7
        if shift >= 70:
            raise _MalformedError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field of a message: an int for varints, the raw bytes
    for fixed64, fixed32 and length-delimited fields."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _MalformedError("field number 0")
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, wire, value
            continue
        if wire == 1:
            size = 8
        elif wire == 5:
            size = 4
        elif wire == 2:
            size, i = _varint(buf, i)
        else:
            raise _MalformedError(f"wire type {wire} of field {number}")
        if i + size > n:
            raise _MalformedError(f"field {number} runs past the end")
        yield number, wire, buf[i : i + size]
        i += size


def _expect(number: int, wire: int, want: int) -> None:
    if wire != want:
        raise _MalformedError(f"field {number} has wire type {wire}, expected {want}")


def _text(raw: int | bytes) -> str:
    assert isinstance(raw, bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _MalformedError("a string is not UTF-8") from None


def parse_sparkplug(payload: bytes) -> SparkplugPayload | Rejected:
    """A Sparkplug B payload, or Rejected `undecodable_sparkplug`. Metric values stay raw until asked for
    (sparkplug_value): a message carries many metrics and a collector wants a few."""
    if len(payload) > MAX_PAYLOAD:
        return Rejected("payload_too_large", f"{len(payload)} bytes")
    try:
        timestamp = seq = None
        metrics: list[SparkplugMetric] = []
        for number, wire, value in _fields(payload):
            if number == 1:
                _expect(number, wire, 0)
                timestamp = value
            elif number == 2:
                _expect(number, wire, 2)
                assert isinstance(value, bytes)
                metrics.append(_metric(value))
            elif number == 3:
                _expect(number, wire, 0)
                seq = value
    except _MalformedError as exc:
        return Rejected("undecodable_sparkplug", f"{exc}: {payload[:40].hex()}")
    return SparkplugPayload(timestamp, seq, metrics)  # type: ignore[arg-type]


_SP_VALUE_WIRE = {10: 0, 11: 0, 12: 5, 13: 1, 14: 0, 15: 2, 16: 2, 17: 2, 18: 2, 19: 2}


def _metric(buf: bytes) -> SparkplugMetric:
    name = alias = timestamp = datatype = quality = value_field = None
    raw: int | float | bytes | None = None
    is_null = False
    for number, wire, value in _fields(buf):
        if number == 1:
            _expect(number, wire, 2)
            name = _text(value)
        elif number in (2, 3, 4, 7):
            _expect(number, wire, 0)
            assert isinstance(value, int)
            if number == 2:
                alias = value
            elif number == 3:
                timestamp = value
            elif number == 4:
                datatype = value & 0xFFFFFFFF
            else:
                is_null = bool(value)
        elif number == 9:
            _expect(number, wire, 2)
            assert isinstance(value, bytes)
            quality = _quality(value)
        elif number in _SP_VALUE_WIRE:
            _expect(number, wire, _SP_VALUE_WIRE[number])
            value_field = number
            if number == 12:
                raw = struct.unpack("<f", value)[0]
            elif number == 13:
                raw = struct.unpack("<d", value)[0]
            else:
                raw = value
    return SparkplugMetric(name, alias, timestamp, datatype, is_null, value_field, raw, quality)


def _quality(buf: bytes) -> int | None:
    """The integer "Quality" property of a PropertySet {1 keys repeated string, 2 values repeated
    PropertyValue {1 type, 2 is_null, 3 int_value, 4 long_value, ...}}, if there is one."""
    keys: list[str] = []
    values: list[int | None] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            _expect(number, wire, 2)
            keys.append(_text(value))
        elif number == 2:
            _expect(number, wire, 2)
            assert isinstance(value, bytes)
            found = None
            for n, w, v in _fields(value):
                if n in (3, 4) and w == 0:
                    assert isinstance(v, int)
                    found = v & 0xFFFFFFFF if n == 3 else v
            values.append(found)
    for key, value in zip(keys, values, strict=False):
        if key == "Quality":
            return value
    return None


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
    if metric.value_field is None or metric.raw is None:
        return Rejected("missing_value", f"metric {metric.name or metric.alias!r} has no value")
    kind = datatype if datatype is not None else _SP_BY_FIELD.get(metric.value_field)
    raw = metric.raw
    if kind in _SP_BITS or kind in _SP_UNSIGNED:
        if not isinstance(raw, int) or isinstance(raw, bool) or metric.value_field not in (10, 11):
            return Rejected("wrong_type", f"datatype {kind} in value field {metric.value_field}")
        if kind in _SP_BITS:
            bits = _SP_BITS[kind]
            raw &= (1 << bits) - 1
            return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw
        return raw & ((1 << _SP_UNSIGNED[kind]) - 1)
    if kind in (SP_FLOAT, SP_DOUBLE):
        if metric.value_field not in (12, 13):
            return Rejected("wrong_type", f"datatype {kind} in value field {metric.value_field}")
        return raw  # type: ignore[return-value]
    if kind == SP_BOOLEAN:
        if metric.value_field != 14:
            return Rejected("wrong_type", f"datatype {kind} in value field {metric.value_field}")
        return bool(raw)
    if kind in (SP_STRING, SP_TEXT, SP_UUID):
        if metric.value_field != 15 or not isinstance(raw, bytes):
            return Rejected("wrong_type", f"datatype {kind} in value field {metric.value_field}")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return Rejected("undecodable_sparkplug", f"metric {metric.name!r}: string is not UTF-8")
    return Rejected("unsupported_datatype", f"Sparkplug datatype {kind} (a tag holds a number or text)")


def sparkplug_time(ms: int) -> datetime | Rejected:
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return Rejected("bad_timestamp", f"{ms} ms")
