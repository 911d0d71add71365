"""storage/tiered.py and storage/archive.py: what the columnar tier does beyond the TimeSeriesStore interface
(that part is in tests/storage/conformance/, run on archived data too): the Parquet layout a data team reads,
exact rollups, late samples in both tiers, compaction racing a write, pruning, runs archived again, runs that
overlap, refusals; on real SQLite and Parquet files in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biopilot.errors import StoreError
from biopilot.records import Run
from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE, Sample, from_us, to_us
from storage import archive as archive_mod
from storage.archive import ROLLUP_WIDTHS_S, rollup_path, samples_path
from storage.buckets import aligned
from storage.sqlite import SqliteStore
from storage.tiered import TieredStore

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
END = datetime(2100, 1, 1, tzinfo=UTC)
HOURS = 6


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run_of(batch: str, start_s: float, end_s: float, equipment: str = "F-101") -> Run:
    return Run(f"{equipment}:{batch}", equipment, batch, at(start_s), at(end_s))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TieredStore]:
    s = TieredStore(tmp_path / "ts.db", tmp_path / "archive")
    yield s
    s.close()


def fill(store: TieredStore, rng_seed: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Six hours of a 1 s temperature (noise, 2 % bad, 1 % without value), a 10 s pressure with a half-hour
    gap, a batch id and a phase (text); returns the numeric arrays written."""
    rng = np.random.default_rng(rng_seed)
    n = HOURS * 3600
    ts = to_us(T0) + np.arange(n, dtype=np.int64) * 1_000_000
    temp = np.round(37 + rng.normal(0, 0.2, n), 3)
    temp[rng.random(n) < 0.01] = np.nan
    st = np.where(rng.random(n) < 0.02, BAD_SENSOR_FAILURE, GOOD).astype(np.int64)
    store.write_arrays("F-101.temp", ts, temp, st, server_us=ts + 1234)
    pts = ts[::10]
    pts = pts[(pts < to_us(at(7200))) | (pts >= to_us(at(9000)))]
    pressure = np.linspace(1.0, 2.0, len(pts))
    store.write_arrays("F-101.pressure", pts, pressure)
    store.write([Sample("F-101.batch", at(0), "B-17"), Sample("F-101.batch", at(n - 1), "")])
    store.write([Sample("F-101.phase", at(h * 3600), f"phase {h}") for h in range(HOURS)])
    return {
        "F-101.temp": (ts, temp, st),
        "F-101.pressure": (pts, pressure, np.zeros(len(pts), np.int64)),
    }


SERIES = ["F-101.temp", "F-101.pressure", "F-101.batch", "F-101.phase"]


def snapshot(store: TieredStore, start: datetime = T0, end: datetime = END) -> dict[str, object]:
    """Everything the interface answers about the four series (to compare before and after a change)."""
    out: dict[str, object] = {}
    for name in SERIES:
        d = store.read(name, start, end)
        out[name] = (d.ts.tolist(), [None if v != v else v for v in d.values.tolist()], d.status.tolist())
        out[name + ":count"] = store.count(name, start, end)
        b = store.read_buckets(name, start + timedelta(seconds=13.7), start + timedelta(hours=HOURS), 17)
        out[name + ":buckets"] = [
            getattr(b, f).tolist() for f in ("start", "t_first", "t_last", "min", "max")
        ]
        out[name + ":mean"] = b.mean.tolist()
        out[name + ":n"] = b.count.tolist()
    out["latest"] = {k: (v.sample, v.received) for k, v in store.latest().items()}
    return out


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith(":mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-12), key
        else:
            assert a[key] == b[key], key


# -- the layout ------------------------------------------------------------------------------------------
def test_a_closed_run_is_written_in_the_documented_layout(store: TieredStore, tmp_path: Path) -> None:
    written = fill(store)
    run = run_of("B-17", 0, HOURS * 3600 - 1)
    result = store.archive_run(run, SERIES)
    assert (result.series, result.skipped) == (4, None)
    root = tmp_path / "archive"
    path = root / "samples" / "equipment=F-101" / "run=B-17" / "part-0.parquet"
    assert samples_path(root, "F-101", "B-17") == path and path.exists()
    for w in ROLLUP_WIDTHS_S:
        assert (
            root / "rollups" / f"width_s={w}" / "equipment=F-101" / "run=B-17" / "part-0.parquet"
        ).exists()

    # The data team's view: pandas on the folder, Hive partitions as columns.
    frame = pd.read_parquet(root / "samples")
    assert list(frame.columns) == ["series", "ts", "value", "text", "status", "server_ts", "equipment", "run"]
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    assert set(frame["equipment"].astype(str)) == {"F-101"} and set(frame["run"].astype(str)) == {"B-17"}
    temp = frame[frame["series"] == "F-101.temp"]
    ts, values, status = written["F-101.temp"]
    assert (temp["ts"].astype("int64").to_numpy() == ts).all()
    assert np.array_equal(temp["value"].to_numpy(), values, equal_nan=True)
    assert temp["value"].isna().sum() == np.isnan(values).sum()  # no value: null, not a number
    assert (temp["status"].to_numpy() == status).all()
    assert (temp["server_ts"].astype("int64").to_numpy() == ts + 1234).all()
    phases = frame[frame["series"] == "F-101.phase"]
    assert phases["text"].tolist() == [f"phase {h}" for h in range(HOURS)]
    assert phases["value"].isna().all()
    assert frame["server_ts"][frame["series"] != "F-101.temp"].isna().all()

    # Sorted by series then time; each series in row groups of its own; the metadata names the run.
    table = pq.read_table(path)
    names = table.column("series").to_pylist()
    assert names == sorted(names)
    meta = pq.ParquetFile(path).metadata
    kv = meta.metadata
    assert kv[b"biopilot.layout"] == b"1" and kv[b"biopilot.run"] == b"F-101:B-17"
    assert kv[b"biopilot.range_us"] == f"{to_us(run.start)},{to_us(run.end) + 1}".encode()
    index = json.loads(kv[b"biopilot.series"])
    assert sorted(index) == sorted(SERIES)
    for g in range(meta.num_row_groups):
        assert len(set(pq.ParquetFile(path).read_row_group(g, columns=["series"]).column(0).to_pylist())) == 1
    assert meta.row_group(0).column(1).compression == "ZSTD"
    assert "BYTE_STREAM_SPLIT" in meta.row_group(0).column(2).encodings  # value
    assert "DELTA_BINARY_PACKED" in meta.row_group(0).column(1).encodings  # ts

    # Rollups: one table over every width, filtered by the partition.
    rollups = ds.dataset(root / "rollups", format="parquet", partitioning="hive").to_table(
        filter=(ds.field("width_s") == 3600) & (ds.field("series") == "F-101.temp")
    )
    assert rollups.column("count").to_pylist() == [
        int(((status < BAD_SENSOR_FAILURE) & ~np.isnan(values))[h * 3600 : (h + 1) * 3600].sum())
        for h in range(HOURS)
    ]


def test_partition_values_are_percent_encoded_and_read_back(store: TieredStore, tmp_path: Path) -> None:
    batch, equipment = "../B 17/ü", "F 101/a"
    store.write([Sample("weird", at(s), float(s)) for s in range(5)])
    store.archive_run(run_of(batch, 0, 4, equipment), ["weird"])
    path = samples_path(tmp_path / "archive", equipment, batch)
    assert path.is_relative_to(tmp_path / "archive" / "samples")  # no way out of the archive
    assert path.parent.name == "run=%2E.%2FB%2017%2F%C3%BC"
    frame = pd.read_parquet(tmp_path / "archive" / "samples")
    assert (set(frame["equipment"].astype(str)), set(frame["run"].astype(str))) == ({equipment}, {batch})
    assert store.read("weird", at(0), at(10)).values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_rollups_are_exact_aggregates_of_the_raw_points(store: TieredStore, tmp_path: Path) -> None:
    written = fill(store)
    store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    for name, (ts, v, status) in written.items():
        keep = (status < 0x80000000) & ~np.isnan(v)
        ts, v = ts[keep], v[keep]
        for w in ROLLUP_WIDTHS_S:
            path = rollup_path(tmp_path / "archive", w, "F-101", "B-17")
            t = pq.read_table(path, filters=[("series", "=", name)])
            k = ts // (w * 1_000_000)
            uniq = np.unique(k)
            assert t.column("bucket").cast(pa.int64()).to_pylist() == (uniq * w * 1_000_000).tolist()
            assert t.column("count").to_pylist() == [int((k == u).sum()) for u in uniq]
            assert t.column("min").to_pylist() == [float(v[k == u].min()) for u in uniq]
            assert t.column("max").to_pylist() == [float(v[k == u].max()) for u in uniq]
            assert t.column("t_first").cast(pa.int64()).to_pylist() == [int(ts[k == u][0]) for u in uniq]
            assert t.column("t_last").cast(pa.int64()).to_pylist() == [int(ts[k == u][-1]) for u in uniq]
            assert t.column("mean").to_pylist() == pytest.approx([float(v[k == u].mean()) for u in uniq])


def test_aligned_requests_are_answered_from_rollups_alone(
    store: TieredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store)
    store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    raw_reads: list[tuple[int, int]] = []
    real = store.reader.samples

    def spy(path, series, lo, hi, **kw):  # type: ignore[no-untyped-def]
        raw_reads.append((lo, hi))
        return real(path, series, lo, hi, **kw)

    monkeypatch.setattr(store.reader, "samples", spy)
    # 6 h in 36 buckets of 10 min from a whole hour; 1 h buckets; 2-min buckets from 08:00 (an hour edge)
    for n in (36, 6, 180):
        b = store.read_buckets("F-101.temp", T0, at(HOURS * 3600), n)
        assert b.count.sum() > 0
    assert raw_reads == []
    # any request made aligned (storage.buckets.aligned) needs no raw points either
    for start_s, end_s, n in ((13.7, 5 * 3600 + 1.3, 1000), (1234.5, 4321.5, 7), (99.9, HOURS * 3600, 250)):
        a, b, m = aligned(to_us(at(start_s)), to_us(at(end_s)), n)
        assert a <= to_us(at(start_s)) and b >= to_us(at(end_s)) and m <= n * 1.1 + 1
        assert store.read_buckets("F-101.temp", from_us(a), from_us(b), m).count.sum() > 0
    assert raw_reads == []
    # Not aligned (edges 13.7 s past the minute): only the finest buckets the edges split are read raw.
    store.read_buckets("F-101.temp", at(13.7), at(3600 + 13.7), 6)
    assert raw_reads, "an unaligned request needs the raw points around its edges"
    # (that every answer equals the numpy reference is checked in the conformance suite)


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TieredStore, dict]]:
    """One archived run (six hours, see `fill`) with late samples pending in its second hour and live data
    after it, and the numeric arrays it holds."""
    place = tmp_path_factory.mktemp("reviewed")
    store = TieredStore(place / "ts.db", place / "archive")
    written = fill(store)
    store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    ts, v, status = written["F-101.temp"]
    late_ts = to_us(at(3600)) + np.arange(0, 3600_000_000, 97_000_000, dtype=np.int64)  # on and off the grid
    late_v = np.linspace(-10, 80, len(late_ts))
    store.write_arrays("F-101.temp", late_ts, late_v)
    live_ts = ts[-1] + np.arange(1, 1800, dtype=np.int64) * 1_000_000
    live_v = np.full(len(live_ts), 38.0)
    store.write_arrays("F-101.temp", live_ts, live_v)
    keep = ~np.isin(ts, late_ts)
    all_ts = np.concatenate([ts[keep], late_ts, live_ts])
    order = np.argsort(all_ts)
    values = np.concatenate([v[keep], late_v, live_v])[order]
    statuses = np.concatenate([status[keep], np.zeros(len(late_ts) + len(live_ts), np.int64)])[order]
    yield (
        store,
        {"F-101.temp": (all_ts[order], values, statuses), "F-101.pressure": written["F-101.pressure"]},
    )
    store.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    series=st.sampled_from(["F-101.temp", "F-101.pressure"]),
    start_s=st.floats(-900, HOURS * 3600 + 900, allow_nan=False),
    length_s=st.floats(0.0005, HOURS * 3600 + 3600, allow_nan=False),
    n=st.integers(1, 500),
)
def test_any_downsampled_read_agrees_with_numpy_on_the_raw_points(
    reviewed: tuple[TieredStore, dict], series: str, start_s: float, length_s: float, n: int
) -> None:
    # Rollups (whole buckets), finer rollups and raw points at the edges, the deltas' raw path and the live
    # SQLite part, combined: every field equals numpy on the same points (the mean to rounding).
    store, written = reviewed
    ts, v, status = written[series]
    start, end = at(start_s), at(start_s + length_s)
    t0, t1 = to_us(start), to_us(end)
    width = max((t1 - t0 + n - 1) // n, 1)
    keep = (ts >= t0) & (ts < t1) & (status < 0x80000000) & ~np.isnan(v)
    k = (ts[keep] - t0) // width
    b = store.read_buckets(series, start, end, n)
    if len(k) == 0:
        assert len(b) == 0
        return
    uniq, first = np.unique(k, return_index=True)
    last = np.r_[first[1:], len(k)] - 1
    vals = v[keep]
    assert b.start.tolist() == (t0 + uniq * width).tolist()
    assert b.count.tolist() == np.diff(np.r_[first, len(k)]).tolist()
    assert b.t_first.tolist() == ts[keep][first].tolist()
    assert b.t_last.tolist() == ts[keep][last].tolist()
    assert b.min.tolist() == np.minimum.reduceat(vals, first).tolist()
    assert b.max.tolist() == np.maximum.reduceat(vals, first).tolist()
    assert b.mean.tolist() == pytest.approx((np.add.reduceat(vals, first) / b.count).tolist(), rel=1e-9)


# -- late samples --------------------------------------------------------------------------------------
def test_a_late_sample_updates_both_tiers(store: TieredStore, tmp_path: Path) -> None:
    fill(store)
    run = run_of("B-17", 0, HOURS * 3600 - 1)
    store.archive_run(run, SERIES)
    # A replaced value (through write), a new time (through write_arrays), a late text sample.
    store.write([Sample("F-101.temp", at(100), 99.0, UNCERTAIN_LAST_USABLE_VALUE)])
    store.write_arrays("F-101.temp", np.array([to_us(at(100.5))], np.int64), np.array([-5.0]))
    store.write([Sample("F-101.phase", at(1800), "sampling")])
    store.write([Sample("F-101.temp", at(HOURS * 3600 + 60), 40.0)])  # after the run: live, not late
    assert store.archived_runs()["F-101:B-17"].deltas == 3

    def check() -> None:
        d = store.read("F-101.temp", at(99), at(102))
        assert d.ts.tolist() == [to_us(at(99)), to_us(at(100)), to_us(at(100.5)), to_us(at(101))]
        assert d.values.tolist()[1:3] == [99.0, -5.0]
        assert d.status.tolist()[1:3] == [UNCERTAIN_LAST_USABLE_VALUE, GOOD]
        assert store.count("F-101.temp") == HOURS * 3600 + 2
        assert store.count("F-101.temp", at(100), at(101)) == 2
        b = store.read_buckets("F-101.temp", T0, at(3600), 6)  # aligned: rollups, unless deltas pending
        assert b.min[0] == -5.0 and b.max[0] == 99.0
        assert store.read("F-101.phase", at(1700), at(1900)).values.tolist() == ["sampling"]
        assert store.latest(["F-101.temp"])["F-101.temp"].sample.value == 40.0

    check()
    before = snapshot(store)
    assert store.compact() == ["F-101:B-17"]
    info = store.archived_runs()["F-101:B-17"]
    assert (info.deltas, info.version) == (0, 2)
    check()
    assert_same(snapshot(store), before)
    # the files themselves hold the late samples now
    t = pq.read_table(
        samples_path(tmp_path / "archive", "F-101", "B-17"), filters=[("series", "=", "F-101.temp")]
    )
    at100 = t.filter(pa.compute.equal(t.column("ts").cast(pa.int64()), to_us(at(100))))
    assert at100.column("value").to_pylist() == [99.0]
    assert t.num_rows == HOURS * 3600 + 1
    assert store.compact() == []  # nothing left to fold


def test_a_late_sample_written_while_its_run_is_rewritten_is_not_lost(
    store: TieredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store)
    store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    store.write([Sample("F-101.temp", at(50), 1.0)])  # late: a delta
    real_commit = archive_mod.RunWriter.commit
    other = TieredStore(store.path, store.archive_dir)  # another opener (the store writer process)

    def commit_after_a_write(self: archive_mod.RunWriter) -> None:
        # The rewrite has read the delta (value 1.0); the same sample is written again before it finishes.
        other.write([Sample("F-101.temp", at(50), 2.0)])
        real_commit(self)

    monkeypatch.setattr(archive_mod.RunWriter, "commit", commit_after_a_write)
    store.compact()
    monkeypatch.setattr(archive_mod.RunWriter, "commit", real_commit)
    # The rewrite folded 1.0 but must not delete the newer delta: reads say 2.0, and so does the next fold.
    assert store.archived_runs()["F-101:B-17"].deltas == 1
    assert store.read("F-101.temp", at(50), at(51)).values.tolist() == [2.0]
    store.compact()
    assert store.archived_runs()["F-101:B-17"].deltas == 0
    assert store.read("F-101.temp", at(50), at(51)).values.tolist() == [2.0]
    other.close()


def test_an_interrupted_archiving_leaves_reads_right_and_is_finished_later(
    store: TieredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store)
    before = snapshot(store)

    def crash(self: archive_mod.RunWriter) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(archive_mod.RunWriter, "commit", crash)
    with pytest.raises(OSError):
        store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    monkeypatch.undo()
    info = store.archived_runs()["F-101:B-17"]
    assert info.start is None  # tracked, not archived: reads still come from SQLite
    store.write([Sample("F-101.temp", at(10), 5.0)])  # a late sample meanwhile
    expected = snapshot(store)
    assert expected != before
    assert store.compact() == ["F-101:B-17"]
    assert store.archived_runs()["F-101:B-17"].start == T0
    assert_same(snapshot(store), expected)
    assert not list((store.archive_dir / "samples").rglob("*.tmp"))


# -- retention -----------------------------------------------------------------------------------------
def test_pruning_deletes_raw_rows_but_no_answer_changes(tmp_path: Path) -> None:
    store = TieredStore(tmp_path / "ts.db", tmp_path / "archive", keep_raw_s=0)
    try:
        fill(store)
        store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
        store.write([Sample("F-101.temp", at(30), 7.0)])  # a late sample: kept in SQLite until folded
        before = snapshot(store)
        deleted = store.prune()
        assert deleted == sum(store.count(s) for s in SERIES) - 1
        rows = store._conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        assert rows == 1  # only the late sample
        assert store.archived_runs()["F-101:B-17"].pruned is not None
        assert_same(snapshot(store), before)  # latest included: it now comes from the archive
        assert store.latest(["F-101.batch"])["F-101.batch"].sample == Sample(
            "F-101.batch", at(HOURS * 3600 - 1), ""
        )
        assert store.latest(["F-101.temp"])["F-101.temp"].sample.server_ts == at(
            HOURS * 3600 - 1
        ) + timedelta(microseconds=1234)
        store.compact()
        assert store.prune() == 1  # the folded late sample goes too
        assert_same(snapshot(store), before)
    finally:
        store.close()


def test_raw_rows_stay_while_young(store: TieredStore) -> None:
    fill(store)
    store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    assert store.prune() == 0  # keep_raw_s is 7 days by default
    assert store._conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] > HOURS * 3600


def test_a_lost_samples_file_is_an_error_and_is_rebuilt_while_raw_rows_are_kept(store: TieredStore) -> None:
    fill(store)
    store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    before = snapshot(store)
    path = samples_path(store.archive_dir, "F-101", "B-17")
    path.unlink()
    with pytest.raises(StoreError, match="missing"):  # never a silently empty answer
        store.read("F-101.temp", T0, END)
    store.maintain()  # processing's housekeeping: rebuilt from the raw rows still in SQLite
    assert path.exists()
    assert_same(snapshot(store), before)
    # once the raw rows are gone, only a backup can help, and the error says so
    store.keep_raw_s = 0
    store.prune()
    path.unlink()
    with pytest.raises(StoreError, match="backup"):
        store.read("F-101.temp", T0, END)
    store.maintain()  # nothing to rebuild from: left alone
    assert not path.exists()


# -- runs archived again, runs that overlap ---------------------------------------------------------------
def test_a_resumed_run_is_archived_again_over_its_longer_span(store: TieredStore) -> None:
    fill(store)
    store.archive_run(run_of("B-17", 0, 3 * 3600), SERIES)
    first = store.archived_runs()["F-101:B-17"]
    assert (first.end, first.version) == (at(3 * 3600) + timedelta(microseconds=1), 1)
    expected = snapshot(store)
    store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    again = store.archived_runs()["F-101:B-17"]
    assert (again.start, again.end, again.version) == (
        T0,
        at(HOURS * 3600 - 1) + timedelta(microseconds=1),
        2,
    )
    assert again.rows == sum(store.count(s) for s in SERIES)
    assert_same(snapshot(store), expected)
    # a span never shrinks: archiving a shorter run of the same id keeps what is archived
    store.archive_run(run_of("B-17", 0, 60), SERIES)
    assert store.archived_runs()["F-101:B-17"].end == again.end


def test_a_run_overlapping_an_archived_run_stays_in_sqlite(store: TieredStore) -> None:
    fill(store)
    store.archive_run(run_of("B-17", 0, 3 * 3600), SERIES)
    expected = snapshot(store)
    result = store.archive_run(run_of("B-18", 2 * 3600, 5 * 3600), SERIES)
    assert result.skipped is not None and "F-101:B-17" in result.skipped
    assert set(store.archived_runs()) == {"F-101:B-17"}
    assert_same(snapshot(store), expected)
    # another equipment's run over the same hours is no overlap: its series are others
    store.write([Sample("R-201.flow", at(s), 1.0) for s in range(0, 7200, 60)])
    assert store.archive_run(run_of("B-17", 0, 7200, "R-201"), ["R-201.flow"]).skipped is None


# -- refusals --------------------------------------------------------------------------------------------
def test_an_open_run_is_not_archived(store: TieredStore) -> None:
    with pytest.raises(StoreError, match="open"):
        store.archive_run(Run("F-101:B-1", "F-101", "B-1", T0, None), SERIES)


def test_a_plain_sqlite_store_writing_into_an_archived_span_records_a_late_sample(
    store: TieredStore, tmp_path: Path
) -> None:
    # Any writer of the file (a tool, a test, an import's publish_stage) keeps the archive's late-sample
    # index: the plain SqliteStore's write shows in the tiered reads at once.
    fill(store)
    store.archive_run(run_of("B-17", 0, 3600), SERIES)
    plain = SqliteStore(tmp_path / "ts.db")
    try:
        plain.write([Sample("F-101.temp", at(10), 123.0)])
        plain.write_arrays("F-101.temp", np.array([to_us(at(20))], np.int64), np.array([-7.0]))
    finally:
        plain.close()
    assert store.archived_runs()["F-101:B-17"].deltas == 2
    assert store.read("F-101.temp", at(10), at(11)).values.tolist() == [123.0]
    assert store.read_buckets("F-101.temp", T0, at(60), 1).min.tolist() == [-7.0]


def test_a_read_only_store_reads_the_archive_and_cannot_change_it(store: TieredStore, tmp_path: Path) -> None:
    fill(store)
    store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    reader = TieredStore(tmp_path / "ts.db", tmp_path / "archive", read_only=True)
    try:
        assert_same(snapshot(reader), snapshot(store))
        with pytest.raises(StoreError, match="read-only"):
            reader.archive_run(run_of("B-17", 0, 10), SERIES)
    finally:
        reader.close()


# -- another process reads while this one rewrites ---------------------------------------------------------
READER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from storage.tiered import TieredStore
    store = TieredStore(sys.argv[1], sys.argv[2], read_only=True)
    print("ready", flush=True)
    t0, t1 = datetime(2024, 3, 1, 8, tzinfo=UTC), datetime(2024, 3, 1, 9, tzinfo=UTC)
    for line in sys.stdin:
        d = store.read("F-101.temp", datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        b = store.read_buckets("F-101.temp", t0, t1, 4)
        print(len(d), repr(float(d.values[100])), int(b.count.sum()), repr(float(b.max.max())), flush=True)
    """
)


def test_another_process_reads_the_same_answers_while_this_one_rewrites(store: TieredStore) -> None:
    # The late sample at 100 s (value 1000) moves from the deltas into the files and back again each round
    # (rewritten, folded); whatever moment the reader reads at, it sees it, never the old value or both.
    fill(store)
    store.archive_run(run_of("B-17", 0, HOURS * 3600 - 1), SERIES)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(store.path), str(store.archive_dir)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdin is not None and reader.stdout is not None
    try:
        assert reader.stdout.readline().strip() == "ready"
        store.write([Sample("F-101.temp", at(100), 1000.0)])
        hour = store.read_buckets("F-101.temp", T0, at(3600), 4)
        expected = f"{HOURS * 3600} 1000.0 {int(hour.count.sum())} 1000.0"
        answers = []
        for k in range(6):
            for _ in range(3):
                reader.stdin.write("read\n")
            reader.stdin.flush()
            if k % 2:
                store.write([Sample("F-101.temp", at(100), 1000.0)])  # again a delta
            else:
                store.compact()  # folded into the files
            answers += [reader.stdout.readline().strip() for _ in range(3)]
        assert answers == [expected] * 18
    finally:
        reader.stdin.close()
        reader.wait(timeout=60)
    assert reader.returncode == 0, reader.stderr.read() if reader.stderr else ""


def test_numeric_columns_come_from_their_buffers_as_to_numpy_gives_them() -> None:
    # storage.archive._numbers against pyarrow's to_numpy: several chunks, a sliced chunk (offset), an empty
    # chunk, null floats (NaN from the validity bitmap, also in a chunk sliced off a byte boundary), and
    # what it leaves to to_numpy (a null int, another type)
    floats = pa.chunked_array(
        [pa.array([1.5, 2.5, 3.5]).slice(1), pa.array([], pa.float64()), pa.array([4.0])]
    )
    ints = pa.chunked_array([pa.array(np.arange(10, dtype=np.int64)).slice(3, 4)])
    holes = [None if i % 3 == 0 or i == 10 else float(i) for i in range(20)]
    nulls = pa.chunked_array([pa.array(holes).slice(3, 14), pa.array([None, 2.0]), pa.array(holes)])
    for col in (
        floats,
        ints,
        nulls,
        pa.chunked_array([pa.array([1.0, None])]),
        pa.chunked_array([pa.array([1, None])]),
        pa.chunked_array([pa.array([1, 2], pa.int32())]),
    ):
        got, expected = archive_mod._numbers(col), col.to_numpy(zero_copy_only=False)
        assert got.dtype == expected.dtype and np.array_equal(got, expected, equal_nan=True)
    assert archive_mod._numbers(floats).tolist() == [2.5, 3.5, 4.0]
    assert archive_mod._numbers(ints).tolist() == [3, 4, 5, 6]
    assert np.isnan(archive_mod._numbers(nulls)[[0, 3, 6, 7, 14, 16]]).all()  # holes 3, 6, 9, 10; None; None
    assert archive_mod._numbers(nulls)[[1, 2, 15]].tolist() == [4.0, 5.0, 2.0]


def test_reading_an_archived_run_does_not_import_pandas(store: TieredStore, tmp_path: Path) -> None:
    # pyarrow's to_numpy imports pandas on first use (about 0.5 s per process: a `biopilot kpis` run pays it)
    written = fill(store)
    store.archive_run(run_of("B1", 0, HOURS * 3600 - 1), store.list_series())
    code = textwrap.dedent(f"""
        import sys
        from datetime import UTC, datetime
        from storage.tiered import TieredStore
        s = TieredStore({str(tmp_path / "ts.db")!r}, {str(tmp_path / "archive")!r})
        for name in {sorted(written)!r}:
            data = s.read(name, datetime.fromisoformat({T0.isoformat()!r}), datetime(2100, 1, 1, tzinfo=UTC))
            print(name, len(data.ts), data.values.dtype, int(sum(data.values != data.values)))
        print("pandas" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert out.returncode == 0, out.stderr
    *reads, pandas = out.stdout.splitlines()
    assert reads == [
        f"{name} {len(ts)} float64 {int(np.isnan(values).sum())}"
        for name, (ts, values, _) in sorted(written.items())
    ]
    assert np.isnan(written["F-101.temp"][1]).any()  # nulls in the file, NaN read back
    assert pandas == "False"
