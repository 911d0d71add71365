"""collectors/decoders.py: payload bytes → values, source timestamps, status codes, or a counted Rejected.

A decoder never raises for bad input, so every bad case below asserts the returned reason."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE
from collectors.decoders import (
    MAX_PAYLOAD,
    LinePoint,
    Rejected,
    SparkplugMetric,
    SparkplugPayload,
    numeric_value,
    parse_json_object,
    parse_line_protocol,
    parse_number,
    parse_sparkplug,
    parse_status,
    parse_time,
    rounded,
    sparkplug_status,
    sparkplug_value,
    text_value,
)
from tests.collectors import sparkplug_wire as spb

CPH = ZoneInfo("Europe/Copenhagen")


def reason(result: object) -> str:
    assert isinstance(result, Rejected), f"expected a Rejected, got {result!r}"
    assert result.detail  # always says what was wrong
    return result.reason


# -- parse_json_object -----------------------------------------------------------------------------


def test_json_object_is_decoded() -> None:
    assert parse_json_object(b'{"value": 1.5, "ts": "2024-01-15T12:00:00Z"}') == {
        "value": 1.5,
        "ts": "2024-01-15T12:00:00Z",
    }
    assert parse_json_object('{"name": "Ø-101"}'.encode()) == {"name": "Ø-101"}


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"not json", b'{"a": 1,}', b"\xff\xfe{}", b"[" * 100_000, b'{"v": 1' + b"0" * 5000 + b"}"],
    ids=["empty", "truncated", "text", "trailing_comma", "not_utf8", "deeply_nested", "huge_integer"],
)
def test_undecodable_json(payload: bytes) -> None:
    assert reason(parse_json_object(payload)) == "undecodable_json"


@pytest.mark.parametrize("payload", [b"[1, 2]", b"1.5", b'"text"', b"null", b"true"])
def test_json_that_is_not_an_object(payload: bytes) -> None:
    assert reason(parse_json_object(payload)) == "not_a_json_object"


def test_payload_too_large() -> None:
    big = json.dumps({"value": 1, "pad": "x" * MAX_PAYLOAD}).encode()
    assert len(big) > MAX_PAYLOAD
    assert reason(parse_json_object(big)) == "payload_too_large"
    at_limit = b'{"a":"' + b"x" * (MAX_PAYLOAD - 8) + b'"}'
    assert len(at_limit) == MAX_PAYLOAD
    assert isinstance(parse_json_object(at_limit), dict)


# -- parse_number ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "value"),
    [(b"1.5", 1.5), (b" 42 \n", 42.0), (b"-3e2", -300.0), (b"0", 0.0)],
)
def test_number_payload(payload: bytes, value: float) -> None:
    assert parse_number(payload) == value


@pytest.mark.parametrize("payload", [b"", b"abc", b"1,5", b"\xff", b"1" * 65, b"{}"])
def test_undecodable_number(payload: bytes) -> None:
    assert reason(parse_number(payload)) == "undecodable_number"


@pytest.mark.parametrize("payload", [b"nan", b"inf", b"-Infinity", b"1e999"])
def test_non_finite_number_payload(payload: bytes) -> None:
    # As for a JSON value (numeric_value): NaN and ±inf are not measurements.
    assert reason(parse_number(payload)) == "not_finite"


# -- parse_time ------------------------------------------------------------------------------------


def test_iso_time_with_z_suffix() -> None:
    ts = parse_time("2024-01-15T12:00:00Z", CPH)
    assert ts == datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    assert isinstance(ts, datetime) and ts.utcoffset() == timedelta(0)


def test_iso_time_with_offset_is_converted_to_utc() -> None:
    ts = parse_time("2024-07-01T14:30:00.250+02:00", UTC)
    assert ts == datetime(2024, 7, 1, 12, 30, 0, 250_000, tzinfo=UTC)
    assert isinstance(ts, datetime) and ts.tzinfo is UTC


def test_naive_iso_time_is_read_in_the_site_zone() -> None:
    # Copenhagen is UTC+1 in winter (CET) and UTC+2 in summer (CEST).
    assert parse_time("2024-01-15T12:00:00", CPH) == datetime(2024, 1, 15, 11, 0, tzinfo=UTC)
    assert parse_time("2024-07-15T12:00:00", CPH) == datetime(2024, 7, 15, 10, 0, tzinfo=UTC)
    assert parse_time("2024-01-15T12:00:00", timezone(timedelta(hours=-5))) == datetime(
        2024, 1, 15, 17, 0, tzinfo=UTC
    )
    ts = parse_time("2024-01-15T12:00:00", CPH)
    assert isinstance(ts, datetime) and ts.tzinfo is UTC


def test_epoch_seconds() -> None:
    assert parse_time(0, CPH) == datetime(1970, 1, 1, tzinfo=UTC)
    # 1705320000 s = 19737 days + 43200 s after the epoch = 2024-01-15 12:00:00 UTC (the zone is irrelevant)
    assert parse_time(1_705_320_000, CPH) == datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    assert parse_time(1_705_320_000.5, CPH) == datetime(2024, 1, 15, 12, 0, 0, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "unit"),
    [
        (1_705_320_000_123, "ms"),
        (1_705_320_000_123_000, "us"),
        (1_705_320_000_123_000_000, "ns"),
        (1_705_320_000.123, "s"),
        (1_705_320_000_123.0, "ms"),
    ],
)
def test_epoch_in_its_configured_unit(raw: float, unit: str) -> None:
    # 1705320000 s = 2024-01-15 12:00:00 UTC (above); plus 123 ms, exact in every unit
    assert parse_time(raw, UTC, unit) == datetime(2024, 1, 15, 12, 0, 0, 123_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "unit", "hint"),
    [
        (1_705_320_000_123, "s", "it looks like epoch milliseconds: set epoch_unit = 'ms'"),
        (1_705_320_000_123_000, "ms", "it looks like epoch microseconds: set epoch_unit = 'us'"),
        (1_705_320_000, "ms", "it looks like epoch seconds: set epoch_unit = 's'"),  # 1970-01-20 as ms
        (1_705_320_000_123_000_000, "s", "it looks like epoch nanoseconds: set epoch_unit = 'ns'"),
    ],
)
def test_epoch_in_another_unit_is_refused_with_a_hint(raw: int, unit: str, hint: str) -> None:
    bad = parse_time(raw, UTC, unit)
    assert reason(bad) == "bad_timestamp"
    assert isinstance(bad, Rejected) and hint in bad.detail, bad.detail


def test_epoch_numbers_of_the_configured_unit_near_1970_are_kept() -> None:
    # no other unit would make a plausible time of 0 or 86400: they are what they say
    assert parse_time(0, UTC, "ms") == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time(86_400, UTC) == datetime(1970, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    ["yesterday", "", "2024-13-01T00:00:00", None, True, [1], {"t": 1}, math.nan, math.inf, 1e20, 10**400],
    ids=["word", "empty", "month13", "none", "bool", "list", "dict", "nan", "inf", "far_future", "huge_int"],
)
def test_bad_timestamp(raw: object) -> None:
    assert reason(parse_time(raw, UTC)) == "bad_timestamp"


# -- parse_status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (None, GOOD),
        (0, GOOD),
        (0x80310000, 0x80310000),
        (0xFFFFFFFF, 0xFFFFFFFF),
        ("good", GOOD),
        ("Uncertain", UNCERTAIN_LAST_USABLE_VALUE),
        ("BAD", BAD_SENSOR_FAILURE),
    ],
)
def test_status(raw: object, status: int) -> None:
    assert parse_status(raw) == status


@pytest.mark.parametrize("raw", [-1, 2**32, True, 1.0, "ok", "", [0]])
def test_bad_status(raw: object) -> None:
    assert reason(parse_status(raw)) == "bad_status"


# -- numeric_value / text_value --------------------------------------------------------------------


def test_numeric_value() -> None:
    assert numeric_value(3) == 3.0
    assert isinstance(numeric_value(3), float)
    assert numeric_value(-2.5) == -2.5


def test_booleans_are_numbers_one_and_zero() -> None:
    assert numeric_value(True) == 1.0 and numeric_value(False) == 0.0
    assert isinstance(numeric_value(True), float)


def test_numeric_strings_only_where_configured() -> None:
    assert reason(numeric_value("12.5")) == "wrong_type"
    bad = numeric_value("12.5")
    assert isinstance(bad, Rejected) and "numeric_strings = true" in bad.detail
    assert numeric_value("12.5", strings=True) == 12.5
    assert numeric_value(" -3e2 ", strings=True) == -300.0
    assert reason(numeric_value("high", strings=True)) == "wrong_type"
    assert reason(numeric_value("nan", strings=True)) == "not_finite"


def test_integers_beyond_2_to_the_53_are_flagged_when_rounded() -> None:
    assert not rounded(2**53, numeric_value(2**53))
    assert rounded(2**53 + 1, numeric_value(2**53 + 1))  # 9007199254740993 is no float
    assert not rounded(2**60, numeric_value(2**60))  # a power of two is exact
    assert not rounded(True, numeric_value(True)) and not rounded(1.5, 1.5)


@pytest.mark.parametrize("raw", ["1.5", None, [1.0], {"v": 1}])
def test_numeric_value_of_wrong_type(raw: object) -> None:
    assert reason(numeric_value(raw)) == "wrong_type"


@pytest.mark.parametrize(
    "raw", [math.nan, math.inf, -math.inf, 10**400], ids=["nan", "inf", "-inf", "huge_int"]
)
def test_numeric_value_not_finite(raw: object) -> None:
    assert reason(numeric_value(raw)) == "not_finite"


def test_text_value() -> None:
    assert text_value("B-2024-001") == "B-2024-001"
    assert text_value("") == ""
    assert text_value(42) == "42"
    assert text_value("x" * 1000) == "x" * 256  # capped


@pytest.mark.parametrize("raw", [1.5, None, True, ["a"], {"a": 1}])
def test_text_value_of_wrong_type(raw: object) -> None:
    assert reason(text_value(raw)) == "wrong_type"


# -- InfluxDB line protocol ------------------------------------------------------------------------


def _points(payload: bytes, precision: str = "ns") -> list[LinePoint]:
    lines = parse_line_protocol(payload, precision)
    assert isinstance(lines, list)
    assert all(isinstance(p, LinePoint) for p in lines), lines
    return lines  # type: ignore[return-value]


def test_line_protocol_point_with_every_field_type() -> None:
    [p] = _points(
        b'reactor,unit=F-1,site=hall3 temp=37.5,rpm=300i,count=7u,batch="B-12",on=t 1700000000000000000'
    )
    assert p.measurement == "reactor"
    assert p.tags == {"unit": "F-1", "site": "hall3"}
    assert p.fields == {"temp": 37.5, "rpm": 300, "count": 7, "batch": "B-12", "on": True}
    assert isinstance(p.fields["rpm"], int) and isinstance(p.fields["temp"], float)
    # 1 700 000 000 s after the epoch = 2023-11-14 22:13:20 UTC
    assert p.ts == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("precision", "stamp"),
    [("ns", "1700000000123456789"), ("us", "1700000000123456"), ("ms", "1700000000123"), ("s", "1700000000")],
)
def test_line_protocol_precision(precision: str, stamp: str) -> None:
    [p] = _points(f"m v=1 {stamp}".encode(), precision)
    expected = {"ns": 123456, "us": 123456, "ms": 123000, "s": 0}[precision]  # stored to the microsecond
    assert p.ts == datetime(2023, 11, 14, 22, 13, 20, expected, tzinfo=UTC)


def test_line_protocol_without_timestamp_and_negative_timestamp() -> None:
    [p] = _points(b"m v=-1.5e3")
    assert p.ts is None and p.fields == {"v": -1500.0}
    [p] = _points(b"m v=1 -1000000000")
    assert p.ts == datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_line_protocol_escaping() -> None:
    # measurement: \, and \space; tag keys/values and field keys: \, \= \space; strings: \" and \\
    [p] = _points(
        b'my\\ meas\\,ure,tag\\ key=a\\,b\\=c\\ d field\\=key="say \\"hi\\" C:\\\\x",plain="a\\\\b" 1'
    )
    assert p.measurement == "my meas,ure"
    assert p.tags == {"tag key": "a,b=c d"}
    assert p.fields == {"field=key": 'say "hi" C:\\x', "plain": "a\\b"}
    # a string may hold spaces, commas and equal signs unescaped
    [p] = _points(b'm s="a b,c=d" 5')
    assert p.fields == {"s": "a b,c=d"}
    # a backslash before any other character is literal
    [p] = _points(b"m\\x,t=a\\b v=1")
    assert p.measurement == "m\\x" and p.tags == {"t": "a\\b"}


def test_line_protocol_several_lines_comments_and_blank_lines() -> None:
    payload = b"# comment\nm,u=1 v=1 1000000000\r\n\n  \nm,u=2 v=2 2000000000\nother w=3\n"
    points = _points(payload)
    assert [(p.measurement, p.tags, p.fields) for p in points] == [
        ("m", {"u": "1"}, {"v": 1.0}),
        ("m", {"u": "2"}, {"v": 2.0}),
        ("other", {}, {"w": 3.0}),
    ]
    assert [p.ts.second if p.ts else None for p in points] == [1, 2, None]


@pytest.mark.parametrize(
    "line",
    [
        b"m",  # no fields
        b"m ",  # no fields
        b",t=1 v=1",  # no measurement
        b"m,t v=1",  # tag without value
        b"m,t= v=1",  # empty tag value
        b"m v",  # field without value
        b"m v=",  # empty field value
        b"m v=abc",  # not a value
        b"m v=1x",
        b"m v=nan",
        b"m v=inf",
        b"m v=1_000",
        b'm v="open',  # unterminated string
        b"m v=1 12:00",  # not a timestamp
        b"m v=1 1 2",
        b"m v=1 1.5",
        b"m v=1,",  # trailing comma
        b"m =1",  # empty field key
        b"m v=-1u",
    ],
)
def test_line_protocol_bad_lines(line: bytes) -> None:
    result = parse_line_protocol(line)
    if isinstance(result, Rejected):  # a message with no line at all
        assert reason(result) == "undecodable_line_protocol"
        return
    [bad] = result
    assert reason(bad) == "undecodable_line_protocol"


def test_line_protocol_bad_line_among_good_ones_spoils_only_itself() -> None:
    result = parse_line_protocol(b"m v=1 1\nm v=oops 2\nm v=3 3")
    assert isinstance(result, list) and len(result) == 3
    assert isinstance(result[0], LinePoint) and isinstance(result[2], LinePoint)
    assert reason(result[1]) == "undecodable_line_protocol"
    assert "line 2" in result[1].detail  # type: ignore[union-attr]


def test_line_protocol_whole_message_rejections() -> None:
    assert reason(parse_line_protocol(b"")) == "undecodable_line_protocol"
    assert reason(parse_line_protocol(b"# only a comment\n\n")) == "undecodable_line_protocol"
    assert reason(parse_line_protocol(b"m v=1 \xff")) == "undecodable_line_protocol"
    assert reason(parse_line_protocol(b"m v=1\n" * (MAX_PAYLOAD // 6 + 1))) == "payload_too_large"


def test_line_protocol_timestamp_out_of_range() -> None:
    [bad] = parse_line_protocol(b"m v=1 9999999999999999999", "s")  # type: ignore[misc]
    assert reason(bad) == "bad_timestamp"


# -- Sparkplug B -----------------------------------------------------------------------------------


def test_sparkplug_writer_matches_hand_built_bytes() -> None:
    # Payload {timestamp: 1, metrics: [Metric {name: "T", datatype: Double (10), double_value: 1.5}]}:
    # 08 01 (field 1 varint 1) · 12 0E (field 2, 14 bytes) · 0A 01 54 (name "T") · 20 0A (datatype 10) ·
    # 69 + 1.5 as a little-endian double (field 13, wire type 1: 13 << 3 | 1 = 0x69)
    by_hand = bytes.fromhex("0801 120e 0a0154 200a 69 000000000000f83f".replace(" ", ""))
    assert spb.payload(spb.metric("T", datatype=10, double_value=1.5), timestamp=1) == by_hand
    parsed = parse_sparkplug(by_hand)
    assert parsed == SparkplugPayload(
        1, None, [SparkplugMetric("T", None, None, 10, False, "double_value", 1.5, None)]
    )


def test_sparkplug_payload_fields() -> None:
    raw = spb.payload(
        spb.metric("Temperature", alias=7, timestamp=1_700_000_000_123, datatype=9, float_value=37.25),
        spb.metric(alias=8, int_value=-5),
        spb.metric("Batch", datatype=12, string_value="B-7", quality=500),
        spb.metric("Level", datatype=10, is_null=True),
        timestamp=1_700_000_000_000,
        seq=3,
    )
    parsed = parse_sparkplug(raw)
    assert isinstance(parsed, SparkplugPayload)
    assert parsed.timestamp_ms == 1_700_000_000_000 and parsed.seq == 3
    t, by_alias, batch, level = parsed.metrics
    assert (t.name, t.alias, t.timestamp_ms, t.datatype) == ("Temperature", 7, 1_700_000_000_123, 9)
    assert sparkplug_value(t, t.datatype) == 37.25  # exact in float32
    assert by_alias.name is None and by_alias.alias == 8
    assert sparkplug_value(by_alias, 3) == -5  # Int32, two's complement in the uint32 field
    assert sparkplug_value(batch, batch.datatype) == "B-7" and batch.quality == 500
    assert level.is_null and level.value_field is None


@pytest.mark.parametrize(
    ("datatype", "kwargs", "value"),
    [
        (1, {"int_value": -1}, -1),  # Int8
        (1, {"int_value": 127}, 127),
        (2, {"int_value": -32768}, -32768),  # Int16
        (3, {"int_value": -2_000_000_000}, -2_000_000_000),  # Int32
        (4, {"long_value": -(2**62)}, -(2**62)),  # Int64
        (5, {"int_value": 255}, 255),  # UInt8
        (6, {"int_value": 65535}, 65535),  # UInt16
        (7, {"int_value": 4_000_000_000}, 4_000_000_000),  # UInt32 in the uint32 field (spec 3.0) ...
        (7, {"long_value": 4_000_000_000}, 4_000_000_000),  # ... or in the uint64 field (Tahu Java)
        (8, {"long_value": 2**64 - 1}, 2**64 - 1),  # UInt64
        (9, {"float_value": 0.5}, 0.5),
        (10, {"double_value": -1e300}, -1e300),
        (11, {"boolean_value": True}, True),
        (12, {"string_value": "Ø-101"}, "Ø-101"),
        (13, {"long_value": 1_700_000_000_000}, 1_700_000_000_000),  # DateTime: ms since the epoch
        (14, {"string_value": "text"}, "text"),
        (None, {"int_value": -7}, -7),  # no datatype known: the value field says Int32
        (None, {"long_value": -7}, -7),
        (None, {"double_value": 2.5}, 2.5),
    ],
)
def test_sparkplug_values_by_datatype(datatype: int | None, kwargs: dict, value: object) -> None:
    parsed = parse_sparkplug(spb.payload(spb.metric("m", **kwargs)))
    assert isinstance(parsed, SparkplugPayload)
    assert sparkplug_value(parsed.metrics[0], datatype) == value


@pytest.mark.parametrize(
    ("datatype", "kwargs", "why"),
    [
        (9, {"string_value": "1.5"}, "wrong_type"),
        (3, {"double_value": 1.5}, "wrong_type"),
        (12, {"int_value": 1}, "wrong_type"),
        (11, {"int_value": 1}, "wrong_type"),
        (16, {"string_value": "x"}, "unsupported_datatype"),  # DataSet
        (24, {"int_value": 1}, "unsupported_datatype"),  # Int32Array
        (10, {}, "missing_value"),
    ],
)
def test_sparkplug_values_that_do_not_fit(datatype: int, kwargs: dict, why: str) -> None:
    parsed = parse_sparkplug(spb.payload(spb.metric("m", **kwargs)))
    assert isinstance(parsed, SparkplugPayload)
    assert reason(sparkplug_value(parsed.metrics[0], datatype)) == why


@pytest.mark.parametrize(
    ("quality", "status"),
    [
        (None, GOOD),
        (192, GOOD),  # Good
        (216, GOOD),  # Good, local override (OPC DA)
        (500, UNCERTAIN_LAST_USABLE_VALUE),  # Stale
        (64, UNCERTAIN_LAST_USABLE_VALUE),  # Uncertain (OPC DA)
        (0, BAD_SENSOR_FAILURE),
        (24, BAD_SENSOR_FAILURE),  # Bad, communication failure (OPC DA)
        (600, BAD_SENSOR_FAILURE),
    ],
)
def test_sparkplug_quality_property(quality: int | None, status: int) -> None:
    assert sparkplug_status(quality) == status
    if quality is not None:
        parsed = parse_sparkplug(spb.payload(spb.metric("m", double_value=1.0, quality=quality)))
        assert isinstance(parsed, SparkplugPayload) and parsed.metrics[0].quality == quality


def test_sparkplug_empty_payload_and_unknown_fields() -> None:
    assert parse_sparkplug(b"") == SparkplugPayload(None, None, [])
    # field 5 (body) and an extension field 100 are skipped; so is a metric's metadata (field 8)
    extra = spb._len(5, b"body") + spb._len(100, b"ext") + spb._uint(101, 9)
    metric = spb._len(8, b"\x10\x01") + spb.metric("m", double_value=2.0)
    parsed = parse_sparkplug(extra + spb.payload(metric))
    assert isinstance(parsed, SparkplugPayload) and parsed.metrics[0].raw == 2.0


@pytest.mark.parametrize(
    "raw",
    [
        b"\x08",  # truncated varint
        b"\x08" + b"\xff" * 11,  # varint longer than 10 bytes
        b"\x12\x05ab",  # metrics field runs past the end
        b"\x0b",  # wire type 3 (group start)
        b"\x00\x01",  # field number 0
        spb.payload(spb._len(1, b"\xff\xfe")),  # a metric name that is not UTF-8
        spb.payload(spb.metric("m") + spb._len(15, b"\xc3\x28")),  # a string value that is not UTF-8
        spb.payload(spb._key(12, 5) + b"\x00\x00"),  # float cut short
    ],
    ids=[
        "truncated",
        "long_varint",
        "past_end",
        "group",
        "field0",
        "utf8",
        "utf8_value",
        "short_float",
    ],
)
def test_undecodable_sparkplug(raw: bytes) -> None:
    assert reason(parse_sparkplug(raw)) == "undecodable_sparkplug"


def test_a_field_with_another_wire_type_is_an_unknown_field() -> None:
    # protobuf's rule (what every Sparkplug library does): it is skipped, not an error; a metric left
    # without its value is then refused as missing_value when its value is asked for
    assert parse_sparkplug(b"\x09" + b"\x00" * 8) == SparkplugPayload(None, None, [])  # timestamp as fixed64
    parsed = parse_sparkplug(spb.payload(spb.metric("m") + spb._uint(13, 5)))  # double_value as a varint
    assert isinstance(parsed, SparkplugPayload)
    assert reason(sparkplug_value(parsed.metrics[0], 10)) == "missing_value"


def test_sparkplug_payload_too_large() -> None:
    assert reason(parse_sparkplug(b"\x00" * (MAX_PAYLOAD + 1))) == "payload_too_large"


# -- the new decoders never raise (they are fuzzed end to end in test_faults.py as well) -----------


def _mutations(rng: random.Random, good: bytes, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(b) + 1)
            if op < 0.4 and b:
                b[min(i, len(b) - 1)] = rng.getrandbits(8)
            elif op < 0.7:
                b.insert(i, rng.getrandbits(8))
            elif b:
                del b[min(i, len(b) - 1)]
        out.append(bytes(b[: rng.randint(0, len(b))] if rng.random() < 0.2 else b))
    return out


def test_line_protocol_and_sparkplug_never_raise_on_garbage() -> None:
    rng = random.Random(4)
    good_lp = b'r,u=F\\ 1 t=1.5,s="a\\"b",n=3i,b=t 1700000000000000000\nr v=2'
    good_spb = spb.payload(
        spb.metric("T", alias=1, timestamp=5, datatype=9, float_value=1.0, quality=192),
        spb.metric(alias=2, int_value=-3),
        timestamp=1,
        seq=0,
    )
    inputs = _mutations(rng, good_lp, 5000) + _mutations(rng, good_spb, 5000)
    inputs += [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80))) for _ in range(5000)]
    for raw in inputs:
        for precision in ("ns", "s"):
            lines = parse_line_protocol(raw, precision)
            assert isinstance(lines, Rejected | list)
        parsed = parse_sparkplug(raw)
        assert isinstance(parsed, Rejected | SparkplugPayload)
        if isinstance(parsed, SparkplugPayload):
            for m in parsed.metrics:
                for datatype in (None, m.datatype, 1, 4, 9, 11, 12, 16):
                    sparkplug_value(m, datatype)
                sparkplug_status(m.quality)
