"""Historian import speed: a wide CSV export of a 10-day fed-batch at 1-minute sampling with 30 tag columns
(14,400 rows, 432,000 values) is written to a temporary directory, then imported with `biopilot import`,
and its KPIs printed with `biopilot kpis RUN --json`, each timed as a user runs it (a fresh process).
Baseline from the same run: the time to merely parse the CSV with pandas.

    .venv/bin/python benchmarks/import_bench.py [--days 10] [--columns 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROLES = [
    ("volume", "volume", "L"),
    ("feed", "feed_rate", "L/h"),
    ("air", "air_flow", "NL/min"),
    ("o2", "offgas_o2", "%"),
    ("co2", "offgas_co2", "%"),
    ("agitator", "power", "kW"),
    ("compressor", "power", "kW"),
    ("steam", "steam_flow", "kg/h"),
    ("water", "cooling_water_flow", "L/min"),
]


def config_text(columns: int) -> str:
    tags = ROLES + [(f"temp_{i}", "temperature", "degC") for i in range(columns - len(ROLES))]
    out = [
        '[site]\nname = "import bench"\ntimezone = "Europe/Copenhagen"',
        '[opcua.servers.p]\nendpoint = "opc.tcp://127.0.0.1:4840/"',
        '[[equipment]]\nid = "F-1"\nkind = "fermenter"',
    ]
    for i, (name, role, unit) in enumerate(tags):
        feed = "\nfeed = { concentration = 500.0 }" if role == "feed_rate" else ""
        out.append(
            f'[[tags]]\nname = "F-1.{name}"\nequipment = "F-1"\nrole = "{role}"\nunit = "{unit}"{feed}\n'
            f'source = {{ protocol = "opcua", server = "p", node_id = "ns=2;i={i}" }}'
        )
    return "\n\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=float, default=10.0)
    p.add_argument("--columns", type=int, default=30)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "site.toml").write_text(config_text(args.columns))
        n = int(args.days * 24 * 60)
        rng = np.random.default_rng(3)
        h = np.arange(n) / 60
        frame = pd.DataFrame(
            {"Timestamp": pd.date_range("2024-01-01", periods=n, freq="1min").strftime("%Y-%m-%d %H:%M:%S")}
        )
        names = [f"F-1.{r[0]}" for r in ROLES] + [f"F-1.temp_{i}" for i in range(args.columns - len(ROLES))]
        for name in names:
            frame[name] = np.round(10 + h / 24 + rng.normal(0, 0.1, n), 3)
        csv = d / "B-HIST-1.csv"
        frame.to_csv(csv, index=False)
        print(
            f"{csv.name}: {n:,} rows × {len(names)} tag columns = {n * len(names):,} values, "
            f"{csv.stat().st_size / 1e6:.1f} MB"
        )

        t = time.perf_counter()
        pd.read_csv(csv, dtype=str, keep_default_na=False)
        parse_s = time.perf_counter() - t
        common = ["--config", str(d / "site.toml"), "--data-dir", str(d / "data")]
        t = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "biopilot", "import", str(csv), "--equipment", "F-1", *common],
            capture_output=True,
            text=True,
            check=True,
        )
        import_s = time.perf_counter() - t
        print(r.stdout.strip())
        t = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "biopilot", "kpis", "F-1:B-HIST-1", "--json", *common],
            capture_output=True,
            text=True,
            check=True,
        )
        kpis_s = time.perf_counter() - t
        kpis = json.loads(r.stdout)["kpis"]
        print(f"pandas parse only (baseline):        {parse_s:6.2f} s")
        print(f"biopilot import (process, incl. KPIs): {import_s:6.2f} s")
        print(
            f"biopilot kpis RUN --json (process):  {kpis_s:6.2f} s, {len(kpis)} KPIs, e.g. "
            + ", ".join(
                f"{k['name']}={k['value']} {k['unit']}"
                for k in kpis
                if k["name"] in ("energy.total", "substrate_fed")
            )
        )


if __name__ == "__main__":
    main()
