"""MQTT ingest at QoS 1 into the embedded store against a bare paho subscriber: same broker, same messages.

A private Mosquitto (queue limits raised) runs on a free port. For each contender, its persistent session is
created first; then N messages of ~64-byte JSON are published and queued by the broker; then the contender
connects and drains them. Rates are N divided by the time the drain took:
  bare       a paho subscriber (QoS 1, persistent session) that only parses the JSON of each message:
             from its first to its last message
  biopilot   `biopilot collect` (spool, manual acks, and its store-writer process into the embedded
             SQLite store): from its connection to the broker (its log) to the last sample readable in
             the store, polled every 20 ms from here
             (the newest source timestamp: the writer stores in order, so the last message's timestamp
             means all are in; the count is checked at the end)
Also printed: nothing lost (distinct samples stored = N) and the collector's peak RSS (VmHWM).
Targets: biopilot ≥ 0.8 × bare; RSS ≤ 150 MB.

    .venv/bin/python benchmarks/mqtt_ingest.py [--messages 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import private_mosquitto  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "bench/R-1/flow"

BARE = r"""
import json, sys, time, threading
import paho.mqtt.client as mqtt
port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
got = 0; first = last = None; done = threading.Event()
def on_connect(c, u, f, rc, p):
    c.subscribe("bench/R-1/flow", 1)
def on_subscribe(c, u, mid, rc, p):
    if mode == "register":
        done.set()
def on_message(c, u, m):
    global got, first, last
    json.loads(m.payload)
    got += 1
    now = time.perf_counter()
    if first is None:
        first = now
    last = now
    if got >= n:
        done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port)
c.loop_start()
done.wait(600)
c.disconnect(); c.loop_stop()
print(json.dumps({"received": got, "seconds": (last - first) if got > 1 else 0.0}))
"""

CONFIG = """
[site]
name = "bench"
[storage]
path = "bench.db"
[mqtt.brokers.b]
host = "127.0.0.1"
port = {port}
client_id = "bench-biopilot"
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


def publish(port: int, n: int) -> float:
    """Publish n QoS 1 messages, keeping at most 20,000 unacknowledged; return the seconds it took."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    pending = []
    for i in range(n):
        ts = (T0 + timedelta(milliseconds=i)).isoformat()
        pending.append(client.publish(TOPIC, json.dumps({"ts": ts, "value": round(i * 0.001, 3)}), qos=1))
        if len(pending) >= 20_000:
            for info in pending:
                info.wait_for_publish(60)
            pending = []
    for info in pending:
        info.wait_for_publish(60)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return elapsed


def run_bare(port: int, n: int) -> float:
    subprocess.run([sys.executable, "-c", BARE, str(port), "0", "register"], check=True, capture_output=True)
    publish(port, n)
    out = subprocess.run(
        [sys.executable, "-c", BARE, str(port), str(n), "drain"], check=True, capture_output=True, text=True
    )
    result = json.loads(out.stdout)
    assert result["received"] == n, f"bare subscriber got {result['received']} of {n}"
    return float(result["seconds"])


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process [MB]; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def run_biopilot(port: int, n: int, workdir: Path) -> tuple[float, float, float, int]:
    cfg = workdir / "site.toml"
    cfg.write_text(CONFIG.format(port=port, topic=TOPIC))
    data = workdir / "data"
    cmd = [sys.executable, "-m", "biopilot", "collect", "--config", str(cfg), "--data-dir", str(data)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (workdir / "collector.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=REPO)  # creates the session
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    publish(port, n)
    store = SqliteStore(data / "bench.db", read_only=True)
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=REPO)
    last = None
    deadline = time.perf_counter() + 600
    rss = writer_rss = 0.0
    last_ts = T0 + timedelta(milliseconds=n - 1)
    while time.perf_counter() < deadline:
        newest = store.latest(["R-1.flow"]).get("R-1.flow")
        now = time.time()
        rss = max(rss, peak_rss_mb(proc.pid))
        writer_rss = max([writer_rss] + [peak_rss_mb(c) for c in children(proc.pid)])
        if newest is not None and newest.sample.ts >= last_ts:
            last = now
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    stored = store.count("R-1.flow")
    assert last is not None, f"stored {stored} of {n} before the deadline"
    return last - connected_at(workdir / "collector.log"), rss, writer_rss, stored


def connected_at(log: Path) -> float:
    """When the collector's second run connected (epoch s): the broker starts delivering the backlog then."""
    lines = [line for line in log.read_text().splitlines() if ": connected to 127.0.0.1:" in line]
    stamp = lines[-1][:23]  # logging's asctime, local time: "2026-11-22 00:01:47,067"
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:23]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory() as tmp, private_mosquitto(Path(tmp)) as port:
        work = Path(tmp)
        print(f"MQTT ingest at QoS 1: {n} messages of ~64 bytes queued by a private Mosquitto, then drained")
        bare_s = run_bare(port, n)
        print(f"  bare paho subscriber (parse JSON only): {n / bare_s:10,.0f} msg/s  ({bare_s:.2f} s)")
        ours_s, rss, writer_rss, stored = run_biopilot(port, n, work)
        print(
            f"  biopilot collect into the store:        {n / ours_s:10,.0f} msg/s  ({ours_s:.2f} s), "
            f"stored {stored} of {n} ({'nothing lost' if stored == n else 'LOST ' + str(n - stored)})"
        )
        ratio = bare_s / ours_s
        verdict = "met" if ratio >= 0.8 else "NOT met"
        print(f"  ratio biopilot / bare: {ratio:.2f}  (target ≥ 0.80: {verdict})")
        verdict = "met" if rss <= 150 else "NOT"
        print(f"  peak RSS: collector {rss:.0f} MB (target ≤ 150 MB: {verdict}); writer {writer_rss:.0f}")


if __name__ == "__main__":
    main()
