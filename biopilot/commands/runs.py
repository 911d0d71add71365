"""`biopilot runs …`: the runs in the catalog."""

from __future__ import annotations

import argparse
import json

from biopilot.commands.common import add_config_options, site_config


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("runs", help="runs in the catalog")
    rs = sp.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    rl = rs.add_parser("list", help="list runs")
    add_config_options(rl)
    rl.add_argument("--json", action="store_true", help="machine-readable output")
    rl.set_defaults(func=_cmd_runs_list)


def _cmd_runs_list(args: argparse.Namespace) -> int:
    from storage import open_catalog

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    runs = catalog.runs()
    if args.json:
        out = []
        for run in runs:
            item = run.to_json()
            item["kpis"] = [k.to_json() for k in catalog.kpis(run.id)]
            out.append(item)
        print(json.dumps(out, indent=2))
    elif not runs:
        print("no runs yet")
    else:
        print(f"{'run':36} {'equipment':10} {'start (UTC)':20} {'end (UTC)':20} status")
        for run in runs:
            end = run.end.strftime("%Y-%m-%d %H:%M:%S") if run.end else "—"
            print(
                f"{run.id:36} {run.equipment:10} {run.start:%Y-%m-%d %H:%M:%S}  {end:20} "
                f"{'open' if run.is_open else 'closed'}"
            )
    catalog.close()
    return 0
