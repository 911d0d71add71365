"""`biopilot check-config FILE`."""

from __future__ import annotations

import argparse
from pathlib import Path

from biopilot.config import config_warnings, load_config


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("check-config", help="validate a site config file")
    sp.add_argument("file", type=Path)
    sp.set_defaults(func=_cmd_check_config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    protocols = {t.source.protocol for t in config.tags}
    print(
        f"{args.file}: OK — site {config.site.name!r}, {len(config.equipment)} equipment, "
        f"{len(config.tags)} tags ({', '.join(sorted(protocols)) or 'no sources'})"
    )
    for warning in config_warnings(config):
        print(f"warning: {warning}")
    return 0
