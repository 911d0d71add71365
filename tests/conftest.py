"""Shared fixtures: real peers only.

MQTT: a private Mosquitto on a free port when the mosquitto binary is installed; otherwise the embedded
broker (amqtt) that the demo uses. BIOPILOT_TEST_MQTT=host:port points the tests at a running broker
instead. The header of the test output says which broker the tests talk to.
In CI (BIOPILOT_CI=1, set by .ci/run) a missing Mosquitto or Chromium is an error, not a skip.
"""

from __future__ import annotations

import os

# One BLAS thread for the whole suite (and the subprocesses it starts): the matrices here are tiny, and on
# this shared 2-core machine a threaded OpenBLAS made the MSPC and envelope tests slower (measured: 116 s with
# the default threads, 84 s with one, tests/processing/test_mspc.py + test_envelope.py). Set before anything
# imports numpy; an explicit OPENBLAS_NUM_THREADS in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from biopilot.app.broker import mosquitto_binary, mosquitto_config, reachable

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("BIOPILOT_CI") == "1"

# Property tests (hypothesis) explore new random examples on a developer's machine, where a failure is a
# finding; in CI they replay the same derandomized examples every run, so CI cannot flake on a new draw.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if IN_CI:
    settings.load_profile("ci")
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    kind: str  # "mosquitto" | "amqtt" | "external"
    description: str


def _describe_broker() -> str:
    if os.environ.get("BIOPILOT_TEST_MQTT"):
        return f"the broker at {os.environ['BIOPILOT_TEST_MQTT']} (BIOPILOT_TEST_MQTT)"
    binary = mosquitto_binary()
    if binary:
        return f"a private Mosquitto ({binary}) on a free port"
    return "the embedded amqtt broker (Mosquitto is not installed; loss and restart tests are skipped)"


def pytest_report_header(config: pytest.Config) -> list[str]:
    chromium = CHROMIUM if Path(CHROMIUM).exists() else "not installed (browser tests skipped)"
    return [
        f"biopilot MQTT tests talk to: {_describe_broker()}",
        f"biopilot browser tests use Chromium: {chromium}",
    ]


class PrivateMosquitto:
    """A Mosquitto of the test's own, on a free port, that the test may kill and restart."""

    def __init__(self, workdir: Path, port: int | None = None, *, durable: bool = False) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(mosquitto_config("127.0.0.1", self.port, workdir / "data", durable=durable))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(
                    f"private mosquitto did not start: {(self.workdir / 'mosquitto.log').read_text()}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def require_mosquitto() -> None:
    """Loss and restart tests need Mosquitto: amqtt loses queued messages of persistent sessions."""
    if mosquitto_binary() is None:
        if IN_CI:
            pytest.fail("Mosquitto is required in CI (.ci/run installs it)")
        pytest.skip("SKIPPED FOR MISSING MOSQUITTO: this loss/restart test needs a real Mosquitto broker")


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    external = os.environ.get("BIOPILOT_TEST_MQTT")
    if external:
        host, _, port = external.partition(":")
        yield Broker(host, int(port or 1883), "external", f"external broker {external}")
        return
    if mosquitto_binary() is not None:
        broker = PrivateMosquitto(tmp_path_factory.mktemp("mosquitto"))
        broker.start()
        try:
            yield Broker("127.0.0.1", broker.port, "mosquitto", f"private Mosquitto on port {broker.port}")
        finally:
            broker.stop()
        return
    if IN_CI:
        pytest.fail("Mosquitto is required in CI (.ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "biopilot", "broker", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not reachable("127.0.0.1", port, 0.2):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the embedded amqtt broker did not start")
        time.sleep(0.1)
    try:
        yield Broker("127.0.0.1", port, "amqtt", f"embedded amqtt broker on port {port}")
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    """A durable Mosquitto of the test's own, which it may kill and restart."""
    require_mosquitto()
    (tmp_path / "mosquitto").mkdir()
    broker = PrivateMosquitto(tmp_path / "mosquitto", durable=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def chromium_or_skip() -> str:
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail("Chromium is required in CI (.ci/run installs it)")
        pytest.skip("SKIPPED FOR MISSING CHROMIUM: apt-get install chromium")
    return CHROMIUM


def demo_config_text(*, opcua_port: int, mqtt_host: str, mqtt_port: int, tag: str) -> str:
    """config/demo.toml with the test's own ports, client id and topic prefix."""
    text = (REPO / "config" / "demo.toml").read_text()
    text = text.replace("opc.tcp://127.0.0.1:4840/biopilot/", f"opc.tcp://127.0.0.1:{opcua_port}/biopilot/")
    text = text.replace('host = "127.0.0.1"\nport = 18830', f'host = "{mqtt_host}"\nport = {mqtt_port}')
    text = text.replace('client_id = "biopilot-demo-collector"', f'client_id = "biopilot-test-{tag}"')
    text = text.replace("biopilot-demo/", f"biopilot-test-{tag}/")
    text = text.replace('mqtt_topic_prefix = "biopilot-demo"', f'mqtt_topic_prefix = "biopilot-test-{tag}"')
    scenario = (
        REPO / "config" / "scenarios" / "demo.toml"
    )  # the config is written elsewhere: an absolute path
    text = text.replace('scenario = "scenarios/demo.toml"', f'scenario = "{scenario}"')
    assert f"127.0.0.1:{opcua_port}" in text and f"port = {mqtt_port}" in text, "demo.toml changed its layout"
    return text


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, poll_s: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; the last answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(poll_s)
    return predicate()
