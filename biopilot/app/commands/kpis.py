"""`biopilot kpis RUN [--json]` prints a run's stored KPIs; `--recompute` computes them again first
(final for a closed run, provisional for an open one) with the current KPI version.

JSON (stable): {"run": RUN id, "kpis": [{"name", "value" (number, or null when an input is missing or the
value is implausible), "unit", "coverage" (0..1: the lowest share of the run any input covered), "flags"
(list, each explained at the top of processing/kpis.py and in the README: provisional, incomplete,
missing_input:<input>, missing_input, implausible:<reason>, negative_values:<tag>=<share>,
closure_out_of_range, closure_out_of_range:<balance>, uncertain_inputs, assumed:<what>,
refused_lab_unit:<unit>, overall_yield_mismatch, counter_reset, no_emission_factor:<utility>; stale: an
import replaced samples in the run's window after they were computed, `--recompute` updates them), "final"
(bool), "version", "computed" (ISO-8601 UTC), "inputs" ({input: coverage})}]}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from biopilot.app.commands.acting import acting_viewer, add_user_option, query_for, require_equipment
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.config import SiteConfig
from biopilot.errors import BioPilotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("kpis", help="a run's KPIs with units, coverage and flags")
    add_config_options(sp)
    add_user_option(sp)
    sp.add_argument("run")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--recompute", action="store_true", help="compute the KPIs again from the stored data")
    sp.add_argument("--why", default="", help="the reason for a recompute, for the audit log")
    sp.set_defaults(func=_cmd_kpis)


def recompute(config: SiteConfig, data_dir: Path, run_id: str, *, actor: str, why: str = "") -> None:
    """Compute a run's KPIs again (audited: who, why, the KPI version)."""
    from processing.service import Processing
    from storage import open_catalog, open_store

    store = open_store(config, data_dir)
    catalog = open_catalog(config, data_dir)
    try:
        run = catalog.run(run_id)
        if run is None:
            raise BioPilotError(f"no run {run_id!r} in the catalog; `biopilot runs list` shows them")
        records = Processing(config, store, catalog).update_run(run)
        catalog.audit.append(
            actor,
            "kpis.recompute",
            run_id,
            why=why,
            kpis=len(records),
            version=records[0].version if records else "",
        )
    finally:
        catalog.close()
        store.close()


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or 0.001 <= abs(value) < 1e6:
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"
    return f"{value:.4e}"


def print_kpi_table(kpis: list) -> None:  # type: ignore[type-arg]
    if not kpis:
        print("no KPIs computed yet")
        return
    print(f"{'KPI':34} {'value':>14} {'unit':12} {'coverage':>8}  flags")
    for k in kpis:
        print(f"{k.name:34} {_fmt(k.value):>14} {k.unit:12} {k.coverage:>8.1%}  {', '.join(k.flags)}")


def _cmd_kpis(args: argparse.Namespace) -> int:
    from storage import open_catalog, open_store

    _, config = site_config(args, writes=args.recompute)
    catalog = open_catalog(config, args.data_dir)
    store = open_store(config, args.data_dir, read_only=True)
    try:
        query = query_for(acting_viewer(args, catalog), config, catalog, store)
        run = query.run(args.run)
        if run is None:
            raise BioPilotError(f"no run {args.run!r} that you may see; `biopilot runs list` shows them")
        if args.recompute:
            require_equipment(query.viewer, run.equipment, "recompute KPIs")
            recompute(config, args.data_dir, args.run, actor=query.viewer.name, why=args.why)
        kpis = query.kpis(args.run)
    finally:
        catalog.close()
        store.close()
    if args.json:
        print(json.dumps({"run": args.run, "kpis": [k.to_json() for k in kpis]}, indent=2))
    else:
        print_kpi_table(kpis)
    return 0
