"""A small simulated site for the Energy & utilities, Yield waterfall and Data quality & collectors pages.

The demo config (F-101 fermenter, R-201 centrifuge downstream of it) and its scenario's first two baseline
batches, from the simulator's historical mode (samples every 5 min of plant time; ~0.5 s), then the
processing service's own pass (processing.service.Processing.process_once) computes every run's KPIs, so
the pages show what processing computed. Two faults are cut into the data before it is stored:
- F-101.temperature has no samples for GAP_H hours from GAP_AT_H after the first fill (a data gap);
- R-201.product_concentration has no samples during the second batch's centrifuge run, so that recovery
  step has no product out: its step is missing (processing flags missing_input), not 100 %.
The collectors' health (connections with reconnects, quarantined inputs, an outage, a spool backlog) is
written as a collector would publish it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from biopilot.config import load_config
from biopilot.samples import utcnow
from processing.service import Processing
from simulators import historical
from simulators.scenario import load_scenario
from simulators.wiring import tag_map, units_of
from storage import HealthStore, open_catalog, open_store

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "demo.toml"
GAP_TAG = "F-101.temperature"
GAP_AT_H = 10.0
GAP_H = 2.0
CUT_TAG = "R-201.product_concentration"
QUARANTINE = [("mqtt:plant", "unknown_topic")] * 3 + [("opcua:pilot", "wrong_type")]
RECONNECTS = {"opcua:pilot": 2, "mqtt:plant": 0}
SPOOL_BYTES = 1_500_000


@dataclass(frozen=True)
class OpsSite:
    data_dir: Path
    batches: list[str]  # fermenter run ids, oldest first
    recovery: dict[str, str]  # fermenter run id -> its centrifuge run id


def build(data_dir: Path) -> OpsSite:
    config = load_config(CONFIG)
    assert config.simulator is not None and config.simulator.scenario
    scenario = load_scenario((CONFIG.parent / config.simulator.scenario).resolve())
    history = historical.generate(scenario, units_of(config), runs=2)
    tags = tag_map(config)
    by_tag = {
        tags[(c.equipment, c.signal.name)]: c for c in history.columns if (c.equipment, c.signal.name) in tags
    }

    def cut(name: str, keep: np.ndarray) -> None:
        c = by_tag[name]
        c.t_h, c.values, c.status, c.ts_us = c.t_h[keep], c.values[keep], c.status[keep], c.ts_us[keep]

    temp = by_tag[GAP_TAG]
    cut(GAP_TAG, (temp.t_h < GAP_AT_H) | (temp.t_h >= GAP_AT_H + GAP_H))
    # the second batch's centrifuge run: R-201's batch id names it
    batch = by_tag["R-201.batch_id"]
    second = sorted({v for v in batch.values.tolist() if v})[1]
    t_second = batch.t_h[batch.values == second]
    conc = by_tag[CUT_TAG]
    cut(CUT_TAG, (conc.t_h < t_second.min() - 0.5) | (conc.t_h > t_second.max() + 0.5))

    store = open_store(config, data_dir)
    catalog = open_catalog(config, data_dir)
    try:
        historical.write_store(history, store, tags, transforms=config.transforms())
        Processing(config, store, catalog).process_once(archive=False)
        runs = catalog.runs()
        batches = sorted((r.id for r in runs if r.equipment == "F-101"), key=str)
        recovery = {r.upstream_id: r.id for r in runs if r.upstream_id is not None}
    finally:
        store.close()
        catalog.close()

    health = HealthStore(data_dir / config.storage.path)
    now = utcnow()
    docs = {
        name: {
            "kind": name.split(":")[0],
            "state": "connected",
            "reconnects": n,
            "last_heartbeat": now.isoformat(),
        }
        for name, n in RECONNECTS.items()
    }
    docs["sink"] = {"spool_depth_bytes": SPOOL_BYTES, "spool_fill": 0.015}
    quarantine = [
        (now.timestamp(), src, reason, f"test input {i}") for i, (src, reason) in enumerate(QUARANTINE)
    ]
    health.publish(now, docs, [], quarantine)
    health.open_gap("opcua:pilot", now - timedelta(minutes=10), None, "connection lost")
    health.close_gap("opcua:pilot", now - timedelta(minutes=9))
    health.close()
    return OpsSite(data_dir, batches, recovery)
