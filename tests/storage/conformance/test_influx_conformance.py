"""The InfluxDB 2 store against a real InfluxDB 2 server: the TimeSeriesStore contract, and the same answers
as the embedded SQLite store for the same samples.

Runs when INFLUXDB_URL, INFLUXDB_TOKEN, INFLUXDB_ORG and INFLUXDB_BUCKET are set (influx_backend.py); SKIPPED
with that reason otherwise. Expected values are computed by hand from the samples written, as in
tests/storage/test_sqlite.py, and the differential test compares with SqliteStore on the same samples.

Where InfluxDB differs, by design, and the tests say so: `Latest.received` is None (InfluxDB keeps no arrival
time); a text sample without a value reads back as "" (annotated CSV writes null and "" alike); a rewrite
of a sample with no value keeps the value written before (InfluxDB merges the fields of a point).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE, Sample, to_us
from collectors.spool import Spool, read_checkpoint
from collectors.writer import StoreWriter
from storage.influx import InfluxStore
from storage.sqlite import SqliteStore
from tests.storage.conformance.influx_backend import influx_store_factory

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def store() -> Iterator[InfluxStore]:
    with influx_store_factory() as s:
        yield s


def test_read_returns_start_inclusive_end_exclusive(store: InfluxStore) -> None:
    store.write([Sample("T", at(m), float(m)) for m in range(10)])
    data = store.read("T", at(2), at(5))
    assert data.ts.tolist() == [to_us(at(2)), to_us(at(3)), to_us(at(4))]
    assert data.values.dtype == np.float64 and data.values.tolist() == [2.0, 3.0, 4.0]
    assert data.status.tolist() == [GOOD] * 3


def test_read_in_time_order_whatever_the_write_order(store: InfluxStore) -> None:
    store.write([Sample("T", at(m), float(m)) for m in (3, 0, 2, 1)])
    assert store.read("T", at(0), at(10)).values.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_unknown_series_and_empty_ranges_are_empty(store: InfluxStore) -> None:
    store.write([Sample("T", at(0), 1.0)])
    assert len(store.read("nope", at(0), at(10))) == 0
    assert len(store.read("T", at(1), at(10))) == 0
    assert len(store.read("T", at(0), at(0))) == 0
    assert len(store.read_buckets("nope", at(0), at(10), 5)) == 0
    assert store.count("nope") == 0


def test_microsecond_timestamps_are_exact(store: InfluxStore) -> None:
    # The field lesson: influxdb-client 1.50 writes some µs datetimes 1 µs early; integers are exact.
    ts = [T0 + timedelta(microseconds=us) for us in (1, 3, 7, 999_999, 123_457, 1_000_001)]
    store.write([Sample("T", t, 1.0) for t in ts])
    assert store.read("T", at(0), at(1)).ts.tolist() == sorted(to_us(t) for t in ts)


def test_text_values_roundtrip(store: InfluxStore) -> None:
    store.write(
        [Sample("B", at(0), "B-001"), Sample("B", at(1), ""), Sample("B", at(2), 'quote " and \\ slash')]
    )
    data = store.read("B", at(0), at(10))
    assert data.values.dtype == object
    assert data.values.tolist() == ["B-001", "", 'quote " and \\ slash']


def test_status_per_sample_and_no_value_is_nan(store: InfluxStore) -> None:
    store.write(
        [
            Sample("T", at(0), 1.0, GOOD),
            Sample("T", at(1), 2.0, UNCERTAIN_LAST_USABLE_VALUE),
            Sample("T", at(2), None, BAD_SENSOR_FAILURE),
        ]
    )
    data = store.read("T", at(0), at(10))
    assert data.status.tolist() == [GOOD, UNCERTAIN_LAST_USABLE_VALUE, BAD_SENSOR_FAILURE]
    assert data.values[:2].tolist() == [1.0, 2.0] and math.isnan(data.values[2])


def test_rewriting_the_same_series_and_timestamp_replaces(store: InfluxStore) -> None:
    batch = [Sample("T", at(m), float(m)) for m in range(5)]
    assert store.write(batch) == 5
    store.write(batch)  # a replay from the spool
    store.write([Sample("T", at(2), 99.0, UNCERTAIN_LAST_USABLE_VALUE)])  # a redelivery with a new value
    assert store.count("T") == 5
    data = store.read("T", at(0), at(10))
    assert data.values.tolist() == [0.0, 1.0, 99.0, 3.0, 4.0]
    assert data.status.tolist()[2] == UNCERTAIN_LAST_USABLE_VALUE


def test_read_buckets_computed_in_the_server(store: InfluxStore) -> None:
    # The same samples and hand-computed answer as tests/storage/test_sqlite.py: [0, 60) min in 3 buckets.
    store.write(
        [
            Sample("P", at(0), 1.0),
            Sample("P", at(5), 5.0),
            Sample("P", at(10), 1000.0, BAD_SENSOR_FAILURE),  # bad: excluded
            Sample("P", at(15), 3.0, UNCERTAIN_LAST_USABLE_VALUE),  # uncertain: included
            Sample("P", at(41), 10.0),
            Sample("P", at(59), 20.0),
            Sample("P", at(60), 500.0),  # at the end: outside [start, end)
        ]
    )
    b = store.read_buckets("P", at(0), at(60), 3)
    assert b.start.tolist() == [to_us(at(0)), to_us(at(40))]  # [20, 40) is empty: not returned
    assert b.t_first.tolist() == [to_us(at(0)), to_us(at(41))]
    assert b.t_last.tolist() == [to_us(at(15)), to_us(at(59))]
    assert b.min.tolist() == [1.0, 10.0] and b.max.tolist() == [5.0, 20.0]
    assert b.mean.tolist() == pytest.approx([3.0, 15.0])
    assert b.count.tolist() == [3, 2]


def test_bucket_edges_belong_to_the_later_bucket_and_windows_start_at_start(store: InfluxStore) -> None:
    start = T0 + timedelta(seconds=7, microseconds=3)  # not aligned to anything
    store.write([Sample("E", start + timedelta(seconds=s), float(s)) for s in (0, 9, 10, 19, 20, 29)])
    b = store.read_buckets("E", start, start + timedelta(seconds=30), 3)  # width 10 s
    assert b.start.tolist() == [to_us(start) + k * 10_000_000 for k in range(3)]
    assert b.count.tolist() == [2, 2, 2]
    assert b.min.tolist() == [0.0, 10.0, 20.0] and b.max.tolist() == [9.0, 19.0, 29.0]
    with pytest.raises(ValueError):
        store.read_buckets("E", start, start, 0)


def test_text_series_have_no_buckets(store: InfluxStore) -> None:
    store.write([Sample("B", at(m), f"B-{m}") for m in range(5)])
    assert len(store.read_buckets("B", at(0), at(10), 2)) == 0


def test_latest_per_series(store: InfluxStore) -> None:
    server = at(2) + timedelta(microseconds=17)
    store.write([Sample("A", at(m), float(m)) for m in (0, 1)] + [Sample("A", at(2), 2.0, GOOD, server)])
    store.write([Sample("B", at(0), "B-7", UNCERTAIN_LAST_USABLE_VALUE)])
    latest = store.latest()
    assert set(latest) == {"A", "B"}
    assert latest["A"].sample == Sample("A", at(2), 2.0, GOOD, server)  # server timestamp kept
    assert latest["B"].sample == Sample("B", at(0), "B-7", UNCERTAIN_LAST_USABLE_VALUE)
    assert latest["A"].received is None  # InfluxDB keeps no arrival time
    assert set(store.latest(["B", "unknown"])) == {"B"}
    assert store.latest([]) == {}


def test_list_series_and_count(store: InfluxStore) -> None:
    assert store.list_series() == []
    store.write([Sample("b", at(m), 1.0) for m in range(4)] + [Sample("a", at(0), 2.0)])
    assert store.list_series() == ["a", "b"]
    assert store.count("b") == 4
    assert store.count("b", at(1)) == 3
    assert store.count("b", None, at(1)) == 1
    assert store.count("b", at(1), at(3)) == 2


def test_naive_datetimes_are_refused(store: InfluxStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.write([Sample("T", datetime(2024, 3, 1, 8, 0), 1.0)])
    with pytest.raises(ValueError, match="naive"):
        store.read("T", datetime(2024, 3, 1), at(10))


NAMES = [
    "with space",
    "comma,inside",
    "equals=inside",
    'double"quote',
    "single'quote",
    "ünïcødé Ω µs",
    "emoji 🧪",
    "${not interpolated}",
    r"back\slash before a letter",
    "tab\tinside",
]


def test_unusual_names_roundtrip_through_write_read_list_and_latest(store: InfluxStore) -> None:
    store.write([Sample(name, at(i), float(i)) for i, name in enumerate(NAMES)])
    assert store.list_series() == sorted(NAMES)
    for i, name in enumerate(NAMES):
        assert store.read(name, at(0), at(60)).values.tolist() == [float(i)], name
        assert store.count(name) == 1
    assert {n: v.sample.value for n, v in store.latest(NAMES).items()} == {
        n: float(i) for i, n in enumerate(NAMES)
    }


def test_a_name_line_protocol_cannot_carry_is_refused_the_others_written(store: InfluxStore) -> None:
    assert store.write([Sample("bad\nname", at(0), 1.0), Sample("good", at(0), 2.0)]) == 1
    assert store.list_series() == ["good"]
    assert store.stats()["refused"] == 1


def test_a_large_batch(store: InfluxStore) -> None:
    n = 100_000
    ts = to_us(T0) + np.arange(n, dtype=np.int64) * 1_000_000
    values = np.sin(np.arange(n) / 100.0)
    t0 = time.perf_counter()
    assert store.write_arrays("L", ts, values) == n
    took = time.perf_counter() - t0
    print(f"\nInfluxDB: wrote {n} points in {took:.2f} s ({n / took:,.0f} points/s)")
    data = store.read("L", T0, T0 + timedelta(seconds=n))
    assert len(data) == n
    assert np.array_equal(data.ts, ts) and np.array_equal(data.values, values)
    b = store.read_buckets("L", T0, T0 + timedelta(seconds=n), 100)
    assert int(b.count.sum()) == n and len(b) == 100


def test_write_arrays_equals_write(store: InfluxStore) -> None:
    ts = [to_us(at(m)) for m in range(3)]
    store.write_arrays(
        "X", np.array(ts), np.array([1.0, math.nan, 3.0]), np.array([0, 0, BAD_SENSOR_FAILURE])
    )
    store.write(
        [Sample("Y", at(m), v, s) for m, v, s in ((0, 1.0, 0), (1, None, 0), (2, 3.0, BAD_SENSOR_FAILURE))]
    )
    x, y = store.read("X", at(0), at(5)), store.read("Y", at(0), at(5))
    assert x.ts.tolist() == y.ts.tolist() and x.status.tolist() == y.status.tolist()
    assert np.array_equal(x.values, y.values, equal_nan=True)


def test_a_writer_and_a_reader_at_the_same_time(store: InfluxStore) -> None:
    errors: list[BaseException] = []
    counts: list[int] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for k in range(20):
                store.write([Sample("C", at(k) + timedelta(seconds=s), float(s)) for s in range(50)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        try:
            counts.append(store.count("C"))
        except BaseException as exc:
            errors.append(exc)
            break
    thread.join(60)
    assert errors == []
    assert counts == sorted(counts)  # each read sees whole batches, never fewer than before
    assert all(c % 50 == 0 for c in counts)
    assert store.count("C") == 1000


def test_same_answers_as_the_embedded_store(store: InfluxStore, tmp_path: Path) -> None:
    sqlite = SqliteStore(tmp_path / "ref.db")
    rng = np.random.default_rng(7)
    samples = [
        Sample("num", T0 + timedelta(seconds=float(s)), float(v), int(st))
        for s, v, st in zip(
            np.sort(rng.choice(3600 * 10, 500, replace=False)),
            rng.normal(37, 1, 500),
            rng.choice([GOOD, GOOD, GOOD, UNCERTAIN_LAST_USABLE_VALUE, BAD_SENSOR_FAILURE], 500),
            strict=True,
        )
    ] + [Sample("txt", at(m), f"phase {m % 3}") for m in range(0, 600, 7)]
    try:
        for s in (sqlite, store):
            s.write(samples)
        start, end = T0 + timedelta(minutes=13), T0 + timedelta(hours=9, minutes=1)
        assert store.list_series() == sqlite.list_series()
        for name in ("num", "txt"):
            a, b = store.read(name, start, end), sqlite.read(name, start, end)
            assert a.ts.tolist() == b.ts.tolist() and a.status.tolist() == b.status.tolist()
            assert a.values.tolist() == b.values.tolist()
            assert store.count(name, start, end) == sqlite.count(name, start, end)
        for n in (1, 7, 60, 1000):
            a, b = store.read_buckets("num", start, end, n), sqlite.read_buckets("num", start, end, n)
            for col in ("start", "t_first", "t_last", "count", "min", "max"):
                assert getattr(a, col).tolist() == getattr(b, col).tolist(), (n, col)
            assert a.mean == pytest.approx(b.mean, rel=1e-12)
        assert {k: v.sample for k, v in store.latest().items()} == {
            k: v.sample for k, v in sqlite.latest().items()
        }
    finally:
        sqlite.close()


def test_the_store_writer_tails_a_spool_into_influxdb(store: InfluxStore, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    samples = [Sample("S", T0 + timedelta(seconds=i), float(i)) for i in range(5000)]
    for k in range(0, 5000, 500):
        spool.append(samples[k : k + 500])
    end = spool.end
    spool.close()
    writer = StoreWriter(tmp_path / "spool", store, batch_rows=2000)

    async def drain() -> None:
        while await writer.step() > 0:
            pass

    try:
        asyncio.run(drain())
    finally:
        writer.reader.close()
    assert read_checkpoint(tmp_path / "spool") == end
    assert store.count("S") == 5000
    assert store.stats()["written"] == 5000 and store.stats()["rejected"] == 0
