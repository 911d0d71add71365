"""The OPC UA collector against a real asyncua server on a free port."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from biopilot.config import parse_config
from biopilot.samples import (
    BAD_NO_COMMUNICATION,
    BAD_SENSOR_FAILURE,
    GOOD,
    UNCERTAIN_LAST_USABLE_VALUE,
    from_us,
    to_us,
    utcnow,
)
from collectors.opcua import OpcUaCollector
from collectors.runner import Collectors, TagTracker
from collectors.sink import Counts, SampleSink, SpoolSink
from collectors.spool import Spool
from collectors.writer import StoreWriter
from simulators.opcua_server import OpcUaPlantServer
from storage import HealthStore, SqliteStore
from tests.conftest import REPO, free_port, wait_until

NS = "urn:biopilot:test"
SIGNALS = {"Temperature": ("float", "degC"), "BatchId": ("text", "")}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _config(port: int) -> str:
    return f"""
[site]
name = "test"
[opcua.servers.s]
endpoint = "opc.tcp://127.0.0.1:{port}/test/"
namespace = "{NS}"
publishing_interval_ms = 100
[[equipment]]
id = "E-1"
kind = "fermenter"
[[tags]]
name = "E-1.temperature"
equipment = "E-1"
role = "temperature"
unit = "degC"
source = {{ protocol = "opcua", server = "s", browse_path = "E-1/Temperature" }}
[[tags]]
name = "E-1.batch"
equipment = "E-1"
role = "batch_id"
source = {{ protocol = "opcua", server = "s", node_id = "ns=2;s=E-1.BatchId" }}
[[tags]]
name = "E-1.missing"
equipment = "E-1"
role = "ph"
unit = "pH"
source = {{ protocol = "opcua", server = "s", browse_path = "E-1/NoSuchSignal" }}
"""


async def _server(endpoint: str, history: int = 1000) -> OpcUaPlantServer:
    server = OpcUaPlantServer(endpoint, NS, history=history)
    await server.__aenter__()
    await server.add_equipment("E-1", SIGNALS, T0 - timedelta(hours=1))
    await server.start()
    return server


def test_values_arrive_with_source_time_and_status_and_a_bad_node_is_isolated(tmp_path: Path) -> None:
    port = free_port()
    config = parse_config(_config(port))
    store = SqliteStore(tmp_path / "t.db")
    statuses = [GOOD, UNCERTAIN_LAST_USABLE_VALUE, BAD_SENSOR_FAILURE]
    n = 60

    async def main() -> OpcUaCollector:
        server = await _server(config.opcua.servers["s"].endpoint)
        sink = SampleSink(store)
        collector = OpcUaCollector("s", config.opcua.servers["s"], config.tags, sink, Counts())
        stop = asyncio.Event()
        tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(sink.run(stop))]
        try:
            await asyncio.wait_for(collector.connected.wait(), 15)
            for i in range(n):
                ts = T0 + timedelta(seconds=i)
                await server.publish(
                    "E-1", {"Temperature": 30.0 + i / 10, "BatchId": f"B-{i // 20}"}, ts, statuses[i % 3]
                )
                await asyncio.sleep(0.01)
            # n values plus the initial Bad_WaitingForInitialData value the server held at subscription
            assert await wait_until(
                lambda: store.count("E-1.temperature") == n + 1 and store.count("E-1.batch") == n + 1
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await server.__aexit__(None, None, None)
        return collector

    collector = asyncio.run(main())
    assert collector.monitored == {
        "E-1.temperature": "ns=2;s=E-1.Temperature",
        "E-1.batch": "ns=2;s=E-1.BatchId",
    }
    assert list(collector.failed) == ["E-1.missing"] and "not found" in collector.failed["E-1.missing"]
    data = store.read("E-1.temperature", T0, T0 + timedelta(hours=1))
    assert len(data) == n
    assert data.ts[0] == to_us(T0) and data.ts[-1] == to_us(T0 + timedelta(seconds=n - 1))
    assert data.values[6] == 30.6 and data.values[4] == 30.4  # good and uncertain values arrive as sent
    assert (
        data.status[5] == BAD_SENSOR_FAILURE
    )  # a bad value is stored with its status (its value may be dropped)
    assert list(data.status[:3]) == statuses
    batch = store.read("E-1.batch", T0, T0 + timedelta(hours=1))
    assert batch.values[0] == "B-0" and batch.values[-2] == "B-2"  # [-1] has bad status
    assert collector.counts.of("opcua:s")["unresolved_node"] == 1


def _health_of(collector: OpcUaCollector, sink: SpoolSink | SampleSink, health: HealthStore) -> None:
    """Write the collector's gap events and health into the health store, as the runner does."""
    Collectors(sink, collector.counts, TagTracker({}), health, opcua=[collector]).publish_health()


def test_server_restart_gap_is_recorded_and_every_value_after_it_is_stored(tmp_path: Path) -> None:
    """Fault test: stop and restart the asyncua server. The loss is noticed at once (the connection closes),
    the endpoint is probed every 0.25 s, and values are stored again within 1 s of the restarted server being
    ready; the outage is a gap with the last value before and the first after, and every value the new
    server produced is stored - those it produced before we were back are read from its history."""
    port = free_port()
    config = parse_config(_config(port))
    store = SqliteStore(tmp_path / "t.db")
    health = HealthStore(tmp_path / "t.db")
    endpoint = config.opcua.servers["s"].endpoint
    restart_ts = T0 + timedelta(minutes=10)

    async def main() -> tuple[OpcUaCollector, float, float, float]:
        server = await _server(endpoint)
        sink = SpoolSink(Spool(tmp_path / "spool"))
        writer = StoreWriter(tmp_path / "spool", store, poll_s=0.01)
        collector = OpcUaCollector("s", config.opcua.servers["s"], config.tags, sink, Counts())
        stop = asyncio.Event()
        tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(writer.run(stop))]
        try:
            await asyncio.wait_for(collector.connected.wait(), 15)
            for i in range(10):
                await server.publish("E-1", {"Temperature": float(i)}, T0 + timedelta(seconds=i))
            assert await wait_until(lambda: store.count("E-1.temperature", T0) == 10)
            await server.__aexit__(None, None, None)
            stopped = time.monotonic()
            assert await wait_until(lambda: not collector.connected.is_set(), 10), "the loss was not detected"
            detected = time.monotonic() - stopped
            server = await _server(endpoint)
            ready = time.monotonic()
            for i in range(20):  # produced at once, before the collector is back
                await server.publish("E-1", {"Temperature": 100.0 + i}, restart_ts + timedelta(seconds=i))
            assert await wait_until(lambda: store.count("E-1.temperature", restart_ts) > 0, 10, poll_s=0.01)
            stored_again = time.monotonic() - ready
            assert await wait_until(lambda: collector.connects == 2, 10)
            for i in range(20, 30):  # and produced live after it is back
                await server.publish("E-1", {"Temperature": 100.0 + i}, restart_ts + timedelta(seconds=i))
                await asyncio.sleep(0.02)
            assert await wait_until(lambda: store.count("E-1.temperature", restart_ts) == 30)
            _health_of(collector, sink, health)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await server.__aexit__(None, None, None)
        return collector, detected, stored_again, ready

    collector, detected, stored_again, _ = asyncio.run(main())
    after = store.read("E-1.temperature", restart_ts, restart_ts + timedelta(hours=1))
    print(
        f"\nOPC UA restart: loss detected in {detected:.2f} s; values stored again {stored_again:.2f} s "
        f"after "
        f"the restarted server was ready; {collector.backfilled} values read back from history, "
        f"{len(after)} of 30 produced after it stored"
    )
    assert stored_again <= 1.0, f"values stored again {stored_again:.2f} s after the server was ready"
    assert list(after.values) == [100.0 + i for i in range(30)]
    assert collector.connects == 2 and collector.backfilled >= 20
    gaps = health.gaps("opcua:s")
    assert len(gaps) == 1 and gaps[0].back is not None and gaps[0].back > gaps[0].lost
    assert gaps[0].last_ts_before == T0 + timedelta(seconds=9)
    assert gaps[0].first_ts_after == restart_ts  # the first value after it, read from the history


def test_without_server_history_the_hole_is_marked_bad_at_the_loss(tmp_path: Path) -> None:
    """A server that keeps no history: each tag gets a Bad_NoCommunication sample at the moment the loss was
    noticed - not right after its last value, which for a batch id may be long before - so no KPI
    integrates across the outage; a value the server still holds after it is stored again after the mark."""
    port = free_port()
    config = parse_config(_config(port))
    store = SqliteStore(tmp_path / "t.db")
    health = HealthStore(tmp_path / "t.db")
    endpoint = config.opcua.servers["s"].endpoint

    async def main() -> tuple[datetime, datetime, datetime]:
        server = await _server(endpoint, history=0)
        sink = SampleSink(store, flush_interval=0.01)
        collector = OpcUaCollector("s", config.opcua.servers["s"], config.tags, sink, Counts())
        stop = asyncio.Event()
        tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(sink.run(stop))]
        try:
            await asyncio.wait_for(collector.connected.wait(), 15)
            # the batch id last changed long before the outage (T0 is months ago)
            await server.publish("E-1", {"Temperature": 1.0, "BatchId": "B-7"}, T0)
            assert await wait_until(lambda: store.count("E-1.batch", T0) == 1)
            before_loss = utcnow()
            await server.stop_serving()  # a network outage: the server keeps its values
            assert await wait_until(lambda: not collector.connected.is_set(), 10)
            noticed = utcnow()
            assert await wait_until(lambda: store.count("E-1.batch", T0) == 2)  # the mark, at once
            await server.serve_again(T0, keep_values=True)
            back = utcnow()
            assert await wait_until(lambda: collector.connects == 2, 15)
            assert await wait_until(lambda: store.count("E-1.batch", T0) == 3)
            _health_of(collector, sink, health)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await server.__aexit__(None, None, None)
        return before_loss, noticed, back

    before_loss, noticed, back = asyncio.run(main())
    end = utcnow()
    batch = store.read("E-1.batch", T0, end)
    (t_last, t_mark, t_again) = (from_us(int(t)) for t in batch.ts)
    print(
        f"\nno history: last value at {t_last.isoformat()}, marked Bad_NoCommunication at "
        f"{t_mark.isoformat()} (the loss was between {before_loss.isoformat()} and {noticed.isoformat()}), "
        f"stored again at {t_again.isoformat()}"
    )
    assert t_last == T0 and batch.values[0] == "B-7"
    assert before_loss <= t_mark <= noticed, "the mark is at the loss, not before it"
    assert batch.status[1] == BAD_NO_COMMUNICATION
    assert t_again >= back and batch.values[2] == "B-7" and batch.status[2] == GOOD  # confirmed when back
    temperature = store.read("E-1.temperature", T0, end)
    assert list(temperature.status[-2:]) == [BAD_NO_COMMUNICATION, GOOD]
    gaps = health.gaps("opcua:s")
    assert len(gaps) == 1 and gaps[0].last_ts_before == T0 and before_loss <= gaps[0].lost <= noticed
    assert gaps[0].first_ts_after == t_again


def test_status_names_unresolved_tags_as_failed_with_the_reason(tmp_path: Path) -> None:
    port = free_port()
    text = _config(port)
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    config = parse_config(text)
    store = SqliteStore(tmp_path / "biopilot.db")
    health = HealthStore(tmp_path / "biopilot.db")
    where = ["--config", str(cfg), "--data-dir", str(tmp_path)]

    async def main() -> dict:
        server = await _server(config.opcua.servers["s"].endpoint)
        collectors = Collectors.from_config(config, store, health=health)
        stop = asyncio.Event()
        task = asyncio.create_task(collectors.run(stop))
        try:
            assert await collectors.wait_subscribed(15)
            await server.publish("E-1", {"Temperature": 30.0}, T0)
            assert await wait_until(lambda: store.count("E-1.temperature", T0) == 1)
            await asyncio.to_thread(collectors.publish_health)
            out = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "biopilot",
                    "status",
                    "--config",
                    str(cfg),
                    "--data-dir",
                    str(tmp_path),
                ],
                capture_output=True,
                text=True,
                cwd=REPO,
                check=True,
            )
            as_json = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "biopilot", "status", "--json", *where],
                capture_output=True,
                text=True,
                cwd=REPO,
                check=True,
            )
        finally:
            stop.set()
            await task
            await server.__aexit__(None, None, None)
        return {"text": out.stdout, "json": json.loads(as_json.stdout)}

    result = asyncio.run(main())
    rows = {r["tag"]: r for r in result["json"]["tags"]}
    print(f"\nstatus: {rows['E-1.missing']['state']}: {rows['E-1.missing']['reason']}")
    assert rows["E-1.missing"]["state"] == "failed"
    assert "browse path 'E-1/NoSuchSignal' not found" in rows["E-1.missing"]["reason"]
    assert rows["E-1.temperature"]["state"] == "live"
    line = next(x for x in result["text"].splitlines() if "E-1.missing" in x)
    assert "failed" in line and "NoSuchSignal" in line, result["text"]
