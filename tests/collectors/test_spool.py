"""The on-disk spool and the sink that writes from it to the store (real files, real SQLite)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from biopilot.samples import BAD_SENSOR_FAILURE, Sample, to_us
from collectors import sink as sink_module
from collectors.sink import SampleSink
from collectors.spool import Spool, SpoolFullError, encode
from storage import SqliteStore

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def _samples(n: int, start: int = 0, series: str = "F-1.t") -> list[Sample]:
    return [Sample(series, T0 + timedelta(seconds=start + i), float(start + i)) for i in range(n)]


def test_append_read_commit_and_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    a = spool.append(_samples(3))
    b = spool.append([Sample("F-1.batch", T0, "B-1", 0, T0 + timedelta(seconds=1))])
    c = spool.append([Sample("F-1.t", T0, None, BAD_SENSOR_FAILURE)])
    frames = list(spool.read(0))
    assert [pos for pos, _ in frames] == [a, b, c]
    assert frames[0][1] == _samples(3)
    assert frames[1][1] == [Sample("F-1.batch", T0, "B-1", 0, T0 + timedelta(seconds=1))]
    assert frames[2][1][0].status == BAD_SENSOR_FAILURE and frames[2][1][0].value is None
    assert spool.depth == c
    spool.commit(b)
    spool.close()
    again = Spool(tmp_path / "s")  # a restart: the checkpoint and the end survive
    assert (again.committed, again.end) == (b, c)
    assert [s for _, ss in again.read(again.committed) for s in ss] == [
        Sample("F-1.t", T0, None, BAD_SENSOR_FAILURE)
    ]


def test_segments_rotate_and_committed_ones_are_deleted(tmp_path: Path) -> None:
    frame = len(encode(_samples(10)))
    spool = Spool(tmp_path, segment_bytes=3 * frame)
    ends = [spool.append(_samples(10, 10 * i)) for i in range(10)]
    assert len(list(tmp_path.glob("*.spool"))) == 4  # 3 + 3 + 3 + 1 frames
    assert sum(len(s) for _, s in spool.read(0, max_samples=10**6)) == 100
    spool.commit(ends[6])  # frames 0..6 are in the store: segments 1 and 2 can go, segment 3 holds frame 6..8
    assert len(list(tmp_path.glob("*.spool"))) == 2
    assert [s[0].value for _, s in spool.read(ends[6])] == [70.0, 80.0, 90.0]


def test_a_torn_last_frame_is_cut_off_at_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    good = spool.append(_samples(5))
    spool.append(_samples(5, 5))
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    segment.write_bytes(segment.read_bytes()[:-7])  # a write interrupted by a power loss
    again = Spool(tmp_path)
    assert again.end == good and segment.stat().st_size == good
    assert [len(s) for _, s in again.read(0)] == [5]
    assert again.append(_samples(1, 10)) > good  # and it goes on appending after the good part


def test_full_spool_refuses_instead_of_dropping(tmp_path: Path) -> None:
    frame = len(encode(_samples(10, 10)))  # values 10.0 … 39.0: frames of equal length
    spool = Spool(tmp_path, max_bytes=2 * frame)
    spool.append(_samples(10, 10))
    spool.append(_samples(10, 20))
    with pytest.raises(SpoolFullError, match="full"):
        spool.append(_samples(10, 30))
    assert spool.end == 2 * frame and spool.fill == 1.0
    spool.commit(frame)  # the store took the first frame: room again
    spool.append(_samples(10, 30))


def test_sink_stores_everything_through_a_store_outage(tmp_path: Path) -> None:
    """The store is locked by another connection (as a long exclusive write would); the sink keeps retrying
    from the spool and stores every sample, in order, once the lock is gone."""
    store = SqliteStore(tmp_path / "t.db")
    store.write(_samples(1, 0, "warmup"))
    spool = Spool(tmp_path / "spool")

    async def main() -> SampleSink:
        sink = SampleSink(store, spool, flush_interval=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        locker = sqlite3.connect(tmp_path / "t.db", timeout=0, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(20):
                sink.put(_samples(50, 50 * i))
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)
            assert store.count("F-1.t") == 0 and not sink.store_ok  # nothing got through the lock
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        stop.set()
        await task
        return sink

    # shorten the store's busy wait so the test sees several refused writes quickly
    store._conn.execute("PRAGMA busy_timeout=50")
    sink = asyncio.run(main())
    assert store.count("F-1.t") == 1000 and sink.stored == 1000 and sink.write_failures >= 1
    assert spool.depth == 0  # all committed
    data = store.read("F-1.t", T0, T0 + timedelta(hours=1))
    assert list(data.values) == [float(i) for i in range(1000)]


def test_sink_reads_the_spool_files_when_memory_is_full_and_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "MEMORY_LIMIT", 100)
    store = SqliteStore(tmp_path / "t.db")
    spool = Spool(tmp_path / "spool")
    # A previous run spooled 300 samples and died before storing them.
    first = SampleSink(store, spool)
    for i in range(6):
        first.put(_samples(50, 50 * i))
    assert first.pending_in_memory == 100  # the rest is only in the spool files
    spool.close()

    async def main() -> SampleSink:
        reopened = Spool(tmp_path / "spool")
        sink = SampleSink(store, reopened, batch_size=120)
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        sink.put(_samples(50, 300))  # and new samples arrive meanwhile
        stop.set()
        await task
        return sink

    sink = asyncio.run(main())
    assert store.count("F-1.t") == 350 and sink.caught_up
    assert sink.spool is not None and sink.spool.depth == 0


def test_samples_written_twice_are_stored_once(tmp_path: Path) -> None:
    """A replay after a crash rewrites what may already be in the store: no duplicates."""
    store = SqliteStore(tmp_path / "t.db")
    spool = Spool(tmp_path / "spool")
    spool.append(_samples(10))
    store.write(_samples(10))  # the store already has them (the crash came before the checkpoint)
    spool.close()

    async def main() -> None:
        sink = SampleSink(store, Spool(tmp_path / "spool"))
        stop = asyncio.Event()
        stop.set()
        await sink.run(stop)

    asyncio.run(main())
    assert store.count("F-1.t") == 10
    assert store.read("F-1.t", T0, T0 + timedelta(hours=1)).ts[-1] == to_us(T0 + timedelta(seconds=9))
