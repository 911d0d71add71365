"""The embedded MQTT broker for the demo, when no broker answers at the configured address.

Mosquitto is used when its binary is on PATH (it is fast and keeps persistent sessions); otherwise amqtt,
the pure-Python broker, which is fine for the demo's rates but not for loss tests (see the README).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_reachable(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable(host, port, 0.5):
            return True
        time.sleep(0.1)
    return False


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def mosquitto_config(host: str, port: int, data_dir: Path, *, durable: bool = False) -> str:
    """A Mosquitto config for a private broker. The queue limits are set deliberately: Mosquitto's default
    max_queued_messages (1000) drops QoS 1 messages for a subscriber that falls behind.

    durable: save the in-memory state after every change instead of every 10 s, so a broker killed with
    kill -9 loses (almost) nothing it acknowledged; it costs throughput."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return "\n".join(
        [
            f"listener {port} {host}",
            # as root, Mosquitto would switch to the user 'mosquitto', who cannot write the data dir
            f"user {getpass.getuser()}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {data_dir}/",
            "autosave_interval 1" if durable else "autosave_interval 10",
            f"autosave_on_changes {'true' if durable else 'false'}",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",
            "log_type error",
            "log_type warning",
            "",
        ]
    )


def run_amqtt(host: str, port: int) -> None:
    """Serve MQTT with amqtt until SIGTERM/SIGINT."""
    from amqtt.broker import Broker

    from biopilot.app.stages import run_until_signalled

    async def main(stop: asyncio.Event) -> None:
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        await broker.start()
        log.info("embedded MQTT broker (amqtt) listening on %s:%d", host, port)
        await stop.wait()
        await broker.shutdown()

    run_until_signalled(main)
