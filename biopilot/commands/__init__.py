"""The `biopilot` subcommands, one module per area; each has `register(subparsers)`."""

from biopilot.commands import check_config, demo, imports, kpis, lab, runs, stages, status

MODULES = [demo, check_config, stages, status, runs, imports, lab, kpis]
