"""storage/lineprotocol.py: the line protocol the InfluxDB store writes (pure; always runs).

Two independent checks: the examples of the InfluxDB 2 line-protocol reference
(docs-v2: content/influxdb/v2/reference/syntax/line-protocol.md, "Special Characters"), and influxdb-client's
own serializer (`Point.to_line_protocol`) for the same data, which must give the same bytes wherever it is
right. Where it is not (tabs and line breaks become a backslash and a letter, which InfluxDB stores as two
characters; backslashes before escaped characters), BioPilot refuses the name instead, and the test says so.
"""

from __future__ import annotations

import math

import pytest
from influxdb_client import Point, WritePrecision

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE
from storage.lineprotocol import (
    Encoder,
    escape_key,
    escape_measurement,
    escape_string,
    format_float,
    name_problem,
    text_problem,
)

T = 1_709_280_000_123_456  # 2024-03-01T08:00:00.123456Z in µs


def point_line(series: str, ts_us: int, value: object, status: int, server_us: int | None = None) -> str:
    """influxdb-client's serialization of the same sample (the independent reference)."""
    p = Point("biopilot").tag("series", series).field("status", status).time(ts_us, WritePrecision.US)
    if isinstance(value, str):
        p = p.field("text", value)
    elif value is not None:
        p = p.field("value", float(value))
    if server_us is not None:
        p = p.field("server_us", server_us)
    return p.to_line_protocol()


# -- the reference's examples -------------------------------------------------------------------------


def test_reference_examples_of_special_characters() -> None:
    # "Measurement name with spaces": my\ Measurement
    assert escape_measurement("my Measurement") == r"my\ Measurement"
    # "Tag keys and values with spaces": tag\ Key1=tag\ Value1
    assert escape_key("tag Key1") == r"tag\ Key1"
    assert escape_key("tag Value1") == r"tag\ Value1"
    # "Double quotes in a string field value": fieldKey="\"string\" within a string"
    assert escape_string('"string" within a string') == r"\"string\" within a string"
    # The table: measurement escapes comma and space (not '='); keys and tag values comma, '=' and space.
    assert escape_measurement("a,b=c d") == r"a\,b=c\ d"
    assert escape_key("a,b=c d") == r"a\,b\=c\ d"
    # Field values escape a double quote and a backslash; "You do not need to escape other characters".
    assert escape_string('C:\\temp "x", y=1') == 'C:\\\\temp \\"x\\", y=1'
    # Emojis and other characters pass unchanged (the reference's "Launch 🚀" example).
    assert escape_key("🍭") == "🍭" and escape_string("Launch 🚀") == "Launch 🚀"


def test_a_whole_line_by_hand() -> None:
    enc = Encoder("biopilot").encode([("F-101.temperature", T, 37.02, GOOD, T + 5)])
    assert enc.lines == [
        f"biopilot,series=F-101.temperature server_us={T + 5}i,status=0i,value=37.02 {T}",
    ]


# -- the same bytes as influxdb-client's Point -------------------------------------------------------

NAMES = [
    "F-101.temperature",
    "with space",
    "comma,inside",
    "equals=inside",
    "all , = of them",
    'double"quote',
    "single'quote",
    "ünïcødé Ω µs",
    "emoji 🧪",
    "#not-a-comment-inside",
    r"back\slash before a letter",
    "=leading equals",
    " leading space",
    "trailing space ",
]
VALUES: list[object] = [
    37.02,
    0.0,
    -1.5,
    1e-05,
    1e16,
    123456789.123456789,
    2,  # an int from a JSON payload: written as a float
    "B-001",
    "",
    'say "hi"',
    "back\\slash",
    None,
]


@pytest.mark.parametrize("name", NAMES)
def test_same_bytes_as_influxdb_client_point_for_every_name(name: str) -> None:
    rows = [(name, T + i, v, UNCERTAIN_LAST_USABLE_VALUE, None) for i, v in enumerate(VALUES)]
    enc = Encoder().encode(rows)
    assert enc.refused == []
    assert enc.lines == [point_line(*row) for row in rows]


def test_same_bytes_as_point_with_server_timestamp_and_bad_status() -> None:
    rows = [("T", T, 1.25, BAD_SENSOR_FAILURE, T - 1000), ("T", T + 1, None, BAD_SENSOR_FAILURE, T)]
    assert Encoder().encode(rows).lines == [point_line(*r) for r in rows]


def test_floats_read_back_exactly() -> None:
    for v in (0.1, 1 / 3, 2.0**-1074, 1.7976931348623157e308, -123.456e-7):
        assert float(format_float(v)) == v


# -- what line protocol cannot carry: refused by name, never altered ---------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("line\nbreak", "line break"),
        ("carriage\rreturn", "line break"),
        ("ends with backslash\\", "at the end"),
        ("backslash\\,comma", "backslash before ','"),
        ("backslash\\=equals", "backslash before '='"),
        ("backslash\\ space", "backslash before ' '"),
        ('backslash\\"quote', "backslash before '\"'"),
        ("double\\\\backslash", "backslash before '\\\\'"),
    ],
)
def test_names_line_protocol_cannot_carry_are_refused_with_the_reason(name: str, why: str) -> None:
    problem = name_problem(name)
    assert problem is not None and why in problem
    enc = Encoder().encode([(name, T, 1.0, GOOD, None), ("ok", T, 2.0, GOOD, None)])
    assert [line.split(" ")[0] for line in enc.lines] == ["biopilot,series=ok"]
    assert enc.refused == [(name, T, f"the series name has {problem}")]


def test_where_influxdb_client_point_is_wrong_biopilot_refuses() -> None:
    # Point writes a line break in a tag as backslash + "n": InfluxDB stores those two characters
    # (its unescape knows only \, \= \space \"), so the series would silently be renamed.
    assert "series=a\\nb " in Point("m").tag("series", "a\nb").field("x", 1.0).to_line_protocol()
    assert name_problem("a\nb") is not None
    # Point leaves a backslash before a comma as it is and escapes the comma: "a\\,b", which InfluxDB's
    # scanner splits after the pair "\\" -- a different tag set or a parse error.
    assert "series=a\\\\,b " in Point("m").tag("series", "a\\,b").field("x", 1.0).to_line_protocol()
    assert name_problem("a\\,b") is not None


def test_text_values_with_line_breaks_are_refused_others_escaped() -> None:
    assert text_problem("two\nlines") is not None
    assert text_problem('quotes " and \\ backslashes') is None
    enc = Encoder().encode([("B", T, "two\nlines", GOOD, None), ("B", T + 1, 'a"b\\c', GOOD, None)])
    assert enc.lines == [f'biopilot,series=B status=0i,text="a\\"b\\\\c" {T + 1}']
    assert len(enc.refused) == 1 and "line break" in enc.refused[0][2]


def test_nan_and_infinity_are_written_without_a_value_and_counted() -> None:
    enc = Encoder().encode(
        [("T", T, math.nan, GOOD, None), ("T", T + 1, math.inf, GOOD, None), ("T", T + 2, 1.0, GOOD, None)]
    )
    assert enc.lines == [
        f"biopilot,series=T status=0i {T}",
        f"biopilot,series=T status=0i {T + 1}",
        f"biopilot,series=T status=0i,value=1 {T + 2}",
    ]
    assert enc.nonfinite == 2


def test_bools_and_ints_stay_float_fields() -> None:
    lines = Encoder().encode([("T", T, True, GOOD, None), ("T", T + 1, 7, GOOD, None)]).lines
    assert lines == [
        f"biopilot,series=T status=0i,value=1 {T}",
        f"biopilot,series=T status=0i,value=7 {T + 1}",
    ]


def test_status_codes_up_to_32_bits_are_integers() -> None:
    line = Encoder().encode([("T", T, 1.0, 0xFFFFFFFF, None)]).lines[0]
    assert "status=4294967295i" in line


def test_arrays_give_the_same_lines_as_rows() -> None:
    ts = [T, T + 1000, T + 2000]
    values = [1.0, math.nan, 3.5]
    status = [GOOD, GOOD, UNCERTAIN_LAST_USABLE_VALUE]
    e = Encoder()
    from_arrays = e.encode_arrays("with space", ts, values, status)
    from_rows = e.encode([("with space", t, v, s, None) for t, v, s in zip(ts, values, status, strict=True)])
    assert from_arrays.lines == from_rows.lines
    assert from_arrays.nonfinite == from_rows.nonfinite == 1
    assert e.encode_arrays("bad\nname", ts, values).refused[0][0] == "bad\nname"


def test_measurement_must_be_plain() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Encoder("_internal")
    with pytest.raises(ValueError):
        Encoder("two\nlines")
    assert Encoder("plant a").encode([("T", T, 1.0, GOOD, None)]).lines[0].startswith(r"plant\ a,series=T ")
