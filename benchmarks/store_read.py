"""Reading a closed run through the store against a bare sqlite3 fetch of the same rows, in the same run.

A closed 7-day run of 50 tags sampled every second (30.24 M points: noisy float values, rounded to 4
decimals, 1 % bad status) is written once into a TieredStore (the embedded default: SQLite + the Parquet
archive of closed runs) with write_arrays and archived with archive_run; later runs reuse it (--dir).
Raw rows stay in SQLite (no pruning here), so the baseline reads the very same rows. After a warm-up read of
one series each way (not timed), twice in turn:
  bare   a bare sqlite3 fetch of every row of the 50 tags into numpy arrays (ts, value, status)
  store  TieredStore.read of the same 50 tags over the run: the archived span, from Parquet
and a downsampled read of the 50 tags in 1,000 buckets (an overlay): store.read_buckets (rollups) against
the SQL GROUP BY that SqliteStore runs on the same rows, and the same request made aligned to rollup edges
(storage.buckets.aligned). Target: store ≥ 20 M points/s and ≥ 10× bare.

    .venv/bin/python benchmarks/store_read.py [--days 7] [--tags 50] [--interval-s 1] [--dir DIR]

(--dir: default /tmp/bp-store-read; about 1.6 GB of SQLite and 0.3 GB of Parquet.)
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import bare_fetch  # noqa: E402
from biopilot.records import Run  # noqa: E402
from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, from_us, to_us  # noqa: E402
from storage.buckets import aligned  # noqa: E402
from storage.tiered import TieredStore  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def build(store: TieredStore, names: list[str], n: int, interval_us: int) -> Run:
    ts = to_us(T0) + np.arange(n, dtype=np.int64) * interval_us
    run = Run("F-1:BENCH", "F-1", "BENCH", T0, from_us(int(ts[-1])))
    have = store.archived_runs().get(run.id)
    if have is not None and have.covers(run) and have.rows == n * len(names):
        return run
    print(f"writing {len(names)} tags × {n:,} points = {len(names) * n:,} points (once) …", flush=True)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    for i, name in enumerate(names):
        values = np.round(20 + 5 * np.sin(np.arange(n) / (3600 + 97 * i)) + rng.normal(0, 0.05, n), 4)
        status = np.where(rng.random(n) < 0.01, BAD_SENSOR_FAILURE, GOOD).astype(np.int64)
        store.write_arrays(name, ts, values, status)
    print(f"  write_arrays: {time.perf_counter() - t:.0f} s", flush=True)
    result = store.archive_run(run, names)
    print(f"  archive_run:  {result.seconds:.0f} s ({result.rows:,} samples)", flush=True)
    return run


def sql_buckets(db: Path, names: list[str], t0: int, t1: int, n: int) -> tuple[int, float]:
    """SqliteStore.read_buckets' query, run on the raw rows (the baseline of downsampled reads)."""
    width = max((t1 - t0 + n - 1) // n, 1)
    conn = sqlite3.connect(db)
    try:
        t = time.perf_counter()
        buckets = 0
        for name in names:
            rows = conn.execute(
                "SELECT (ts_us - ?) / ? AS b, MIN(ts_us), MAX(ts_us), MIN(value), MAX(value), AVG(value),"
                " COUNT(*) FROM samples WHERE series_id = (SELECT id FROM series WHERE name = ?)"
                " AND ts_us >= ? AND ts_us < ? AND status < 2147483648 AND value IS NOT NULL"
                " GROUP BY b ORDER BY b",
                (t0, width, name, t0, t1),
            ).fetchall()
            buckets += len(rows)
        return buckets, time.perf_counter() - t
    finally:
        conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--tags", type=int, default=50)
    p.add_argument("--interval-s", type=float, default=1.0)
    p.add_argument("--dir", type=Path, default=Path("/tmp/bp-store-read"))
    args = p.parse_args()
    n = int(args.days * 86400 / args.interval_s)
    names = [f"F-1.tag_{i:02d}" for i in range(args.tags)]
    db = args.dir / "bench.db"
    store = TieredStore(db, args.dir / "archive", keep_raw_s=None)
    run = build(store, names, n, int(args.interval_s * 1e6))
    assert run.end is not None
    stop = run.end + timedelta(microseconds=1)
    t0_us, t1_us = to_us(run.start), to_us(stop)

    # warm-up, not timed: one series each way (imports pyarrow pulls in on first use, file metadata cached)
    bare_fetch(db, names[:1], t0_us, t1_us)
    store.read(names[0], run.start, stop)
    rounds = []
    for _ in range(2):
        bare_points, bare_s = bare_fetch(db, names, t0_us, t1_us)
        t = time.perf_counter()
        points = sum(len(store.read(name, run.start, stop)) for name in names)
        store_s = time.perf_counter() - t
        assert points == bare_points == n * len(names), (points, bare_points)
        rounds.append((bare_s, store_s))
    sql_n, sql_s = sql_buckets(db, names, t0_us, t1_us, 1000)
    t = time.perf_counter()
    got = sum(len(store.read_buckets(name, run.start, stop, 1000)) for name in names)
    buckets_s = time.perf_counter() - t
    assert got == sql_n, (got, sql_n)
    a, b, m = aligned(t0_us, t1_us, 1000)  # the same request with its edges on rollup edges
    t = time.perf_counter()
    aligned_n = sum(len(store.read_buckets(name, from_us(a), from_us(b), m)) for name in names)
    aligned_s = time.perf_counter() - t
    store.close()

    total = n * len(names)
    print(
        f"closed run: {args.tags} tags × {n:,} points = {total:,} points,"
        f" {args.days:g} days at {args.interval_s:g} s"
    )
    for i, (bare_s, store_s) in enumerate(rounds, 1):
        print(
            f"round {i}: bare sqlite3 fetch {bare_s:6.2f} s = {total / bare_s / 1e6:5.2f} M points/s;"
            f"  store.read {store_s:6.2f} s = {total / store_s / 1e6:5.2f} M points/s;"
            f"  ratio {bare_s / store_s:5.1f}×"
        )
    bare_s, store_s = min(r[0] for r in rounds), min(r[1] for r in rounds)
    rate, ratio = total / store_s / 1e6, bare_s / store_s
    print(
        f"best of 2: store.read {rate:.1f} M points/s (target ≥ 20: {'met' if rate >= 20 else 'NOT met'}),"
        f" {ratio:.1f}× the bare fetch (target ≥ 10: {'met' if ratio >= 10 else 'NOT met'})"
    )
    print(
        f"read_buckets, {args.tags} tags × 1,000 buckets over the run:"
        f" SQL GROUP BY on the rows {sql_s:.2f} s;"
        f" store (rollups + raw at the edges) {buckets_s:.2f} s ({sql_s / buckets_s:.0f}×);"
        f" made aligned (storage.buckets.aligned: {m} buckets of {(b - a) // m / 1e6:g} s, rollups only)"
        f" {aligned_s:.2f} s ({aligned_n:,} buckets)"
    )


if __name__ == "__main__":
    main()
