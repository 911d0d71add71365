"""collectors/decoders.py: payload bytes → values, source timestamps, status codes, or a counted Rejected.

A decoder never raises for bad input, so every bad case below asserts the returned reason."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE
from collectors.decoders import (
    MAX_PAYLOAD,
    Rejected,
    numeric_value,
    parse_json_object,
    parse_number,
    parse_status,
    parse_time,
    text_value,
)

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


@pytest.mark.parametrize("raw", ["1.5", None, True, False, [1.0], {"v": 1}])
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
