"""`biopilot check-config FILE`: every problem of a site config, one line each ("file: key: message"), on
stderr (exit 2); without problems one line on stdout, after a warning line for each password variable the
file names that is not set here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from biopilot.config import config_warnings, load_config
from biopilot.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("check-config", help="validate a site config file: every problem, one line each")
    sp.add_argument("file", type=Path)
    sp.set_defaults(func=_cmd_check_config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    for warning in config_warnings(config):
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    labels = {t.source_label.split(":")[0] for t in config.tags if t.source_label}
    import_only = sum(1 for t in config.tags if t.source is None)
    sources = ", ".join(sorted(labels)) or "no sources"
    extra = f"; {import_only} import-only" if import_only else ""
    print(
        f"{args.file}: OK — site {config.site.name!r}, {len(config.equipment)} equipment, "
        f"{len(config.tags)} tags ({sources}{extra})"
    )
    return 0
