"""`biopilot simulate`: the simulated plant, live (served over OPC UA and MQTT) or historical (N complete
runs as fast as possible, into the store or as historian CSV exports)."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from biopilot.app.commands.common import DEFAULT_DATA_DIR, site_config
from biopilot.errors import BioPilotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser(
        "simulate",
        help="the simulated plant: live over OPC UA and MQTT, or --historical runs into the store or CSV",
        description=(
            "Live (default): serve the simulated plant of the site config's [simulator] section until"
            " stopped; each run's truth goes to DATA_DIR/truth/<batch>.json. Historical (--historical):"
            " simulate N complete runs as fast as possible and write them into the store in DATA_DIR, or"
            " with --out as historian CSV exports (OUT/historian/<equipment>.csv), with their truth in"
            " OUT/truth/."
        ),
    )
    sp.add_argument(
        "--config",
        type=Path,
        default=None,
        help="site config (default: $BIOPILOT_CONFIG, else config/demo.toml)",
    )
    sp.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"store, truth and lab files (default: ./{DEFAULT_DATA_DIR})",
    )
    sp.add_argument(
        "--scenario",
        type=Path,
        default=None,
        help="scenario file (default: [simulator] scenario, else built in)",
    )
    sp.add_argument("--speed", type=float, default=None, help="live: simulated seconds per wall second")
    sp.add_argument("--interval", type=float, default=None, help="live: wall seconds between samples")
    sp.add_argument("--historical", action="store_true", help="generate complete runs as fast as possible")
    sp.add_argument(
        "--runs", type=int, default=None, help="historical: runs (default: the scenario's campaigns)"
    )
    sp.add_argument(
        "--out", type=Path, default=None, help="historical: write CSV exports here, not into the store"
    )
    sp.add_argument(
        "--csv-format",
        choices=("wide", "long"),
        default="wide",
        help="historical CSV: wide (default) or long",
    )
    sp.add_argument(
        "--start", default=None, help="historical: first fill, ISO-8601 with zone (default: scenario)"
    )
    sp.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from biopilot.app import stages
    from simulators.scenario import default_scenario, load_scenario

    path, config = site_config(args)
    if config.simulator is None:
        raise BioPilotError(f"{path}: has no [simulator] section: there is nothing to simulate")
    if args.scenario is not None:
        scenario = load_scenario(args.scenario)
    elif config.simulator.scenario:
        scenario = load_scenario((path.parent / config.simulator.scenario).resolve())
    else:
        scenario = default_scenario(seed=config.simulator.seed)
    if not args.historical:
        for opt in ("runs", "out", "start"):
            if getattr(args, opt) is not None:
                raise BioPilotError(f"--{opt} is for --historical")
        stages.simulate(config, args.speed, args.interval, scenario=scenario, data_dir=args.data_dir)
        return 0
    if args.runs is not None and args.runs < 1:
        raise BioPilotError("--runs must be at least 1")
    start = None
    if args.start is not None:
        try:
            start = datetime.fromisoformat(args.start)
        except ValueError:
            raise BioPilotError(f"--start {args.start!r}: not an ISO-8601 time") from None
        if start.tzinfo is None:
            raise BioPilotError(f"--start {args.start!r}: give the time zone, e.g. 2025-03-03T06:00:00Z")
    stages.simulate_historical(
        config,
        scenario,
        runs=args.runs or scenario.planned_runs,
        out=args.out,
        data_dir=args.data_dir,
        start=start,
        csv_format=args.csv_format,
    )
    return 0
