"""`biopilot trials create|list|show|lock|add-run|exclude|charter-edit`: trials and their charters.

  trials create ID --charter FILE     a trial from its charter (title, equipment, startup, product from the
                                      file; config/trials/example-charter.toml documents every key); the
                                      charter is a draft until it is locked. (Without --charter: --title,
                                      --equipment, --startup [--product], a trial with no charter yet.)
  trials lock ID                      lock the draft as version 1 (SHA-256 of its canonical JSON); the
                                      baseline runs are frozen (a [baseline] rule is resolved now) and the
                                      trial runs it lists join the trial; locking twice is an error
  trials add-run ID RUN               a trial run (after the lock)
  trials exclude ID RUN --reason T    leave a trial or baseline run out of the verdict, with a written reason
  trials charter-edit ID --charter FILE --reason T   before the lock: replace the draft; after it: a new
                                      version (the reason is required; the verdict names the version it used
                                      and says when it was made after the first trial run started)
Every one of these is admin-only and goes to the audit log. Errors are one line naming the fix.

`trials list --json`: [{"id", "title", "equipment": [...], "startup", "product", "created", "created_by"}]
`trials show ID --json`: the trial plus "runs": [run ids], "baseline": {"n_runs", "kpis": [{"name", "unit",
"n", "mean", "sd", "ci_low", "ci_high", "level", "flags"}]} — the baseline as aggregates only —, "charter":
null | {"version" (0: an unlocked draft), "sha256", "locked", "reason", "by", "at", "charter": {every key}},
"charter_versions": [{"version", "sha256", "reason", "by", "at"}], "members": [{"run", "group"}] (the frozen
baseline only for a viewer who may see those runs), "exclusions": [{"run", "reason", "by", "at"}].
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from biopilot.app.commands.acting import acting_viewer, add_user_option, not_found, query_for, require_admin
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.errors import BioPilotError, StoreError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser(
        "trials", help="trials: create, lock, add-run, exclude, charter-edit (admin); list, show"
    )
    ts = sp.add_subparsers(dest="trials_command", required=True, metavar="ACTION")

    c = ts.add_parser("create", help="create a trial from its charter (admin)")
    add_config_options(c)
    add_user_option(c)
    c.add_argument("id")
    c.add_argument("--charter", type=Path, help="the charter TOML (title, equipment, startup… from it)")
    c.add_argument("--title")
    c.add_argument("--equipment", action="append", help="equipment id (repeatable; without --charter)")
    c.add_argument("--startup", help="the tenant id of the startup that owns the trial (without --charter)")
    c.add_argument("--product", default=None)
    c.add_argument("--why", default="", help="the reason, for the audit log")
    c.set_defaults(func=_cmd_create)

    lk = ts.add_parser("lock", help="lock the charter: version 1, baseline frozen (admin)")
    add_config_options(lk)
    add_user_option(lk)
    lk.add_argument("id")
    lk.add_argument("--why", default="", help="the reason, for the audit log")
    lk.set_defaults(func=_cmd_lock)

    ar = ts.add_parser("add-run", help="add a trial run, after the lock (admin)")
    add_config_options(ar)
    add_user_option(ar)
    ar.add_argument("id")
    ar.add_argument("run", help="run id EQUIPMENT:BATCH")
    ar.add_argument("--why", default="", help="the reason, for the audit log")
    ar.set_defaults(func=_cmd_add_run)

    ex = ts.add_parser("exclude", help="leave a run out of the verdict, with a written reason (admin)")
    add_config_options(ex)
    add_user_option(ex)
    ex.add_argument("id")
    ex.add_argument("run", help="run id EQUIPMENT:BATCH (a trial or baseline run of the trial)")
    ex.add_argument("--reason", required=True, help="why the run is left out (shown with the verdict)")
    ex.set_defaults(func=_cmd_exclude)

    ce = ts.add_parser("charter-edit", help="change the charter: a new version with a reason (admin)")
    add_config_options(ce)
    add_user_option(ce)
    ce.add_argument("id")
    ce.add_argument("--charter", type=Path, required=True, help="the changed charter TOML")
    ce.add_argument("--reason", default="", help="why (required once the charter is locked)")
    ce.set_defaults(func=_cmd_charter_edit)

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


def _load_charter(path: Path):  # type: ignore[no-untyped-def]
    from biopilot.charter import load_charter
    from processing.kpis import KPI_UNITS

    return load_charter(path, KPI_UNITS)


def _check_equipment(config, equipment: list[str], key: str) -> None:  # type: ignore[no-untyped-def]
    for eq in equipment:
        try:
            config.equipment_by_id(eq)
        except KeyError:
            raise BioPilotError(f"{key} {eq!r} is not a configured equipment id") from None


def _cmd_create(args: argparse.Namespace) -> int:
    from storage import open_catalog

    _, config = site_config(args)
    charter = None
    if args.charter is not None:
        charter = _load_charter(args.charter)
        given = [o for o in ("title", "equipment", "startup", "product") if getattr(args, o)]
        if given:
            raise BioPilotError(
                f"--{given[0]}: with --charter the trial's {', '.join(given)} come from the charter file"
            )
        title, equipment, startup, product = (
            charter.title,
            [charter.equipment],
            charter.startup,
            charter.product,
        )
        _check_equipment(config, equipment, f"{args.charter}: equipment")
    else:
        missing = [o for o in ("title", "equipment", "startup") if not getattr(args, o)]
        if missing:
            raise BioPilotError(
                f"trials create: give --charter FILE (config/trials/example-charter.toml shows every key), "
                f"or --{missing[0]}"
            )
        title, startup, product = args.title, args.startup, args.product
        equipment = [e for item in args.equipment for e in item.split(",") if e]
        _check_equipment(config, equipment, "--equipment")
    catalog = open_catalog(config, args.data_dir)
    try:
        viewer = acting_viewer(args, catalog)
        require_admin(viewer, "create trials")
        trial = catalog.create_trial(
            args.id,
            title=title,
            equipment=equipment,
            startup=startup,
            product=product,
            created_by=viewer.name,
        )
        catalog.audit.append(viewer.name, "trial.create", trial.id, why=args.why, **trial.to_json())
        print(
            f"created trial {trial.id} ({trial.title}) for startup {trial.startup} "
            f"on {', '.join(trial.equipment)}"
        )
        if charter is not None:
            draft = catalog.set_charter_draft(trial.id, charter, by=viewer.name)
            catalog.audit.append(
                viewer.name, "trial.charter.draft", trial.id, why=args.why, sha256=draft.sha256
            )
            print(
                f"charter draft from {args.charter} (SHA-256 {draft.sha256}); lock it before the first trial "
                f"run: `biopilot trials lock {trial.id}`"
            )
    finally:
        catalog.close()
    return 0


def _writer(args: argparse.Namespace, what: str):  # type: ignore[no-untyped-def]
    """The catalog and the acting admin for a write; BioPilotError for anyone else."""
    from storage import open_catalog

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    try:
        viewer = acting_viewer(args, catalog)
        require_admin(viewer, what)
        if catalog.trial(args.id) is None:
            raise BioPilotError(f"no trial {args.id!r}; `biopilot trials list` shows them")
    except BaseException:
        catalog.close()
        raise
    return catalog, viewer


def _cmd_lock(args: argparse.Namespace) -> int:
    catalog, viewer = _writer(args, "lock trial charters")
    try:
        record = catalog.lock_charter(args.id, by=viewer.name)
        members = catalog.trial_members(args.id)
        baseline = [m.run_id for m in members if m.group == "baseline"]
        trial_runs = [m.run_id for m in members if m.group == "trial"]
        catalog.audit.append(
            viewer.name,
            "trial.charter.lock",
            args.id,
            why=args.why,
            version=record.version,
            sha256=record.sha256,
            baseline_runs=baseline,
            trial_runs=trial_runs,
        )
    finally:
        catalog.close()
    print(f"locked the charter of {args.id}: version {record.version}, SHA-256 {record.sha256}")
    print(f"baseline frozen: {len(baseline)} runs; trial runs: {len(trial_runs)}")
    return 0


def _cmd_add_run(args: argparse.Namespace) -> int:
    catalog, viewer = _writer(args, "add runs to trials")
    try:
        member = catalog.add_trial_run(args.id, args.run, by=viewer.name)
        catalog.audit.append(viewer.name, "trial.add_run", args.id, why=args.why, run=member.run_id)
        changed = catalog.charter_changed_after_start(args.id)
    finally:
        catalog.close()
    print(f"added trial run {member.run_id} to {args.id}")
    if changed:
        print(
            f"WARNING: the charter of {args.id} in force was made after the first trial run started; the "
            "verdict says so"
        )
    return 0


def _cmd_exclude(args: argparse.Namespace) -> int:
    catalog, viewer = _writer(args, "exclude runs from trials")
    try:
        e = catalog.exclude_run(args.id, args.run, reason=args.reason, by=viewer.name)
        catalog.audit.append(viewer.name, "trial.exclude", args.id, why=e.reason, run=e.run_id)
    finally:
        catalog.close()
    print(f"excluded {e.run_id} from the verdict of {args.id}: {e.reason}")
    return 0


def _cmd_charter_edit(args: argparse.Namespace) -> int:
    charter = _load_charter(args.charter)
    catalog, viewer = _writer(args, "change trial charters")
    try:
        trial = catalog.trial(args.id)
        assert trial is not None
        if charter.startup != trial.startup or charter.equipment not in trial.equipment:
            raise BioPilotError(
                f"{args.charter}: startup {charter.startup!r} / equipment {charter.equipment!r} are not "
                f"those of trial {args.id} ({trial.startup}, {', '.join(trial.equipment)}); a new "
                "trial needs `biopilot trials create`"
            )
        try:
            record = catalog.edit_charter(args.id, charter, reason=args.reason, by=viewer.name)
        except StoreError as exc:
            raise BioPilotError(str(exc)) from None
        catalog.audit.append(
            viewer.name,
            "trial.charter.edit",
            args.id,
            why=args.reason,
            version=record.version,
            sha256=record.sha256,
        )
        changed = catalog.charter_changed_after_start(args.id)
    finally:
        catalog.close()
    if record.locked:
        print(f"charter of {args.id}: version {record.version}, SHA-256 {record.sha256} ({record.reason})")
    else:
        print(f"charter draft of {args.id} replaced (SHA-256 {record.sha256}); not locked yet")
    if changed:
        print(
            f"WARNING: version {record.version} is made after the first trial run of {args.id} started; "
            "every verdict by it says so"
        )
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
        record = query.charter(trial.id)
        versions = query.charter_versions(trial.id)
        members = query.trial_members(trial.id)
        exclusions = query.exclusions(trial.id)
    finally:
        catalog.close()
        store.close()
    item = trial.to_json()
    item["runs"] = [r.id for r in runs]
    item["baseline"] = baseline.to_json() if baseline is not None else None
    item["charter"] = (
        None
        if record is None
        else {
            **record.to_json(),
            "locked": record.locked,
            "charter": record.charter.model_dump(mode="json"),
        }
    )
    item["charter_versions"] = [v.to_json() for v in versions]
    item["members"] = [{"run": m.run_id, "group": m.group} for m in members]
    item["exclusions"] = [
        {"run": e.run_id, "reason": e.reason, "by": e.by, "at": e.at.isoformat()} for e in exclusions
    ]
    if args.json:
        print(json.dumps(item, indent=2))
        return 0
    for key in ("id", "title", "startup", "product", "created", "created_by"):
        if item[key]:
            print(f"{key:12} {item[key]}")
    print(f"{'equipment':12} {', '.join(trial.equipment)}")
    print(f"{'runs':12} {', '.join(item['runs']) or '—'}")  # type: ignore[arg-type]
    if record is None:
        print(f"charter      none (`biopilot trials charter-edit {trial.id} --charter FILE`)")
    else:
        c = record.charter
        state = f"version {record.version}" if record.locked else "DRAFT, not locked"
        print(f"charter      {state}, SHA-256 {record.sha256}")
        margin = f"{c.margin:g} {c.margin_unit}"
        print(
            f"  primary    {c.primary_kpi} ({c.direction.value} is better), {c.hypothesis.value} by "
            f"{margin}, α = {c.alpha:g}, {c.planned_runs} trial runs planned, coverage ≥ {c.min_coverage:g}"
        )
        if c.secondary_kpis:
            print(f"  secondary  {', '.join(f'{s.kpi} ({s.direction.value})' for s in c.secondary_kpis)}")
        for v in versions:
            if v.locked:
                print(f"  v{v.version:<3} {v.at.isoformat()} by {v.by}: {v.reason} ({v.sha256[:12]}…)")
    groups = {"trial": [], "baseline": []}  # type: dict[str, list[str]]
    for m in members:
        groups[m.group].append(m.run_id)
    if record is not None and record.locked:
        print(f"trial runs   {', '.join(groups['trial']) or '—'}")
        if groups["baseline"]:
            print(f"baseline     frozen at the lock: {', '.join(groups['baseline'])}")
    for e in exclusions:
        print(f"excluded     {e.run_id}: {e.reason} ({e.by}, {e.at.isoformat()})")
    if baseline is not None:
        print(f"baseline     {baseline.n_runs} runs (aggregates only)")
        for k in baseline.kpis:
            if k.mean is None:
                print(f"  {k.name:32} n={k.n:<3} {', '.join(k.flags)}")
            else:
                ci = f"[{k.ci_low:.4g}, {k.ci_high:.4g}]" if k.ci_low is not None else ""
                print(f"  {k.name:32} n={k.n:<3} mean {k.mean:.4g} {k.unit} {ci}")
    return 0
