"""Run review page load in headless Chromium against the store's downsampled reads alone, and the Live refresh.

A site of one fermenter F-1 with 20 numeric tags is written once into the embedded store (TieredStore: SQLite
+ the Parquet archive of closed runs) with write_arrays: 10 closed baseline runs and the reviewed closed run,
each `--days` long at `--interval-s` (default 7 d at 1 s: 604,800 points per tag and run, 133 M points in
all), each archived as processing archives a closed run (raw rows pruned: reads come from Parquet + rollups);
plus an open live run of `--live-hours` (raw rows in SQLite). The golden-batch envelopes are built from the
10 baseline runs (processing.baseline) and stored; the reviewed run's alarms are evaluated against them
(processing.live_alarms) and stored. The site is reused by later runs with the same --dir.

Then `biopilot dashboard` is started on it (as the browser tests do) and, in the same run:
  reads    the store's downsampled reads alone: read_buckets of the shown tags of the 11 runs (what the page
           asks the store for), in this process
  data     the page's data (PageData.review: the reads, alignment, envelopes, phases, lab results)
  review   Chromium: open /review?run=… until every chart trace is drawn (the 10 baseline runs overlaid);
           the first load (a fresh server session: Streamlit imports plotly) and the median of the next ones
  live     Chromium: the Live page until the trend with its envelope is drawn; refresh: from the fragment's
           rerun request on the websocket to plotly's next afterplot (median over several refreshes)
Targets: review ≤ 3 s, live refresh ≤ 2 s.

    .venv/bin/python benchmarks/page_load.py [--days 7] [--tags 20] [--interval-s 1] [--baseline 10]
        [--live-hours 24] [--dir DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biopilot.config import SiteConfig, load_config  # noqa: E402
from biopilot.records import LabResult, Phase, Run, RunKind  # noqa: E402
from biopilot.samples import to_us  # noqa: E402
from storage.catalog import Catalog  # noqa: E402
from storage.tiered import TieredStore  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=UTC)
PRODUCT = "P1"
EQUIPMENT = "F-1"
REVIEWED = f"{EQUIPMENT}:REVIEW-1"
LIVE = f"{EQUIPMENT}:LIVE-1"
# the ten signals compared with the baseline by default (processing.baseline.DEFAULT_ROLES), then extras
ROLE_TAGS = [
    ("temperature", "temperature", "degC"),
    ("ph", "ph", "pH"),
    ("dissolved_oxygen", "dissolved_oxygen", "%"),
    ("agitation_speed", "agitation_speed", "rpm"),
    ("air_flow", "air_flow", "NL/min"),
    ("feed_rate", "feed_rate", "L/h"),
    ("base_flow", "base_flow", "L/h"),
    ("volume", "volume", "L"),
    ("offgas_o2", "offgas_o2", "%"),
    ("offgas_co2", "offgas_co2", "%"),
]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def site_toml(n_tags: int) -> str:
    lines = [
        '[site]\nname = "page-load bench"\ntimezone = "UTC"',
        '[opcua.servers.p]\nendpoint = "opc.tcp://127.0.0.1:4840/"',
        f'[[equipment]]\nid = "{EQUIPMENT}"\nkind = "fermenter"',
    ]
    extra = [(f"power_{i}", "power", "kW") for i in range(5)] + [
        (f"jacket_temp_{i}", "temperature", "degC") for i in range(max(n_tags - len(ROLE_TAGS) - 5, 0))
    ]
    tags = (ROLE_TAGS + extra)[:n_tags]
    for i, (name, role, unit) in enumerate(tags):
        lines.append(
            f'[[tags]]\nname = "{EQUIPMENT}.{name}"\nequipment = "{EQUIPMENT}"\nrole = "{role}"\n'
            f'unit = "{unit}"\nsource = {{ protocol = "opcua", server = "p", node_id = "ns=2;i={i}" }}'
        )
    return "\n\n".join(lines) + "\n"


def signal_of(name: str, frac: np.ndarray, rng: np.random.Generator, scale: float, dip: bool) -> np.ndarray:
    """A fed-batch-like shape over the batch fraction, run-to-run variation `scale`, noise; `dip`: a DO dip
    in the middle of the batch (the reviewed run's deviation)."""
    g = np.clip(frac, 0, 1)
    base = {
        "temperature": 30 + 0.2 * scale + 0 * g,
        "ph": 6.8 + 0.02 * scale - 0.1 * g,
        "dissolved_oxygen": 90 - 55 * np.sqrt(g) + 2 * scale,
        "agitation_speed": 400 + 600 * g + 10 * scale,
        "air_flow": 500 + 400 * g + 5 * scale,
        "feed_rate": np.where(g > 0.15, 2 + 5 * g + 0.1 * scale, 0.0),
        "base_flow": 0.2 + 0.5 * g + 0.02 * scale,
        "volume": 600 + 350 * g + 3 * scale,
        "offgas_o2": 20.9 - 2.5 * g - 0.05 * scale,
        "offgas_co2": 0.04 + 2.5 * g + 0.05 * scale,
    }
    key = name.split(".", 1)[1]
    role = next((r for n, r, _ in ROLE_TAGS if n == key), None)
    y = base.get(role or "", 3 + 2 * g + 0.1 * scale) * np.ones(len(g))
    if dip and role == "dissolved_oxygen":
        y = y - 25 * np.exp(-(((g - 0.5) / 0.03) ** 2))
    return np.round(y + rng.normal(0, 0.05, len(g)), 4)


def _phases(start: datetime, end: datetime, rng: np.random.Generator) -> list[Phase]:
    length_h = (end - start).total_seconds() / 3600
    inoc = start + timedelta(hours=length_h * (0.02 + 0.01 * rng.random()))
    feed = start + timedelta(hours=length_h * (0.15 + 0.03 * rng.random()))
    harvest = start + timedelta(hours=length_h * (0.93 + 0.02 * rng.random()))
    return [Phase("batch", inoc, feed), Phase("fed_batch", feed, harvest), Phase("harvest", harvest, end)]


@dataclass(frozen=True)
class Site:
    dir: Path
    config_path: Path
    config: SiteConfig
    reviewed: str
    live: str
    baseline: list[str]


def build(
    work: Path,
    *,
    days: float,
    n_tags: int,
    interval_s: float,
    n_baseline: int,
    live_hours: float,
    quiet: bool = False,
) -> Site:
    """Write the site (once per --dir and sizes; see the module doc)."""
    work.mkdir(parents=True, exist_ok=True)
    config_path = work / "site.toml"
    marker = work / f"built-{days}-{n_tags}-{interval_s}-{n_baseline}-{live_hours}"
    config_path.write_text(site_toml(n_tags))
    config = load_config(config_path)
    baseline_ids = [f"{EQUIPMENT}:BL-{i + 1:02d}" for i in range(n_baseline)]
    site = Site(work, config_path, config, REVIEWED, LIVE, baseline_ids)
    if marker.exists():
        return site
    from processing.baseline import build_references
    from processing.live_alarms import evaluate_run, load_references
    from storage.alarms import Alarms
    from storage.references import References

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    for f in work.glob("biopilot.db*"):
        f.unlink()
    db = work / "biopilot.db"
    store = TieredStore(db, work / "archive", keep_raw_s=0)  # raw rows pruned once archived
    catalog = Catalog(db)
    names = [t.name for t in config.tags]
    n = int(days * 86400 / interval_s)
    step_us = int(interval_s * 1e6)
    rng = np.random.default_rng(7)
    say(f"writing {n_baseline + 1} runs × {len(names)} tags × {n:,} points = {(n_baseline + 1) * len(names) * n:,} …")
    t_all = time.perf_counter()
    runs: list[Run] = []
    for i, run_id in enumerate([*baseline_ids, REVIEWED]):
        start = T0 + timedelta(days=i * (days + 0.5))
        end = start + timedelta(microseconds=(n - 1) * step_us)
        kind = RunKind.BASELINE.value if run_id != REVIEWED else RunKind.OTHER.value
        run = catalog.create_run(EQUIPMENT, run_id.split(":")[1], start, end, kind=kind, product=PRODUCT)
        phases = _phases(start, end, rng)
        catalog.set_phases(run.id, phases)
        ts = to_us(start) + np.arange(n, dtype=np.int64) * step_us
        inoc, harvest = to_us(phases[0].start), to_us(phases[2].start)
        frac = (ts - inoc) / max(harvest - inoc, 1)
        scale = float(rng.normal())
        for name in names:
            store.write_arrays(name, ts, signal_of(name, frac, rng, scale, dip=run_id == REVIEWED))
        store.archive_run(run, names)
        store.prune()
        catalog.add_lab_results(
            [
                LabResult(EQUIPMENT, start + timedelta(hours=h * days * 24), "titer", 8.0 * h + 0.2 * scale, "g/L")
                for h in (0.1, 0.3, 0.5, 0.7, 0.9)
            ]
        )
        runs.append(run)
        say(f"  {run_id}: written and archived ({time.perf_counter() - t_all:.0f} s so far)")
    # the live run: open, raw rows in SQLite
    live_start = T0 + timedelta(days=(n_baseline + 1) * (days + 0.5))
    m = int(live_hours * 3600 / interval_s)
    live = catalog.open_run(EQUIPMENT, "LIVE-1", live_start)
    live = catalog.update_run(live.id, product=PRODUCT)
    full_end = live_start + timedelta(days=days)
    phases = [p for p in _phases(live_start, full_end, rng) if p.start <= live_start + timedelta(hours=live_hours)]
    phases[-1] = Phase(phases[-1].name, phases[-1].start, None)
    catalog.set_phases(live.id, phases)
    ts = to_us(live_start) + np.arange(m, dtype=np.int64) * step_us
    frac = (ts - to_us(phases[0].start)) / (0.93 * days * 86400e6)
    for name in names:
        store.write_arrays(name, ts, signal_of(name, frac, rng, 0.0, dip=False))
    say(f"  {LIVE}: {live_hours:g} h live ({time.perf_counter() - t_all:.0f} s so far)")
    built = build_references(
        config, store.read_buckets, catalog.phases, equipment=EQUIPMENT, runs=runs[:-1]
    )
    built.save(References(catalog.db), "page_load benchmark")
    refs = load_references(References(catalog.db), EQUIPMENT, PRODUCT)
    assert refs is not None
    reviewed = runs[-1]
    observed = evaluate_run(reviewed, catalog.phases(reviewed.id), store.read_buckets, refs)
    Alarms(catalog.db).apply(inserts=observed, now=datetime.now(UTC))
    say(f"  references: {len(built.envelopes)} envelopes; {len(observed)} alarms of {REVIEWED}")
    store.close()
    catalog.close()
    marker.write_text("ok")
    return site
