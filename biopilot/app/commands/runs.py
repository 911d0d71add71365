"""`biopilot runs …`: the runs in the catalog — list, show, and create, edit or close them by hand
(imported or manual runs; live runs are detected from batch-id and phase tags).

`runs list --json` prints a list of runs; `runs show RUN --json` one run:
  {"id", "equipment", "batch_id", "start", "end" (ISO-8601 UTC or null), "status" ("open"|"closed"),
   "kind" ("baseline"|"trial"|"other"), "trial_id", "product", "upstream_id", "origin" ("live"|"import"|
   "manual"), "note", "kpis": [KPI, …] (see `biopilot kpis`)}
and `show` adds "phases": [{"name", "start", "end"}], "downstream": [run ids], "lab_results": [{"equipment",
"time", "analyte", "value", "unit", "sample_volume_l", "source"}].
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from zoneinfo import ZoneInfo

from biopilot.app.commands.common import add_config_options, site_config
from biopilot.config import SiteConfig
from biopilot.errors import BioPilotError

KINDS = ("baseline", "trial", "other")


def parse_time(text: str, config: SiteConfig, what: str) -> datetime:
    """An ISO-8601 time from the command line; a naive one is in the site's time zone."""
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BioPilotError(f"{what}: {text!r} is not an ISO-8601 time (e.g. 2024-03-01T08:00)") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=ZoneInfo(config.site.timezone))
    return ts.astimezone(ZoneInfo("UTC"))


def require_run(catalog, run_id: str):  # type: ignore[no-untyped-def]
    run = catalog.run(run_id)
    if run is None:
        known = [r.id for r in catalog.runs()[:5]]
        hint = f" (newest: {', '.join(known)})" if known else " (the catalog has no runs)"
        raise BioPilotError(f"no run {run_id!r} in the catalog{hint}; `biopilot runs list` shows them all")
    return run


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("runs", help="runs in the catalog")
    rs = sp.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    rl = rs.add_parser("list", help="list runs")
    add_config_options(rl)
    rl.add_argument("--json", action="store_true", help="machine-readable output")
    rl.add_argument("--kind", choices=KINDS, default=None, help="only runs of this kind")
    rl.add_argument("--trial", default=None, help="only runs of this trial")
    rl.set_defaults(func=_cmd_runs_list)

    rsh = rs.add_parser("show", help="one run: its phases, links, lab results and KPIs")
    add_config_options(rsh)
    rsh.add_argument("run")
    rsh.add_argument("--json", action="store_true", help="machine-readable output")
    rsh.set_defaults(func=_cmd_runs_show)

    rc = rs.add_parser("create", help="create a run by hand (times: ISO-8601, naive = site time zone)")
    add_config_options(rc)
    rc.add_argument("--equipment", required=True)
    rc.add_argument("--batch", required=True, help="batch id; the run id is EQUIPMENT:BATCH")
    rc.add_argument("--start", required=True)
    rc.add_argument("--end", default=None)
    rc.add_argument("--kind", choices=KINDS, default="other")
    rc.add_argument("--trial", default=None)
    rc.add_argument("--product", default=None)
    rc.add_argument("--upstream", default=None, help="id of the upstream run this run processed")
    rc.set_defaults(func=_cmd_runs_create)

    re_ = rs.add_parser("edit", help="change a run's kind, trial, product, upstream link, start or end")
    add_config_options(re_)
    re_.add_argument("run")
    re_.add_argument("--kind", choices=KINDS, default=None)
    re_.add_argument("--trial", default=None, help="trial id ('' clears it)")
    re_.add_argument("--product", default=None)
    re_.add_argument("--upstream", default=None, help="upstream run id ('' clears it)")
    re_.add_argument("--start", default=None)
    re_.add_argument("--end", default=None)
    re_.add_argument("--note", default=None)
    re_.add_argument(
        "--phase",
        nargs=3,
        metavar=("NAME", "START", "END"),
        action="append",
        default=[],
        help="add a phase (repeatable)",
    )
    re_.set_defaults(func=_cmd_runs_edit)

    rcl = rs.add_parser("close", help="close a run and compute its final KPIs")
    add_config_options(rcl)
    rcl.add_argument("run")
    rcl.add_argument("--end", default=None, help="end time (default: the run's last sample, else now)")
    rcl.set_defaults(func=_cmd_runs_close)


def _cmd_runs_list(args: argparse.Namespace) -> int:
    from storage import open_catalog

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    try:
        runs = catalog.runs(kind=args.kind, trial_id=args.trial)
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
            print(f"{'run':32} {'equipment':10} {'kind':8} {'start (UTC)':19}  {'end (UTC)':19}  status")
            for run in runs:
                end = run.end.strftime("%Y-%m-%d %H:%M:%S") if run.end else "—"
                print(
                    f"{run.id:32} {run.equipment:10} {run.kind:8} {run.start:%Y-%m-%d %H:%M:%S}  {end:19}  "
                    f"{'open' if run.is_open else 'closed'}"
                )
    finally:
        catalog.close()
    return 0


def _cmd_runs_show(args: argparse.Namespace) -> int:
    from storage import open_catalog

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    try:
        run = require_run(catalog, args.run)
        item = run.to_json()
        item["phases"] = [p.to_json() for p in catalog.phases(run.id)]
        item["downstream"] = [r.id for r in catalog.downstream_runs(run.id)]
        item["lab_results"] = [r.to_json() for r in catalog.run_lab_results(run)]
        item["kpis"] = [k.to_json() for k in catalog.kpis(run.id)]
        if args.json:
            print(json.dumps(item, indent=2))
            return 0
        for key in (
            "id",
            "equipment",
            "batch_id",
            "kind",
            "trial_id",
            "product",
            "origin",
            "start",
            "end",
            "status",
            "upstream_id",
            "note",
        ):
            if item[key] not in (None, ""):
                print(f"{key:12} {item[key]}")
        if item["downstream"]:
            print(f"{'downstream':12} {', '.join(item['downstream'])}")  # type: ignore[arg-type]
        for p in catalog.phases(run.id):
            end = p.end.isoformat() if p.end else "—"
            print(f"{'phase':12} {p.name:16} {p.start.isoformat()} → {end}")
        print(f"{'lab results':12} {len(item['lab_results'])}")  # type: ignore[arg-type]
        from biopilot.app.commands.kpis import print_kpi_table

        print_kpi_table(catalog.kpis(run.id))
    finally:
        catalog.close()
    return 0


def _cmd_runs_create(args: argparse.Namespace) -> int:
    from storage import open_catalog

    _, config = site_config(args, writes=True)
    try:
        config.equipment_by_id(args.equipment)
    except KeyError:
        raise BioPilotError(f"{args.equipment!r} is not a configured equipment id") from None
    start = parse_time(args.start, config, "--start")
    end = parse_time(args.end, config, "--end") if args.end else None
    catalog = open_catalog(config, args.data_dir)
    try:
        if args.upstream:
            require_run(catalog, args.upstream)
        run = catalog.create_run(
            args.equipment,
            args.batch,
            start,
            end,
            kind=args.kind,
            trial_id=args.trial,
            product=args.product,
            upstream_id=args.upstream,
            origin="manual",
        )
        print(f"created run {run.id} ({run.kind}, {'closed' if run.end else 'open'})")
    finally:
        catalog.close()
    return 0


def _cmd_runs_edit(args: argparse.Namespace) -> int:
    from biopilot.records import Phase
    from storage import open_catalog

    _, config = site_config(args, writes=True)
    catalog = open_catalog(config, args.data_dir)
    try:
        require_run(catalog, args.run)
        changes: dict[str, object] = {}
        if args.kind is not None:
            changes["kind"] = args.kind
        for opt, key in (
            ("trial", "trial_id"),
            ("product", "product"),
            ("upstream", "upstream_id"),
            ("note", "note"),
        ):
            value = getattr(args, opt)
            if value is not None:
                changes[key] = value or (None if key != "note" else "")
        if args.start:
            changes["start"] = parse_time(args.start, config, "--start")
        if args.end:
            changes["end"] = parse_time(args.end, config, "--end")
        run = catalog.update_run(args.run, **changes)
        for name, start, end in args.phase:
            catalog.add_phase(
                run.id,
                Phase(
                    name, parse_time(start, config, "--phase START"), parse_time(end, config, "--phase END")
                ),
            )
        print(
            f"updated run {run.id}: {', '.join(sorted(changes)) or 'no field'}"
            f"{f'; {len(args.phase)} phase(s) added' if args.phase else ''}"
        )
        print("KPIs are unchanged until `biopilot kpis --recompute " + run.id + "`")
    finally:
        catalog.close()
    return 0


def _cmd_runs_close(args: argparse.Namespace) -> int:
    from biopilot.app.commands.kpis import recompute

    _, config = site_config(args, writes=True)
    from storage import open_catalog

    catalog = open_catalog(config, args.data_dir)
    try:
        run = require_run(catalog, args.run)
        if args.end:
            end = parse_time(args.end, config, "--end")
        else:
            from storage import open_store

            store = open_store(config, args.data_dir, read_only=True)
            try:
                latest = store.latest([t.name for t in config.tags_of(run.equipment)])
            finally:
                store.close()
            from biopilot.samples import utcnow

            end = max((v.sample.ts for v in latest.values() if v.sample.ts >= run.start), default=utcnow())
        catalog.update_run(run.id, end=end)
        print(f"closed run {run.id} at {end.isoformat()}")
    finally:
        catalog.close()
    recompute(config, args.data_dir, args.run)
    return 0
