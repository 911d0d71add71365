"""`biopilot demo`: everything on embedded defaults, started and stopped together."""

from __future__ import annotations

import argparse
import sys
import threading
import time
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from biopilot.access import is_loopback
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


DEMO_TENANT = "acme"
DEMO_TRIAL = "T-ACME-1"
DEMO_PRODUCT = "enzyme-X"  # the product of config/trials/demo-charter.toml
# one user per role; the startup member belongs to DEMO_TENANT, the partner is invited to DEMO_TRIAL
DEMO_USERS = [
    ("admin", "admin", None),
    ("operator", "operator", None),
    ("startup", "startup", DEMO_TENANT),
    ("partner", "partner", None),
]


def login_enabled(catalog, cwd: Path | None = None) -> bool:  # type: ignore[no-untyped-def]
    """Can anyone sign in: a user with a password, or an identity provider in .streamlit/secrets.toml?"""
    if any(u.has_password and not u.disabled for u in catalog.users()):
        return True
    return oidc_configured(cwd)


def oidc_configured(cwd: Path | None = None) -> bool:
    import tomllib

    for path in (
        (cwd or Path.cwd()) / ".streamlit" / "secrets.toml",
        Path.home() / ".streamlit" / "secrets.toml",
    ):
        try:
            if "auth" in tomllib.loads(path.read_text()):
                return True
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return False


def require_login_beyond_loopback(address: str, catalog) -> None:  # type: ignore[no-untyped-def]
    """The dashboard listens beyond this machine only with login (local accounts or OIDC)."""
    if is_loopback(address) or login_enabled(catalog):
        return
    raise BioPilotError(
        f"the dashboard would listen on {address} without login: add a user first "
        "(`biopilot users add NAME --role admin`) or configure an identity provider (README, "
        '"Signing in"); without them it serves 127.0.0.1 only'
    )


def _seed_users(catalog) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """The demo's users (one per role, one-time passwords) and its trial, if the data directory has no users:
    [(user, role, one-time password)]."""
    from processing.queries.auth import hash_password, one_time_password

    if catalog.has_users():
        return []
    out = []
    for name, role, tenant in DEMO_USERS:
        password = one_time_password()
        catalog.add_user(
            name,
            role,
            created_by="demo",
            tenant=tenant,
            password_hash=hash_password(password),
            must_change=True,
            display_name=f"demo {role}",
        )
        catalog.audit.append("demo", "user.add", name, why="demo user", role=role, tenant=tenant)
        out.append((name, role, password))
    catalog.create_trial(
        DEMO_TRIAL,
        title="Demo trial: acme's strain on F-101",
        equipment=["F-101"],
        startup=DEMO_TENANT,
        product=DEMO_PRODUCT,
        created_by="demo",
    )
    catalog.audit.append("demo", "trial.create", DEMO_TRIAL, why="demo trial", startup=DEMO_TENANT)
    catalog.invite(DEMO_TRIAL, "partner", invited_by="demo")
    catalog.audit.append("demo", "trial.invite", DEMO_TRIAL, why="demo trial", user="partner")
    return out


class TrialSeeder(threading.Thread):
    """Writes the demo trial (biopilot/app/demo_trial.py) beside the running stages: the campaign is
    simulated and judged at once, its samples are copied once the simulator has begun writing the plant's
    history (a simulator that finds data of its tags writes none). Reports to logs/demo-trial.log."""

    def __init__(self, config, data_dir: Path, log_file: Path) -> None:  # type: ignore[no-untyped-def]
        super().__init__(name="demo-trial", daemon=True)
        self.config, self.data_dir, self.log_file = config, data_dir, log_file
        self.history_start = datetime.now(UTC)
        self.cancel = threading.Event()

    def _wait_for_history(self, store) -> None:  # type: ignore[no-untyped-def]
        from simulators.wiring import tag_map

        names = list(tag_map(self.config).values())
        deadline = time.monotonic() + 120.0
        while not store.latest(names):
            if self.cancel.is_set() or time.monotonic() > deadline:
                raise BioPilotError("the simulator wrote no plant history within 120 s")
            self.cancel.wait(0.2)

    def run(self) -> None:
        import logging
        from datetime import timedelta

        from biopilot.app.demo_trial import seed_demo_trial
        from storage import open_catalog, open_store

        logging.getLogger("processing").setLevel(logging.WARNING)  # the campaign's runs: not on the console
        sim = self.config.simulator
        start = self.history_start - timedelta(hours=sim.history_h if sim is not None else 0.0)
        with self.log_file.open("a") as out:
            try:
                catalog = open_catalog(self.config, self.data_dir)
                store = open_store(self.config, self.data_dir)
                try:
                    seeded = seed_demo_trial(
                        self.config,
                        catalog,
                        store,
                        DEMO_TRIAL,
                        start,
                        wait_for_history=lambda: self._wait_for_history(store),
                    )
                finally:
                    store.close()
                    catalog.close()
                out.write(
                    f"{datetime.now(UTC).isoformat()} demo trial {DEMO_TRIAL}: baseline "
                    f"{', '.join(seeded.baseline)}; trial {', '.join(seeded.trial)}; charter locked; "
                    f"{seeded.seconds:.1f} s\n"
                )
            except Exception as exc:
                out.write(f"{datetime.now(UTC).isoformat()} demo trial {DEMO_TRIAL} not written: {exc}\n")


def _start_trial_seeding(config, data_dir: Path, logs: Path) -> TrialSeeder:  # type: ignore[no-untyped-def]
    logs.mkdir(parents=True, exist_ok=True)
    seeder = TrialSeeder(config, data_dir, logs / "demo-trial.log")
    seeder.start()
    return seeder


def _require_private_broker(name: str, host: str, port: int, config_path: Path) -> None:
    """The demo's broker is its own, on this machine only: never one that happens to answer there."""
    from biopilot.app.broker import reachable

    key = f"[mqtt.brokers.{name}] in {config_path}"
    if not is_loopback(host):
        raise BioPilotError(f'{key}: the demo\'s broker listens on this machine only; set host = "127.0.0.1"')
    if reachable(host, port, 0.5):
        raise BioPilotError(
            f"something already answers at {host}:{port} ({_what_answers(host, port)}); the demo starts a "
            "private broker of its own and never uses one it did not start: stop that one, or give the demo "
            f"another port in {key}"
        )


def _what_answers(host: str, port: int) -> str:
    """An MQTT broker (it answers a CONNECT with CONNACK) or some other program."""
    import socket

    connect = bytes([0x10, 16, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 5, 0, 4]) + b"bpdp"
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(connect)
            reply = s.recv(4)
    except OSError:
        return "a program that is not an MQTT broker"
    return "an MQTT broker" if reply[:1] == b"\x20" else "a program that is not an MQTT broker"


def _cmd_demo(args: argparse.Namespace) -> int:
    from biopilot.app.broker import mosquitto_binary, mosquitto_config, wait_reachable
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
    for name, broker in config.mqtt.brokers.items():
        _require_private_broker(name, broker.host, broker.port, config_path)
    if sim.opcua_server:
        endpoint = urlparse(config.opcua.servers[sim.opcua_server].endpoint)
        if not is_loopback(endpoint.hostname):
            raise BioPilotError(
                f"[opcua.servers.{sim.opcua_server}] in {config_path}: the demo's OPC UA server listens on "
                "this machine only; use an opc.tcp://127.0.0.1:PORT/… endpoint"
            )
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
    from storage import open_catalog

    catalog = open_catalog(config, data_dir)
    try:
        created = _seed_users(catalog)
        require_login_beyond_loopback(args.address, catalog)
        anchor = catalog.audit.anchor("demo start")
    finally:
        catalog.close()
    print(f"BioPilot demo · site {config.site.name!r} · data in {data_dir.resolve()}")
    if created:
        print("  Users (one-time passwords, shown once; each must choose a password at first sign-in):")
        for name, role, password in created:
            extra = (
                f", tenant {DEMO_TENANT}"
                if role == "startup"
                else f", invited to {DEMO_TRIAL}"
                if role == "partner"
                else ""
            )
            print(f"    {name:9} {role}{extra}: {password}")
        print(
            f"  Trial {DEMO_TRIAL} (startup {DEMO_TENANT}, F-101): a simulated campaign of acme's strain "
            "(5 baseline + 3 trial runs) and its locked charter are written in the background; "
            f"`biopilot verdict {DEMO_TRIAL} --user admin` shows the verdict"
        )
    else:
        print(
            "  Users: those of the earlier demo in this data directory "
            "(`biopilot users passwd NAME --user admin` gives one a new one-time password)"
        )
    print(f"  Audit log anchored at {anchor.seq}:{anchor.hash}")
    seeder: TrialSeeder | None = None
    try:
        for name, broker in config.mqtt.brokers.items():
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
            print(
                f"  MQTT broker {name}: a private {kind} started at {broker.host}:{broker.port}"
                " (this machine only)"
            )
        speed = ["--speed", str(args.speed)] if args.speed else []
        sup.add(
            Child(
                "simulator",
                [*py, "simulate", *common, *speed],
                logs / "simulator.log",
            )
        )
        if created:
            seeder = _start_trial_seeding(config, data_dir, logs)
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
        if seeder is not None:
            seeder.cancel.set()
            seeder.join(30.0)
        sup.stop()
        print(f"biopilot: stopped in {time.monotonic() - t0:.1f} s", flush=True)
    return 0
