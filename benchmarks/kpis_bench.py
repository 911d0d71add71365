"""KPI time against read time on a large run from the embedded store.

A 7-day fed-batch of 50 tags sampled every second (about 30 M points) is written once into an SQLite store
(reused by later runs with the same --db); then, from the same store in the same process:
  read   every point of the run's 50 tags with store.read (the floor any KPI computation pays)
  inputs every point of the tags the KPIs need (the read part of the KPI time)
  kpis   compute_run_kpis on the run (reads its inputs and computes every KPI)
Target: kpis ≤ 2 × read.

    .venv/bin/python benchmarks/kpis_bench.py [--days 7] [--tags 50] [--interval-s 1] [--db FILE]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from biopilot.config import parse_config
from biopilot.records import LabResult, Phase
from biopilot.samples import Sample, from_us, to_us
from processing.kpis import compute_run_kpis
from storage.catalog import Catalog
from storage.sqlite import SqliteStore

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


class _Points(Sequence[Sample]):
    def __init__(self, name: str, ts: np.ndarray, values: np.ndarray) -> None:
        self.name, self.ts, self.values = name, ts, values

    def __len__(self) -> int:
        return len(self.ts)

    def __getitem__(self, i):  # type: ignore[no-untyped-def,override]
        raise TypeError

    def __iter__(self) -> Iterator[Sample]:
        name = self.name
        for t, v in zip(self.ts.tolist(), self.values.tolist(), strict=True):
            yield Sample(name, from_us(t), v)


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
    p.add_argument("--db", type=Path, default=Path("/tmp/bp-kpi-bench.db"))
    args = p.parse_args()
    config = parse_config(site_config(args.tags), "bench.toml")
    names = [t.name for t in config.tags]
    n = int(args.days * 86400 / args.interval_s)
    end = T0 + timedelta(days=args.days)
    store = SqliteStore(args.db)
    catalog = Catalog(args.db)
    if store.count(names[-1]) != n:
        print(f"writing {n:,} points × {len(names)} tags = {n * len(names):,} points to {args.db} (once) …")
        t = time.perf_counter()
        ts = to_us(T0) + (np.arange(n, dtype=np.int64) * int(args.interval_s * 1e6))
        h = (ts - ts[0]) / 3.6e9
        rng = np.random.default_rng(1)
        for name in names:
            values = signal(name, h, rng)
            for a in range(0, n, 500_000):
                store.write(_Points(name, ts[a : a + 500_000], values[a : a + 500_000]))
        print(f"  written in {time.perf_counter() - t:.0f} s")
    run = catalog.run("F-1:BENCH") or catalog.create_run(
        "F-1", "BENCH", T0, end - timedelta(seconds=args.interval_s)
    )
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

    t = time.perf_counter()
    points = sum(len(store.read(name, T0, stop)) for name in names)
    read_s = time.perf_counter() - t
    kpi_inputs = [f"F-1.{n_}" for n_, *_ in KPI_TAGS]
    t = time.perf_counter()
    input_points = sum(len(store.read(name, T0, stop)) for name in kpi_inputs)
    inputs_s = time.perf_counter() - t
    t = time.perf_counter()
    records = compute_run_kpis(config, run, run.end or end, store.read, phases=phases, lab=lab)
    kpi_s = time.perf_counter() - t
    print(f"read all {len(names)} tags:        {points:>12,} points in {read_s:6.2f} s  (baseline)")
    print(f"read the {len(kpi_inputs)} KPI input tags: {input_points:>12,} points in {inputs_s:6.2f} s")
    print(f"compute {len(records)} KPIs:           from {input_points:>8,} points in {kpi_s:6.2f} s")
    print(
        f"KPI time / read-all time = {kpi_s / read_s:.2f}  (target ≤ 2); "
        f"KPI time / input-read time = {kpi_s / inputs_s:.2f}"
    )
    catalog.close()
    store.close()


if __name__ == "__main__":
    main()
