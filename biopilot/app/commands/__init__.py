"""The `biopilot` subcommands, one module per area; each has `register(subparsers)`."""

from biopilot.app.commands import (
    browse,
    certs,
    check_config,
    demo,
    imports,
    kpis,
    lab,
    report,
    runs,
    stages,
    status,
)

MODULES = [demo, check_config, stages, status, certs, browse, runs, imports, lab, kpis, report]
