"""The docker-compose deployment: docker-compose.yml, Dockerfile, deploy/ and .env.example.

No Docker engine runs on these machines, so nothing is built or started. What is checked:
- `docker-compose config` (Debian's docker-compose) validates the file with .env.example's values; it is
  SKIPPED when the binary is missing outside CI and FAILS in CI (.ci/run installs it);
- every BioPilot service's command and health check parses with the real `biopilot` argparse parser (not
  run), its site config is mounted, and its data directory is a declared volume where it keeps state;
- every volume is declared and every piece of state is on one; every ${VAR} is in .env.example and back;
- deploy/site.toml passes `biopilot check-config`, names the compose services, and its secrets reach the
  services that need them;
- the shipped Mosquitto config and password step, run with a real Mosquitto: anonymous refused, the .env
  login accepted.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import getpass
import importlib
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
import yaml

from biopilot.app.broker import reachable
from biopilot.app.cli import _parser
from tests.conftest import IN_CI, REPO, free_port, require_mosquitto

COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SITE = REPO / "deploy" / "site.toml"
BIOPILOT_SERVICES = {"collector", "processing", "dashboard", "simulator"}
ALL_SERVICES = BIOPILOT_SERVICES | {"mosquitto", "influxdb", "postgres"}


def compose_binary() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        if IN_CI:
            pytest.fail("docker-compose is required in CI (.ci/run installs Debian's docker-compose package)")
        pytest.skip("SKIPPED FOR MISSING DOCKER-COMPOSE: apt-get install docker-compose")
    return path


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as YAML reads it (anchors and merge keys resolved), without docker-compose."""
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each short-syntax mount."""
    out = []
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        out.append((source, target))
    return out


def parse_biopilot(argv: list[str]) -> argparse.Namespace:
    """argv as `biopilot` parses it (nothing runs); a usage error fails the test with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return _parser().parse_args(argv)
    except SystemExit:
        message = (err.getvalue().strip().splitlines() or ["?"])[-1]
        pytest.fail(f"`biopilot {' '.join(argv)}` is not a valid command: {message}")


# -- docker-compose config ---------------------------------------------------------------------------


def test_docker_compose_config_validates_the_file() -> None:
    binary = compose_binary()
    run = subprocess.run(
        [binary, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    resolved = yaml.safe_load(run.stdout)
    assert set(resolved["services"]) == ALL_SERVICES
    assert resolved["services"]["simulator"]["profiles"] == ["demo"]
    assert all("profiles" not in s for n, s in resolved["services"].items() if n != "simulator")
    assert (
        resolved["services"]["collector"]["environment"]["INFLUXDB_TOKEN"] == env_example()["INFLUXDB_TOKEN"]
    )


def test_a_missing_secret_stops_docker_compose_naming_it(tmp_path: Path) -> None:
    binary = compose_binary()
    env = tmp_path / "env"
    env.write_text("".join(f"{k}={v}\n" for k, v in env_example().items() if k != "INFLUXDB_TOKEN"))
    run = subprocess.run(
        [binary, "-f", str(COMPOSE), "--env-file", str(env), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "set INFLUXDB_TOKEN in .env" in run.stderr


# -- the BioPilot services -----------------------------------------------------------------------------


def test_every_service_command_is_a_real_biopilot_subcommand(compose: dict[str, Any]) -> None:
    assert 'ENTRYPOINT ["biopilot"]' in (REPO / "Dockerfile").read_text()  # a command is biopilot's argv
    expected = {
        "collector": "collect",
        "processing": "process",
        "dashboard": "dashboard",
        "simulator": "simulate",
    }
    for name in BIOPILOT_SERVICES:
        service = services(compose)[name]
        assert service["build"] == ".", name
        args = parse_biopilot(service["command"])
        assert args.command == expected[name]
        assert args.config == Path("/etc/biopilot/site.toml")
        health = service["healthcheck"]["test"]
        if health[:2] == ["CMD", "biopilot"]:
            check = parse_biopilot(health[2:])
            assert check.command == "healthcheck"
            assert (check.config, check.data_dir) == (args.config, args.data_dir)
    dash = parse_biopilot(services(compose)["dashboard"]["command"])
    assert (dash.address, dash.port, dash.no_browser) == ("0.0.0.0", 8501, True)


def test_the_command_check_catches_a_wrong_option() -> None:
    with pytest.raises(pytest.fail.Exception, match="not a valid command"):
        parse_biopilot(["collect", "--config", "x.toml", "--no-such-option"])
    with pytest.raises(pytest.fail.Exception, match="not a valid command"):
        parse_biopilot(["write-store-now"])


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_site_config_and_data_dir_are_mounted(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    site = tomllib.loads(SITE.read_text())
    for name in BIOPILOT_SERVICES:
        service = services(compose)[name]
        args = parse_biopilot(service["command"])
        binds = dict((t, s) for s, t in mounts(service))
        assert binds.get(str(args.config)) == "./deploy/site.toml", name
        if name == "processing":
            # keeps nothing in its data dir: the series are in InfluxDB, the catalog in PostgreSQL
            assert site["storage"]["backend"] == "influxdb" and site["storage"]["catalog"].startswith(
                "postgres"
            )
            continue
        assert binds.get(str(args.data_dir)) in declared, f"{name}: its data dir is not on a named volume"
    # the dashboard reads the collection's health from the collector's volume
    collector = dict((t, s) for s, t in mounts(services(compose)["collector"]))
    dashboard = dict((t, s) for s, t in mounts(services(compose)["dashboard"]))
    assert collector["/var/lib/biopilot"] == dashboard["/var/lib/biopilot"] == "collector-data"


def test_every_volume_is_declared_and_every_piece_of_state_is_on_one(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = {s for svc in services(compose).values() for s, _ in mounts(svc) if not s.startswith(".")}
    assert used == declared
    for _, svc in services(compose).items():
        for source, _ in mounts(svc):
            if source.startswith("."):
                assert (REPO / source).exists(), source
    state = {
        "mosquitto": ["/mosquitto/data"],
        "influxdb": ["/var/lib/influxdb2", "/etc/influxdb2"],
        "postgres": ["/var/lib/postgresql/data"],
        "collector": ["/var/lib/biopilot"],  # the spool is <data-dir>/spool
    }
    for name, paths in state.items():
        targets = {t: s for s, t in mounts(services(compose)[name])}
        for path in paths:
            assert targets.get(path) in declared, f"{name}: {path} is not on a named volume"


def test_every_variable_is_in_env_example_and_back() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = env_example()
    assert used <= set(example), f"missing from .env.example: {sorted(used - set(example))}"
    assert set(example) <= used, f"in .env.example but unused: {sorted(set(example) - used)}"
    assert all(v for v in example.values())


def test_the_secrets_the_site_config_names_reach_the_services(compose: dict[str, Any]) -> None:
    site = tomllib.loads(SITE.read_text())
    needed = {
        site["storage"]["influxdb"]["token_env"],
        site["storage"]["catalog_password_env"],
        *(b["password_env"] for b in site["mqtt"]["brokers"].values()),
    }
    for name in BIOPILOT_SERVICES:
        env = services(compose)[name]["environment"]
        assert needed <= set(env), f"{name} lacks {sorted(needed - set(env))}"
        for key in needed:
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", env[key]), f"{name}.{key} must come from .env"


def test_site_config_names_the_compose_services_and_the_env_values() -> None:
    site = tomllib.loads(SITE.read_text())
    example = env_example()
    influx = site["storage"]["influxdb"]
    assert urlsplit(influx["url"]).hostname == "influxdb"
    assert (influx["org"], influx["bucket"]) == (example["INFLUXDB_ORG"], example["INFLUXDB_BUCKET"])
    assert urlsplit(site["storage"]["catalog"]).hostname == "postgres"
    assert urlsplit(site["storage"]["catalog"]).username == "biopilot"
    broker = site["mqtt"]["brokers"]["plant"]
    assert (broker["host"], broker["username"]) == ("mosquitto", example["MQTT_USERNAME"])
    assert urlsplit(site["opcua"]["servers"]["pilot"]["endpoint"]).hostname == "simulator"


def test_site_config_passes_check_config() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "biopilot", "check-config", str(SITE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "OK" in run.stdout


def test_env_is_ignored_by_git_and_the_example_is_not() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO).returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO).returncode == 1
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_dockerfile_installs_biopilot_as_a_user_not_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert text.index("USER ") > text.index("pip install")


# -- Mosquitto ---------------------------------------------------------------------------------------


def conf_settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, value.strip())
    return out


def test_mosquitto_conf_requires_login_and_sets_its_limits_on_purpose() -> None:
    conf = conf_settings((REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text())
    assert conf["allow_anonymous"] == "false"
    assert conf["password_file"] == "/mosquitto/passwords/passwd"
    assert conf["persistence"] == "true" and conf["persistence_location"] == "/mosquitto/data/"
    assert int(conf["max_queued_messages"]) >= 100_000  # the default 1000 drops QoS 1 messages
    assert int(conf["max_inflight_messages"]) >= 100
    assert int(conf["max_queued_bytes"]) > 0


def _login(port: int, username: str | None, password: str | None) -> bool:
    """Whether the broker accepts this login (CONNACK success)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{time.monotonic_ns()}")
    if username is not None:
        client.username_pw_set(username, password)
    result: list[bool] = []
    answered = threading.Event()

    def on_connect(c: mqtt.Client, userdata: object, flags: object, rc: Any, props: object) -> None:
        result.append(not rc.is_failure)
        answered.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=10)
    deadline = time.monotonic() + 10
    while not answered.is_set() and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    assert answered.is_set(), "the broker did not answer the CONNECT"
    return result[0]


def test_the_shipped_mosquitto_config_and_password_step_with_a_real_broker(tmp_path: Path) -> None:
    require_mosquitto()
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    text = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert "listener 1883\n" in text
    # Only the container's paths and port change; the user is this one (as in biopilot.app.broker).
    text = text.replace("listener 1883\n", f"listener {port} 127.0.0.1\nuser {getpass.getuser()}\n")
    text = text.replace("/mosquitto/passwords/passwd", str(tmp_path / "passwords" / "passwd"))
    text = text.replace("/mosquitto/data/", f"{tmp_path / 'data'}/")
    (tmp_path / "data").mkdir()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    env = {
        **os.environ,
        "MQTT_USERNAME": "biopilot",
        "MQTT_PASSWORD": "a pass, with = signs & spaces",
        "MOSQUITTO_BIN": binary,
        "MOSQUITTO_CONF": str(conf),
        "PASSWORD_FILE": str(tmp_path / "passwords" / "passwd"),
    }
    log = (tmp_path / "broker.log").open("wb")
    proc = subprocess.Popen(
        ["/bin/sh", str(REPO / "deploy" / "mosquitto" / "entrypoint.sh")], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 15
        while not reachable("127.0.0.1", port, 0.2):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "broker.log").read_text()
            time.sleep(0.05)
        passwd = tmp_path / "passwords" / "passwd"
        assert stat.S_IMODE(passwd.stat().st_mode) == 0o600
        assert "a pass" not in passwd.read_text()  # hashed
        assert _login(port, None, None) is False  # anonymous: refused
        assert _login(port, "biopilot", "wrong") is False
        assert _login(port, "biopilot", "a pass, with = signs & spaces") is True
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_the_entrypoint_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MQTT_USERNAME", "MQTT_PASSWORD")}
    run = subprocess.run(
        ["/bin/sh", str(REPO / "deploy" / "mosquitto" / "entrypoint.sh")],
        env={**env, "MQTT_USERNAME": "biopilot", "PASSWORD_FILE": str(tmp_path / "p")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode != 0 and "set MQTT_PASSWORD in .env" in run.stderr
    assert not (tmp_path / "p").exists()


# -- the commands import what they run ----------------------------------------------------------------


def test_commands_import_what_they_run_lazily() -> None:
    """Each `from X import Y` inside a command function resolves (a moved module once broke collect)."""
    checked = 0
    for path in sorted((REPO / "biopilot" / "app" / "commands").glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        if not hasattr(module, alias.name):
                            importlib.import_module(f"{node.module}.{alias.name}")
                        checked += 1
    assert checked > 10
