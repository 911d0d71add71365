"""storage/sqlite.py: SqliteStore on real SQLite files in tmp_path."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE, Sample, to_us, utcnow
from storage.sqlite import SqliteStore, connect

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "ts.db")
    yield s
    s.close()


def test_read_returns_start_inclusive_end_exclusive(store: SqliteStore) -> None:
    store.write([Sample("T", at(m), float(m)) for m in range(10)])
    data = store.read("T", at(2), at(5))
    assert data.series == "T"
    assert data.ts.tolist() == [to_us(at(2)), to_us(at(3)), to_us(at(4))]
    assert data.values.dtype == np.float64
    assert data.values.tolist() == [2.0, 3.0, 4.0]
    assert data.status.tolist() == [GOOD] * 3
    assert data.hours().tolist() == pytest.approx([0.0, 1 / 60, 2 / 60])


def test_read_returns_samples_in_time_order_whatever_the_write_order(store: SqliteStore) -> None:
    store.write([Sample("T", at(m), float(m)) for m in (3, 0, 2, 1)])
    assert store.read("T", at(0), at(10)).values.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_read_of_unknown_series_or_empty_range_is_empty(store: SqliteStore) -> None:
    store.write([Sample("T", at(0), 1.0)])
    assert len(store.read("nope", at(0), at(10))) == 0
    assert len(store.read("T", at(1), at(10))) == 0
    assert len(store.read("T", at(0), at(0))) == 0


def test_text_values_roundtrip(store: SqliteStore) -> None:
    store.write([Sample("B", at(0), "B-001"), Sample("B", at(1), ""), Sample("B", at(2), "B-002")])
    data = store.read("B", at(0), at(10))
    assert data.values.dtype == object
    assert data.values.tolist() == ["B-001", "", "B-002"]


def test_status_is_stored_per_sample(store: SqliteStore) -> None:
    store.write(
        [
            Sample("T", at(0), 1.0, GOOD),
            Sample("T", at(1), 2.0, UNCERTAIN_LAST_USABLE_VALUE),
            Sample("T", at(2), None, BAD_SENSOR_FAILURE),
        ]
    )
    data = store.read("T", at(0), at(10))
    assert data.status.tolist() == [GOOD, UNCERTAIN_LAST_USABLE_VALUE, BAD_SENSOR_FAILURE]
    assert data.values[:2].tolist() == [1.0, 2.0]
    assert math.isnan(data.values[2])  # no value: NaN in a numeric series


def test_rewriting_the_same_series_and_timestamp_replaces_instead_of_duplicating(store: SqliteStore) -> None:
    batch = [Sample("T", at(m), float(m)) for m in range(5)]
    assert store.write(batch) == 5
    store.write(batch)  # a replay
    store.write([Sample("T", at(2), 99.0, UNCERTAIN_LAST_USABLE_VALUE)])  # a redelivery with a new value
    assert store.count("T") == 5
    data = store.read("T", at(0), at(10))
    assert data.values.tolist() == [0.0, 1.0, 99.0, 3.0, 4.0]
    assert data.status.tolist()[2] == UNCERTAIN_LAST_USABLE_VALUE


def test_read_buckets_min_max_mean_per_bucket_excluding_bad_samples(store: SqliteStore) -> None:
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
    assert len(b) == 2
    assert b.start.tolist() == [to_us(at(0)), to_us(at(40))]
    assert b.t_first.tolist() == [to_us(at(0)), to_us(at(41))]
    assert b.t_last.tolist() == [to_us(at(15)), to_us(at(59))]
    assert b.min.tolist() == [1.0, 10.0]
    assert b.max.tolist() == [5.0, 20.0]
    assert b.mean.tolist() == pytest.approx([3.0, 15.0])
    assert b.count.tolist() == [3, 2]


def test_read_buckets_of_unknown_series_is_empty_and_n_must_be_positive(store: SqliteStore) -> None:
    assert len(store.read_buckets("nope", at(0), at(60), 10)) == 0
    with pytest.raises(ValueError):
        store.read_buckets("nope", at(0), at(60), 0)


def test_latest_per_series_with_received_time(store: SqliteStore) -> None:
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


def test_list_series_and_count(store: SqliteStore) -> None:
    assert store.list_series() == []
    store.write([Sample("b", at(m), 1.0) for m in range(4)] + [Sample("a", at(0), 2.0)])
    assert store.list_series() == ["a", "b"]
    assert store.count("b") == 4
    assert store.count("b", at(1)) == 3
    assert store.count("b", None, at(1)) == 1
    assert store.count("b", at(1), at(3)) == 2
    assert store.count("unknown") == 0


def test_naive_datetimes_are_refused(store: SqliteStore) -> None:
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
    store: SqliteStore, tmp_path: Path
) -> None:
    # The naive sample is the second one: the first must not be stored half-way, and the store must not be
    # left inside a transaction (which would hold the write lock and fail the next write).
    with pytest.raises(ValueError):
        store.write([Sample("new", at(0), 1.0), Sample("new", datetime(2024, 3, 1), 2.0)])
    store.write([Sample("T", at(0), 5.0), Sample("new", at(1), 3.0)])
    assert store.read("T", at(0), at(10)).values.tolist() == [5.0]
    assert store.read("new", at(0), at(10)).values.tolist() == [3.0]
    # Another connection sees the committed data, under the right series names.
    other = SqliteStore(tmp_path / "ts.db", read_only=True)
    try:
        assert other.list_series() == ["T", "new"]  # ORDER BY name: upper case sorts first
        assert other.read("new", at(0), at(10)).values.tolist() == [3.0]
    finally:
        other.close()


def test_data_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "ts.db"  # parent directories are created
    s = SqliteStore(path)
    s.write([Sample("T", at(0), 1.5), Sample("B", at(0), "x")])
    s.close()
    s = SqliteStore(path, read_only=True)
    try:
        assert s.read("T", at(0), at(1)).values.tolist() == [1.5]
        assert s.read("B", at(0), at(1)).values.tolist() == ["x"]
    finally:
        s.close()


# -- WAL: another process reads while this one writes -------------------------------------------------

READER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from storage.sqlite import SqliteStore
    store = SqliteStore(sys.argv[1], read_only=True)
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    print("ready", mode, flush=True)
    for line in sys.stdin:
        start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        data = store.read("T", start, end)
        print(len(data), data.values.sum() if len(data) else 0.0, flush=True)
    store.close()
    """
)


def test_another_process_reads_while_this_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "ts.db"
    store = SqliteStore(path)
    store.write([Sample("T", at(0), 1.0)])
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdin is not None and reader.stdout is not None

    def ask() -> str:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write("read\n")
        reader.stdin.flush()
        return reader.stdout.readline().strip()

    try:
        assert reader.stdout.readline().split() == ["ready", "wal"]
        expected_n, expected_sum = 1, 1.0
        for k in range(1, 6):  # interleave writes here with reads there
            store.write([Sample("T", at(k), float(k))])
            expected_n, expected_sum = expected_n + 1, expected_sum + k
            assert ask() == f"{expected_n} {expected_sum}"

        # A writer in the middle of a transaction (holding the write lock, with uncommitted rows): the
        # reader is not blocked and sees the last committed state. A rollback journal would block it here.
        writer = connect(path)
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute(
            "INSERT INTO samples (series_id, ts_us, value, status) "
            "SELECT id, ?, 100.0, 0 FROM series WHERE name = 'T'",
            (to_us(at(100)),),
        )
        assert ask() == f"{expected_n} {expected_sum}"
        writer.execute("COMMIT")
        writer.close()
        assert ask() == f"{expected_n + 1} {expected_sum + 100.0}"
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
        store.close()
    assert reader.returncode == 0, reader.stderr.read() if reader.stderr else ""
