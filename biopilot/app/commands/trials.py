"""`biopilot trials create|list|show`: the trials in the catalog (the minimal trial: id, title, equipment,
startup, product). The trials feature extends `create` (--charter) and adds verdicts; this module is theirs
to grow.

`trials list --json`: [{"id", "title", "equipment": [...], "startup", "product", "created", "created_by"}]
`trials show ID --json`: the trial plus "runs": [run ids], "baseline": {"n_runs", "kpis": [{"name", "unit",
"n", "mean", "sd", "ci_low", "ci_high", "level", "flags"}]} — the baseline as aggregates only.
"""

from __future__ import annotations

import argparse
import json

from biopilot.app.commands.acting import acting_viewer, add_user_option, not_found, query_for, require_admin
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.errors import BioPilotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("trials", help="trials: create (admin), list, show")
    ts = sp.add_subparsers(dest="trials_command", required=True, metavar="ACTION")

    c = ts.add_parser("create", help="create a trial (admin)")
    add_config_options(c)
    add_user_option(c)
    c.add_argument("id")
    c.add_argument("--title", required=True)
    c.add_argument("--equipment", required=True, action="append", help="equipment id (repeatable)")
    c.add_argument("--startup", required=True, help="the tenant id of the startup that owns the trial")
    c.add_argument("--product", default=None)
    c.add_argument("--why", default="", help="the reason, for the audit log")
    c.set_defaults(func=_cmd_create)

    ls = ts.add_parser("list", help="the trials you may see")
    add_config_options(ls)
    add_user_option(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_list)

    sh = ts.add_parser("show", help="a trial, its runs and its baseline as aggregates")
    add_config_options(sh)
    add_user_option(sh)
    sh.add_argument("id")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_cmd_show)


def _cmd_create(args: argparse.Namespace) -> int:
    from storage import open_catalog

    _, config = site_config(args)
    equipment = [e for item in args.equipment for e in item.split(",") if e]
    for eq in equipment:
        try:
            config.equipment_by_id(eq)
        except KeyError:
            raise BioPilotError(f"--equipment {eq!r} is not a configured equipment id") from None
    catalog = open_catalog(config, args.data_dir)
    try:
        viewer = acting_viewer(args, catalog)
        require_admin(viewer, "create trials")
        trial = catalog.create_trial(
            args.id,
            title=args.title,
            equipment=equipment,
            startup=args.startup,
            product=args.product,
            created_by=viewer.name,
        )
        catalog.audit.append(viewer.name, "trial.create", trial.id, why=args.why, **trial.to_json())
        print(
            f"created trial {trial.id} ({trial.title}) for startup {trial.startup} "
            f"on {', '.join(trial.equipment)}"
        )
    finally:
        catalog.close()
    return 0


def _reader(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from storage import open_catalog, open_store

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    store = open_store(config, args.data_dir, read_only=True)
    try:
        viewer = acting_viewer(args, catalog)
    except BaseException:
        catalog.close()
        store.close()
        raise
    return query_for(viewer, config, catalog, store), catalog, store


def _cmd_list(args: argparse.Namespace) -> int:
    query, catalog, store = _reader(args)
    try:
        trials = query.trials()
    finally:
        catalog.close()
        store.close()
    if args.json:
        print(json.dumps([t.to_json() for t in trials], indent=2))
    elif not trials:
        print("no trials you may see")
    else:
        for t in trials:
            print(f"{t.id:16} {t.startup:12} {','.join(t.equipment):12} {t.title}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    query, catalog, store = _reader(args)
    try:
        trial = query.trial(args.id)
        if trial is None:
            raise not_found("trial", args.id, "`biopilot trials list` shows yours")
        runs = query.runs(trial_id=trial.id)
        baseline = query.baseline(trial.id)
    finally:
        catalog.close()
        store.close()
    item = trial.to_json()
    item["runs"] = [r.id for r in runs]
    item["baseline"] = baseline.to_json() if baseline is not None else None
    if args.json:
        print(json.dumps(item, indent=2))
        return 0
    for key in ("id", "title", "startup", "product", "created", "created_by"):
        if item[key]:
            print(f"{key:12} {item[key]}")
    print(f"{'equipment':12} {', '.join(trial.equipment)}")
    print(f"{'runs':12} {', '.join(item['runs']) or '—'}")  # type: ignore[arg-type]
    if baseline is not None:
        print(f"baseline     {baseline.n_runs} runs (aggregates only)")
        for k in baseline.kpis:
            if k.mean is None:
                print(f"  {k.name:32} n={k.n:<3} {', '.join(k.flags)}")
            else:
                ci = f"[{k.ci_low:.4g}, {k.ci_high:.4g}]" if k.ci_low is not None else ""
                print(f"  {k.name:32} n={k.n:<3} mean {k.mean:.4g} {k.unit} {ci}")
    return 0
