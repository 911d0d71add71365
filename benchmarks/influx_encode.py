"""Line protocol for the InfluxDB store: BioPilot's encoder against influxdb-client's `Point`, same rows,
same run, and the bytes compared.

N rows of 50 series (float values, good status, µs timestamps) are formatted by
  point      influxdb-client: Point(...).tag(...).field(...).time(..., WritePrecision.US).to_line_protocol()
  biopilot   storage.lineprotocol.Encoder.encode (what InfluxStore.write_rows sends)
Prints rows/s of each, the ratio, and whether the lines are identical. This is the CPU cost on the store
writer's side only; the server's ingest rate needs a server (no InfluxDB runs on these machines).

    .venv/bin/python benchmarks/influx_encode.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influxdb_client import Point, WritePrecision

from storage.lineprotocol import Encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    rows = [
        (f"F-101.tag{i % 50}", 1_709_280_000_000_000 + i * 1000, 37.0 + i * 1e-3, 0, None)
        for i in range(args.rows)
    ]

    t0 = time.perf_counter()
    ours = Encoder().encode(rows).lines
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    theirs = [
        Point("biopilot")
        .tag("series", s)
        .field("status", st)
        .field("value", v)
        .time(ts, WritePrecision.US)
        .to_line_protocol()
        for s, ts, v, st, _ in rows
    ]
    t_point = time.perf_counter() - t0

    print(f"rows: {args.rows:,}")
    print(f"point     {args.rows / t_point:12,.0f} rows/s")
    print(f"biopilot  {args.rows / t_ours:12,.0f} rows/s   ({t_point / t_ours:.1f}x)")
    print(f"identical lines: {ours == theirs}")


if __name__ == "__main__":
    main()
