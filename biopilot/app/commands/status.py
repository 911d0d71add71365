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
from storage.health import liveness, source_alive


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
    alive = {name: source_alive(doc, updated, now) for name, (doc, updated) in components.items()}
    rows = []
    for tag in config.tags:
        if tag.name not in visible:
            continue
        th = tags.get(tag.name)
        src = f"opcua:{tag.source.server}" if tag.source.protocol == "opcua" else f"mqtt:{tag.source.broker}"
        age = (now - th.last_seen).total_seconds() if th and th.last_seen else None
        rows.append(
            {
                "tag": tag.name,
                "source": src,
                "state": liveness(alive.get(src, False), age, tag.max_age_s),
                "last_seen": th.last_seen.isoformat() if th and th.last_seen else None,
                "age_s": round(age, 1) if age is not None else None,
                "last_source_time": th.last_ts.isoformat() if th and th.last_ts else None,
                "rate_per_min": th.rate_per_min if th else 0.0,
                "values_total": th.values_total if th else 0,
            }
        )
    if args.json:
        print(
            json.dumps(
                {
                    "components": {
                        n: {**doc, "updated": u.isoformat(), "alive": alive[n]}
                        for n, (doc, u) in components.items()
                    },
                    "tags": rows,
                    "gaps": [
                        {
                            "source": g.source,
                            "lost": g.lost.isoformat(),
                            "back": g.back.isoformat() if g.back else None,
                            "last_ts_before": g.last_ts_before.isoformat() if g.last_ts_before else None,
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
            _print_connection(name, doc, updated, alive[name], now)
    sink = components.get("sink", ({}, now))[0]
    writer = components.get("writer", ({}, now))[0]
    if sink or writer:
        _print_store(sink, writer)
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
        print(f"  {r['tag']:32} {r['state']:6} seen {age:>8} ago  {rate}  {r['values_total']:>9} values")
    return 0


def _print_connection(name: str, doc: dict[str, Any], updated: datetime, alive: bool, now: datetime) -> None:
    state = doc["state"] if alive else f"{doc['state']} (not alive: reported {_ago(updated, now)})"
    where = doc.get("endpoint") or doc.get("broker")
    if doc.get("kind") == "opcua":
        beat = doc.get("last_heartbeat")
        heartbeat = _ago(datetime.fromisoformat(beat), now) if beat else "never"
        extra = (
            f"monitored {doc.get('monitored')}, failed {len(doc.get('failed', {}))}, heartbeat {heartbeat}"
        )
    else:
        extra = f"messages {doc.get('messages')}"
    print(f"  {name:22} {state:12} {where}  reconnects {doc.get('reconnects')}, {extra}")
    rejected = {k: v for k, v in doc.get("counts", {}).items() if not k.startswith("msg_") and k != "values"}
    if rejected:
        print(f"  {'':22} rejected by reason: {', '.join(f'{k} {v}' for k, v in sorted(rejected.items()))}")


def _print_store(sink: dict[str, Any], writer: dict[str, Any]) -> None:
    fill = 100 * sink.get("spool_fill", 0.0)
    state = "ok" if writer.get("store_ok", True) else "REFUSING WRITES"
    backlog = sink.get("spool_depth_bytes", 0) / 1e6
    alarm = "  NEARLY FULL" if fill >= 80 else ""
    print(
        f"Store    {state}: received {sink.get('received')}, written by the store writer "
        f"{writer.get('stored', '?')} since it started; spool {backlog:.1f} MB not yet stored "
        f"({fill:.1f} % of its limit){alarm}"
    )
