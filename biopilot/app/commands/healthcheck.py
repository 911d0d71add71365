"""`biopilot healthcheck`: a one-line verdict and exit code for container health checks.

- `collector`: the collector and its store writer have written their health within --max-age seconds (they
  do every [collector] health_interval_s), and the store accepts writes. A plant connection that is down
  does not make the collector unhealthy: it is reconnecting, and `biopilot status` says why.
- `stores`: the time-series store and the catalog answer (what `biopilot process` and the dashboard need).

Exit 0 when healthy, 1 when not; the line says which part and why.
"""

from __future__ import annotations

import argparse

from biopilot.app.commands.common import add_config_options, site_config
from biopilot.config import SiteConfig
from biopilot.errors import BioPilotError
from biopilot.samples import utcnow


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("healthcheck", help="exit 0 if a stage is healthy, 1 if not (container checks)")
    sp.add_argument("target", choices=["collector", "stores"], help="what to check")
    add_config_options(sp)
    sp.add_argument(
        "--max-age",
        type=float,
        default=None,
        help="seconds since the collector last wrote its health (default: 5× health_interval_s, ≥ 15)",
    )
    sp.set_defaults(func=_cmd_healthcheck)


def _cmd_healthcheck(args: argparse.Namespace) -> int:
    _, config = site_config(args)
    try:
        problem = _collector(args, config) if args.target == "collector" else _stores(args, config)
    except BioPilotError as exc:
        problem = str(exc)
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    print(f"healthy: {args.target}")
    return 0


def _collector(args: argparse.Namespace, config: SiteConfig) -> str | None:
    from storage import open_health

    default = max(5 * config.collector.health_interval_s, 15.0)
    max_age = args.max_age if args.max_age is not None else default
    health = open_health(config, args.data_dir, read_only=True)
    try:
        components = health.components()
    finally:
        health.close()
    now = utcnow()
    for name in ("sink", "writer"):
        if name not in components:
            return f"no {name} health in {args.data_dir} yet (is `biopilot collect` running with it?)"
        _, updated = components[name]
        age = (now - updated).total_seconds()
        if age > max_age:
            return f"the collector's {name} last wrote its health {age:.0f} s ago (limit {max_age:g} s)"
    writer = components["writer"][0]
    if not writer.get("store_ok", True):
        store = writer.get("store", {})
        why = store.get("last_error") if isinstance(store, dict) else None
        return f"the store refuses writes; samples wait in the spool{': ' + why if why else ''}"
    return None


def _stores(args: argparse.Namespace, config: SiteConfig) -> str | None:
    from storage import open_catalog, open_store

    store = open_store(config, args.data_dir, read_only=True)
    try:
        ping = getattr(store, "ping", None)
        if callable(ping) and not ping():
            return f"the time-series store at {getattr(store, 'url', '?')} does not answer"
    finally:
        store.close()
    catalog = open_catalog(config, args.data_dir)
    try:
        catalog.schema_version()
    finally:
        catalog.close()
    return None
