"""A small data directory for the trials tests (CLI, pages, browser): five baseline runs and three trial runs
of F-101 (config/demo.toml) with hand-written KPI values, a trial T1 of startup acme that is created, locked
and filled through the CLI by the tests themselves (or by `build(..., lock=True)` for the page tests).

Users (password PASSWORD): root admin, ann startup of acme, pat partner invited to T1, olga operator of
R-201 (another equipment: the baseline only as aggregates), eve startup of another tenant (sees nothing).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from biopilot.charter import parse_charter
from biopilot.records import KpiRecord
from processing.kpis import KPI_UNITS
from processing.queries.auth import Authenticator
from storage import Catalog

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "demo.toml"
PASSWORD = "correct horse battery"
T0 = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)
TRIAL = "T1"

# run id -> (start hour, yield g/g, titer g/L)
BASELINE = {
    "F-101:BL1": (0, 0.0620, 8.40),
    "F-101:BL2": (48, 0.0634, 8.50),
    "F-101:BL3": (96, 0.0628, 8.30),
    "F-101:BL4": (144, 0.0615, 8.45),
    "F-101:BL5": (192, 0.0631, 8.55),
}
TRIAL_RUNS = {
    "F-101:TR1": (300, 0.0668, 9.00),
    "F-101:TR2": (348, 0.0675, 9.10),
    "F-101:TR3": (396, 0.0660, 8.95),
}
USERS = [
    ("root", "admin", None, []),
    ("ann", "startup", "acme", []),
    ("pat", "partner", None, []),
    ("olga", "operator", None, ["R-201"]),
    ("eve", "startup", "other", []),
]

CHARTER_TOML = f"""
title = "Strain HY-2 on F-101"
equipment = "F-101"
startup = "acme"
product = "enzyme-X"
primary_kpi = "yield_product_substrate_consumed"
direction = "higher"
hypothesis = "superiority"
margin = 0.0
margin_unit = "%"
alpha = 0.05
planned_runs = 3
min_coverage = 0.95
secondary_kpis = [{{ kpi = "titer", direction = "higher" }}]
baseline_runs = {list(BASELINE)!r}
trial_runs = ["F-101:TR1", "F-101:TR2"]
""".replace("'", '"')


def hour(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def build(data_dir: Path, *, lock: bool = False) -> None:
    """The runs, their KPIs and the users; with lock=True also T1 created, locked (TR1, TR2), TR3 added,
    and the partner invited — what the CLI test does step by step."""
    catalog = Catalog(data_dir / "biopilot.db")
    try:
        for runs, kind in ((BASELINE, "baseline"), (TRIAL_RUNS, "other")):
            for run_id, (start, yld, titer) in runs.items():
                batch = run_id.split(":")[1]
                catalog.create_run(
                    "F-101", batch, hour(start), hour(start + 40), kind=kind, product="enzyme-X"
                )
                catalog.set_kpis(
                    run_id,
                    [
                        KpiRecord("yield_product_substrate_consumed", yld, "g/g", 1.0, (), True, "t"),
                        KpiRecord("titer", titer, "g/L", 1.0, (), True, "t"),
                    ],
                )
        auth = Authenticator(catalog)
        for name, role, tenant, equipment in USERS:
            catalog.add_user(name, role, created_by="root", tenant=tenant, equipment=equipment)
            auth.set_password(name, PASSWORD, by="root", must_change=False)
        if lock:
            charter = parse_charter(CHARTER_TOML, "<test>", KPI_UNITS)
            catalog.create_trial(
                TRIAL,
                title=charter.title,
                equipment=["F-101"],
                startup="acme",
                product="enzyme-X",
                created_by="root",
            )
            catalog.set_charter_draft(TRIAL, charter, by="root")
            catalog.lock_charter(TRIAL, by="root", at=hour(-24))
            catalog.add_trial_run(TRIAL, "F-101:TR3", by="root")
            catalog.invite(TRIAL, "pat", invited_by="root")
    finally:
        catalog.close()
