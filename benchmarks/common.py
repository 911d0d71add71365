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


def bare_fetch(db: Path, names: list[str], t0_us: int, t1_us: int) -> tuple[int, float]:
    """The baseline of the store benchmarks: a bare sqlite3 fetch of the series' rows in [t0, t1) into numpy
    arrays (ts, value, status), as SqliteStore stores them; returns (points, seconds)."""
    import sqlite3

    import numpy as np

    conn = sqlite3.connect(db)
    try:
        t = time.perf_counter()
        points = 0
        for name in names:
            rows = conn.execute(
                "SELECT s.ts_us, s.value, s.status FROM samples s JOIN series n ON n.id = s.series_id"
                " WHERE n.name = ? AND s.ts_us >= ? AND s.ts_us < ? ORDER BY s.ts_us",
                (name, t0_us, t1_us),
            ).fetchall()
            n = len(rows)
            ts = np.fromiter((r[0] for r in rows), np.int64, n)
            values = np.fromiter((np.nan if r[1] is None else r[1] for r in rows), np.float64, n)
            status = np.fromiter((r[2] for r in rows), np.int64, n)
            points += len(ts) + 0 * (len(values) + len(status))
        return points, time.perf_counter() - t
    finally:
        conn.close()
