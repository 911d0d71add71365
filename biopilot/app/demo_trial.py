"""The demo's trial T-ACME-1 with a real verdict on first start: a finished campaign of the simulated
high-yield strain (config/scenarios/trial-yield.toml: +6 % product per g glucose), simulated in historical
mode (fast, no network), its KPIs computed by the processing service's engine, judged by a locked charter
(config/trials/demo-charter.toml).

The campaign — 5 baseline runs of the host process, then 3 trial runs of acme's strain on F-101 — ends
before the plant history the demo's simulator writes (config/demo.toml [simulator] history_h), so the two
never overlap. It is computed in a scratch store and catalog (the processing service's cursors of the demo's
own store stay where they are), then copied: the runs (origin "import", baseline runs of kind "baseline",
the trial runs in the trial), their phases and KPIs into the demo's catalog, their samples into the demo's
store — the samples only once the simulator has begun writing its history, because a simulator that finds
data of its tags in the store writes no history (simulators/plant.py).

The campaign's runs are of product "enzyme-X" (the charter's), not the live batches' "demo enzyme": the
golden-batch references the processing service builds from the demo's own baseline batches stay as they
are.

The charter is locked at the campaign's first run start minus a day (`locked_at`): the demo's past is
simulated, and a lock dated at the seeding would make the verdict say — truthfully — that the charter was
changed after the first trial run started. The audit log records the seeding under the actor "demo".
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from biopilot.charter import Charter, parse_charter
from biopilot.config import SiteConfig, read_text
from biopilot.errors import BioPilotError
from biopilot.samples import utcnow

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "config" / "scenarios" / "trial-yield.toml"
CHARTER = REPO / "config" / "trials" / "demo-charter.toml"
EQUIPMENT = "F-101"
BASELINE_RUNS = 5
TRIAL_RUNS = 3
GAP = timedelta(days=2)  # between the campaign's last run and the start of the demo's plant history


@dataclass(frozen=True)
class Seeded:
    trial_id: str
    baseline: list[str]
    trial: list[str]
    seconds: float


def _scenario(start: datetime) -> Any:
    from simulators.scenario import Scenario, load_scenario

    base = load_scenario(SCENARIO)
    doc = base.model_dump()
    doc["scenario"] = {**doc["scenario"], "start": start, "model_step_s": 30.0, "sample_interval_s": 300.0}
    counts = {"baseline": BASELINE_RUNS, "trial": TRIAL_RUNS}
    doc["campaigns"] = [{**c, "runs": counts.get(c["name"], c["runs"])} for c in doc["campaigns"]]
    return Scenario.model_validate(doc)


def simulate_campaign(config: SiteConfig, history_start: datetime, scratch: Path) -> tuple[Any, Any]:
    """The campaign in a scratch store and catalog, KPIs computed: (history, scratch db path). The campaign
    is placed so that it ends at least GAP before history_start."""
    from processing.service import Processing
    from simulators import historical
    from simulators.engine import UnitSpec
    from simulators.wiring import tag_map
    from storage.catalog import Catalog
    from storage.sqlite import SqliteStore

    runs = BASELINE_RUNS + TRIAL_RUNS
    # a first guess of the campaign's length (the trial-yield batches take about two days each), then
    # placed again from the simulated length if the guess was short
    guess = timedelta(days=3 * runs)
    sc = _scenario(history_start - GAP - guess)
    history = historical.generate(sc, [UnitSpec(EQUIPMENT, "fermenter")], runs=runs)
    if history.end > history_start - GAP:
        raise BioPilotError(f"the demo trial's campaign ends {history.end}, after the plant history starts")
    db = scratch / "campaign.db"
    store, catalog = SqliteStore(db), Catalog(db)
    try:
        historical.write_store(history, store, tag_map(config), transforms=config.transforms())
        Processing(config, store, catalog).process_once(archive=False)
    finally:
        catalog.close()
        store.close()
    return history, db


def seed_demo_trial(
    config: SiteConfig,
    catalog: Any,
    store: Any,
    trial_id: str,
    history_start: datetime,
    *,
    wait_for_history: Any = None,
) -> Seeded:
    """Simulate, copy and judge the demo trial (module docstring). `wait_for_history()`: returns once the
    simulator has begun writing its history into `store` (None: do not wait)."""
    from storage.catalog import Catalog
    from storage.sqlite import SqliteStore

    t0 = time.perf_counter()
    template = read_text(CHARTER)
    with tempfile.TemporaryDirectory(prefix="biopilot-demo-trial-") as tmp:
        _, db = simulate_campaign(config, history_start, Path(tmp))
        src_catalog, src_store = Catalog(db), SqliteStore(db, read_only=True)
        try:
            runs = sorted(src_catalog.runs(EQUIPMENT), key=lambda r: r.start)
            if len(runs) != BASELINE_RUNS + TRIAL_RUNS or any(r.is_open for r in runs):
                raise BioPilotError(
                    f"the demo trial's campaign made {len(runs)} runs "
                    f"({sum(r.is_open for r in runs)} open), expected {BASELINE_RUNS + TRIAL_RUNS} closed"
                )
            baseline, trial = runs[:BASELINE_RUNS], runs[BASELINE_RUNS:]
            product = _charter(template, ["x:a", "x:b"], []).product
            for group, kind in ((baseline, "baseline"), (trial, "other")):
                for r in group:
                    catalog.create_run(
                        r.equipment,
                        r.batch_id,
                        r.start,
                        r.end,
                        kind=kind,
                        product=product,
                        origin="import",
                        note="demo: simulated trial campaign (config/scenarios/trial-yield.toml)",
                    )
                    catalog.set_phases(r.id, src_catalog.phases(r.id))
                    catalog.set_kpis(r.id, src_catalog.kpis(r.id))
            if wait_for_history is not None:
                wait_for_history()
            series = src_store.list_series() if hasattr(src_store, "list_series") else []
            for name in series:
                data = src_store.read(
                    name, runs[0].start - timedelta(hours=1), runs[-1].end + timedelta(hours=1)
                )
                if len(data):
                    store.write_arrays(name, data.ts, data.values, data.status)
        finally:
            src_catalog.close()
            src_store.close()
    charter = _charter(template, [r.id for r in baseline], [r.id for r in trial])
    locked_at = runs[0].start - timedelta(days=1)
    catalog.set_charter_draft(trial_id, charter, by="demo")
    record = catalog.lock_charter(trial_id, by="demo", at=locked_at)
    catalog.audit.append(
        "demo",
        "trial.charter.lock",
        trial_id,
        why="demo trial: a simulated campaign of the past, locked before its first trial run",
        version=record.version,
        sha256=record.sha256,
        locked_at=locked_at.isoformat(),
        baseline_runs=[r.id for r in baseline],
        trial_runs=[r.id for r in trial],
    )
    return Seeded(trial_id, [r.id for r in baseline], [r.id for r in trial], time.perf_counter() - t0)


def _charter(template: str, baseline: list[str], trial: list[str]) -> Charter:
    """The demo charter with its runs: the ids go first in the TOML text (top-level keys before tables)."""
    from processing.kpis import KPI_UNITS

    head = f"baseline_runs = {json.dumps(baseline)}\ntrial_runs = {json.dumps(trial)}\n"
    return parse_charter(head + template, CHARTER, KPI_UNITS)


def history_start(config: SiteConfig, now: datetime | None = None) -> datetime:
    """Where the demo simulator's plant history begins (it ends at the simulator's start, about now)."""
    sim = config.simulator
    hours = sim.history_h if sim is not None else 0.0
    return (now or utcnow()) - timedelta(hours=hours)
