"""KPI time against read time on a large closed run from the embedded store.

A 7-day fed-batch of 50 tags sampled every second (about 30 M points) is written once into the embedded
store (TieredStore: SQLite + the Parquet archive of closed runs) with write_arrays, and the closed run is
archived as processing archives it (reused by later runs with the same --dir); then, in the same process:
  bare   a bare sqlite3 fetch of the run's rows of the 50 tags into numpy (the baseline; raw rows are kept)
  read   every point of the run's 50 tags with store.read (from the archive)
  inputs every point of the tags the KPIs need (the read part of the KPI time)
  kpis   compute_run_kpis on the run (reads its inputs through the store and computes every KPI)
Targets: kpis ≤ 2 s, and ≤ 2 × read. The reads and the KPIs are timed --repeat times (default 5) and the
median is the figure (min–max beside it: the machine may be shared), with the median CPU time of the
process beside it (which the load of other processes does not stretch); the first KPI computation in the
process is printed apart (it also pays first use: imports, fresh memory, the archive's footers).

    .venv/bin/python benchmarks/kpis_bench.py [--days 7] [--tags 50] [--interval-s 1] [--repeat 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import bare_fetch  # noqa: E402
from biopilot.config import parse_config  # noqa: E402
from biopilot.records import LabResult, Phase  # noqa: E402
from biopilot.samples import to_us  # noqa: E402
from processing.kpis import compute_run_kpis  # noqa: E402
from storage.catalog import Catalog  # noqa: E402
from storage.tiered import TieredStore  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=UTC)
KPI_TAGS = [  # (name suffix, role, unit, extra)
    ("volume", "volume", "L", ""),
    ("feed", "feed_rate", "L/h", "feed = { concentration = 500.0 }"),
    ("air", "air_flow", "NL/min", ""),
    ("o2", "offgas_o2", "%", ""),
    ("co2", "offgas_co2", "%", ""),
    ("steam", "steam_flow", "kg/h", ""),
    ("water", "cooling_water_flow", "L/min", ""),
] + [(f"power_{i}", "power", "kW", "") for i in range(8)]


def site_config(n_tags: int) -> str:
    lines = [
        '[site]\nname = "bench"\n[opcua.servers.p]\nendpoint = "opc.tcp://127.0.0.1:4840/"',
        '[[equipment]]\nid = "F-1"\nkind = "fermenter"',
    ]
    tags = list(KPI_TAGS) + [(f"temp_{i}", "temperature", "degC", "") for i in range(n_tags - len(KPI_TAGS))]
    for i, (name, role, unit, extra) in enumerate(tags):
        lines.append(
            f'[[tags]]\nname = "F-1.{name}"\nequipment = "F-1"\nrole = "{role}"\nunit = "{unit}"\n{extra}\n'
            f'source = {{ protocol = "opcua", server = "p", node_id = "ns=2;i={i}" }}'
        )
    return "\n".join(lines)


def signal(name: str, h: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    growth = np.clip(h / h[-1], 0, 1)
    base = {
        "volume": 600 + 300 * growth,
        "feed": 2 + 4 * growth,
        "air": np.full(len(h), 800.0),
        "o2": 20.95 - 2 * growth,
        "co2": 0.04 + 2 * growth,
        "steam": np.full(len(h), 5.0),
        "water": np.full(len(h), 20.0),
    }.get(name.split(".", 1)[1], np.full(len(h), 3.0))
    return np.round(base + rng.normal(0, 0.01, len(h)), 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--tags", type=int, default=50)
    p.add_argument("--interval-s", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions of the reads and the KPIs")
    p.add_argument("--dir", type=Path, default=Path("/tmp/bp-kpi-bench"))
    args = p.parse_args()
    config = parse_config(site_config(args.tags), "bench.toml")
    names = [t.name for t in config.tags]
    n = int(args.days * 86400 / args.interval_s)
    end = T0 + timedelta(days=args.days)
    db = args.dir / "bench.db"
    store = TieredStore(db, args.dir / "archive", keep_raw_s=None)  # raw rows kept for the baseline
    catalog = Catalog(db)
    if store.count(names[-1]) != n:
        print(f"writing {n:,} points × {len(names)} tags = {n * len(names):,} points to {db} (once) …")
        t = time.perf_counter()
        ts = to_us(T0) + (np.arange(n, dtype=np.int64) * int(args.interval_s * 1e6))
        h = (ts - ts[0]) / 3.6e9
        rng = np.random.default_rng(1)
        for name in names:
            store.write_arrays(name, ts, signal(name, h, rng))
        print(f"  written in {time.perf_counter() - t:.0f} s")
    run = catalog.run("F-1:BENCH") or catalog.create_run(
        "F-1", "BENCH", T0, end - timedelta(seconds=args.interval_s)
    )
    archived = store.archived_runs().get(run.id)
    if archived is None or not archived.covers(run):
        result = store.archive_run(run, names)  # as processing does when a run closes
        print(f"  archived in {result.seconds:.0f} s")
    phases = [
        Phase("batch", T0 + timedelta(hours=2), T0 + timedelta(hours=12)),
        Phase("fed_batch", T0 + timedelta(hours=12), end - timedelta(hours=4)),
        Phase("harvest", end - timedelta(hours=4), end),
    ]
    lab = [
        LabResult("F-1", T0 + timedelta(hours=hh), a, v, "g/L")
        for hh, a, v in [
            (2, "titer", 0.0),
            (2, "glucose", 20.0),
            (2, "biomass", 0.5),
            (args.days * 24 - 4, "titer", 8.0),
            (args.days * 24 - 4, "biomass", 60.0),
        ]
    ]
    stop = end + timedelta(seconds=1)

    store.read(names[0], T0, stop)  # warm-up, not timed (what pyarrow imports on first use)
    bare_points, bare_s = bare_fetch(db, names, to_us(T0), to_us(stop))
    kpi_inputs = [f"F-1.{n_}" for n_, *_ in KPI_TAGS]
    bare_input_points, bare_inputs_s = bare_fetch(db, kpi_inputs, to_us(T0), to_us(stop))
    t = time.perf_counter()
    records = compute_run_kpis(config, run, run.end or end, store.read, phases=phases, lab=lab)
    first_s = time.perf_counter() - t  # includes first use: imports (pint, …), fresh memory
    reads, input_reads, kpi_runs, read_cpu, kpi_cpu = [], [], [], [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        points = sum(len(store.read(name, T0, stop)) for name in names)
        reads.append(time.perf_counter() - t)
        read_cpu.append(time.process_time() - c)
        assert points == bare_points
        t = time.perf_counter()
        input_points = sum(len(store.read(name, T0, stop)) for name in kpi_inputs)
        input_reads.append(time.perf_counter() - t)
        t, c = time.perf_counter(), time.process_time()
        again = compute_run_kpis(config, run, run.end or end, store.read, phases=phases, lab=lab)
        kpi_runs.append(time.perf_counter() - t)
        kpi_cpu.append(time.process_time() - c)
        assert [(r.name, r.value, r.flags) for r in again] == [(r.name, r.value, r.flags) for r in records]
    read_s, inputs_s, kpi_s = (statistics.median(x) for x in (reads, input_reads, kpi_runs))

    def spread(x: list[float]) -> str:
        return f"(median of {len(x)}: {min(x):.2f}–{max(x):.2f} s)"

    def cpu(x: list[float]) -> str:  # the process's CPU time (all its threads): what load on the machine
        return f"CPU {statistics.median(x):.2f} s"  # does not stretch, unlike the wall-clock time

    print(
        f"bare sqlite3 fetch, all {len(names)} tags: {bare_points:>12,} points in {bare_s:6.2f} s"
        f"  (baseline, {bare_points / bare_s / 1e6:.1f} M points/s)"
    )
    print(
        f"bare sqlite3 fetch, {len(kpi_inputs)} KPI inputs: {bare_input_points:>12,} points in"
        f" {bare_inputs_s:6.2f} s"
    )
    print(
        f"store.read all {len(names)} tags:          {points:>12,} points in {read_s:6.2f} s"
        f"  ({points / read_s / 1e6:.1f} M points/s, {bare_s / read_s:.1f}× the bare fetch)"
        f" {spread(reads)}, {cpu(read_cpu)}"
    )
    print(
        f"store.read the {len(kpi_inputs)} KPI inputs:   {input_points:>12,} points in {inputs_s:6.2f} s"
        f"  {spread(input_reads)}"
    )
    print(
        f"compute {len(records)} KPIs:                  from {input_points:>8,} points in {kpi_s:6.2f} s"
        f"  {spread(kpi_runs)}, {cpu(kpi_cpu)}; the first time in the process: {first_s:.2f} s"
    )
    print(
        f"KPI time {kpi_s:.2f} s (target ≤ 2 s: {'met' if kpi_s <= 2 else 'NOT met'});"
        f" KPI time / bare fetch of its inputs = {kpi_s / bare_inputs_s:.2f};"
        f" KPI time / store read-all time = {kpi_s / read_s:.2f} (target ≤ 2;"
        f" in CPU time {statistics.median(kpi_cpu) / statistics.median(read_cpu):.2f})"
    )
    catalog.close()
    store.close()


if __name__ == "__main__":
    main()
