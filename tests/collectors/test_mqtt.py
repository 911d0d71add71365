"""The MQTT collector against a real broker (see the test header for which one)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt

from biopilot.config import parse_config
from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE, to_us
from collectors.mqtt import MqttCollector
from collectors.sink import Counts, SampleSink
from storage import SqliteStore
from tests.conftest import Broker, wait_until


def _config(broker: Broker, prefix: str, client_id: str) -> str:
    return f"""
[site]
name = "test"
timezone = "Europe/Copenhagen"
[mqtt.brokers.b]
host = "{broker.host}"
port = {broker.port}
client_id = "{client_id}"
[[equipment]]
id = "R-1"
kind = "recovery"
[[tags]]
name = "R-1.flow"
equipment = "R-1"
role = "flow"
unit = "L/h"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/R-1/state", field = "flow" }}
[[tags]]
name = "R-1.batch"
equipment = "R-1"
role = "batch_id"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/R-1/state", field = "batch" }}
[[tags]]
name = "R-1.power"
equipment = "R-1"
role = "power"
unit = "kW"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/R-1/power", format = "number" }}
"""


def _publisher(broker: Broker) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def test_json_values_keep_source_time_and_status(mqtt_broker: Broker, tmp_path: Path) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    config = parse_config(_config(mqtt_broker, prefix, f"c-{prefix}"))
    store = SqliteStore(tmp_path / "t.db")
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    statuses = [GOOD, UNCERTAIN_LAST_USABLE_VALUE, BAD_SENSOR_FAILURE]
    n = 300

    async def main() -> MqttCollector:
        sink = SampleSink(store)
        collector = MqttCollector(
            "b", config.mqtt.brokers["b"], config.tags, sink, Counts(), ZoneInfo("Europe/Copenhagen")
        )
        stop = asyncio.Event()
        tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(sink.run(stop))]
        await asyncio.wait_for(collector.subscribed.wait(), 10)  # the broker's SUBACK came
        pub = _publisher(mqtt_broker)
        for i in range(n):
            payload = {
                "ts": (t0 + timedelta(seconds=i)).isoformat(),
                "status": statuses[i % 3],
                "flow": 400.0 + i,
                "batch": f"B-{i // 100}",
            }
            pub.publish(f"{prefix}/R-1/state", json.dumps(payload), qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        assert await wait_until(lambda: store.count("R-1.flow") == n and store.count("R-1.batch") == n)
        stop.set()
        await asyncio.gather(*tasks)
        return collector

    collector = asyncio.run(main())
    data = store.read("R-1.flow", t0, t0 + timedelta(hours=1))
    assert len(data) == n
    assert data.ts[0] == to_us(t0) and data.ts[-1] == to_us(t0 + timedelta(seconds=n - 1))
    assert data.values[0] == 400.0 and data.values[-1] == 400.0 + n - 1
    assert list(data.status[:3]) == statuses
    batches = store.read("R-1.batch", t0, t0 + timedelta(hours=1))
    assert batches.values[0] == "B-0" and batches.values[-1] == "B-2"
    assert collector.counts.of("mqtt:b") == {"msg_accepted": n, "values": 2 * n}


def test_bad_payloads_are_counted_by_reason_and_collection_goes_on(
    mqtt_broker: Broker, tmp_path: Path
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    config = parse_config(_config(mqtt_broker, prefix, f"c-{prefix}"))
    store = SqliteStore(tmp_path / "t.db")
    bad = [
        (f"{prefix}/R-1/state", b"{not json"),  # undecodable_json
        (f"{prefix}/R-1/state", b"[1, 2]"),  # not_a_json_object
        (
            f"{prefix}/R-1/state",
            b'{"ts": "2026-03-01T12:00:00Z", "flow": "high", "batch": "B"}',
        ),  # wrong_type
        (f"{prefix}/R-1/state", b'{"ts": "2026-03-01T12:00:00Z", "flow": NaN, "batch": "B"}'),  # not_finite
        (f"{prefix}/R-1/state", b'{"ts": "yesterday", "flow": 1.0, "batch": "B"}'),  # bad_timestamp x2
        (f"{prefix}/R-1/power", b"\xff\xfe"),  # undecodable_number
    ]
    good_ts = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)

    async def main() -> MqttCollector:
        sink = SampleSink(store)
        collector = MqttCollector("b", config.mqtt.brokers["b"], config.tags, sink, Counts(), UTC)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(sink.run(stop))]
        await asyncio.wait_for(collector.subscribed.wait(), 10)
        pub = _publisher(mqtt_broker)
        for topic, payload in bad:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        good = {"ts": good_ts.isoformat(), "flow": 5.0, "batch": "B-9"}
        pub.publish(f"{prefix}/R-1/state", json.dumps(good), qos=1).wait_for_publish(5)
        pub.publish(f"{prefix}/R-1/power", b" 12.5 ", qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        assert await wait_until(lambda: store.count("R-1.flow") == 1 and store.count("R-1.power") == 1)
        collector.handle("somewhere/else", b"{}")  # a topic no tag maps
        stop.set()
        await asyncio.gather(*tasks)
        return collector

    collector = asyncio.run(main())
    counts = collector.counts.of("mqtt:b")
    assert counts == {
        # rejections by reason
        "undecodable_json": 1,
        "not_a_json_object": 1,
        "wrong_type": 1,
        "not_finite": 1,
        "bad_timestamp": 2,  # flow and batch of the same message
        "undecodable_number": 1,
        "unknown_topic": 1,
        # one outcome per message: 9 messages
        "msg_rejected:undecodable_json": 1,
        "msg_rejected:not_a_json_object": 1,
        "msg_partial": 2,  # wrong_type and not_finite: their batch id was fine
        "msg_rejected:bad_timestamp": 1,
        "msg_rejected:undecodable_number": 1,
        "msg_accepted": 2,  # the good JSON message and the good number
        "msg_rejected:unknown_topic": 1,
        # samples: 2 batch ids of the partial messages, 2 of the good message, 1 power
        "values": 5,
    }
    # both rejected-flow messages carried batch "B" at 12:00:00: one stored sample, not two
    assert store.count("R-1.batch") == 2
    assert (
        store.read("R-1.power", datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)).values[0]
        == 12.5
    )
