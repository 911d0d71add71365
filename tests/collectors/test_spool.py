"""The on-disk spool (appender and reader) and the store writer that tails it (real files, real SQLite)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from biopilot.errors import BioPilotError
from biopilot.samples import BAD_SENSOR_FAILURE, Sample, to_us
from collectors.spool import Spool, SpoolFullError, SpoolReader, encode
from collectors.writer import StoreWriter
from storage import SqliteStore
from tests.conftest import wait_until

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def _samples(n: int, start: int = 0, series: str = "F-1.t") -> list[Sample]:
    return [Sample(series, T0 + timedelta(seconds=start + i), float(start + i)) for i in range(n)]


def _row(s: Sample) -> tuple[object, ...]:
    return (s.series, to_us(s.ts), s.value, s.status, to_us(s.server_ts) if s.server_ts else None)


def test_append_read_commit_and_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    a = spool.append(_samples(3))
    server = T0 + timedelta(seconds=1)
    b = spool.append([Sample("F-1.batch", T0, "B-1", 0, server)])
    c = spool.append([Sample("F-1.t", T0, None, BAD_SENSOR_FAILURE)])
    reader = SpoolReader(tmp_path / "s")
    frames = reader.read(0)
    assert [pos for pos, _ in frames] == [a, b, c]
    assert frames[0][1] == [_row(s) for s in _samples(3)]
    assert frames[1][1] == [("F-1.batch", to_us(T0), "B-1", 0, to_us(server))]
    assert frames[2][1] == [("F-1.t", to_us(T0), None, BAD_SENSOR_FAILURE, None)]
    assert spool.depth == c
    reader.commit(b)
    reader.close()
    spool.refresh()
    assert spool.depth == c - b  # the appender learns what the reader committed
    spool.close()
    again = Spool(tmp_path / "s")  # a restart: the checkpoint and the end survive
    assert (again.committed, again.end) == (b, c)
    reader = SpoolReader(tmp_path / "s")
    assert reader.committed == b and [rows for _, rows in reader.read(b)] == [frames[2][1]]


def test_segments_rotate_and_committed_ones_are_deleted(tmp_path: Path) -> None:
    frame = len(encode(_samples(10, 10)))  # values 10.0 … 99.0: frames of equal length
    spool = Spool(tmp_path, segment_bytes=3 * frame)
    ends = [spool.append(_samples(10, 10 * i)) for i in range(1, 10)]
    assert len(list(tmp_path.glob("*.spool"))) == 3  # 3 + 3 + 3 frames
    reader = SpoolReader(tmp_path)
    assert sum(len(rows) for _, rows in reader.read(0, max_rows=10**6)) == 90
    reader.commit(ends[5])  # frames 1..6 are in the store: the first two segments can go
    assert len(list(tmp_path.glob("*.spool"))) == 1
    assert [rows[0][2] for _, rows in reader.read(ends[5])] == [70.0, 80.0, 90.0]


def test_a_frame_still_being_written_is_left_for_later(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    done = spool.append(_samples(5))
    frame = encode(_samples(5, 5))
    segment = next(tmp_path.glob("*.spool"))
    with segment.open("ab") as f:  # the appender is half-way through its write
        f.write(frame[:10])
    reader = SpoolReader(tmp_path)
    assert [pos for pos, _ in reader.read(0)] == [done]
    with segment.open("ab") as f:
        f.write(frame[10:])
    assert [pos for pos, _ in reader.read(done)] == [done + len(frame)]


def test_a_torn_last_frame_is_cut_off_at_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    good = spool.append(_samples(5))
    spool.append(_samples(5, 5))
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    segment.write_bytes(segment.read_bytes()[:-7])  # a write interrupted by a power loss
    again = Spool(tmp_path)
    assert again.end == good and segment.stat().st_size == good
    assert again.append(_samples(1, 10)) > good  # and it goes on appending after the good part
    assert [len(rows) for _, rows in SpoolReader(tmp_path).read(0)] == [5, 1]


def test_full_spool_refuses_instead_of_dropping(tmp_path: Path) -> None:
    frame = len(encode(_samples(10, 10)))
    spool = Spool(tmp_path, max_bytes=2 * frame)
    spool.append(_samples(10, 10))
    spool.append(_samples(10, 20))
    with pytest.raises(SpoolFullError, match="full"):
        spool.append(_samples(10, 30))
    assert spool.end == 2 * frame and spool.fill == 1.0
    reader = SpoolReader(tmp_path)
    reader.commit(frame)  # the store took the first frame: room again (the appender re-reads the checkpoint)
    spool.append(_samples(10, 30))


def test_one_reader_at_a_time(tmp_path: Path) -> None:
    first = SpoolReader(tmp_path)
    with pytest.raises(BioPilotError, match="another store writer"):
        SpoolReader(tmp_path, lock_timeout_s=0.2)
    first.close()
    SpoolReader(tmp_path, lock_timeout_s=0.2).close()


def test_writer_stores_everything_through_a_store_outage(tmp_path: Path) -> None:
    """The store is locked by another connection (as a long exclusive write would); the writer keeps retrying
    from the spool and stores every sample, in order, once the lock is gone."""
    store = SqliteStore(tmp_path / "t.db")
    store.write(_samples(1, 0, "warmup"))
    store._conn.execute("PRAGMA busy_timeout=50")  # refused writes come quickly
    spool = Spool(tmp_path / "spool")

    async def main() -> StoreWriter:
        writer = StoreWriter(tmp_path / "spool", store, poll_s=0.01)
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        locker = sqlite3.connect(tmp_path / "t.db", timeout=0, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(20):
                spool.append(_samples(50, 50 * i))
                await asyncio.sleep(0.01)
            assert await wait_until(lambda: writer.write_failures >= 2)  # tried, refused, tried again
            assert store.count("F-1.t") == 0 and not writer.store_ok  # nothing got through the lock
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        stop.set()
        await task
        return writer

    writer = asyncio.run(main())
    assert store.count("F-1.t") == 1000 and writer.stored == 1000 and writer.write_failures >= 1
    assert writer.lag_bytes == 0
    spool.refresh()
    assert spool.depth == 0  # all committed
    data = store.read("F-1.t", T0, T0 + timedelta(hours=1))
    assert list(data.values) == [float(i) for i in range(1000)]


def test_writer_replays_what_a_dead_collector_left_and_rewrites_without_duplicates(tmp_path: Path) -> None:
    """A previous run spooled 300 samples and died before (all of) them were stored; some were stored just
    before the crash, past the last checkpoint. The next writer stores everything exactly once."""
    store = SqliteStore(tmp_path / "t.db")
    spool = Spool(tmp_path / "spool")
    for i in range(6):
        spool.append(_samples(50, 50 * i))
    spool.close()
    store.write(_samples(100))  # stored, but the crash came before the checkpoint

    async def main() -> StoreWriter:
        writer = StoreWriter(tmp_path / "spool", store, batch_rows=120)
        stop = asyncio.Event()
        stop.set()  # nothing new comes: write what is there and stop
        await writer.run(stop)
        return writer

    writer = asyncio.run(main())
    assert store.count("F-1.t") == 300 and writer.stored == 300 and writer.lag_bytes == 0
