"""storage/influx.py against a stand-in for InfluxDB's HTTP API (always runs).

No InfluxDB server runs on these machines, and a real one cannot be made to answer 503 with Retry-After, to
reject one point of a batch, or to refuse a token on cue. So these tests use a small HTTP server of their own
that speaks only the status codes, headers and bodies of InfluxDB 2's /api/v2/write and /api/v2/query (per
the API reference: 204 on success, 400 with a JSON message for a malformed point, 401, 404, 429/503 with
Retry-After; annotated CSV answers). It checks BioPilot's side -- batching, precision, token, retries,
backoff, splitting rejected batches, the spool checkpoint -- not InfluxDB's semantics: those are the
conformance suite's (tests/storage/conformance/test_influx_conformance.py, against a real server).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from biopilot.config import parse_config
from biopilot.errors import StoreError
from biopilot.samples import GOOD, UNCERTAIN_LAST_USABLE_VALUE, Sample, to_us
from collectors.spool import Spool, read_checkpoint
from collectors.writer import StoreWriter
from storage import open_store
from storage.influx import InfluxStore
from storage.lineprotocol import Encoder

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
US = to_us(T0)
MIN = 60_000_000  # one minute [µs]


class FakeInflux(ThreadingHTTPServer):
    """InfluxDB 2's write and query endpoints, as far as status codes go (see the module docstring)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.script: list[tuple[int, dict[str, str], bytes]] = []  # answers to the next write requests
        self.reject: Callable[[str], bool] = lambda line: False  # lines answered with 400
        self.accepted: list[str] = []  # lines of accepted writes, in order
        self.requests: list[dict[str, object]] = []  # every write request: params, headers, line count
        self.queries: list[str] = []
        self.answer: Callable[[str], tuple[int, bytes]] = lambda q: (200, b"")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeInflux

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(204 if self.path.startswith("/ping") else 404)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        url = urlsplit(self.path)
        fake = self.server
        if url.path == "/api/v2/query":
            query = json.loads(body)["query"]
            with fake.lock:
                fake.queries.append(query)
            status, answer = fake.answer(query)
            self._reply(status, answer, {"Content-Type": "text/csv; charset=utf-8"})
            return
        lines = body.decode().split("\n")
        with fake.lock:
            fake.requests.append(
                {
                    "params": {k: v[0] for k, v in parse_qs(url.query).items()},
                    "authorization": self.headers.get("Authorization"),
                    "lines": len(lines),
                }
            )
            scripted = fake.script.pop(0) if fake.script else None
        if scripted is not None and scripted[0] != 204:
            self._reply(scripted[0], scripted[2], scripted[1])
            return
        bad = [line for line in lines if fake.reject(line)]
        if bad:  # InfluxDB OSS 2: the first malformed line, and nothing of the batch written
            message = json.dumps({"code": "invalid", "message": f"unable to parse '{bad[0]}': bad"})
            self._reply(400, message.encode(), {"Content-Type": "application/json"})
            return
        with fake.lock:
            fake.accepted.extend(lines)
        self._reply(204)


@pytest.fixture
def fake() -> Iterator[FakeInflux]:
    server = FakeInflux()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def store_at(url: str, **kwargs: object) -> InfluxStore:
    return InfluxStore(url, "plant", "biopilot", "s3cret-token", **kwargs)  # type: ignore[arg-type]


def rows(n: int, series: str = "T") -> list[tuple[str, int, float, int, None]]:
    return [(series, US + i * 1_000_000, float(i), GOOD, None) for i in range(n)]


# -- writing -------------------------------------------------------------------------------------------


def test_writes_go_in_batches_with_us_precision_and_the_token(fake: FakeInflux) -> None:
    store = store_at(fake.url, batch_lines=3)
    try:
        assert store.write_rows(rows(7)) == 7
    finally:
        store.close()
    assert [r["lines"] for r in fake.requests] == [3, 3, 1]
    for r in fake.requests:
        assert r["params"] == {"org": "plant", "bucket": "biopilot", "precision": "us"}
        assert r["authorization"] == "Token s3cret-token"
    assert fake.accepted == Encoder().encode(rows(7)).lines
    assert store.stats()["written"] == 7


def test_samples_with_server_timestamps_and_text(fake: FakeInflux) -> None:
    store = store_at(fake.url)
    try:
        store.write(
            [
                Sample("B", T0, "B-001", GOOD, T0 + timedelta(microseconds=5)),
                Sample("T", T0, 1.5, UNCERTAIN_LAST_USABLE_VALUE),
            ]
        )
    finally:
        store.close()
    assert fake.accepted == [
        f'biopilot,series=B server_us={US + 5}i,status=0i,text="B-001" {US}',
        f"biopilot,series=T status={UNCERTAIN_LAST_USABLE_VALUE}i,value=1.5 {US}",
    ]


def test_a_busy_server_is_retried_honouring_retry_after(fake: FakeInflux) -> None:
    fake.script = [(503, {"Retry-After": "0.05"}, b"busy"), (429, {"Retry-After": "0.1"}, b"slow down")]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        time.sleep(s)

    store = store_at(fake.url, sleep=sleep)
    try:
        assert store.write_rows(rows(4)) == 4
    finally:
        store.close()
    assert waits == [0.05, 0.1]
    assert len(fake.accepted) == 4
    assert store.stats()["retries"] == 2 and store.stats()["failed_writes"] == 0


def test_a_server_that_stays_down_is_a_store_error_after_retry_s(fake: FakeInflux) -> None:
    fake.server_close()  # nothing listens on the port any more
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        time.sleep(s)

    store = store_at(fake.url, retry_s=2.0, sleep=sleep)
    t0 = time.monotonic()
    try:
        with pytest.raises(StoreError, match=r"did not accept a write within 2 s .*stay in the spool"):
            store.write_rows(rows(2))
    finally:
        store.close()
    assert time.monotonic() - t0 < 10
    assert waits[:2] == [0.2, 0.4]  # exponential backoff
    assert sum(waits) <= 2.0  # never sleeps past retry_s
    stats = store.stats()
    assert stats["failed_writes"] == 1 and stats["retries"] == len(waits) and stats["written"] == 0
    assert "not reachable" in stats["last_error"]


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "refused the token"), (403, "refused the token"), (404, "has no bucket 'biopilot'")],
)
def test_a_refused_token_or_missing_bucket_fails_at_once(fake: FakeInflux, status: int, message: str) -> None:
    fake.script = [(status, {"Content-Type": "application/json"}, b'{"code":"x","message":"no"}')]
    store = store_at(fake.url)
    try:
        with pytest.raises(StoreError, match=message):
            store.write_rows(rows(3))
    finally:
        store.close()
    assert store.stats()["retries"] == 0 and len(fake.requests) == 1


def test_rejected_points_are_isolated_counted_and_the_rest_written(fake: FakeInflux) -> None:
    fake.reject = lambda line: "value=7 " in line  # the point with value 7 is "malformed"
    store = store_at(fake.url)
    try:
        assert store.write_rows(rows(10)) == 9
    finally:
        store.close()
    expected = [line for line in Encoder().encode(rows(10)).lines if "value=7 " not in line]
    assert sorted(fake.accepted) == sorted(expected)
    assert store.stats()["rejected"] == 1


def test_names_line_protocol_cannot_carry_are_refused_and_counted(fake: FakeInflux) -> None:
    store = store_at(fake.url)
    try:
        assert store.write_rows([("bad\nname", US, 1.0, GOOD, None), ("ok", US, 2.0, GOOD, None)]) == 1
    finally:
        store.close()
    assert len(fake.accepted) == 1 and store.stats()["refused"] == 1


def test_read_only_store_refuses_writes(fake: FakeInflux) -> None:
    store = store_at(fake.url, read_only=True)
    try:
        with pytest.raises(StoreError, match="read-only"):
            store.write_rows(rows(1))
    finally:
        store.close()


# -- the store writer: the spool checkpoint moves only past what InfluxDB accepted --------------------


def test_the_store_writer_commits_only_what_influxdb_accepted(fake: FakeInflux, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    samples = [Sample("T", T0 + timedelta(seconds=i), float(i)) for i in range(50)]
    for k in range(0, 50, 10):
        spool.append(samples[k : k + 10])
    end = spool.end
    spool.close()
    # The first batch (20 rows, 4 requests of 5 lines) gets two through, then the server goes down.
    fake.script = [(204, {}, b""), (204, {}, b""), (503, {}, b"down")]
    store = store_at(fake.url, batch_lines=5, retry_s=0)
    writer = StoreWriter(spool_dir, store, batch_rows=20)

    async def steps() -> list[int]:
        out = [await writer.step()]  # refused part-way: nothing committed
        out.append(read_checkpoint(spool_dir))
        while (n := await writer.step()) > 0:
            out.append(n)
        return out

    try:
        got = asyncio.run(steps())
    finally:
        writer.reader.close()
        store.close()
    assert got[:2] == [-1, 0]  # step refused; checkpoint still at the start
    assert sum(got[2:]) == 50
    assert read_checkpoint(spool_dir) == end
    assert writer.write_failures == 1 and writer.stored == 50
    expected = set(
        Encoder().encode([(s.series, to_us(s.ts), s.value, s.status, None) for s in samples]).lines
    )
    assert set(fake.accepted) == expected  # nothing lost; the 10 written before the outage were written twice
    assert len(fake.accepted) == 60


# -- reading: the server's annotated CSV becomes the kernel's records ---------------------------------

HEAD = (
    "#group,false,false,false,false,false,false\n#datatype,string,long,{types}\n#default,_result,,{blank}\n"
)


def csv_table(
    columns: list[str], types: list[str], rows_: list[list[object]], result: str = "_result"
) -> str:
    """One table of annotated CSV as InfluxDB writes it (cells quoted where CSV needs it)."""
    head = HEAD.format(types=",".join(types), blank="," * (len(types) - 1)).replace("_result", result)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["", "result", "table", *columns])
    for r in rows_:
        w.writerow(["", "", "0", *[str(c) for c in r]])
    return head + out.getvalue() + "\n"


def test_read_maps_rows_to_series_data(fake: FakeInflux) -> None:
    fake.answer = lambda q: (
        200,
        csv_table(
            ["_time", "status", "value"],
            ["dateTime:RFC3339", "long", "double"],
            [
                ["2024-03-01T08:00:02Z", "0", "2.5"],
                ["2024-03-01T08:00:00Z", "0", "1"],
                ["2024-03-01T08:00:01.000001Z", str(0x808C0000), ""],
            ],
        ).encode(),
    )
    store = store_at(fake.url)
    try:
        data = store.read("T", T0, T0 + timedelta(hours=1))
    finally:
        store.close()
    assert data.ts.tolist() == [US, US + 1_000_001, US + 2_000_000]  # sorted by time
    assert data.values.tolist()[0] == 1.0 and data.values.tolist()[2] == 2.5
    assert data.values.dtype.kind == "f" and data.values[1] != data.values[1]  # NaN: no value
    assert data.status.tolist() == [0, 0x808C0000, 0]
    assert 'r.series == "T"' in fake.queries[0]


def test_read_of_a_text_series(fake: FakeInflux) -> None:
    fake.answer = lambda q: (
        200,
        csv_table(
            ["_time", "status", "text"],
            ["dateTime:RFC3339", "long", "string"],
            [["2024-03-01T08:00:00Z", "0", "B-001"], ["2024-03-01T08:00:01Z", "0", "B-002"]],
        ).encode(),
    )
    store = store_at(fake.url)
    try:
        data = store.read("B", T0, T0 + timedelta(hours=1))
    finally:
        store.close()
    assert data.values.dtype == object and data.values.tolist() == ["B-001", "B-002"]


def test_read_buckets_joins_the_aggregates_by_bucket_start(fake: FakeInflux) -> None:
    t = ["dateTime:RFC3339", "double"]
    ti = ["dateTime:RFC3339", "long"]
    b0, b2 = "2024-03-01T08:00:00Z", "2024-03-01T08:40:00Z"
    answer = (
        csv_table(["_time", "_value"], t, [[b0, "1"], [b2, "10"]], "min")
        + csv_table(["_time", "_value"], t, [[b0, "5"], [b2, "20"]], "max")
        + csv_table(["_time", "_value"], t, [[b0, "3"], [b2, "15"]], "mean")
        + csv_table(["_time", "_value"], ti, [[b0, "3"], [b2, "2"]], "count")
        + csv_table(["_time", "_value"], ti, [[b0, US * 1000], [b2, (US + 41 * MIN) * 1000]], "t_first")
        + csv_table(
            ["_time", "_value"], ti, [[b0, (US + 15 * MIN) * 1000], [b2, (US + 59 * MIN) * 1000]], "t_last"
        )
    )
    fake.answer = lambda q: (200, answer.encode())
    store = store_at(fake.url)
    try:
        b = store.read_buckets("P", T0, T0 + timedelta(hours=1), 3)
    finally:
        store.close()
    assert b.start.tolist() == [US, US + 40 * 60_000_000]
    assert b.t_first.tolist() == [US, US + 41 * 60_000_000]
    assert b.t_last.tolist() == [US + 15 * 60_000_000, US + 59 * 60_000_000]
    assert b.min.tolist() == [1.0, 10.0] and b.max.tolist() == [5.0, 20.0]
    assert b.mean.tolist() == [3.0, 15.0] and b.count.tolist() == [3, 2]
    assert "every: 1200000000us" in fake.queries[0]


def test_latest_takes_value_and_server_time_of_the_newest_point(fake: FakeInflux) -> None:
    cols = ["_time", "_value", "_field", "series"]
    answer = (
        csv_table(
            cols,
            ["dateTime:RFC3339", "long", "string", "string"],
            [
                ["2024-03-01T08:00:02Z", "0", "status", "A"],
                ["2024-03-01T08:00:00Z", "1075838976", "status", "B"],
                ["2024-03-01T08:00:02Z", str(US + 2_000_010), "server_us", "A"],
            ],
        )
        + csv_table(
            cols,
            ["dateTime:RFC3339", "double", "string", "string"],
            [
                [
                    "2024-03-01T08:00:01Z",
                    "7.5",
                    "value",
                    "A",
                ],  # older than A's newest point: that one had none
            ],
        )
        + csv_table(
            cols,
            ["dateTime:RFC3339", "string", "string", "string"],
            [
                ["2024-03-01T08:00:00Z", "B-7", "text", "B"],
            ],
        )
    )
    fake.answer = lambda q: (200, answer.encode())
    store = store_at(fake.url)
    try:
        latest = store.latest(["A", "B", "C"])
        assert store.latest([]) == {}
    finally:
        store.close()
    assert set(latest) == {"A", "B"}
    a, b = latest["A"], latest["B"]
    assert a.sample == Sample(
        "A", T0 + timedelta(seconds=2), None, 0, T0 + timedelta(seconds=2, microseconds=10)
    )
    assert b.sample == Sample("B", T0, "B-7", 1075838976)
    assert a.received is None  # InfluxDB keeps no arrival time
    assert len(fake.queries) == 1


def test_count_and_list_series(fake: FakeInflux) -> None:
    def answer(q: str) -> tuple[int, bytes]:
        if "count()" in q:
            return 200, csv_table(["_value"], ["long"], [["42"]]).encode()
        return 200, csv_table(["_value"], ["string"], [["b"], ["a, with comma"]]).encode()

    fake.answer = answer
    store = store_at(fake.url)
    try:
        assert store.count("T", T0) == 42
        assert store.list_series() == ["a, with comma", "b"]
        assert store.count("T", T0, T0) == 0  # an empty range asks nothing
    finally:
        store.close()
    assert len(fake.queries) == 2


def test_a_query_the_server_refuses_is_a_store_error(fake: FakeInflux) -> None:
    fake.answer = lambda q: (400, b'{"code":"invalid","message":"compilation failed: error at 1:1"}')
    store = store_at(fake.url)
    try:
        with pytest.raises(StoreError, match="compilation failed"):
            store.read("T", T0, T0 + timedelta(hours=1))
    finally:
        store.close()


# -- configuration ------------------------------------------------------------------------------------

SITE = """
[site]
name = "x"
[storage]
backend = "influxdb"
[storage.influxdb]
url = "{url}"
org = "plant"
bucket = "biopilot"
token_env = "BIOPILOT_TEST_INFLUX_TOKEN"
[[equipment]]
id = "F-101"
kind = "fermenter"
"""


def test_open_store_takes_the_token_from_the_environment(
    fake: FakeInflux, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(SITE.format(url=fake.url), tmp_path / "site.toml")
    monkeypatch.delenv("BIOPILOT_TEST_INFLUX_TOKEN", raising=False)
    with pytest.raises(StoreError, match="BIOPILOT_TEST_INFLUX_TOKEN is not set"):
        open_store(config, tmp_path)
    monkeypatch.setenv("BIOPILOT_TEST_INFLUX_TOKEN", "from-env")
    store = open_store(config, tmp_path)
    try:
        assert isinstance(store, InfluxStore)
        assert store.ping()
        store.write_rows(rows(1))
    finally:
        store.close()
    assert fake.requests[0]["authorization"] == "Token from-env"
    assert not (tmp_path / "biopilot.db").exists()  # the time series are not in SQLite
