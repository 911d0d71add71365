"""End-to-end latency: from a value's source timestamp to the moment it is readable in the store, at a
steady 1,000 values/s over MQTT.

A private Mosquitto; a publisher sends 1,000 QoS 1 messages per second, each stamped with the wall clock
when it is sent. Measured over the same stream:
  bare       a paho subscriber in another process: source timestamp → on_message (broker and network only)
  biopilot   `biopilot collect` (spool, store-writer process, SQLite): source timestamp → readable by a
             reader polling the store every 5 ms from this process (the poll adds up to 5 ms)
Prints p50, p99 and max of each. Target: biopilot p99 ≤ 250 ms.

    .venv/bin/python benchmarks/latency.py [--rate 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import private_mosquitto  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402

TOPIC = "bench/latency/flow"

BARE = r"""
import json, sys, time, threading
import paho.mqtt.client as mqtt
port, seconds = int(sys.argv[1]), float(sys.argv[2])
lat = []
def on_connect(c, u, f, rc, p):
    c.subscribe("bench/latency/flow", 1)
def on_message(c, u, m):
    lat.append(time.time() - json.loads(m.payload)["ts"])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lat-bare")
c.on_connect, c.on_message = on_connect, on_message
c.connect("127.0.0.1", port)
c.loop_start()
print("ready", flush=True)
time.sleep(seconds)
c.loop_stop()
print(json.dumps(lat))
"""

CONFIG = """
[site]
name = "latency"
[storage]
path = "latency.db"
[mqtt.brokers.b]
host = "127.0.0.1"
port = {port}
client_id = "lat-biopilot"
[[equipment]]
id = "R-1"
kind = "recovery"
[[tags]]
name = "R-1.flow"
equipment = "R-1"
role = "flow"
unit = "L/h"
source = {{ protocol = "mqtt", broker = "b", topic = "{topic}" }}
"""


def publish_steady(port: int, rate: float, seconds: float) -> int:
    """Publish at `rate` messages/s for `seconds`; each payload carries its send time (epoch s)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lat-pub")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.publish(TOPIC, json.dumps({"ts": time.time(), "value": float(i)}), qos=1)
    time.sleep(1.0)
    client.disconnect()
    client.loop_stop()
    return n


def poll_store(db: Path, stop: threading.Event, out: list[float]) -> None:
    """Every 5 ms, the samples that became readable since the last poll: now − source time."""
    while not db.exists() and not stop.is_set():
        time.sleep(0.05)
    store = SqliteStore(db, read_only=True)
    last_us = 0
    while not stop.is_set():
        rows = store._conn.execute(  # the benchmark's own reader: newest rows of the one series
            "SELECT ts_us FROM samples WHERE ts_us > ? ORDER BY ts_us", (last_us,)
        ).fetchall()
        now = time.time()
        for (ts_us,) in rows:
            out.append(now - ts_us / 1e6)
        if rows:
            last_us = rows[-1][0]
        time.sleep(0.005)


def stats(values: list[float]) -> str:
    a = np.asarray(values) * 1000
    return f"p50 {np.percentile(a, 50):6.1f} ms   p99 {np.percentile(a, 99):6.1f} ms   max {a.max():6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, private_mosquitto(Path(tmp)) as port:
        work = Path(tmp)
        collector = None
        try:
            cfg = work / "site.toml"
            cfg.write_text(CONFIG.format(port=port, topic=TOPIC))
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            log = (work / "collector.log").open("ab")
            cmd = [
                sys.executable,
                "-m",
                "biopilot",
                "collect",
                "--config",
                str(cfg),
                "--data-dir",
                str(work / "d"),
            ]
            collector = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=REPO)
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE, str(port), str(args.seconds + 6)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
            time.sleep(4.0)  # the collector is up and subscribed
            ours: list[float] = []
            stop = threading.Event()
            reader = threading.Thread(target=poll_store, args=(work / "d" / "latency.db", stop, ours))
            reader.start()
            n = publish_steady(port, args.rate, args.seconds)
            time.sleep(1.0)
            stop.set()
            reader.join()
            bare_lat = json.loads(bare.communicate(timeout=30)[0].splitlines()[-1])
            skip = int(args.rate * 2)  # the first two seconds warm up
            print(
                f"latency at {args.rate:.0f} values/s over MQTT QoS 1, {n} values, first 2 s skipped "
                f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
            )
            print(f"  bare paho subscriber (broker + network): {stats(bare_lat[skip:])}")
            print(f"  biopilot, readable in the store:         {stats(ours[skip:])}   ({len(ours)} of {n})")
            p99 = float(np.percentile(np.asarray(ours[skip:]) * 1000, 99))
            print(f"  target p99 ≤ 250 ms: {'met' if p99 <= 250 else 'NOT met'}")
        finally:
            if collector is not None:
                collector.send_signal(signal.SIGTERM)
                collector.wait(20)


if __name__ == "__main__":
    main()
