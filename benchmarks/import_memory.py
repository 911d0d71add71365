"""Import memory: peak RSS and time of `biopilot import` for a large wide historian export, against a
baseline measured in the same run.

A wide CSV of about --mb megabytes (a UTC time column and --columns tag columns at full float precision,
one row every 10 s) is written to a temporary directory; then, each in a fresh process whose own peak RSS
is read from the kernel (os.wait4):
- baseline: a bare pass over the file with Python's csv module (every cell read, nothing kept);
- with --pandas-baseline also: pandas reading the whole file at once as text (what the importer did before
  it streamed; several GB for 200 MB);
- `biopilot import FILE --equipment F-1 --no-kpis` into an empty data directory.
It prints the file, each figure, and the samples the store holds afterwards (counted in the database).
The import's target is a peak RSS of at most 500 MB for a 200 MB file.

    .venv/bin/python benchmarks/import_memory.py [--mb 200] [--columns 40] [--pandas-baseline]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CSV_PASS = """
import csv, sys
n = 0
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    for row in csv.reader(f):
        n += len(row)
print(n)
"""

PANDAS_WHOLE = """
import sys
import pandas as pd
frame = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
print(frame.size)
"""


def config_text(columns: int) -> str:
    out = ['[site]\nname = "import memory bench"', '[[equipment]]\nid = "F-1"\nkind = "fermenter"']
    out += [
        f'[[tags]]\nname = "F-1.t{i}"\nequipment = "F-1"\nrole = "temperature"\nunit = "degC"'
        for i in range(columns)
    ]
    return "\n\n".join(out) + "\n"


def write_csv(path: Path, megabytes: float, columns: int) -> int:
    """Rows written; full-precision values (as historians export them: 15–17 significant digits)."""
    rng = np.random.default_rng(11)
    start = np.datetime64("2024-01-01T00:00:00", "s")
    target = megabytes * 1e6
    rows = 0
    with path.open("w") as f:
        f.write("timestamp," + ",".join(f"F-1.t{i}" for i in range(columns)) + "\n")
        while f.tell() < target:
            n = 5_000
            stamps = (start + (rows + np.arange(n)) * np.timedelta64(10, "s")).astype(str)
            values = (30 + rng.normal(0, 5, (n, columns))).astype(str)
            f.writelines(f"{t}Z,{','.join(v)}\n" for t, v in zip(stamps, values, strict=True))
            rows += n
    return rows


# Runs a command and reports its peak RSS as the kernel accounts it (wait4). It runs in a small process of
# its own: a child forked from this (large) benchmark process would be charged this process's RSS.
LAUNCH = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
print(f"PEAK {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}", file=sys.stderr)
"""


def measure(argv: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS [MB] of the command's process, exit code, stdout) of one command."""
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, *argv], capture_output=True, text=True, cwd=REPO, check=False
    )
    took = time.perf_counter() - t
    lines = done.stderr.strip().splitlines()
    _, peak_kb, rc = lines[-1].split()
    if int(rc) != 0:
        print(f"  {argv[2:4]} failed (rc {rc}): {' '.join(lines[:-1])[-500:]}")
    return took, int(peak_kb) / 1024, int(rc), done.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=200.0, help="size of the export (default 200 MB)")
    p.add_argument("--columns", type=int, default=40, help="tag columns (default 40)")
    p.add_argument("--pandas-baseline", action="store_true", help="also read it whole with pandas (GBs)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "site.toml").write_text(config_text(args.columns))
        csv_path = d / "B-BIG-1.csv"
        rows = write_csv(csv_path, args.mb, args.columns)
        values = rows * args.columns
        print(
            f"{csv_path.name}: {csv_path.stat().st_size / 1e6:.0f} MB, {rows:,} rows × {args.columns} tag"
            f" columns = {values:,} values"
        )
        py = sys.executable
        base_s, base_mb, _, _ = measure([py, "-c", CSV_PASS, str(csv_path)])
        print(
            f"baseline, csv module pass (reads every cell):      {base_s:7.1f} s  peak RSS {base_mb:7.0f} MB"
        )
        if args.pandas_baseline:
            pd_s, pd_mb, _, _ = measure([py, "-c", PANDAS_WHOLE, str(csv_path)])
            print(
                f"pandas read_csv of the whole file (as before):     {pd_s:7.1f} s  peak RSS {pd_mb:7.0f} MB"
            )
        data = d / "data"
        common = ["--config", str(d / "site.toml"), "--data-dir", str(data)]
        argv = [py, "-m", "biopilot", "import", str(csv_path), "--equipment", "F-1", "--no-kpis", *common]
        imp_s, imp_mb, rc, out = measure(argv)
        print(f"biopilot import (stream, stage, publish):          {imp_s:7.1f} s  peak RSS {imp_mb:7.0f} MB")
        if rc == 0:
            with sqlite3.connect(data / "biopilot.db") as conn:
                stored = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            print(f"  {out.splitlines()[0]}")
            print(
                f"  store holds {stored:,} samples ({'all' if stored == values else 'NOT all'} of the file's"
                f" values); {values / imp_s:,.0f} values/s; {imp_s / base_s:.1f}x the csv pass's time"
            )
            verdict = "within" if imp_mb <= 500 else "OVER"
            print(f"  peak RSS {imp_mb:.0f} MB: {verdict} the 500 MB target for a 200 MB file")


if __name__ == "__main__":
    main()
