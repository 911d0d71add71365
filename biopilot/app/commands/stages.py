"""The stages on their own: collect, process, dashboard, and the embedded broker (simulate: simulate.py)."""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser

from biopilot.app.commands import simulate
from biopilot.app.commands.common import add_config_options, require_free_port, site_config
from biopilot.app.commands.demo import streamlit_command


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    simulate.register(sub)

    sp = sub.add_parser("collect", help="collect the configured tags into the store")
    add_config_options(sp)
    sp.set_defaults(func=_cmd_collect)

    sp = sub.add_parser("write-store", help="write the spool into the store (collect starts it itself)")
    add_config_options(sp)
    sp.set_defaults(func=_cmd_write_store)

    sp = sub.add_parser("process", help="detect runs and compute KPIs from stored data")
    add_config_options(sp)
    sp.add_argument("--interval", type=float, default=None, help="seconds between passes (default: config)")
    sp.set_defaults(func=_cmd_process)

    sp = sub.add_parser("dashboard", help="serve the dashboard")
    add_config_options(sp)
    sp.add_argument("--port", type=int, default=8501)
    sp.add_argument("--address", default="127.0.0.1")
    sp.add_argument("--no-browser", action="store_true")
    sp.set_defaults(func=_cmd_dashboard)

    sp = sub.add_parser("broker", help="run the embedded MQTT broker (amqtt)")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=1883)
    sp.set_defaults(func=_cmd_broker)


def _cmd_collect(args: argparse.Namespace) -> int:
    from biopilot.app import stages

    path, config = site_config(args, writes=True)
    stages.collect(config, path.resolve(), args.data_dir.resolve())
    return 0


def _cmd_write_store(args: argparse.Namespace) -> int:
    from biopilot.app import stages

    _, config = site_config(args, writes=True)
    stages.write_store(config, args.data_dir)
    return 0


def _cmd_process(args: argparse.Namespace) -> int:
    from biopilot.app import stages

    _, config = site_config(args, writes=True)
    stages.process(config, args.data_dir, args.interval)
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from biopilot.app.broker import run_amqtt

    run_amqtt(args.host, args.port)
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from biopilot.app.commands.demo import require_login_beyond_loopback
    from storage import open_catalog

    path, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    try:
        require_login_beyond_loopback(args.address, catalog)
    finally:
        catalog.close()
    require_free_port(args.address, args.port, "the dashboard", "--port")
    argv, env = streamlit_command(path, args.data_dir, args.address, args.port)
    if not args.no_browser:
        webbrowser.open(f"http://{args.address}:{args.port}")
    sys.stdout.flush()
    sys.stderr.flush()
    # become Streamlit: a SIGTERM to `biopilot dashboard` then stops the server itself (a child started with
    # subprocess.call outlived its parent's SIGTERM)
    os.execve(argv[0], argv, {**os.environ, **env})
    return 0  # not reached
