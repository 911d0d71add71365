"""The TimeSeriesStore conformance suite: what every backend (conftest.py: SqliteStore, TieredStore live,
archived and compacted, and any added there) must do the same way.

Expected values are computed by hand from the samples each test writes (said where it is not obvious), or,
for downsampling, by numpy from the very points written (a reference independent of every backend's SQL,
rollups or Flux)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from biopilot.samples import (
    BAD_SENSOR_FAILURE,
    GOOD,
    UNCERTAIN_LAST_USABLE_VALUE,
    Sample,
    from_us,
    to_us,
    utcnow,
)
from storage.base import TimeSeriesStore

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
END = datetime(2100, 1, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def everything(store: TimeSeriesStore, series: str) -> tuple[list[int], list[object], list[int]]:
    data = store.read(series, datetime(1970, 1, 1, tzinfo=UTC), END)
    return data.ts.tolist(), data.values.tolist(), data.status.tolist()


# -- range reads -----------------------------------------------------------------------------------------
def test_read_returns_start_inclusive_end_exclusive(store: TimeSeriesStore) -> None:
    store.write([Sample("T", at(m), float(m)) for m in range(10)])
    data = store.read("T", at(2), at(5))
    assert data.series == "T"
    assert data.ts.tolist() == [to_us(at(2)), to_us(at(3)), to_us(at(4))]
    assert data.values.dtype == np.float64
    assert data.values.tolist() == [2.0, 3.0, 4.0]
    assert data.status.tolist() == [GOOD] * 3
    assert data.hours().tolist() == pytest.approx([0.0, 1 / 60, 2 / 60])


def test_read_returns_samples_in_time_order_whatever_the_write_order(store: TimeSeriesStore) -> None:
    store.write([Sample("T", at(m), float(m)) for m in (3, 0, 2, 1)])
    assert store.read("T", at(0), at(10)).values.tolist() == [0.0, 1.0, 2.0, 3.0]
    store.write([Sample("T", at(m), float(m)) for m in (1.5, -1, 7)])  # before, inside and after
    assert store.read("T", at(-5), at(10)).values.tolist() == [-1.0, 0.0, 1.0, 1.5, 2.0, 3.0, 7.0]


def test_read_of_unknown_series_or_empty_range_is_empty(store: TimeSeriesStore) -> None:
    store.write([Sample("T", at(0), 1.0)])
    assert len(store.read("nope", at(0), at(10))) == 0
    assert len(store.read("T", at(1), at(10))) == 0
    assert len(store.read("T", at(0), at(0))) == 0
    assert len(store.read("T", at(-10), at(0))) == 0


def test_text_values_roundtrip(store: TimeSeriesStore) -> None:
    store.write([Sample("B", at(0), "B-001"), Sample("B", at(1), ""), Sample("B", at(2), "B-002")])
    data = store.read("B", at(0), at(10))
    assert data.values.dtype == object
    assert data.values.tolist() == ["B-001", "", "B-002"]
    # a text series keeps a sample without a value as None, beside its texts
    store.write([Sample("B", at(3), None, BAD_SENSOR_FAILURE)])
    assert store.read("B", at(0), at(10)).values.tolist() == ["B-001", "", "B-002", None]


def test_naive_datetimes_are_refused(store: TimeSeriesStore) -> None:
    naive = datetime(2024, 3, 1, 8, 0)
    store.write([Sample("T", at(0), 1.0)])
    with pytest.raises(ValueError, match="naive"):
        store.write([Sample("T", naive, 1.0)])
    with pytest.raises(ValueError, match="naive"):
        store.read("T", naive, at(10))
    with pytest.raises(ValueError, match="naive"):
        store.count("T", naive)
    with pytest.raises(ValueError, match="naive"):
        store.read_buckets("T", at(0), naive, 2)


def test_a_refused_write_leaves_nothing_behind_and_the_store_usable(
    open_store: Callable[[], TimeSeriesStore],
) -> None:
    store = open_store()
    # The naive sample is the second one: the first must not be stored half-way, and the store must not be
    # left inside a transaction (which would hold the write lock and fail the next write).
    with pytest.raises(ValueError):
        store.write([Sample("new", at(0), 1.0), Sample("new", datetime(2024, 3, 1), 2.0)])
    store.write([Sample("T", at(0), 5.0), Sample("new", at(1), 3.0)])
    assert store.read("T", at(0), at(10)).values.tolist() == [5.0]
    assert store.read("new", at(0), at(10)).values.tolist() == [3.0]
    other = open_store()  # another opener sees the committed data, under the right names
    assert other.list_series() == ["T", "new"]  # sorted by name: upper case first
    assert other.read("new", at(0), at(10)).values.tolist() == [3.0]


def test_data_persists_across_reopen(open_store: Callable[[], TimeSeriesStore]) -> None:
    s = open_store()
    s.write([Sample("T", at(0), 1.5), Sample("B", at(0), "x")])
    s.read("T", at(0), at(1))  # (an archiving backend archives here)
    s.close()
    s = open_store()
    assert s.read("T", at(0), at(1)).values.tolist() == [1.5]
    assert s.read("B", at(0), at(1)).values.tolist() == ["x"]


# -- idempotent writes, status, server timestamps ------------------------------------------------------
def test_rewriting_the_same_series_and_timestamp_replaces_instead_of_duplicating(
    store: TimeSeriesStore,
) -> None:
    batch = [Sample("T", at(m), float(m)) for m in range(5)]
    assert store.write(batch) == 5
    assert store.count("T") == 5
    store.write(batch)  # a replay
    assert store.count("T") == 5
    store.write([Sample("T", at(2), 99.0, UNCERTAIN_LAST_USABLE_VALUE)])  # a redelivery with a new value
    assert store.count("T") == 5
    data = store.read("T", at(0), at(10))
    assert data.values.tolist() == [0.0, 1.0, 99.0, 3.0, 4.0]
    assert data.status.tolist()[2] == UNCERTAIN_LAST_USABLE_VALUE


def test_write_arrays_is_idempotent_too(store: TimeSeriesStore) -> None:
    ts = np.array([to_us(at(m)) for m in range(6)], dtype=np.int64)
    assert store.write_arrays("A", ts, np.arange(6.0)) == 6
    assert store.count("A") == 6
    store.write_arrays("A", ts[2:4], np.array([20.0, 30.0]), np.array([UNCERTAIN_LAST_USABLE_VALUE, GOOD]))
    assert everything(store, "A") == (
        ts.tolist(),
        [0.0, 1.0, 20.0, 30.0, 4.0, 5.0],
        [GOOD, GOOD, UNCERTAIN_LAST_USABLE_VALUE, GOOD, GOOD, GOOD],
    )
    assert store.count("A") == 6


def test_write_arrays_takes_text_missing_values_one_status_for_all_and_server_times(
    store: TimeSeriesStore,
) -> None:
    ts = np.array([to_us(at(m)) for m in range(3)], dtype=np.int64)
    store.write_arrays("B", ts, np.array(["B-1", "B-1", "B-2"], dtype=object))
    store.write_arrays("N", ts, np.array([1.0, math.nan, 3.0]), BAD_SENSOR_FAILURE, server_us=ts + 1_000)
    assert everything(store, "B") == (ts.tolist(), ["B-1", "B-1", "B-2"], [GOOD] * 3)
    n_ts, n_values, n_status = everything(store, "N")
    assert n_ts == ts.tolist()
    assert n_values[0] == 1.0 and math.isnan(n_values[1]) and n_values[2] == 3.0
    assert n_status == [BAD_SENSOR_FAILURE] * 3
    newest = store.latest(["N"])["N"].sample
    assert newest.server_ts == from_us(int(ts[2]) + 1_000)


def test_write_arrays_refuses_arrays_of_different_lengths(store: TimeSeriesStore) -> None:
    ts = np.array([to_us(at(0)), to_us(at(1))], dtype=np.int64)
    with pytest.raises(ValueError, match="values"):
        store.write_arrays("A", ts, np.array([1.0]))
    with pytest.raises(ValueError, match="status"):
        store.write_arrays("A", ts, np.array([1.0, 2.0]), np.array([0]))
    with pytest.raises(ValueError, match="ts_us"):
        store.write_arrays("A", np.array([1.5, 2.5]), np.array([1.0, 2.0]))
    assert store.count("A") == 0


def test_status_is_stored_per_sample(store: TimeSeriesStore) -> None:
    store.write(
        [
            Sample("T", at(0), 1.0, GOOD),
            Sample("T", at(1), 2.0, UNCERTAIN_LAST_USABLE_VALUE),
            Sample("T", at(2), None, BAD_SENSOR_FAILURE),
            Sample("T", at(3), 4.0, 0xFFFFFFFF),  # the largest code (unsigned 32 bits) survives
        ]
    )
    data = store.read("T", at(0), at(10))
    assert data.status.tolist() == [GOOD, UNCERTAIN_LAST_USABLE_VALUE, BAD_SENSOR_FAILURE, 0xFFFFFFFF]
    assert data.values[:2].tolist() == [1.0, 2.0]
    assert math.isnan(data.values[2])  # no value: NaN in a numeric series


def test_server_timestamps_are_kept(store: TimeSeriesStore) -> None:
    # One series per case, so `latest` (the interface that returns them) shows each.
    store.write(
        [
            Sample("S1", at(0), 1.0, GOOD, at(0) + timedelta(milliseconds=250)),
            Sample("S1", at(1), 2.0, GOOD, at(1) + timedelta(microseconds=7)),
            Sample("S2", at(0), "B-1", GOOD, at(-1)),  # a server clock behind the source
            Sample("S3", at(0), 3.0),  # none sent
        ]
    )
    latest = store.latest()
    assert latest["S1"].sample == Sample("S1", at(1), 2.0, GOOD, at(1) + timedelta(microseconds=7))
    assert latest["S2"].sample.server_ts == at(-1)
    assert latest["S3"].sample.server_ts is None


# -- downsampled reads ----------------------------------------------------------------------------------
def test_read_buckets_min_max_mean_per_bucket_excluding_bad_samples(store: TimeSeriesStore) -> None:
    # [0 min, 60 min) in n=3 buckets of 20 min: [0,20), [20,40), [40,60).
    store.write(
        [
            Sample("P", at(0), 1.0),
            Sample("P", at(5), 5.0),
            Sample("P", at(10), 1000.0, BAD_SENSOR_FAILURE),  # bad: excluded from every aggregate
            Sample("P", at(15), 3.0, UNCERTAIN_LAST_USABLE_VALUE),  # uncertain: included
            Sample("P", at(41), 10.0),
            Sample("P", at(59), 20.0),
            Sample("P", at(60), 500.0),  # at the end: outside [start, end)
        ]
    )
    b = store.read_buckets("P", at(0), at(60), 3)
    # Computed by hand from the samples above:
    #   bucket 0 [0,20): values 1, 5, 3 (the bad 1000 is dropped) → min 1, max 5, mean 9/3 = 3, count 3,
    #                    first sample at 0 min, last at 15 min
    #   bucket 1 [20,40): no samples → not returned
    #   bucket 2 [40,60): values 10, 20 → min 10, max 20, mean 15, count 2, first 41 min, last 59 min
    assert b.series == "P"
    assert len(b) == 2
    assert b.start.tolist() == [to_us(at(0)), to_us(at(40))]
    assert b.t_first.tolist() == [to_us(at(0)), to_us(at(41))]
    assert b.t_last.tolist() == [to_us(at(15)), to_us(at(59))]
    assert b.min.tolist() == [1.0, 10.0]
    assert b.max.tolist() == [5.0, 20.0]
    assert b.mean.tolist() == pytest.approx([3.0, 15.0])
    assert b.count.tolist() == [3, 2]


def test_read_buckets_edges_belong_to_the_later_bucket(store: TimeSeriesStore) -> None:
    # [0, 30 min) in n=3 buckets of 10 min; samples exactly on the edges 10 and 20 and just before them.
    store.write(
        [
            Sample("E", at(0), 1.0),
            Sample("E", at(10) - timedelta(microseconds=1), 2.0),
            Sample("E", at(10), 3.0),
            Sample("E", at(20) - timedelta(microseconds=1), 4.0),
            Sample("E", at(20), 5.0),
            Sample("E", at(30) - timedelta(microseconds=1), 6.0),
        ]
    )
    b = store.read_buckets("E", at(0), at(30), 3)
    assert b.start.tolist() == [to_us(at(0)), to_us(at(10)), to_us(at(20))]
    assert b.min.tolist() == [1.0, 3.0, 5.0]
    assert b.max.tolist() == [2.0, 4.0, 6.0]
    assert b.count.tolist() == [2, 2, 2]
    # a start inside the data: only [start, end) counts, and the first bucket starts at `start`
    b = store.read_buckets("E", at(10), at(20), 1)
    assert (b.start.tolist(), b.min.tolist(), b.max.tolist(), b.count.tolist()) == (
        [to_us(at(10))],
        [3.0],
        [4.0],
        [2],
    )


def test_read_buckets_of_text_series_unknown_series_and_bad_n(store: TimeSeriesStore) -> None:
    store.write([Sample("B", at(m), f"B-{m}") for m in range(5)])
    assert len(store.read_buckets("B", at(0), at(60), 4)) == 0  # text values are not aggregated
    assert len(store.read_buckets("nope", at(0), at(60), 10)) == 0
    with pytest.raises(ValueError):
        store.read_buckets("B", at(0), at(60), 0)


def _reference(ts: np.ndarray, v: np.ndarray, st: np.ndarray, t0: int, t1: int, n: int) -> dict[str, list]:
    """Buckets computed by numpy from the raw points, as the interface defines them."""
    width = max((t1 - t0 + n - 1) // n, 1)
    keep = (ts >= t0) & (ts < t1) & (st < 0x80000000) & ~np.isnan(v)
    ts, v = ts[keep], v[keep]
    k = (ts - t0) // width
    out: dict[str, list] = {f: [] for f in ("start", "t_first", "t_last", "min", "max", "mean", "count")}
    for kk in np.unique(k):
        m = k == kk
        out["start"].append(int(t0 + kk * width))
        out["t_first"].append(int(ts[m][0]))
        out["t_last"].append(int(ts[m][-1]))
        out["min"].append(float(v[m].min()))
        out["max"].append(float(v[m].max()))
        out["mean"].append(float(v[m].mean()))
        out["count"].append(int(m.sum()))
    return out


def test_read_buckets_agree_with_numpy_on_the_raw_points(store: TimeSeriesStore) -> None:
    # Three hours at 1 s with noise, gaps, bad samples and missing values; requests aligned on whole
    # minutes and hours and not aligned at all, with buckets narrower than 10 s and wider than an hour.
    rng = np.random.default_rng(7)
    n = 3 * 3600
    ts = to_us(T0) + np.arange(n, dtype=np.int64) * 1_000_000 + rng.integers(0, 999_999, n)
    ts = ts[rng.random(n) > 0.05]  # 5 % of the seconds missing
    ts = ts[(ts < to_us(at(70))) | (ts >= to_us(at(95)))]  # and a 25-minute gap
    v = np.round(rng.normal(50, 10, len(ts)), 3)
    v[rng.random(len(ts)) < 0.01] = np.nan
    st = np.where(rng.random(len(ts)) < 0.02, BAD_SENSOR_FAILURE, GOOD).astype(np.int64)
    store.write_arrays("R", ts, v, st)
    requests = [
        (at(0), at(180), 180),  # 1-min buckets, aligned
        (at(0), at(180), 3),  # 1 h
        (at(0), at(180), 1),
        (at(-30), at(240), 7),  # beyond the data on both sides
        (at(0) + timedelta(seconds=7.3), at(171) + timedelta(seconds=3.1), 13),  # nothing aligned
        (at(12) + timedelta(microseconds=1), at(13), 100),  # buckets of 0.6 s
        (at(65), at(100), 9),  # around the gap
    ]
    for start, end, buckets in requests:
        b = store.read_buckets("R", start, end, buckets)
        want = _reference(ts, v, st, to_us(start), to_us(end), buckets)
        got = {f: getattr(b, f).tolist() for f in want}
        for field in ("start", "t_first", "t_last", "min", "max", "count"):
            assert got[field] == want[field], (field, start, end, buckets)
        assert got["mean"] == pytest.approx(want["mean"], rel=1e-12), (start, end, buckets)


# -- latest, list, count --------------------------------------------------------------------------------
def test_latest_per_series_with_received_time(store: TimeSeriesStore) -> None:
    before = utcnow()
    store.write([Sample("A", at(m), float(m)) for m in (0, 2, 1)])
    store.write([Sample("B", at(0), "B-7", UNCERTAIN_LAST_USABLE_VALUE)])
    after = utcnow()
    latest = store.latest()
    assert set(latest) == {"A", "B"}
    assert latest["A"].sample == Sample("A", at(2), 2.0, GOOD)  # newest by source time, not by write order
    assert latest["B"].sample == Sample("B", at(0), "B-7", UNCERTAIN_LAST_USABLE_VALUE)
    for name in ("A", "B"):
        received = latest[name].received
        assert received is not None
        # the wall-clock time of the write, truncated to µs, between the two readings of the clock
        assert before - timedelta(microseconds=1) <= received <= after
    assert set(store.latest(["B", "unknown"])) == {"B"}
    assert store.latest([]) == {}
    store.write([Sample("A", at(1.5), 9.0)])  # an older sample does not change the newest
    assert store.latest(["A"])["A"].sample.value == 2.0


def test_list_series_and_count(store: TimeSeriesStore) -> None:
    assert store.list_series() == []
    store.write([Sample("b", at(m), 1.0) for m in range(4)] + [Sample("a", at(0), 2.0)])
    assert store.list_series() == ["a", "b"]
    assert store.count("b") == 4
    assert store.count("b", at(1)) == 3
    assert store.count("b", None, at(1)) == 1
    assert store.count("b", at(1), at(3)) == 2
    assert store.count("unknown") == 0
    store.write([Sample("b", at(m), 2.0) for m in (1.5, 2, 9)])  # one replaced, two new
    assert store.count("b") == 6
    assert store.count("b", at(1), at(3)) == 3


# -- names ----------------------------------------------------------------------------------------------
NAMES = [
    "F-101 temperature",
    "a,b=c",
    'quoted "name"',
    "it's",
    "back\\slash",
    "Fermenter/Ausgang Temperatur °C",
    "温度 F-101",
    "emoji 🧪",
    "tab\tin it",
    "  leading and trailing  ",
]


def test_unicode_and_awkward_series_names(store: TimeSeriesStore) -> None:
    for i, name in enumerate(NAMES):
        store.write([Sample(name, at(m), float(i * 10 + m)) for m in range(3)])
    store.write_arrays("wide name, with = and \"'", np.array([to_us(at(0))], np.int64), np.array([7.0]))
    names = [*NAMES, "wide name, with = and \"'"]
    assert store.list_series() == sorted(names)
    for i, name in enumerate(NAMES):
        assert store.read(name, at(0), at(10)).values.tolist() == [i * 10.0, i * 10.0 + 1, i * 10.0 + 2]
        assert store.count(name) == 3
        b = store.read_buckets(name, at(0), at(3), 1)
        assert (b.min.tolist(), b.max.tolist(), b.count.tolist()) == ([i * 10.0], [i * 10.0 + 2], [3])
    latest = store.latest(names)
    assert set(latest) == set(names)
    assert latest["温度 F-101"].sample.value == 62.0
    assert store.read("F-101", at(0), at(10)).ts.tolist() == []  # no prefix matching


# -- volume and concurrency -----------------------------------------------------------------------------
def test_a_large_batch_through_write_arrays(store: TimeSeriesStore) -> None:
    n = 14 * 86400  # 1.2 M points: 14 days at 1 s
    ts = to_us(T0) + np.arange(n, dtype=np.int64) * 1_000_000
    values = np.sin(np.arange(n) / 1000.0)
    assert store.write_arrays("big", ts, values) == n
    assert store.count("big") == n
    data = store.read("big", T0, END)
    assert len(data) == n
    assert np.array_equal(data.ts, ts)
    assert np.array_equal(data.values, values)
    mid = T0 + timedelta(days=7)
    assert store.count("big", T0, mid) == 7 * 86400
    b = store.read_buckets("big", T0, T0 + timedelta(seconds=n), 14)
    assert b.count.tolist() == [86400] * 14 and b.min.min() == values.min() and b.max.max() == values.max()


def test_a_writer_and_a_reader_at_the_same_time(open_store: Callable[[], TimeSeriesStore]) -> None:
    # Two openers of the same store (as the collector's store writer and the dashboard are): a writer
    # thread commits batches while a reader thread reads; every read sees a whole number of batches, in
    # order, never a half-written one, and the reader ends seeing all of them.
    writer, reader = open_store(), open_store()
    writer.write([Sample("C", at(0), 0.0)])
    batches, size = 40, 250
    done = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []

    def write() -> None:
        try:
            for k in range(batches):
                ts = to_us(at(1)) + (k * size + np.arange(size, dtype=np.int64)) * 1_000_000
                writer.write_arrays("C", ts, np.full(size, float(k + 1)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while True:
                finished = done.is_set()
                data = reader.read("C", at(0), END)
                n = len(data) - 1
                assert n % size == 0, n  # whole batches only
                if n:
                    assert data.values[-1] == n // size  # the batches are the first n // size, in order
                seen.append(n)
                if finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert seen[-1] == batches * size
    assert seen == sorted(seen)  # never goes backwards
