"""The OPC UA collector against a real asyncua server on a free port."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from biopilot.config import parse_config
from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE, to_us
from collectors.opcua import OpcUaCollector
from collectors.sink import Counts, SampleSink
from simulators.opcua_server import OpcUaPlantServer
from storage import SqliteStore
from tests.conftest import free_port

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


async def _until(predicate, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def _server(endpoint: str) -> OpcUaPlantServer:
    server = OpcUaPlantServer(endpoint, NS)
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
            assert await _until(
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


def test_collector_reconnects_after_the_server_restarts(tmp_path: Path) -> None:
    port = free_port()
    config = parse_config(_config(port))
    store = SqliteStore(tmp_path / "t.db")
    endpoint = config.opcua.servers["s"].endpoint

    async def main() -> OpcUaCollector:
        server = await _server(endpoint)
        sink = SampleSink(store)
        collector = OpcUaCollector("s", config.opcua.servers["s"], config.tags, sink, Counts())
        stop = asyncio.Event()
        tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(sink.run(stop))]
        try:
            await asyncio.wait_for(collector.connected.wait(), 15)
            await server.publish("E-1", {"Temperature": 1.0}, T0)
            assert await _until(lambda: store.count("E-1.temperature") == 2)
            await server.__aexit__(None, None, None)
            assert await _until(lambda: not collector.connected.is_set(), 10), "the loss was not detected"
            server = await _server(endpoint)
            assert await _until(lambda: collector.connects == 2, 15), "no reconnect within 15 s"
            for i in range(1, 11):
                await server.publish("E-1", {"Temperature": 1.0 + i}, T0 + timedelta(seconds=i))
                await asyncio.sleep(0.01)
            # T0 and the 10 values after the restart, plus the two servers' initial values (same timestamp)
            assert await _until(lambda: store.count("E-1.temperature") == 12)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await server.__aexit__(None, None, None)
        return collector

    collector = asyncio.run(main())
    assert collector.connects == 2
