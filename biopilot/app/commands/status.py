"""`biopilot status`: the collection's health as the collector last wrote it."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from biopilot.app.commands.acting import acting_viewer, add_user_option, query_for
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.samples import utcnow
from storage import open_health
from storage.health import connection_verdict, store_verdict, tag_state

# Counted events that are no rejection of an input: shown apart ("noted"), not as "rejected by reason".
NOTES = frozenset(
    {
        "values",
        "nothing_mapped",
        "rounded_integer",
        "seq_gap",
        "seq_missing",
        "waiting_for_birth",
        "sp_replayed",
        "sp_ignored",
        "sp_deaths",
        "sp_stale_death",
        "sp_rebirth_requests",
    }
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("status", help="health of the collectors: connections, counts, spool, gaps, tags")
    add_config_options(sp)
    add_user_option(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=_cmd_status)


def _ago(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "never"
    s = (now - ts).total_seconds()
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def _cmd_status(args: argparse.Namespace) -> int:
    from biopilot.access import UserRole
    from biopilot.errors import BioPilotError
    from storage import open_catalog, open_store

    _, config = site_config(args)
    health = open_health(config, args.data_dir, read_only=True)
    catalog = open_catalog(config, args.data_dir)
    store = open_store(config, args.data_dir, read_only=True)
    try:
        viewer = acting_viewer(args, catalog)
        if viewer.role not in (UserRole.ADMIN, UserRole.OPERATOR):
            raise BioPilotError(
                f"{viewer.name} is a {viewer.role.value}: the collection's health is for operators and admins"
            )
        seen = query_for(viewer, config, catalog, store, health).health()
    finally:
        catalog.close()
        store.close()
    now = utcnow()
    components = seen.components
    visible = {t.name for t in seen.tags}
    tags = health.tags()
    gaps = health.gaps()
    verdicts = {name: connection_verdict(doc, updated, now) for name, (doc, updated) in components.items()}
    alive = {name: ok for name, (ok, _) in verdicts.items()}
    sink_doc = components.get("sink", ({}, now))[0]
    writer_doc, writer_updated = components.get("writer", ({}, None))
    store_ok, store_why = store_verdict(sink_doc, writer_doc, writer_updated, now)
    rows = []
    for tag in config.tags:
        src = tag.source_label
        if src is None or tag.name not in visible:  # import-only tags are never collected
            continue
        th = tags.get(tag.name)
        age = (now - th.last_seen).total_seconds() if th and th.last_seen else None
        source_doc = components.get(src, (None, None))[0]
        state, why = tag_state(tag.name, th, source_doc, alive.get(src, False), tag.max_age_s, now)
        rows.append(
            {
                "tag": tag.name,
                "source": src,
                "state": state,
                "reason": why or None,
                "last_seen": th.last_seen.isoformat() if th and th.last_seen else None,
                "age_s": round(age, 1) if age is not None else None,
                "last_source_time": th.last_ts.isoformat() if th and th.last_ts else None,
                "rate_per_min": th.rate_per_min if th else 0.0,
                "values_total": th.values_total if th else 0,
                "rejected_total": th.rejected_total if th else 0,
            }
        )
    if args.json:
        print(
            json.dumps(
                {
                    "components": {
                        n: {
                            **doc,
                            "updated": u.isoformat(),
                            "alive": alive[n],
                            "ok": verdicts[n][0],
                            "why": verdicts[n][1],
                        }
                        for n, (doc, u) in components.items()
                    },
                    "store": {"ok": store_ok, "why": store_why},
                    "tags": rows,
                    "gaps": [
                        {
                            "source": g.source,
                            "lost": g.lost.isoformat(),
                            "back": g.back.isoformat() if g.back else None,
                            "last_ts_before": g.last_ts_before.isoformat() if g.last_ts_before else None,
                            "first_ts_after": g.first_ts_after.isoformat() if g.first_ts_after else None,
                            "reason": g.reason,
                        }
                        for g in gaps
                    ],
                    "quarantine": [
                        {"time": t.isoformat(), "source": s, "reason": r, "detail": d}
                        for t, s, r, d in health.quarantine(20)
                    ],
                },
                indent=2,
            )
        )
        return 0
    if not components:
        print(
            f"no health yet in {health.path}: is `biopilot collect` (or the demo) running with this data dir?"
        )
        return 1
    print("Connections")
    for name, (doc, updated) in components.items():
        if doc.get("kind") in ("opcua", "mqtt"):
            _print_connection(name, doc, updated, verdicts[name], now)
    _print_store(sink_doc, writer_doc, store_ok, store_why)
    if gaps:
        print("Gaps")
        for g in gaps[-10:]:
            if g.back:
                back = f"back {_ago(g.back, now)} after {(g.back - g.lost).total_seconds():.1f} s"
            else:
                back = "STILL GONE"
            print(f"  {g.source:22} lost {_ago(g.lost, now)}, {back}: {g.reason}")
    print("Tags")
    for r in rows:
        age = f"{r['age_s']:.0f} s" if r["age_s"] is not None else "—"
        rate = f"{r['rate_per_min']:7.1f}/min"
        line = f"  {r['tag']:32} {r['state']:11} seen {age:>8} ago  {rate}  {r['values_total']:>9} values"
        if r["state"] not in ("live", "stale", "dead") and r["reason"]:
            line += f"  ({r['reason'][:120]})"
        print(line)
    return 0


def _print_connection(
    name: str, doc: dict[str, Any], updated: datetime, verdict: tuple[bool, str], now: datetime
) -> None:
    ok, why = verdict
    state = doc["state"] if ok else f"NOT OK: {why}"
    where = doc.get("endpoint") or doc.get("broker")
    if doc.get("kind") == "opcua":
        beat = doc.get("last_heartbeat")
        heartbeat = _ago(datetime.fromisoformat(beat), now) if beat else "never"
        extra = (
            f"monitored {doc.get('monitored')}, failed {len(doc.get('failed', {}))}, heartbeat {heartbeat}"
        )
    else:
        extra = f"messages {doc.get('messages')}"
        if doc.get("down"):
            extra += f", {len(doc['down'])} tags source-down"
    spooled = doc.get("last_spooled")
    extra += f", last spooled {_ago(datetime.fromisoformat(spooled), now) if spooled else 'never'}"
    print(f"  {name:22} {state}  {where}  reconnects {doc.get('reconnects')}, {extra}")
    counts = doc.get("counts", {})
    rejected = {k: v for k, v in counts.items() if not k.startswith("msg_") and k not in NOTES}
    if rejected:
        print(f"  {'':22} rejected by reason: {', '.join(f'{k} {v}' for k, v in sorted(rejected.items()))}")
    noted = {k: v for k, v in counts.items() if k in NOTES and k != "values"}
    if noted:
        print(f"  {'':22} noted: {', '.join(f'{k} {v}' for k, v in sorted(noted.items()))}")


def _print_store(sink: dict[str, Any], writer: dict[str, Any], ok: bool, why: str) -> None:
    fill = 100 * sink.get("spool_fill", 0.0)
    backlog = sink.get("spool_depth_bytes", 0) / 1e6
    alarm = "  NEARLY FULL" if fill >= 80 else ""
    state = "ok" if ok else why
    print(
        f"Store    {state}\n         received {sink.get('received')}, written by the store writer "
        f"{writer.get('stored', '?')} since it started; spool {backlog:.1f} MB not yet stored "
        f"({fill:.1f} % of its limit){alarm}"
    )
