"""`biopilot lab …`: offline lab results (titer, biomass, glucose…), attached to runs by time."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from biopilot import units
from biopilot.app.commands.acting import acting_viewer, add_user_option, query_for, require_equipment
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.app.commands.runs import parse_time, require_run
from biopilot.config import lab_unit_problem
from biopilot.errors import BioPilotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("lab", help="lab results: import, add, list")
    ls = sp.add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    li = ls.add_parser(
        "import",
        help="import lab results from CSV (long: time,analyte,value,unit"
        "[,sample_volume_ml]; wide: time, 'titer [g/L]', …)",
    )
    add_config_options(li)
    add_user_option(li)
    li.add_argument("file", type=Path)
    li.add_argument("--equipment", default=None)
    li.add_argument("--run", default=None, help="the run's equipment (instead of --equipment)")
    li.add_argument("--skip-bad-rows", action="store_true")
    li.set_defaults(func=_cmd_lab_import)

    la = ls.add_parser("add", help="enter one lab result")
    add_config_options(la)
    add_user_option(la)
    la.add_argument("run")
    la.add_argument("--time", required=True, help="sampling time (ISO-8601; naive = site time zone)")
    la.add_argument("--analyte", required=True, help="titer, biomass, glucose, …")
    la.add_argument("--value", required=True, type=float)
    la.add_argument("--unit", default="g/L", help="g/L (default), mg/L, ug/mL…: checked for the analyte")
    la.add_argument("--sample-volume-ml", type=float, default=0.0, help="broth removed with the sample")
    la.set_defaults(func=_cmd_lab_add)

    ll = ls.add_parser("list", help="a run's lab results")
    add_config_options(ll)
    add_user_option(ll)
    ll.add_argument("run")
    ll.add_argument("--json", action="store_true")
    ll.set_defaults(func=_cmd_lab_list)


def _cmd_lab_import(args: argparse.Namespace) -> int:
    from storage import open_catalog
    from storage.importers import import_lab

    _, config = site_config(args, writes=True)
    catalog = open_catalog(config, args.data_dir)
    try:
        equipment = args.equipment
        if args.run:
            equipment = require_run(catalog, args.run).equipment
        if equipment is None:
            raise BioPilotError("lab import: give --equipment or --run")
        viewer = acting_viewer(args, catalog)
        require_equipment(viewer, equipment, "import lab results")
        results = import_lab(
            args.file, config, catalog, equipment=equipment, skip_bad_rows=args.skip_bad_rows
        )
        runs = {
            r.id
            for res in results
            for r in catalog.runs(equipment)
            if r.start <= res.ts and (r.end is None or res.ts <= r.end)
        }
        catalog.audit.append(
            viewer.name, "lab.import", equipment, file=str(args.file), results=len(results), runs=sorted(runs)
        )
        print(
            f"imported {len(results)} lab results for {equipment}"
            f" (runs: {', '.join(sorted(runs)) or 'none covers their times yet'});"
            " `biopilot kpis --recompute RUN` updates a closed run's KPIs"
        )
    finally:
        catalog.close()
    return 0


def _cmd_lab_add(args: argparse.Namespace) -> int:
    from biopilot.records import LabResult
    from biopilot.samples import value_problem
    from storage import open_catalog

    _, config = site_config(args, writes=True)
    ts = parse_time(args.time, config, "--time")
    for option, number in (("--value", args.value), ("--sample-volume-ml", args.sample_volume_ml)):
        problem = value_problem(number)
        if problem is not None:
            raise BioPilotError(f"{option} {number!r} {problem}")
    if args.sample_volume_ml < 0:
        raise BioPilotError("--sample-volume-ml must not be negative")
    if not args.analyte.strip() or not args.analyte.isprintable():
        raise BioPilotError(f"--analyte {args.analyte!r}: give the analyte's name (titer, biomass, glucose…)")
    problem = lab_unit_problem(config, args.analyte, args.unit)
    if problem is not None:
        raise BioPilotError(f"--unit: {problem}")
    catalog = open_catalog(config, args.data_dir)
    try:
        run = require_run(catalog, args.run)
        viewer = acting_viewer(args, catalog)
        require_equipment(viewer, run.equipment, "add lab results")
        if ts < run.start or (run.end is not None and ts > run.end):
            raise BioPilotError(
                f"{ts.isoformat()} is outside run {run.id} ({run.start.isoformat()} → "
                f"{run.end.isoformat() if run.end else 'open'})"
            )
        catalog.add_lab_results(
            [
                LabResult(
                    run.equipment,
                    ts,
                    args.analyte,
                    args.value,
                    args.unit,
                    units.convert(args.sample_volume_ml, "mL", "L"),
                    "cli",
                )
            ]
        )
        catalog.audit.append(
            viewer.name,
            "lab.add",
            run.id,
            analyte=args.analyte,
            value=args.value,
            unit=args.unit,
            time=ts.isoformat(),
        )
        print(f"added {args.analyte} = {args.value} {args.unit} at {ts.isoformat()} to {run.id}")
    finally:
        catalog.close()
    return 0


def _cmd_lab_list(args: argparse.Namespace) -> int:
    from storage import open_catalog, open_store

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    store = open_store(config, args.data_dir, read_only=True)
    try:
        query = query_for(acting_viewer(args, catalog), config, catalog, store)
        if query.run(args.run) is None:
            raise BioPilotError(f"no run {args.run!r} that you may see; `biopilot runs list` shows them")
        results = query.lab_results(args.run)
    finally:
        catalog.close()
        store.close()
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    elif not results:
        print("no lab results for this run")
    else:
        for r in results:
            vol = (
                f"  ({units.convert(r.sample_volume_l, 'L', 'mL'):g} mL sampled)" if r.sample_volume_l else ""
            )
            print(f"{r.ts.isoformat()}  {r.analyte:12} {r.value:>10g} {r.unit}{vol}")
    return 0
