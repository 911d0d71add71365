"""The `biopilot` command. Logging handlers are set here and only here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from biopilot import __version__
from biopilot.config import SiteConfig, load_config
from biopilot.errors import BioPilotError

log = logging.getLogger("biopilot")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = Path("biopilot-data")


def default_config() -> Path:
    """config/demo.toml of the working directory, else the one beside the installed code."""
    local = Path("config/demo.toml")
    return local if local.exists() else REPO_ROOT / "config" / "demo.toml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except BioPilotError as exc:
        print(f"biopilot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="biopilot", description="BioPilot: the shared data record for pilot trials."
    )
    p.add_argument("--version", action="version", version=f"biopilot {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, including asyncua's")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, *, data: bool = True) -> None:
        sp.add_argument("--config", type=Path, default=None, help="site config (default: config/demo.toml)")
        if data:
            sp.add_argument(
                "--data-dir",
                type=Path,
                default=DEFAULT_DATA_DIR,
                help=f"where the embedded store and logs live (default: ./{DEFAULT_DATA_DIR})",
            )

    sp = sub.add_parser(
        "demo", help="run everything on embedded defaults: simulator, collectors, processing, dashboard"
    )
    common(sp)
    sp.add_argument(
        "--speed", type=float, default=None, help="simulated seconds per wall second (default: config)"
    )
    sp.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    sp.add_argument("--address", default="127.0.0.1", help="dashboard address (default 127.0.0.1)")
    sp.add_argument("--no-browser", action="store_true", help="do not open a browser")
    sp.set_defaults(func=_cmd_demo)

    sp = sub.add_parser("check-config", help="validate a site config file")
    sp.add_argument("file", type=Path)
    sp.set_defaults(func=_cmd_check_config)

    sp = sub.add_parser("simulate", help="serve the simulated plant over OPC UA and MQTT")
    common(sp, data=False)
    sp.add_argument("--speed", type=float, default=None)
    sp.add_argument("--interval", type=float, default=None, help="wall seconds between samples")
    sp.set_defaults(func=_cmd_simulate)

    sp = sub.add_parser("collect", help="collect the configured tags into the store")
    common(sp)
    sp.set_defaults(func=_cmd_collect)

    sp = sub.add_parser("process", help="detect runs and compute KPIs from stored data")
    common(sp)
    sp.add_argument("--interval", type=float, default=2.0)
    sp.set_defaults(func=_cmd_process)

    sp = sub.add_parser("dashboard", help="serve the dashboard")
    common(sp)
    sp.add_argument("--port", type=int, default=8501)
    sp.add_argument("--address", default="127.0.0.1")
    sp.add_argument("--no-browser", action="store_true")
    sp.set_defaults(func=_cmd_dashboard)

    sp = sub.add_parser("broker", help="run the embedded MQTT broker (amqtt)")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=1883)
    sp.set_defaults(func=_cmd_broker)

    sp = sub.add_parser("runs", help="runs in the catalog")
    rs = sp.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    rl = rs.add_parser("list", help="list runs")
    common(rl)
    rl.add_argument("--json", action="store_true", help="machine-readable output")
    rl.set_defaults(func=_cmd_runs_list)
    return p


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # asyncua logs every lost connection as an error with a traceback; the collector says it in one line
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        for name in ("amqtt", "transitions", "watchdog"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _config(args: argparse.Namespace) -> tuple[Path, SiteConfig]:
    path = args.config or default_config()
    return path, load_config(path)


# -- commands ---------------------------------------------------------------------------------------------
def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    protocols = {t.source.protocol for t in config.tags}
    print(
        f"{args.file}: OK — site {config.site.name!r}, {len(config.equipment)} equipment, "
        f"{len(config.tags)} tags ({', '.join(sorted(protocols)) or 'no sources'})"
    )
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from biopilot import stages

    _, config = _config(args)
    stages.simulate(config, args.speed, args.interval)
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from biopilot import stages

    _, config = _config(args)
    stages.collect(config, args.data_dir)
    return 0


def _cmd_process(args: argparse.Namespace) -> int:
    from biopilot import stages

    _, config = _config(args)
    stages.process(config, args.data_dir, args.interval)
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from biopilot.broker import run_amqtt

    run_amqtt(args.host, args.port)
    return 0


def streamlit_command(
    config_path: Path, data_dir: Path, address: str, port: int
) -> tuple[list[str], dict[str, str]]:
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "minimal",
        "--theme.base",
        "light",
    ]
    env = {"BIOPILOT_CONFIG": str(config_path.resolve()), "BIOPILOT_DATA_DIR": str(data_dir.resolve())}
    return argv, env


def _cmd_dashboard(args: argparse.Namespace) -> int:
    import subprocess

    path, _ = _config(args)
    _require_free_port(args.address, args.port, "the dashboard", "--port")
    argv, env = streamlit_command(path, args.data_dir, args.address, args.port)
    if not args.no_browser:
        webbrowser.open(f"http://{args.address}:{args.port}")
    return subprocess.call(argv, env={**os.environ, **env})


def _cmd_runs_list(args: argparse.Namespace) -> int:
    from storage import open_catalog

    _, config = _config(args)
    catalog = open_catalog(config, args.data_dir)
    runs = catalog.runs()
    if args.json:
        out = []
        for run in runs:
            item = run.to_json()
            item["kpis"] = [k.to_json() for k in catalog.kpis(run.id)]
            out.append(item)
        print(json.dumps(out, indent=2))
    elif not runs:
        print("no runs yet")
    else:
        print(f"{'run':36} {'equipment':10} {'start (UTC)':20} {'end (UTC)':20} status")
        for run in runs:
            end = run.end.strftime("%Y-%m-%d %H:%M:%S") if run.end else "—"
            print(
                f"{run.id:36} {run.equipment:10} {run.start:%Y-%m-%d %H:%M:%S}  {end:20} "
                f"{'open' if run.is_open else 'closed'}"
            )
    catalog.close()
    return 0


def _require_free_port(host: str, port: int, what: str, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise BioPilotError(
                f"port {port} on {host} is in use, so {what} cannot start there "
                f"(another BioPilot demo?); stop it or choose another with {option}"
            ) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from biopilot.broker import mosquitto_binary, mosquitto_config, reachable, wait_reachable
    from biopilot.supervisor import Child, Supervisor, wait_http_ok

    config_path, config = _config(args)
    if config.simulator is None:
        raise BioPilotError(
            f"{config_path}: has no [simulator] section; the demo needs one (see config/demo.toml)"
        )
    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    _require_free_port(args.address, args.port, "the dashboard", "--port")
    sim = config.simulator
    if sim.opcua_server:
        endpoint = urlparse(config.opcua.servers[sim.opcua_server].endpoint)
        _require_free_port(
            endpoint.hostname or "127.0.0.1",
            endpoint.port or 4840,
            "the simulator's OPC UA server",
            f"the endpoint of [opcua.servers.{sim.opcua_server}] in {config_path}",
        )

    sup = Supervisor()
    sup.install_signal_handlers()
    py = [sys.executable, "-m", "biopilot"]
    common = ["--config", str(config_path.resolve()), "--data-dir", str(data_dir.resolve())]
    started = time.monotonic()
    print(f"BioPilot demo · site {config.site.name!r} · data in {data_dir.resolve()}")
    try:
        for name, broker in config.mqtt.brokers.items():
            if reachable(broker.host, broker.port):
                print(f"  MQTT broker {name}: using the one at {broker.host}:{broker.port}")
                continue
            binary = mosquitto_binary()
            if binary:
                conf = data_dir / f"mosquitto-{name}.conf"
                conf.write_text(mosquitto_config(broker.host, broker.port, data_dir / f"mosquitto-{name}"))
                sup.add(Child(f"broker-{name}", [binary, "-c", str(conf)], logs / f"broker-{name}.log"))
                kind = "Mosquitto"
            else:
                sup.add(
                    Child(
                        f"broker-{name}",
                        [*py, "broker", "--host", broker.host, "--port", str(broker.port)],
                        logs / f"broker-{name}.log",
                    )
                )
                kind = "amqtt, embedded"
            if not wait_reachable(broker.host, broker.port, 10.0):
                raise BioPilotError(
                    f"the embedded MQTT broker did not start on {broker.host}:{broker.port} "
                    f"(log: {logs / f'broker-{name}.log'})"
                )
            print(f"  MQTT broker {name}: started at {broker.host}:{broker.port} ({kind})")
        speed = ["--speed", str(args.speed)] if args.speed else []
        sup.add(
            Child(
                "simulator",
                [*py, "simulate", "--config", str(config_path.resolve()), *speed],
                logs / "simulator.log",
            )
        )
        sup.add(Child("collector", [*py, "collect", *common], logs / "collector.log"))
        sup.add(Child("processing", [*py, "process", *common], logs / "processing.log"))
        argv, env = streamlit_command(config_path, data_dir, args.address, args.port)
        dash = sup.add(Child("dashboard", argv, logs / "dashboard.log", env=env))
        url = f"http://{args.address}:{args.port}"
        up = wait_http_ok(f"{url}/_stcore/health", 60.0, lambda: dash.alive() and not sup.stopping)
        if not up and not sup.stopping:
            log_file = logs / "dashboard.log"
            raise BioPilotError(f"the dashboard did not start (log: {log_file}):\n{dash.tail()}")
        if not sup.stopping:
            print(f"  simulator, collector, processing: running (logs in {logs.resolve()})")
            print(
                f"\n  Dashboard: {url}   (ready in {time.monotonic() - started:.1f} s;"
                " Ctrl-C stops everything)\n",
                flush=True,
            )
            if not args.no_browser:
                webbrowser.open(url)
            sup.watch()
    finally:
        print("biopilot: stopping…", flush=True)
        t0 = time.monotonic()
        sup.stop()
        print(f"biopilot: stopped in {time.monotonic() - t0:.1f} s", flush=True)
    return 0
