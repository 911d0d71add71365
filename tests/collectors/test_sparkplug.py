"""Sparkplug B with payloads built by a library the project did not write: Eclipse Tahu's Python helpers and
the code protoc generated from Tahu's sparkplug_b.proto (as shipped by the sparkplug-b-packets package), sent
through a real Mosquitto to the collectors as `biopilot collect` runs them. DDATA is sent as real edge nodes
send it: by alias only, without a datatype.

Also: the schema BioPilot decodes with (collectors/sparkplug_b.proto) is the same as Tahu's, field by field,
and collectors/sparkplug_b_pb2.py is what protoc makes of it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sparkplub_b_packets.core import sparkplug_b as tahu
from sparkplub_b_packets.core import sparkplug_b_pb2 as tahu_pb2

from biopilot.config import parse_config
from biopilot.samples import BAD_NO_COMMUNICATION, GOOD, to_us
from collectors import sparkplug_b_pb2 as ours
from collectors.runner import Collectors
from storage import HealthStore, SqliteStore
from tests.conftest import REPO, Broker, PrivateMosquitto, wait_until

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
T0_MS = to_us(T0) // 1000
Metric = tahu.MetricDataType


def test_the_schema_is_tahus_and_the_generated_code_is_protocs(tmp_path: Path) -> None:
    def fields(message: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in message.fields:
            out[f.name] = (
                f.number,
                f.type,
                f.is_repeated,
                f.containing_oneof.name if f.containing_oneof else None,
            )
        for nested in message.nested_types:
            out[nested.name] = fields(nested)
        out["extensions"] = [tuple(r) for r in message.extension_ranges]
        return out

    assert fields(ours.Payload.DESCRIPTOR) == fields(tahu_pb2.Payload.DESCRIPTOR)
    datatypes = ours.DataType.DESCRIPTOR.values
    assert {v.name: v.number for v in datatypes} == {
        v.name: v.number for v in tahu_pb2.DataType.DESCRIPTOR.values
    }
    grpc_tools = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "gen"
    out.mkdir()
    assert (
        grpc_tools.main(["protoc", f"-I{REPO}", f"--python_out={out}", "collectors/sparkplug_b.proto"]) == 0
    )
    generated = (out / "collectors" / "sparkplug_b_pb2.py").read_text()
    assert generated == (REPO / "collectors" / "sparkplug_b_pb2.py").read_text(), (
        "collectors/sparkplug_b_pb2.py is not what protoc makes of collectors/sparkplug_b.proto: regenerate"
    )


def _config(port: int, group: str, state: str = "") -> str:
    return f"""
[site]
name = "sparkplug"
[collector]
health_interval_s = 0.5
[mqtt.brokers.b]
host = "127.0.0.1"
port = {port}
client_id = "host-{group}"
{state}
[[equipment]]
id = "F-1"
kind = "fermenter"
[[tags]]
name = "F-1.ph"
equipment = "F-1"
role = "ph"
unit = "pH"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "spBv1.0/{group}/DDATA/edge/F-1"
format = "sparkplug"
metric = "Reactor/pH"
[[tags]]
name = "F-1.pump"
equipment = "F-1"
role = "speed"
unit = "rpm"
description = "feed pump running (1) or not (0)"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "spBv1.0/{group}/DDATA/edge/F-1"
format = "sparkplug"
metric = "Pump/Running"
[[tags]]
name = "F-1.air"
equipment = "F-1"
role = "air_flow"
unit = "NL/min"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "spBv1.0/{group}/NDATA/edge"
format = "sparkplug"
metric = "Air"
"""


class EdgeNode:
    """An edge node with one device, publishing what Tahu's helpers build (QoS 1, so the broker keeps it)."""

    def __init__(self, port: int, group: str) -> None:
        self.group = group
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-{group}")
        self.death = tahu.getNodeDeathPayload()  # its will, registered before connecting (bdSeq)
        self.client.will_set(self.topic("NDEATH"), self.death.SerializeToString(), qos=1)
        self.client.max_inflight_messages_set(100)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0

    def topic(self, kind: str, device: str | None = None) -> str:
        return f"spBv1.0/{self.group}/{kind}/edge" + (f"/{device}" if device else "")

    def send(self, topic: str, payload: Any) -> None:
        self.client.publish(topic, payload.SerializeToString(), qos=1).wait_for_publish(10)

    def births(self) -> None:
        nbirth = tahu.getNodeBirthPayload()  # seq 0, bdSeq of the will
        tahu.addMetric(nbirth, "Air", 1, Metric.Double, 20.0, T0_MS)
        self.send(self.topic("NBIRTH"), nbirth)
        dbirth = tahu.getDeviceBirthPayload()
        tahu.addMetric(dbirth, "Reactor/pH", 2, Metric.Double, 7.0, T0_MS)
        tahu.addMetric(dbirth, "Pump/Running", 3, Metric.Boolean, False, T0_MS)
        self.send(self.topic("DBIRTH", "F-1"), dbirth)

    def ddata(self, i: int, *, skip_seq: bool = False) -> None:
        """Value i: pH 7 + i/1000 and the pump on for odd i, at T0 + i s, by alias only (no datatype)."""
        payload = tahu.getDdataPayload()
        if skip_seq:
            payload.seq = tahu.getSeqNum()  # a message lost on the way
        ms = T0_MS + i * 1000
        tahu.addMetric(payload, None, 2, Metric.Double, 7.0 + i / 1000, ms)
        tahu.addMetric(payload, None, 3, Metric.Boolean, i % 2 == 1, ms)
        for m in payload.metrics:
            m.ClearField("datatype")  # as real edge nodes send DDATA
        self.send(self.topic("DDATA", "F-1"), payload)
        self.sent += 1

    def die(self) -> None:
        """The broker publishes the node's will, as when its connection drops."""
        self.client.loop_stop()
        self.client.socket().close()  # not a clean DISCONNECT: the will goes out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _collecting(config_text: str, tmp_path: Path, body: Callable[[Collectors], Any]) -> Any:
    config = parse_config(config_text)
    data = tmp_path / "data"
    store = SqliteStore(data / "biopilot.db") if data.exists() else None
    data.mkdir(exist_ok=True)
    store = store or SqliteStore(data / "biopilot.db")
    collectors = Collectors.from_config(
        config,
        store,
        spool_dir=data / "spool",
        health=HealthStore(data / "biopilot.db"),
        state_dir=data / "collector-state",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(collectors.run(stop))
    try:
        assert await wait_until(lambda: all(m.subscribed.is_set() for m in collectors.mqtt), 15)
        return await body(collectors)
    finally:
        stop.set()
        await task


def _status(cfg: Path, data: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "biopilot", "status", "--json", "--config", str(cfg), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_a_restarted_collector_resolves_ddata_held_while_it_was_down_and_ndeath_marks_the_node_down(
    tmp_path: Path, private_mosquitto: PrivateMosquitto
) -> None:
    group = f"g{uuid.uuid4().hex[:6]}"
    text = _config(private_mosquitto.port, group)
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    data = tmp_path / "data"
    store_path = data / "biopilot.db"
    edge = EdgeNode(private_mosquitto.port, group)
    per_phase = 200

    def stored(tag: str) -> int:
        return SqliteStore(store_path).count(tag, T0)

    async def first_run(collectors: Collectors) -> None:
        await asyncio.to_thread(edge.births)
        for i in range(1, per_phase + 1):
            await asyncio.to_thread(edge.ddata, i)
        assert await wait_until(lambda: stored("F-1.ph") == per_phase + 1, 30)

    async def second_run(collectors: Collectors) -> dict[str, Any]:
        for i in range(2 * per_phase + 1, 3 * per_phase + 1):
            await asyncio.to_thread(edge.ddata, i)
        assert await wait_until(lambda: stored("F-1.ph") == 3 * per_phase + 1, 30), stored("F-1.ph")
        assert await wait_until(lambda: stored("F-1.pump") == 3 * per_phase + 1, 30)
        await asyncio.to_thread(edge.die)  # NDEATH, from the broker
        mqtt_b = collectors.mqtt[0]
        assert await wait_until(lambda: len(mqtt_b.down_tags()) == 3, 15), mqtt_b.down_tags()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            status = await asyncio.to_thread(_status, cfg, data)
            states = {row["tag"]: row["state"] for row in status["tags"]}
            if set(states.values()) == {"source-down"} or loop.time() > deadline:
                return status
            await asyncio.sleep(0.3)

    try:
        asyncio.run(_collecting(text, tmp_path, first_run))
        for i in range(per_phase + 1, 2 * per_phase + 1):  # the collector is down: the broker keeps these
            edge.ddata(i)
        status = asyncio.run(_collecting(text, tmp_path, second_run))
    finally:
        edge.close()
    store = SqliteStore(store_path)
    until = datetime(2100, 1, 1, tzinfo=UTC)  # the death's markers are at the time it came
    ph = store.read("F-1.ph", T0, until)
    pump = store.read("F-1.pump", T0, until)
    n = 3 * per_phase + 1  # the BIRTH's value and every DDATA
    good_ph = [v for v, s in zip(ph.values.tolist(), ph.status, strict=True) if s == GOOD]
    print(
        f"\nSparkplug restart between BIRTH and DDATA: sent {n} per metric ({per_phase} while the collector "
        f"was down), stored {len(good_ph)} pH and {sum(1 for s in pump.status if s == GOOD)} pump values; "
        f"after NDEATH: {sorted({row['state'] for row in status['tags']})}"
    )
    assert good_ph == [7.0 + i / 1000 for i in range(n)]
    assert [v for v, s in zip(pump.values.tolist(), pump.status, strict=True) if s == GOOD] == [
        float(i % 2) for i in range(n)
    ]  # a Boolean is 1 or 0
    assert ph.status[-1] == BAD_NO_COMMUNICATION and pump.status[-1] == BAD_NO_COMMUNICATION  # at the death
    states = {row["tag"]: (row["state"], row["reason"]) for row in status["tags"]}
    assert {s for s, _ in states.values()} == {"source-down"}, states
    assert "NDEATH" in states["F-1.ph"][1]
    gaps = {g["source"]: g for g in status["gaps"]}
    assert f"mqtt:b/{group}/edge/F-1" in gaps and gaps[f"mqtt:b/{group}/edge/F-1"]["back"] is None
    counts = status["components"]["mqtt:b"]["counts"]
    assert "seq_gap" not in counts and counts.get("msg_parked", 0) == 0, counts


def test_ddata_before_any_birth_is_kept_and_replayed_and_a_rebirth_is_asked_for(
    mqtt_broker: Broker, tmp_path: Path
) -> None:
    """A collector that never saw the edge node's BIRTH (a first start): its DDATA is parked with the raw
    payload, acknowledged only once on disk, and replayed when the BIRTH comes; with rebirth_requests the
    collector asks for that BIRTH (NCMD), and a jump in seq is counted."""
    group = f"g{uuid.uuid4().hex[:6]}"
    text = _config(mqtt_broker.port, group, "[mqtt.brokers.b.sparkplug]\nrebirth_requests = true")
    commands: list[bytes] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{group}")
    watcher.on_message = lambda c, u, msg: commands.append(msg.payload)
    watcher.connect(mqtt_broker.host, mqtt_broker.port)
    watcher.subscribe(f"spBv1.0/{group}/NCMD/edge", qos=1)
    watcher.loop_start()
    edge = EdgeNode(mqtt_broker.port, group)

    async def body(collectors: Collectors) -> dict[str, int]:
        tahu.getNodeBirthPayload()  # the node's seq restarts (its BIRTH happened before we were here)
        tahu.getSeqNum()
        tahu.getSeqNum()
        for i in range(1, 11):
            await asyncio.to_thread(edge.ddata, i)
        mqtt_b = collectors.mqtt[0]
        assert await wait_until(lambda: mqtt_b.messages >= 10, 15)
        assert await wait_until(lambda: len(commands) >= 1, 10), "no rebirth request"
        await asyncio.to_thread(edge.births)  # the node answers the request
        await asyncio.to_thread(edge.ddata, 11)
        await asyncio.to_thread(edge.ddata, 12, skip_seq=True)
        store = collectors.writer.store if collectors.writer else None
        assert store is not None
        assert await wait_until(lambda: store.count("F-1.ph", T0) == 13, 15), store.count("F-1.ph", T0)
        return collectors.counts.of("mqtt:b")

    try:
        counts = asyncio.run(_collecting(text, tmp_path, body))
    finally:
        edge.close()
        watcher.loop_stop()
        watcher.disconnect()
    request = ours.Payload.FromString(commands[0])
    asked = f"{request.metrics[0].name}={request.metrics[0].boolean_value}"
    print(f"\nDDATA before BIRTH: counts {counts}; rebirth request {asked}")
    assert request.metrics[0].name == "Node Control/Rebirth" and request.metrics[0].boolean_value
    assert counts["msg_parked"] == 10 and counts["sp_replayed"] == 10
    assert counts["seq_gap"] == 1 and counts["seq_missing"] == 1
    assert counts["sp_rebirth_requests"] == 1  # once per rebirth_interval_s, not once per message


def test_booleans_are_stored_as_1_and_0_in_every_format(mqtt_broker: Broker, tmp_path: Path) -> None:
    p = f"b{uuid.uuid4().hex[:6]}"
    text = f"""
[site]
name = "booleans"
[mqtt.brokers.b]
host = "{mqtt_broker.host}"
port = {mqtt_broker.port}
client_id = "c-{p}"
[[equipment]]
id = "R-1"
kind = "recovery"
[[tags]]
name = "R-1.json"
equipment = "R-1"
role = "speed"
unit = "rpm"
source = {{ protocol = "mqtt", broker = "b", topic = "{p}/json", epoch_unit = "ms" }}
[[tags]]
name = "R-1.lp"
equipment = "R-1"
role = "speed"
unit = "rpm"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "{p}/lp"
format = "influx"
field = "on"
precision = "ms"
[[tags]]
name = "R-1.spb"
equipment = "R-1"
role = "speed"
unit = "rpm"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "spBv1.0/{p}/NDATA/edge"
format = "sparkplug"
metric = "Pump/Running"
"""
    n = 101
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{p}")
    pub.connect(mqtt_broker.host, mqtt_broker.port)
    pub.loop_start()

    async def body(collectors: Collectors) -> SqliteStore:
        birth = tahu.getNodeBirthPayload()
        tahu.addMetric(birth, "Pump/Running", 1, Metric.Boolean, False, T0_MS - 1000)
        infos = [pub.publish(f"spBv1.0/{p}/NBIRTH/edge", birth.SerializeToString(), qos=1)]
        for i in range(n):
            ms, on = T0_MS + i * 1000, i % 3 == 0
            infos.append(pub.publish(f"{p}/json", json.dumps({"ts": ms, "value": on}), qos=1))
            infos.append(
                pub.publish(f"{p}/lp", f'pump on={"true" if on else "f"},status="running" {ms}', qos=1)
            )
            data = tahu.getDdataPayload()
            tahu.addMetric(data, None, 1, Metric.Boolean, on, ms)
            infos.append(pub.publish(f"spBv1.0/{p}/NDATA/edge", data.SerializeToString(), qos=1))
        for info in infos:
            await asyncio.to_thread(info.wait_for_publish, 10)
        store = collectors.writer.store if collectors.writer else None
        assert store is not None
        for tag in ("R-1.json", "R-1.lp", "R-1.spb"):
            assert await wait_until(lambda t=tag: store.count(t, T0) == n, 20), (tag, store.count(tag, T0))
        return store

    try:
        store = asyncio.run(_collecting(text, tmp_path, body))
    finally:
        pub.loop_stop()
        pub.disconnect()
    expected = [1.0 if i % 3 == 0 else 0.0 for i in range(n)]
    for tag in ("R-1.json", "R-1.lp", "R-1.spb"):
        data = store.read(tag, T0, T0 + timedelta(days=1))
        print(f"\nbooleans {tag}: sent {n}, stored {len(data)}, {int(sum(data.values))} true")
        assert data.values.tolist() == expected, tag
        assert list(data.ts) == [to_us(T0 + timedelta(seconds=i)) for i in range(n)]


@pytest.mark.parametrize("on_disk", [True, False], ids=["on_disk", "in_memory"])
def test_a_message_parked_after_a_replay_in_the_same_batch_is_kept(tmp_path: Path, on_disk: bool) -> None:
    from collectors.sparkplug import HostState

    state = HostState(tmp_path / "state" if on_disk else None)
    key = ("g", "edge", "F-1")
    state.park(key, "t/1", b"one")
    state.park(key, "t/2", b"two")
    assert [t for t, _ in state.parked(key)] == ["t/1", "t/2"]  # replayed by a BIRTH ...
    state.park(key, "t/3", b"three")  # ... and, in the same batch, DATA with an alias that BIRTH lacks
    state.commit()
    assert state.parked(key) == [("t/3", b"three")]
    state.commit()
    assert not state.has_parked(key) and state.parked_bytes == 0
    if on_disk:  # the births survive a restart
        from collectors.sparkplug import Birth

        state.birth(key, Birth({1: "Reactor/pH"}, {"Reactor/pH": 10}))
        state.commit()
        assert HostState(tmp_path / "state").births[key].names == {1: "Reactor/pH"}
