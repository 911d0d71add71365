"""The demo's trial (biopilot/app/demo_trial.py): a simulated trial-yield campaign in historical mode, its
KPIs computed by the processing engine, copied into a data directory and judged by the locked demo charter —
the verdict the Trials page shows on the demo's first start. The campaign's seed is the scenario's, so the
runs and the verdict are the same every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from biopilot.app.commands.demo import DEMO_PRODUCT, DEMO_TRIAL, _seed_users
from biopilot.app.demo_trial import BASELINE_RUNS, TRIAL_RUNS, seed_demo_trial
from biopilot.config import load_config
from processing.queries import open_query
from storage import open_catalog, open_store

REPO = Path(__file__).resolve().parents[1]


def test_demo_trial_is_judged_on_first_start(tmp_path: Path) -> None:
    config = load_config(REPO / "config" / "demo.toml")
    catalog, store = open_catalog(config, tmp_path), open_store(config, tmp_path)
    try:
        _seed_users(catalog)
        history_start = datetime.now(UTC) - timedelta(hours=358.6)
        seeded = seed_demo_trial(config, catalog, store, DEMO_TRIAL, history_start)
        assert (len(seeded.baseline), len(seeded.trial)) == (BASELINE_RUNS, TRIAL_RUNS)
        runs = {r.id: r for r in catalog.runs("F-101")}
        assert all(runs[r].kind == "baseline" and runs[r].product == DEMO_PRODUCT for r in seeded.baseline)
        assert all(runs[r].trial_id == DEMO_TRIAL and runs[r].kind == "trial" for r in seeded.trial)
        # the campaign ends before the plant history the simulator writes, and its samples are in the store
        assert max(runs[r].end for r in seeded.trial) < history_start  # type: ignore[type-var]
        assert len(store.read("F-101.temperature", runs[seeded.baseline[0]].start, history_start)) > 100
        record = catalog.charter_record(DEMO_TRIAL)
        assert record is not None and record.version == 1 and record.by == "demo"
        assert record.at < min(runs[r].start for r in seeded.trial)
        assert not catalog.charter_changed_after_start(DEMO_TRIAL)

        admin = open_query(catalog.user("admin").viewer, config, catalog, store)  # type: ignore[union-attr]
        doc = admin.verdict(DEMO_TRIAL)
        assert doc is not None
        # the simulator's truth is +6 % product per g glucose; the three trial runs measured more (their
        # random draws), and the verdict is "better" with the whole interval above 0
        assert doc["word"] == "better", doc["reason"]
        p = doc["primary"]
        assert (p["n_trial"], p["n_baseline"]) == (3, 5) and p["ci_pct"][0] > 0
        assert doc["money"] is not None and doc["money"]["saving_per_kg"]["low"] is not None
        print(f"\ndemo trial: {doc['word']} — {doc['reason']} ({seeded.seconds:.1f} s)")

        partner = open_query(catalog.user("partner").viewer, config, catalog, store)  # type: ignore[union-attr]
        seen = partner.verdict(DEMO_TRIAL)
        assert seen is not None and seen["word"] == "better"
        assert not [r for r in seeded.baseline if r in str(seen)]
    finally:
        catalog.close()
        store.close()
