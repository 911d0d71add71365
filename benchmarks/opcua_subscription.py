"""OPC UA: 5,000 monitored items changing at 1 Hz, delivered rate of `biopilot collect` against a bare
asyncua subscription, same server, same run.

A server process (asyncua) serves N Double variables and writes every one of them once per second with a
new value and source timestamp. Each contender subscribes to all of them (publishing interval 500 ms, queue
10); a window starts a warm-up after it is subscribed; its rate is the values it got with source timestamps
inside the window, divided by the window:
  bare       an asyncua client subscription (iterator mode, unbounded queue) that only counts
  biopilot   `biopilot collect` (spool, store writer process, the embedded SQLite store): values stored
Target: biopilot ≥ 0.9 × bare (the server produces N values/s; both should get all of them).

    .venv/bin/python benchmarks/opcua_subscription.py [--items 5000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import free_port  # noqa: E402
from biopilot.samples import to_us  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402

NS = "urn:biopilot:bench"

SERVER = r"""
import asyncio, sys, time
from datetime import UTC, datetime
from asyncua import Server, ua
port, n = int(sys.argv[1]), int(sys.argv[2])
async def main():
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:biopilot:bench")
    folder = await server.nodes.objects.add_folder(idx, "B")
    nodes = [(await folder.add_variable(ua.NodeId(f"v{i}", idx), f"v{i}", 0.0)).nodeid for i in range(n)]
    async with server:
        print("ready", flush=True)
        tick = 0
        next_t = time.monotonic()
        while True:
            now = datetime.now(UTC)
            for i, node in enumerate(nodes):
                dv = ua.DataValue(ua.Variant(float(tick * n + i), ua.VariantType.Double), SourceTimestamp=now,
                                  ServerTimestamp=now)
                await server.write_attribute_value(node, dv)
            tick += 1
            next_t += 1.0
            await asyncio.sleep(max(next_t - time.monotonic(), 0))
asyncio.run(main())
"""

BARE = r"""
import asyncio, json, sys, time
from datetime import UTC, datetime, timedelta
from asyncua import Client, ua
port, n, warm, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
async def main():
    client = Client(f"opc.tcp://127.0.0.1:{port}/bench/", timeout=30, watchdog_intervall=4.0)
    async with client:
        idx = await client.get_namespace_index("urn:biopilot:bench")
        sub = await client.create_subscription(500, handler=None, queue_maxsize=0)
        nodes = [client.get_node(ua.NodeId(f"v{i}", idx)) for i in range(n)]
        for k in range(0, n, 1000):
            await sub.subscribe_data_change(nodes[k:k + 1000], queuesize=10)
        start = datetime.now(UTC) + timedelta(seconds=warm)
        end = start + timedelta(seconds=seconds)
        got = 0
        deadline = time.monotonic() + warm + seconds + 5
        while time.monotonic() < deadline:
            ev = await sub.next_event(timeout=1.0)
            if ev is None or not hasattr(ev, "data"):
                continue
            ts = ev.data.monitored_item.Value.SourceTimestamp
            if start <= ts < end:
                got += 1
        print(json.dumps({"values": got, "seconds": seconds}))
asyncio.run(main())
"""


def site_config(port: int, n: int) -> str:
    lines = [
        '[site]\nname = "bench"\n[storage]\npath = "bench.db"',
        f'[opcua.servers.s]\nendpoint = "opc.tcp://127.0.0.1:{port}/bench/"\nnamespace = "{NS}"',
        "publishing_interval_ms = 500\nqueue_size = 10\nhistory_backfill = false",
        '[[equipment]]\nid = "B"\nkind = "fermenter"',
    ]
    for i in range(n):
        lines.append(
            f'[[tags]]\nname = "B.v{i}"\nequipment = "B"\nrole = "temperature"\nunit = "degC"\n'
            f'source = {{ protocol = "opcua", server = "s", node_id = "ns=2;s=v{i}" }}'
        )
    return "\n".join(lines) + "\n"


def run_biopilot(port: int, n: int, warm: float, seconds: float, work: Path) -> int:
    cfg = work / "site.toml"
    cfg.write_text(site_config(port, n))
    data = work / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (work / "collector.log").open("ab")
    cmd = [sys.executable, "-m", "biopilot", "collect", "--config", str(cfg), "--data-dir", str(data)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=REPO)
    db = data / "bench.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # subscribed when the first values are in the store
        if db.exists() and SqliteStore(db, read_only=True).list_series():
            break
        time.sleep(0.2)
    start = datetime.now(UTC).timestamp() + warm
    end = start + seconds
    time.sleep(end - datetime.now(UTC).timestamp() + 3)  # and let the last values reach the store
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    store = SqliteStore(db, read_only=True)
    row = store._conn.execute(  # one count over all series, for the benchmark only
        "SELECT COUNT(*) FROM samples WHERE ts_us >= ? AND ts_us < ?",
        (to_us(datetime.fromtimestamp(start, UTC)), to_us(datetime.fromtimestamp(end, UTC))),
    ).fetchone()
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warm", type=float, default=2.0, help="seconds after subscribing before measuring")
    args = parser.parse_args()
    n = args.items
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        print(f"OPC UA: {n} items written at 1 Hz by an asyncua server; {args.seconds:.0f} s measured each")
        out = subprocess.run(
            [sys.executable, "-c", BARE, str(port), str(n), str(args.warm), str(args.seconds)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            sys.exit(f"the bare subscription failed:\n{out.stderr[-3000:]}")
        bare = json.loads(out.stdout)["values"] / args.seconds
        print(f"  server produces:            {n:8,.0f} values/s")
        print(f"  bare asyncua subscription:  {bare:8,.0f} values/s delivered")
        work = Path(tempfile.mkdtemp(prefix="bench-opcua-"))
        ours = run_biopilot(port, n, args.warm, args.seconds, work) / args.seconds
        if os.environ.get("BENCH_KEEP"):
            print(f"  (collector log and store kept in {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
        print(f"  biopilot collect (stored):  {ours:8,.0f} values/s")
        ratio = ours / bare if bare else float("nan")
        print(
            f"  ratio biopilot / bare: {ratio:.2f}  (target ≥ 0.90: {'met' if ratio >= 0.9 else 'NOT met'})"
        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
