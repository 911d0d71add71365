"""storage/flux.py: Flux queries and annotated-CSV answers of the InfluxDB store (pure; always runs).

String literals are checked against the Flux scanner's grammar (flux: internal/scanner, scanner.rl:
`escaped_char = "\\" ("n" | "r" | "t" | "\\" | '"' | "${")`, a `$` not followed by `{` is literal);
the CSV parser against influxdb-client's own FluxCsvParser on the same text, and against the examples of
the annotated-CSV reference (docs-v2: reference/syntax/annotated-csv).
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from influxdb_client.client.flux_csv_parser import FluxCsvParser, FluxSerializationMode
from urllib3.response import HTTPResponse

from biopilot.errors import StoreError
from biopilot.samples import to_us
from storage import flux

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
US = to_us(T0)


def unquote_flux(literal: str) -> str:
    """A Flux string literal read back by the scanner's rules (an independent decoder for the tests)."""
    assert literal[0] == '"' and literal[-1] == '"'
    body, out, i = literal[1:-1], [], 0
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            if body[i + 1 : i + 3] == "${":
                out.append("${")
                i += 3
                continue
            assert body[i + 1] in escapes, f"not a Flux escape: {body[i : i + 2]!r}"
            out.append(escapes[body[i + 1]])
            i += 2
            continue
        assert ch != '"', "an unescaped quote ends the literal early"
        assert not (ch == "$" and body[i + 1 : i + 2] == "{"), "an unescaped ${ starts an interpolation"
        out.append(ch)
        i += 1
    return "".join(out)


@pytest.mark.parametrize(
    "name",
    [
        "F-101.temperature",
        'with "quotes"',
        "back\\slash",
        "trailing backslash\\",
        'mix \\" of both',
        "line\nbreak\r\ttab",
        "dollar $ and ${interpolation}",
        "ends with $",
        "$${double}",
        "ünïcødé 🧪",
        "comma, equals= space",
    ],
)
def test_flux_string_round_trips_through_the_scanner_rules(name: str) -> None:
    literal = flux.flux_string(name)
    assert unquote_flux(literal) == name
    assert "\n" not in literal


def test_flux_string_by_hand() -> None:
    assert flux.flux_string('a"b') == r'"a\"b"'
    assert flux.flux_string("a\\b") == r'"a\\b"'
    assert flux.flux_string("${x}") == r'"\${x}"'
    assert flux.flux_string("$x") == '"$x"'
    assert flux.flux_string("a\nb") == r'"a\nb"'


def test_flux_time_is_exact_to_the_microsecond_and_clamped() -> None:
    assert flux.flux_time(US) == "2024-03-01T08:00:00.000000Z"
    assert flux.flux_time(US + 1) == "2024-03-01T08:00:00.000001Z"
    assert flux.flux_time(0) == "1970-01-01T00:00:00.000000Z"
    assert flux.flux_time(-1) == "1969-12-31T23:59:59.999999Z"
    # The range InfluxDB stores: int64 ns less one at each end (line-protocol reference).
    assert flux.flux_time(10**18) == "2262-04-11T23:47:16.854774Z"
    assert flux.flux_time(-(10**18)) == "1677-09-21T00:12:43.145226Z"
    far = to_us(datetime(9999, 1, 1, tzinfo=UTC))  # what processing asks for "up to the end"
    assert flux.flux_time(far) == flux.flux_time(flux.MAX_US)


def test_read_query_names_the_series_and_the_half_open_range() -> None:
    q = flux.read_query("bio pilot", "biopilot", 'F-101 "x"', US, US + 3_600_000_000)
    assert 'from(bucket: "bio pilot")' in q
    assert "range(start: 2024-03-01T08:00:00.000000Z, stop: 2024-03-01T09:00:00.000000Z)" in q
    assert 'r._measurement == "biopilot" and r.series == "F-101 \\"x\\""' in q
    assert 'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")' in q


def test_buckets_query_aligns_windows_on_start_as_the_embedded_store() -> None:
    # [08:00, 09:00) in n=7 buckets: width ceil(3600 s / 7) = 514,285,715 µs; start mod width by hand:
    # 1709280000000000 mod 514285715 = 1709280000000000 - 3323599 * 514285715 = 511,911,715 µs
    start, stop = US, US + 3_600_000_000
    assert flux.bucket_width_us(start, stop, 7) == 514_285_715
    q = flux.buckets_query("b", "biopilot", "P", start, stop, 7)
    assert 1_709_280_000_000_000 - 3_323_599 * 514_285_715 == 511_911_715
    assert q.count("aggregateWindow(every: 514285715us, offset: 511911715us, createEmpty: false") == 6
    for name in flux.AGGREGATES:
        assert f'yield(name: "{name}")' in q
    assert "r.status < 2147483648" in q  # bad status (the top bit) excluded, as in the embedded store
    assert 'timeSrc: "_start"' in q
    with pytest.raises(ValueError):
        flux.bucket_width_us(start, stop, 0)


def test_latest_count_and_series_queries() -> None:
    q = flux.latest_query("b", "biopilot", ["A", 'B"'])
    assert '(r.series == "A" or r.series == "B\\"")' in q and "|> last()" in q
    assert "r.series" not in flux.latest_query("b", "biopilot", None)
    q = flux.count_query("b", "biopilot", "A", US, US + 1)
    assert 'r._field == "status"' in q and "|> count()" in q
    q = flux.series_query("b", "biopilot")
    assert q.startswith('import "influxdata/influxdb/schema"')
    assert 'tag: "series"' in q and "start: 1970-01-01T00:00:00.000000Z" in q


# -- annotated CSV ------------------------------------------------------------------------------------

# The reference's "Multiple tables and results" example (two schemas, an empty line between), with a
# quoted cell holding a comma, a quote and a line break, and nanosecond times.
REFERENCE = """#group,false,false,true,true,false,false,true,true,true,true
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string,string
#default,_result,,,,,,,,,
,result,table,_start,_stop,_time,_value,_field,_measurement,host,region
,,0,2022-12-31T05:41:24Z,2023-01-31T05:41:24.001Z,2023-01-01T00:00:00Z,15.43,mem,m,A,east
,,1,2022-12-31T05:41:24Z,2023-01-31T05:41:24.001Z,2023-01-01T00:00:00.123456789Z,59.25,mem,m,B,east
,,2,2022-12-31T05:41:24Z,2023-01-31T05:41:24.001Z,2023-01-01T00:00:00Z,52.62,mem,m,C,east

#group,false,false,true,true,true,true,false,false,true,true
#datatype,string,long,string,string,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,string
#default,_result,,,,,,,,,
,result,table,_field,_measurement,_start,_stop,_time,_value,host,region
,,3,mem_level,m,2022-12-31T05:41:24Z,2023-01-31T05:41:24.001Z,2023-01-01T00:00:00Z,ok,A,east
,,4,mem_level,m,2022-12-31T05:41:24Z,2023-01-31T05:41:24.001Z,2023-01-01T00:00:00Z,"a, ""quoted""
line",B,east

"""


def client_parse(text: str) -> list[list[dict[str, object]]]:
    response = HTTPResponse(body=io.BytesIO(text.encode()), preload_content=False)
    parser = FluxCsvParser(response=response, serialization_mode=FluxSerializationMode.tables)
    list(parser.generator())
    return [[r.values for r in t.records] for t in parser.table_list()]


def test_parser_agrees_with_influxdb_clients_own_parser() -> None:
    ours = flux.parse_annotated_csv(REFERENCE)
    theirs = client_parse(REFERENCE)
    assert len(ours) == len(theirs) == 5
    for table, records in zip(ours, theirs, strict=True):
        assert table.result == "_result"
        assert len(table.rows) == len(records)
        for row, record in zip(table.rows, records, strict=True):
            cells = dict(zip(table.columns, row, strict=True))
            assert cells["_value"] == str(record["_value"])
            assert cells["host"] == record["host"]
            assert cells["result"] == record["result"]  # the #default annotation fills the empty cell
            t = datetime.fromisoformat(cells["_time"])
            assert abs(t - record["_time"]) < timedelta(microseconds=1)  # the client keeps µs
    assert ours[4].column("_value") == ['a, "quoted"\nline']
    assert ours[0].datatypes[5] == "double" and ours[3].datatypes[7] == "string"


def test_times_are_read_to_the_microsecond() -> None:
    got = flux.rfc3339_to_us(
        ["2024-03-01T08:00:00Z", "2024-03-01T08:00:00.000001Z", "2024-03-01T08:00:00.123456789Z"]
    )
    assert got.tolist() == [US, US + 1, US + 123_456]
    assert flux.rfc3339_to_us([]).tolist() == []
    with pytest.raises(StoreError, match="not UTC"):
        flux.rfc3339_to_us(["2024-03-01T08:00:00+01:00"])
    with pytest.raises(StoreError, match="not RFC 3339"):
        flux.rfc3339_to_us(["yesterday Z"])


def test_multiple_yields_are_kept_apart_by_result_name() -> None:
    text = (
        "#datatype,string,long,dateTime:RFC3339,double\n#group,false,false,false,false\n#default,min,,,\n"
        ",result,table,_time,_value\n,,0,2024-03-01T08:00:00Z,1.5\n\n"
        "#datatype,string,long,dateTime:RFC3339,long\n#group,false,false,false,false\n#default,count,,,\n"
        ",result,table,_time,_value\n,,0,2024-03-01T08:00:00Z,3\n,,0,2024-03-01T08:20:00Z,2\n\n"
    )
    by = flux.tables_by_result(flux.parse_annotated_csv(text))
    assert sorted(by) == ["count", "min"]
    assert list(flux.iter_rows(by["count"], "_value", "missing")) == [("3", None), ("2", None)]


def test_an_error_table_is_a_store_error_with_the_servers_message() -> None:
    text = "#datatype,string,long\n,error,reference\n,Failed to parse query,897\n"
    with pytest.raises(StoreError, match="Failed to parse query"):
        flux.parse_annotated_csv(text)


def test_an_empty_answer_has_no_tables() -> None:
    assert flux.parse_annotated_csv("") == []
    assert flux.parse_annotated_csv("\r\n\r\n") == []


def test_queries_are_single_statements_per_line_without_stray_interpolation() -> None:
    for q in (
        flux.read_query("b", "m", "${evil}", US, US + 1),
        flux.buckets_query("b", "m", '"; drop', US, US + 10, 2),
    ):
        # every string literal in the query reads back by the scanner's rules
        for literal in re.findall(r'"(?:[^"\\]|\\.)*"', q):
            unquote_flux(literal)
