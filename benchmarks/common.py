"""What the benchmarks share: a free port and a private Mosquitto."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from biopilot.app.broker import mosquitto_binary, mosquitto_config, reachable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_mosquitto(work: Path) -> Iterator[int]:
    """A Mosquitto of the benchmark's own (queue limits raised) on a free port; yields the port."""
    binary = mosquitto_binary()
    if binary is None:
        sys.exit("this benchmark needs Mosquitto (apt-get install mosquitto)")
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(mosquitto_config("127.0.0.1", port, work / "broker"))
    broker = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not reachable("127.0.0.1", port, 0.2):
            time.sleep(0.05)
        yield port
    finally:
        broker.terminate()
        broker.wait(10)
