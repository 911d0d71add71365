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
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from biopilot.app.commands.acting import (
    acting_viewer,
    add_user_option,
    not_found,
    query_for,
    require_equipment,
)
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
    add_user_option(rl)
    rl.add_argument("--json", action="store_true", help="machine-readable output")
    rl.add_argument("--kind", choices=KINDS, default=None, help="only runs of this kind")
    rl.add_argument("--trial", default=None, help="only runs of this trial")
    rl.set_defaults(func=_cmd_runs_list)

    rsh = rs.add_parser("show", help="one run: its phases, links, lab results and KPIs")
    add_config_options(rsh)
    add_user_option(rsh)
    rsh.add_argument("run")
    rsh.add_argument("--json", action="store_true", help="machine-readable output")
    rsh.set_defaults(func=_cmd_runs_show)

    rc = rs.add_parser("create", help="create a run by hand (times: ISO-8601, naive = site time zone)")
    add_config_options(rc)
    add_user_option(rc)
    rc.add_argument("--equipment", required=True)
    rc.add_argument("--batch", required=True, help="batch id; the run id is EQUIPMENT:BATCH")
    rc.add_argument("--start", required=True)
    rc.add_argument("--end", default=None)
    rc.add_argument("--kind", choices=KINDS, default="other")
    rc.add_argument("--trial", default=None)
    rc.add_argument("--product", default=None)
    rc.add_argument("--upstream", default=None, help="id of the upstream run this run processed")
    rc.add_argument("--why", default="", help="the reason, for the audit log")
    rc.set_defaults(func=_cmd_runs_create)

    re_ = rs.add_parser("edit", help="change a run's kind, trial, product, upstream link, start or end")
    add_config_options(re_)
    add_user_option(re_)
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
    re_.add_argument("--why", default="", help="the reason, for the audit log")
    re_.set_defaults(func=_cmd_runs_edit)

    rcl = rs.add_parser("close", help="close a run and compute its final KPIs")
    add_config_options(rcl)
    add_user_option(rcl)
    rcl.add_argument("run")
    rcl.add_argument("--end", default=None, help="end time (default: the run's last sample, else now)")
    rcl.add_argument("--why", default="", help="the reason, for the audit log")
    rcl.set_defaults(func=_cmd_runs_close)

    rx = rs.add_parser("export", help="a run's series as CSV (time, tag, value, status), as you may see them")
    add_config_options(rx)
    add_user_option(rx)
    rx.add_argument("run")
    rx.add_argument("--tag", action="append", default=[], help="only this tag (repeatable; default: all)")
    rx.add_argument("--out", type=Path, default=None, help="file to write (default: standard output)")
    rx.add_argument("--why", default="", help="the reason, for the audit log")
    rx.set_defaults(func=_cmd_runs_export)


def _reader(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(config, query for the acting user, a function that closes what was opened)."""
    from storage import open_catalog, open_store

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    store = open_store(config, args.data_dir, read_only=True)

    def close() -> None:
        catalog.close()
        store.close()

    try:
        viewer = acting_viewer(args, catalog)
    except BaseException:
        close()
        raise
    return config, query_for(viewer, config, catalog, store), catalog, close


def visible_run(query, run_id: str):  # type: ignore[no-untyped-def]
    run = query.run(run_id)
    if run is None:
        known = [r.id for r in query.runs()[:5]]
        hint = f"newest: {', '.join(known)}; " if known else ""
        raise not_found("run", run_id, f"{hint}`biopilot runs list` shows them all")
    return run


def _cmd_runs_list(args: argparse.Namespace) -> int:
    _, query, _, close = _reader(args)
    try:
        runs = query.runs(kind=args.kind, trial_id=args.trial)
        if args.json:
            out = []
            for run in runs:
                item = run.to_json()
                item["kpis"] = [k.to_json() for k in query.kpis(run.id)]
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
        close()
    return 0


def _cmd_runs_show(args: argparse.Namespace) -> int:
    _, query, _, close = _reader(args)
    try:
        run = visible_run(query, args.run)
        item = run.to_json()
        phases = query.phases(run.id)
        kpis = query.kpis(run.id)
        item["phases"] = [p.to_json() for p in phases]
        item["downstream"] = [r.id for r in query.downstream_runs(run.id)]
        item["lab_results"] = [r.to_json() for r in query.lab_results(run.id)]
        item["kpis"] = [k.to_json() for k in kpis]
    finally:
        close()
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
    for p in phases:
        end = p.end.isoformat() if p.end else "—"
        print(f"{'phase':12} {p.name:16} {p.start.isoformat()} → {end}")
    print(f"{'lab results':12} {len(item['lab_results'])}")  # type: ignore[arg-type]
    from biopilot.app.commands.kpis import print_kpi_table

    print_kpi_table(kpis)
    return 0


def _cmd_runs_export(args: argparse.Namespace) -> int:
    """CSV of the run's series inside its time window, through the query layer; audited."""
    import csv

    from biopilot.samples import from_us, utcnow

    config, query, catalog, close = _reader(args)
    try:
        run = visible_run(query, args.run)
        tags = [t.name for t in config.tags_of(run.equipment)]
        if args.tag:
            unknown = sorted(set(args.tag) - set(tags))
            if unknown:
                raise BioPilotError(f"not tags of {run.equipment}: {', '.join(unknown)}")
            tags = args.tag
        end = run.end or utcnow()
        out = args.out.open("w", newline="", encoding="utf-8") if args.out else sys.stdout
        rows = 0
        try:
            writer = csv.writer(out)
            writer.writerow(["time", "tag", "value", "status"])
            for tag in tags:
                data = query.series(tag, run.start, end + timedelta(microseconds=1))
                for ts, value, status in zip(
                    data.ts.tolist(), data.values.tolist(), data.status.tolist(), strict=True
                ):
                    writer.writerow([from_us(int(ts)).isoformat(), tag, value, status])
                    rows += 1
        finally:
            if args.out:
                out.close()
        catalog.audit.append(
            query.viewer.name,
            "export",
            run.id,
            why=args.why,
            what="run series",
            tags=len(tags),
            rows=rows,
            file=str(args.out) if args.out else "stdout",
        )
        if args.out:
            print(f"exported {rows} values of {len(tags)} tags of {run.id} to {args.out}")
    finally:
        close()
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
        viewer = acting_viewer(args, catalog)
        require_equipment(viewer, args.equipment, "create runs")
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
        catalog.audit.append(viewer.name, "run.create", run.id, why=args.why, **run.to_json())
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
        viewer = acting_viewer(args, catalog)
        require_equipment(viewer, require_run(catalog, args.run).equipment, "edit runs")
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
        catalog.audit.append(
            viewer.name,
            "run.edit",
            run.id,
            why=args.why,
            changes={k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()},
            phases_added=[list(p) for p in args.phase],
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
        viewer = acting_viewer(args, catalog)
        require_equipment(viewer, run.equipment, "close runs")
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
        catalog.audit.append(viewer.name, "run.close", run.id, why=args.why, end=end.isoformat())
        print(f"closed run {run.id} at {end.isoformat()}")
    finally:
        catalog.close()
    recompute(config, args.data_dir, args.run, actor=viewer.name, why=args.why or "run closed")
    return 0
