"""The live plant with real peers: a real asyncua client against the simulator's OPC UA server, a real
Mosquitto and a paho subscriber for MQTT. The plant runs 14,400× faster than real time (one simulated hour
in a quarter of a second) with a tick every 50 ms, so every fault window spans several ticks."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from asyncua import Client

from biopilot.config import SiteConfig, parse_config
from biopilot.samples import BAD_SENSOR_FAILURE, GOOD
from simulators.faults import MALFORMED_PAYLOADS
from simulators.plant import PlantSimulator
from simulators.scenario import Fault, FaultKind, Scenario, default_scenario
from storage import SqliteStore
from tests.conftest import Broker, PrivateMosquitto, free_port

START = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)
SPEED = 14_400.0
TICK_S = 0.05


def site(
    *,
    opcua_port: int | None,
    host: str,
    port: int | None,
    prefix: str,
    fmt: str = "json",
    history_h: float = 0.0,
) -> SiteConfig:
    """A site with F-101 and R-201 simulated; OPC UA and MQTT served only when given a port."""
    opcua = 'opcua_server = "sim"' if opcua_port else ""
    broker = 'mqtt_broker = "b"' if port else ""
    return parse_config(f"""
[site]
name = "live test"

[opcua.servers.sim]
endpoint = "opc.tcp://127.0.0.1:{opcua_port or 4840}/t/"
namespace = "urn:test:{prefix}"

[mqtt.brokers.b]
host = "{host}"
port = {port or 1883}

[[equipment]]
id = "F-101"
kind = "fermenter"

[[equipment]]
id = "R-201"
kind = "recovery"

[[tags]]
name = "F-101.offgas_o2"
equipment = "F-101"
role = "offgas_o2"
unit = "%"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/F-101/offgas", field = "o2" }}

[[tags]]
name = "R-201.batch_id"
equipment = "R-201"
role = "batch_id"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/R-201/state", field = "batch_id" }}

[simulator]
{opcua}
{broker}
mqtt_topic_prefix = "{prefix}"
mqtt_format = "{fmt}"
history_h = {history_h}

[[simulator.units]]
equipment = "F-101"
model = "fermenter"

[[simulator.units]]
equipment = "R-201"
model = "recovery"
operation = "centrifuge"
upstream = "F-101"
""")


def with_faults(faults: list[Fault], scenario: Scenario | None = None) -> Scenario:
    return (scenario or default_scenario()).model_copy(update={"faults": faults})


async def run_until(
    sim: PlantSimulator, plant_h: float, during=None, timeout_s: float = 30.0, until=None
) -> None:
    """Run the simulator until its plant time is plant_h hours past the start (and until() holds);
    `during` runs meanwhile."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(sim.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 20)
    side = asyncio.create_task(during()) if during else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while sim.model is None or sim.model.t_h < plant_h or (until is not None and not until()):
        assert loop.time() < deadline, "the plant did not get there in time"
        assert not task.done(), task.result()
        await asyncio.sleep(0.02)
    if side is not None:
        side.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await side
    stop.set()
    await task


def test_opcua_server_restart_is_a_gap_then_the_same_variables_again() -> None:
    port = free_port()
    config = site(opcua_port=port, host="127.0.0.1", port=None, prefix="t")  # OPC UA only
    fault = Fault(kind=FaultKind.OPCUA_RESTART, at_h=2.0, duration_h=1.0)
    sim = PlantSimulator(config, scenario=with_faults([fault]), speed=SPEED, interval_s=TICK_S, start=START)
    seen: list[datetime] = []
    failures = 0

    async def poll() -> None:
        nonlocal failures
        client: Client | None = None
        while True:
            try:
                if client is None:
                    client = Client(f"opc.tcp://127.0.0.1:{port}/t/", timeout=2)
                    await asyncio.wait_for(client.connect(), 3)
                    idx = await client.get_namespace_index("urn:test:t")
                    node = await client.nodes.objects.get_child([f"{idx}:F-101", f"{idx}:Temperature"])
                dv = await asyncio.wait_for(node.read_data_value(), 2)
                if dv.StatusCode.is_good():
                    seen.append(dv.SourceTimestamp.replace(tzinfo=UTC))
            except (OSError, TimeoutError, Exception):  # a fresh client is the safe recovery
                failures += 1
                if client is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.disconnect(), 1)
                client = None
            await asyncio.sleep(0.03)

    down_from, down_to = START + timedelta(hours=2), START + timedelta(hours=3)
    # the stop takes the server about a second, which is hours of plant time: run until the client has
    # read a value served after the restart
    asyncio.run(run_until(sim, 3.0, poll, until=lambda: any(ts >= down_to for ts in seen)))
    assert failures > 0, "the client never saw the server go away"
    assert any(ts < down_from for ts in seen) and any(ts >= down_to for ts in seen)
    assert not [ts for ts in seen if down_from <= ts < down_to], "values of the down time were served"
    # each server served Bad_WaitingForInitialData once, then the values of every tick it was up
    up_ticks = sim.ticks - sim.ticks_opcua_down
    assert sim.ticks_opcua_down >= 1
    assert sim.published["opcua:F-101/Temperature"] == up_ticks + 2


class Subscriber:
    """A paho subscriber to everything under a prefix, keeping (topic, payload) in arrival order."""

    def __init__(self, broker_port: int, prefix: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", broker_port)
        self.client.subscribe(f"{prefix}/#", qos=1)
        self.client.loop_start()
        assert subscribed.wait(5)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def json(self, topic: str) -> list[dict]:
        with self._lock:
            return [json.loads(p) for t, p in self.messages if t == topic and p not in MALFORMED_PAYLOADS]


def test_mqtt_faults_as_published(private_mosquitto: PrivateMosquitto) -> None:
    prefix = f"live-{uuid.uuid4().hex[:6]}"
    config = site(opcua_port=None, host="127.0.0.1", port=private_mosquitto.port, prefix=prefix, fmt="both")
    faults = [
        Fault(kind=FaultKind.MALFORMED, source="F-101/offgas", at_h=0.5, count=8),
        Fault(kind=FaultKind.MQTT_DISCONNECT, at_h=1.0, duration_h=1.0),
        Fault(kind=FaultKind.MQTT_DISCONNECT, at_h=3.0, duration_h=1.0, buffer=True),
        Fault(kind=FaultKind.CLOCK_SKEW, source="F-101/offgas", at_h=5.0, duration_h=1.0, skew_s=120.0),
        Fault(kind=FaultKind.DROPOUT, signal="F-101/OffgasO2", at_h=6.0, duration_h=0.5),
    ]
    # lockstep: every tick is 720 s of plant time however loaded the machine, so the counts per plant hour
    # below hold (with the wall clock, a late tick covered several and published once)
    sim = PlantSimulator(
        config, scenario=with_faults(faults), speed=SPEED, interval_s=TICK_S, start=START, lockstep=True
    )
    sub = Subscriber(private_mosquitto.port, prefix)
    try:
        asyncio.run(run_until(sim, 7.0))
        offgas_topic = f"{prefix}/F-101/offgas"
        expected = sim.published[f"mqtt:{offgas_topic}#o2"]
        deadline = time.monotonic() + 30  # the broker acknowledged them all; let them reach the subscriber
        while len(sub.json(offgas_topic)) < expected and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        offgas = sub.json(offgas_topic)
        state = sub.json(f"{prefix}/R-201/state")
        raw = [p for t, p in sub.messages if t == offgas_topic]
    finally:
        sub.close()
    assert len(offgas) == expected > 20

    def hours(msg: dict) -> float:
        return (datetime.fromisoformat(msg["ts"]) - START).total_seconds() / 3600

    # malformed: the burst of 8 arrived on the analyser's topic, counted apart from values
    assert [p for p in raw if p in MALFORMED_PAYLOADS] == list(MALFORMED_PAYLOADS[:8])
    assert sim.malformed[offgas_topic] == 8
    # disconnect without buffer: nothing from 1 to 2 h (dropped and counted as such)
    assert not [m for m in offgas if 1.0 <= hours(m) < 2.0]
    assert sim.dropped[f"{offgas_topic}#o2"] >= 4  # a tick is 720 s of plant time: 5 ticks an hour
    # disconnect with buffer: the messages of 3–4 h arrive after the reconnect, in order, with their times
    buffered = [i for i, m in enumerate(offgas) if 3.0 <= hours(m) < 4.0]
    assert len(buffered) >= 4
    assert buffered == list(range(buffered[0], buffered[0] + len(buffered)))
    assert [hours(offgas[i]) for i in buffered] == sorted(hours(offgas[i]) for i in buffered)
    # clock skew: the analyser's timestamps run 120 s ahead of the recovery unit's, published in the same
    # tick right after it (pairs in arrival order), while the unit's time is in 5–6 h
    pairs = list(zip(offgas, state, strict=False))
    assert len(pairs) == len(offgas)
    skews = {
        (datetime.fromisoformat(o["ts"]) - datetime.fromisoformat(st["ts"])).total_seconds(): 5.0
        <= hours(st)
        < 6.0
        for o, st in pairs
    }
    assert skews == {120.0: True, 0.0: False}
    # dropout: the analyser's messages of 6–6.5 h are bad, all others good
    assert {m["status"] for m in offgas if 6.0 <= hours(m) < 6.5} == {BAD_SENSOR_FAILURE}
    assert {m["status"] for m in offgas if not 6.0 <= hours(m) < 6.5} == {GOOD}
    # plain numbers beside the JSON: the same count, numbers alone
    plain = [p for t, p in sub.messages if t == f"{offgas_topic}/o2"]
    assert len(plain) == len(offgas) and all(float(p) > 15 for p in plain)
    assert sim.published[f"mqtt:{offgas_topic}/o2#value"] == len(plain)


def test_history_truth_and_lab_results_of_a_live_plant(mqtt_broker: Broker, tmp_path: Path) -> None:
    """history_h: the plant starts 18 h back; that history is in the store before anything is served; a
    run that ends in it has its truth on disk; lab results are delivered at their report time."""
    prefix = f"live-{uuid.uuid4().hex[:6]}"
    config = site(
        opcua_port=None, host=mqtt_broker.host, port=mqtt_broker.port, prefix=prefix, history_h=18.0
    )
    base = default_scenario()
    scenario = base.model_copy(
        update={
            "fermenter": {"t_fed_batch": 3.0, "t_turnaround": 1.0},
            "lab": base.lab.model_copy(update={"delivery": "csv"}),
        }
    )
    store = SqliteStore(tmp_path / "store.db")
    origin = START + timedelta(hours=18)
    sim = PlantSimulator(
        config,
        scenario=scenario,
        speed=SPEED,
        interval_s=TICK_S,
        start=origin,
        data_dir=tmp_path,
        history_store=store,
    )
    try:
        asyncio.run(run_until(sim, 20.0))
        batch_ids = store.read("R-201.batch_id", START - timedelta(hours=1), origin + timedelta(hours=10))
        o2 = store.read("F-101.offgas_o2", START - timedelta(hours=1), origin + timedelta(hours=10))
    finally:
        store.close()
    assert sim.history_samples > 0
    # the history: every minute from the (history) start to the origin, nothing later (live data goes to MQTT)
    assert o2.ts[0] == int(START.timestamp() * 1e6)
    assert o2.ts[-1] == int(origin.timestamp() * 1e6)
    assert len(o2) == 18 * 60 + 1
    truths = sorted((tmp_path / "truth").glob("*.json"))
    assert len(truths) == 1
    doc = json.loads(truths[0].read_text())
    assert doc["batch_id"].endswith("-B01")
    harvest_end = datetime.fromisoformat(doc["fermentation"]["times"]["harvest_end"])
    assert harvest_end < origin  # the run ended in the history ...
    unit = doc["recovery"]["R-201"]
    assert unit is not None and datetime.fromisoformat(unit["end"]) > origin  # ... its recovery ended live
    assert doc["overall"]["complete"]
    assert doc["batch_id"] in set(batch_ids.values.tolist())
    # lab results as `biopilot lab import` reads them: a row per sample, written when the lab reports
    rows = list(csv.DictReader((tmp_path / "lab" / f"{doc['batch_id']}.csv").open()))
    assert len(rows) == len(doc["samples"])
    for row, sample in zip(rows, doc["samples"], strict=True):
        assert row["time"] == sample["sampled_at"]
        assert float(row["titer [g/L]"]) == sample["measured"]["titer"]
        assert float(row["glucose [g/L]"]) == sample["measured"]["glucose"]
        assert float(row["sample_volume_l"]) == sample["volume_l"]
        assert datetime.fromisoformat(sample["reported_at"]) - datetime.fromisoformat(
            sample["sampled_at"]
        ) == timedelta(hours=2)
