"""`biopilot audit list|verify|anchor`: the tamper-evident audit log (admin).

verify: walks the hash chain; prints every entry that was altered, deleted or reordered, names it, and exits
1; with none, prints the head and exits 0. `--anchor SEQ:HASH` checks an anchor kept outside the database.
anchor: stores the head (seq and hash) and prints it — keep the line somewhere else too.

`audit list --json`: [{"seq", "time", "actor", "action", "target", "why", "details", "prev_hash", "hash"}]
"""

from __future__ import annotations

import argparse
import json

from biopilot.app.commands.acting import acting_viewer, add_user_option, require_admin
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.errors import BioPilotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("audit", help="the audit log: list, verify, anchor (admin)")
    au = sp.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    ls = au.add_parser("list", help="entries, oldest first")
    add_config_options(ls)
    add_user_option(ls)
    ls.add_argument("--since", default=None, help="ISO-8601 time (naive: site time zone)")
    ls.add_argument("--actor", default=None, help="only entries of this user")
    ls.add_argument("--action", default=None, help="only this action (or its family: login, user, trial…)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_list)

    v = au.add_parser("verify", help="check the hash chain; name any altered, deleted or reordered entry")
    add_config_options(v)
    add_user_option(v)
    v.add_argument(
        "--anchor", action="append", default=[], metavar="SEQ:HASH", help="an anchor kept elsewhere"
    )
    v.set_defaults(func=_cmd_verify)

    a = au.add_parser("anchor", help="store and print the head of the chain")
    add_config_options(a)
    add_user_option(a)
    a.add_argument("--note", default="")
    a.set_defaults(func=_cmd_anchor)


def _catalog(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from storage import open_catalog

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    try:
        require_admin(acting_viewer(args, catalog), "read the audit log")
    except BaseException:
        catalog.close()
        raise
    return config, catalog


def _cmd_list(args: argparse.Namespace) -> int:
    from biopilot.app.commands.runs import parse_time

    config, catalog = _catalog(args)
    try:
        since = parse_time(args.since, config, "--since") if args.since else None
        entries = catalog.audit.entries(since=since, actor=args.actor, action=args.action)
    finally:
        catalog.close()
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2, ensure_ascii=False))
        return 0
    if not entries:
        print("no audit entries")
    for e in entries:
        details = ", ".join(f"{k}={v}" for k, v in e.details.items() if v not in (None, "", [], {}))
        why = f"  why: {e.why}" if e.why else ""
        print(
            f"{e.seq:>6} {e.ts:%Y-%m-%d %H:%M:%S}Z {e.actor:16} {e.action:18} {e.target}{why}"
            f"  {details}".rstrip()
        )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    external = []
    for text in args.anchor:
        seq, _, digest = text.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise BioPilotError(
                f"--anchor {text!r}: expected SEQ:HASH (as `biopilot audit anchor` prints it)"
            )
        external.append((int(seq), digest))
    _, catalog = _catalog(args)
    try:
        result = catalog.audit.verify(external=external)
    finally:
        catalog.close()
    for p in result.problems:
        print(f"{p.kind.upper():9} {p.message}")
    if not result.ok:
        print(f"audit log: {len(result.problems)} problem(s) in {result.entries} entries")
        return 1
    print(f"audit log OK: {result.entries} entries, head {result.head}")
    return 0


def _cmd_anchor(args: argparse.Namespace) -> int:
    _, catalog = _catalog(args)
    try:
        check = catalog.audit.verify()
        if not check.ok:
            raise BioPilotError(
                f"the audit log does not verify ({check.problems[0].message}); "
                "`biopilot audit verify` lists all"
            )
        anchor = catalog.audit.anchor(args.note)
    finally:
        catalog.close()
    print(
        f"audit anchor {anchor.seq}:{anchor.hash} at {anchor.ts.isoformat()} "
        "(keep a copy outside the database)"
    )
    return 0
