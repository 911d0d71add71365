"""`biopilot alarms …`: live deviation alarms (processing/live_alarms.py, storage/alarms.py) — list them and
acknowledge them.

  biopilot alarms list [--run RUN] [--equipment E] [--open] [--limit N] [--json]
  biopilot alarms ack ALARM --by NAME [--comment TEXT]

`list` shows the newest raised first: the alarm's number (what `ack` takes), its state (open while the
excursion lasts), whether and by whom it was acknowledged, the run, the tag ("mspc:T²"/"mspc:SPE" with the
top contributing tag after an arrow), the direction, when it was raised (plant time, in the site's time zone)
and its size (beyond the 99 % band in the tag's unit and in band half-widths, or the statistic as a multiple
of its 99 % limit). `--json` prints a list of storage.alarms.Alarm.to_json: {"id", "run", "key",
"equipment", "tag", "variable", "kind" ("envelope"|"mspc"), "direction", "start", "raised", "last", "end"
(ISO-8601 UTC; end null while open), "start_t", "raised_t", "axis_unit", "size", "peak", "size_unit",
"size_relative", "peak_relative", "state" ("open"|"closed"), "acknowledged", "ack_by", "ack_at",
"ack_comment", "detail", "created", "updated"}.

`ack` records who acknowledged the alarm and when (now), with an optional comment; an alarm is acknowledged
once.
"""

from __future__ import annotations

import argparse
import json
from zoneinfo import ZoneInfo

from biopilot.app.commands.common import add_config_options, site_config
from biopilot.errors import BioPilotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("alarms", help="live deviation alarms: list and acknowledge")
    als = sp.add_subparsers(dest="alarms_command", required=True, metavar="ACTION")

    ls = als.add_parser("list", help="alarms, newest first")
    add_config_options(ls)
    ls.add_argument("--run", default=None, help="only this run's alarms")
    ls.add_argument("--equipment", default=None, help="only this equipment's alarms")
    ls.add_argument("--open", action="store_true", help="only alarms whose excursion is still on")
    ls.add_argument("--limit", type=int, default=None, help="at most this many")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_cmd_list)

    ack = als.add_parser("ack", help="acknowledge an alarm (who and when are stored)")
    add_config_options(ack)
    ack.add_argument("alarm", help="the alarm's number (`biopilot alarms list`)")
    ack.add_argument("--by", required=True, help="who acknowledges")
    ack.add_argument("--comment", default=None, help="why, or what was done")
    ack.set_defaults(func=_cmd_ack)


def _size(a) -> str:  # type: ignore[no-untyped-def]
    if a.kind == "mspc":
        return f"{a.size:.3g} × limit"
    rel = f" ({a.size_relative:.2g} half-widths)" if a.size_relative is not None else ""
    return f"{a.size:.3g} {a.size_unit}{rel}"


def _cmd_list(args: argparse.Namespace) -> int:
    from storage import open_catalog
    from storage.alarms import Alarms

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    try:
        alarms = Alarms(catalog.db).alarms(
            run_id=args.run, equipment=args.equipment, open_only=args.open, limit=args.limit
        )
        if args.run and not alarms and catalog.run(args.run) is None:
            raise BioPilotError(f"no run {args.run!r} in the catalog; `biopilot runs list` shows them")
    finally:
        catalog.close()
    if args.json:
        print(json.dumps([a.to_json() for a in alarms], indent=2))
        return 0
    if not alarms:
        print("no alarms" + (" open" if args.open else "") + (f" for {args.run}" if args.run else ""))
        return 0
    zone = ZoneInfo(config.site.timezone)
    print(f"{'#':>4}  {'state':6} {'ack':10} {'run':34} {'tag':44} {'dir':5}  {'raised':16}  size")
    for a in alarms:
        tag = a.tag if a.kind != "mspc" else f"{a.tag} → {a.variable or '?'}"
        ack = (a.ack_by or "")[:10] if a.acknowledged else "—"
        raised = a.raised.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        print(
            f"{a.id:>4}  {a.state:6} {ack:10} {a.run_id:34} {tag:44} {a.direction:5}  {raised:16}  {_size(a)}"
        )
    print(f"(times in {config.site.timezone}; `biopilot alarms ack N --by NAME` acknowledges alarm N)")
    return 0


def _cmd_ack(args: argparse.Namespace) -> int:
    from biopilot.samples import utcnow
    from storage import open_catalog
    from storage.alarms import Alarms

    _, config = site_config(args)
    try:
        alarm_id = int(str(args.alarm).lstrip("#"))
    except ValueError:
        raise BioPilotError(
            f"{args.alarm!r} is not an alarm number; `biopilot alarms list` shows them"
        ) from None
    catalog = open_catalog(config, args.data_dir)
    try:
        alarm = Alarms(catalog.db).acknowledge(alarm_id, args.by, utcnow(), args.comment)
    finally:
        catalog.close()
    zone = ZoneInfo(config.site.timezone)
    tag = alarm.tag if alarm.kind != "mspc" else f"{alarm.tag} → {alarm.variable or '?'}"
    assert alarm.ack_at is not None
    print(
        f"alarm {alarm.id} ({alarm.run_id}, {tag} {alarm.direction}) acknowledged by {alarm.ack_by}"
        f" at {alarm.ack_at.astimezone(zone):%Y-%m-%d %H:%M:%S} {config.site.timezone}"
    )
    return 0
