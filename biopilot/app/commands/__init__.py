"""The `biopilot` subcommands, one module per area; each has `register(subparsers)`."""

from biopilot.app.commands import (
    audit,
    browse,
    certs,
    check_config,
    demo,
    healthcheck,
    imports,
    kpis,
    lab,
    report,
    runs,
    stages,
    status,
    trials,
    users,
)

MODULES = [
    demo,
    check_config,
    stages,
    status,
    healthcheck,
    certs,
    browse,
    runs,
    imports,
    lab,
    kpis,
    users,
    trials,
    report,
    audit,
]
