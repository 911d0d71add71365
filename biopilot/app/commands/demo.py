"""`biopilot demo`: everything on embedded defaults, started and stopped together."""

from __future__ import annotations

import argparse
import sys
import time
import webbrowser
from pathlib import Path
from urllib.parse import urlparse

from biopilot.app.commands.common import add_config_options, require_free_port, site_config
from biopilot.errors import BioPilotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser(
        "demo", help="run everything on embedded defaults: simulator, collectors, processing, dashboard"
    )
    add_config_options(sp)
    sp.add_argument(
        "--speed", type=float, default=None, help="simulated seconds per wall second (default: config)"
    )
    sp.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    sp.add_argument("--address", default="127.0.0.1", help="dashboard address (default 127.0.0.1)")
    sp.add_argument("--no-browser", action="store_true", help="do not open a browser")
    sp.set_defaults(func=_cmd_demo)


def streamlit_command(
    config_path: Path, data_dir: Path, address: str, port: int
) -> tuple[list[str], dict[str, str]]:
    app = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from biopilot.app.broker import mosquitto_binary, mosquitto_config, reachable, wait_reachable
    from biopilot.app.supervisor import Child, Supervisor, wait_http_ok

    config_path, config = site_config(args)
    if config.simulator is None:
        raise BioPilotError(
            f"{config_path}: has no [simulator] section; the demo needs one (see config/demo.toml)"
        )
    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    require_free_port(args.address, args.port, "the dashboard", "--port")
    sim = config.simulator
    if sim.opcua_server:
        endpoint = urlparse(config.opcua.servers[sim.opcua_server].endpoint)
        require_free_port(
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
                [*py, "simulate", *common, *speed],
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
