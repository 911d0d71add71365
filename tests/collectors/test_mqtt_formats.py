"""InfluxDB line protocol, Sparkplug B and topic templates end to end: a real broker (see the test header),
the MQTT collector, a real SQLite store; every message counted with exactly one outcome."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt

from biopilot.config import parse_config
from biopilot.samples import GOOD, UNCERTAIN_LAST_USABLE_VALUE, to_us
from collectors.mqtt import NULL_STATUS, MqttCollector
from collectors.sink import Counts, SampleSink
from storage import SqliteStore
from tests.collectors import sparkplug_wire as spb
from tests.conftest import Broker, wait_until

T0 = datetime(2026, 4, 1, 6, 0, tzinfo=UTC)
T0_MS = to_us(T0) // 1000
ALL = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _config(broker: Broker, p: str) -> str:
    return f"""
[site]
name = "formats"
[mqtt.brokers.b]
host = "{broker.host}"
port = {broker.port}
client_id = "c-{p}"
[mqtt.brokers.b.templates.hall]
topic = "{p}/hall/{{equipment}}/{{signal}}"
format = "number"
[mqtt.brokers.b.templates.state]
topic = "{p}/state/+/{{equipment}}"
format = "json"
[[equipment]]
id = "F-1"
kind = "fermenter"
[[equipment]]
id = "R-1"
kind = "recovery"

[[tags]]
name = "F-1.temperature"
equipment = "F-1"
role = "temperature"
unit = "degC"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "{p}/lp"
format = "influx"
field = "temp"
measurement = "reactor"
match_tags = {{ unit = "F-1" }}
precision = "ms"
status_field = "status"

[[tags]]
name = "F-1.ph"
equipment = "F-1"
role = "ph"
unit = "pH"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "spBv1.0/{p}/DDATA/edge1/F-1"
format = "sparkplug"
metric = "Reactor/pH"
[[tags]]
name = "F-1.batch_id"
equipment = "F-1"
role = "batch_id"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "spBv1.0/{p}/DDATA/edge1/F-1"
format = "sparkplug"
metric = "Batch"
[[tags]]
name = "F-1.air_flow"
equipment = "F-1"
role = "air_flow"
unit = "NL/min"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "spBv1.0/{p}/NDATA/edge1"
format = "sparkplug"
metric = "Air"

[[tags]]
name = "F-1.level"
equipment = "F-1"
role = "level"
unit = "%"
source = {{ protocol = "mqtt", broker = "b", template = "hall", signal = "LT-101" }}
[[tags]]
name = "R-1.flow"
equipment = "R-1"
role = "flow"
unit = "L/h"
source = {{ protocol = "mqtt", broker = "b", template = "hall", signal = "FT-201" }}
[[tags]]
name = "R-1.speed"
equipment = "R-1"
role = "speed"
unit = "rpm"
source = {{ protocol = "mqtt", broker = "b", template = "state", signal = "rpm" }}
[[tags]]
name = "R-1.turbidity"
equipment = "R-1"
role = "turbidity"
unit = "NTU"
source = {{ protocol = "mqtt", broker = "b", template = "state", signal = "ntu" }}
"""


class _Run:
    """A collector on the shared broker, a publisher, and a way to wait until n messages were handled."""

    def __init__(self, broker: Broker, tmp_path: Path) -> None:
        self.p = f"t-{uuid.uuid4().hex[:8]}"
        self.config = parse_config(_config(broker, self.p))
        self.store = SqliteStore(tmp_path / "t.db")
        self.sink = SampleSink(self.store, flush_interval=0.01)
        self.collector = MqttCollector(
            "b", self.config.mqtt.brokers["b"], self.config.tags, self.sink, Counts(), UTC
        )
        self.broker = broker
        self.sent = 0

    async def __aenter__(self) -> _Run:
        self.stop = asyncio.Event()
        self.tasks = [
            asyncio.create_task(self.collector.run(self.stop)),
            asyncio.create_task(self.sink.run(self.stop)),
        ]
        await asyncio.wait_for(self.collector.subscribed.wait(), 10)
        self.pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{self.p}")
        self.pub.connect(self.broker.host, self.broker.port)
        self.pub.loop_start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.pub.loop_stop()
        self.pub.disconnect()
        self.stop.set()
        await asyncio.gather(*self.tasks)

    async def send(self, topic: str, payload: bytes | str) -> None:
        """Publish one message and wait until the collector handled it (so the next one sees its effects)."""
        info = self.pub.publish(topic, payload, qos=1)
        await asyncio.to_thread(info.wait_for_publish, 5)
        self.sent += 1
        assert await wait_until(lambda: self.collector.messages >= self.sent), (
            f"{self.collector.messages} handled"
        )
        assert await wait_until(lambda: self.sink.caught_up)

    def values(self, tag: str) -> list[tuple[datetime, object, int]]:
        data = self.store.read(tag, *ALL)
        return [
            (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(t)), v, int(s))
            for t, v, s in zip(data.ts, data.values.tolist(), data.status, strict=True)
        ]

    def outcomes(self) -> dict[str, int]:
        return self.collector.counts.of("mqtt:b")


def test_influx_line_protocol(mqtt_broker: Broker, tmp_path: Path) -> None:
    run = _Run(mqtt_broker, tmp_path)
    topic = f"{run.p}/lp"

    async def main() -> None:
        async with run:
            await run.send(
                topic,
                f"reactor,unit=F-1 temp=37.5,status=0i {T0_MS}\n"  # taken
                f"reactor,unit=F-2 temp=99 {T0_MS}\n"  # another unit: not ours
                f"jacket,unit=F-1 temp=20 {T0_MS}\n"  # another measurement: not ours
                # more tags than asked for: fine
                f'reactor,unit=F-1,site=hall3 temp=37.75,status="uncertain" {T0_MS + 1000}\n',
            )
            await run.send(
                topic, f"reactor,unit=F-1 temp=38 {T0_MS + 2000}\nthis is not line protocol"
            )  # partial
            await run.send(topic, "reactor,unit=F-2 temp=1")  # well-formed, nothing of ours
            await run.send(topic, 'reactor,unit=F-1 temp="hot"')  # wrong type
            await run.send(topic, b"\xff\xfe")

    asyncio.run(main())
    assert run.values("F-1.temperature") == [
        (T0, 37.5, GOOD),
        (T0 + timedelta(seconds=1), 37.75, UNCERTAIN_LAST_USABLE_VALUE),
        (T0 + timedelta(seconds=2), 38.0, GOOD),
    ]
    assert run.outcomes() == {
        "msg_accepted": 2,  # the first message and the one with nothing of ours ...
        "nothing_mapped": 1,  # ... which is counted as such
        "msg_partial": 1,
        "msg_rejected:wrong_type": 1,
        "msg_rejected:undecodable_line_protocol": 1,
        "undecodable_line_protocol": 2,
        "wrong_type": 1,
        "values": 3,
    }


def test_sparkplug_births_aliases_and_data(mqtt_broker: Broker, tmp_path: Path) -> None:
    run = _Run(mqtt_broker, tmp_path)
    ddata, dbirth = f"spBv1.0/{run.p}/DDATA/edge1/F-1", f"spBv1.0/{run.p}/DBIRTH/edge1/F-1"
    ndata, nbirth = f"spBv1.0/{run.p}/NDATA/edge1", f"spBv1.0/{run.p}/NBIRTH/edge1"

    async def main() -> None:
        async with run:
            # DATA by alias before any BIRTH: kept, and replayed when the BIRTH comes (not guessed)
            await run.send(ddata, spb.payload(spb.metric(alias=1, double_value=7.0), timestamp=T0_MS - 1000))
            birth = spb.payload(
                spb.metric("Reactor/pH", alias=1, datatype=10, double_value=7.01),
                spb.metric("Batch", alias=2, datatype=12, string_value="B-1"),
                spb.metric("Reactor/DO", alias=3, datatype=9, float_value=40.0),  # not configured
                timestamp=T0_MS,
            )
            await run.send(dbirth, birth)
            # by alias now: pH (its own timestamp) and an unconfigured metric
            data = spb.payload(
                spb.metric(alias=1, timestamp=T0_MS + 1000, double_value=7.02, quality=500),
                spb.metric(alias=3, float_value=41.0),
                timestamp=T0_MS + 2000,
            )
            await run.send(ddata, data)
            # by name (datatype from the BIRTH), a null, and the batch as text
            await run.send(
                ddata,
                spb.payload(
                    spb.metric("Reactor/pH", double_value=7.03),
                    spb.metric("Batch", timestamp=T0_MS + 3000, string_value="B-2"),
                    timestamp=T0_MS + 3000,
                ),
            )
            await run.send(ddata, spb.payload(spb.metric(alias=1, is_null=True), timestamp=T0_MS + 4000))
            await run.send(ddata, spb.payload(spb.metric(alias=2, double_value=1.0), timestamp=T0_MS + 5000))
            # an edge node's own metric by alias of its NBIRTH (Int32, negative)
            await run.send(
                nbirth, spb.payload(spb.metric("Air", alias=5, datatype=3, int_value=10), timestamp=T0_MS)
            )
            await run.send(ndata, spb.payload(spb.metric(alias=5, int_value=-2), timestamp=T0_MS + 1000))
            await run.send(ddata, b"\x0b garbage")
            # a new DBIRTH renumbers the aliases: alias 1 is now the batch
            rebirth = spb.payload(
                spb.metric("Batch", alias=1, datatype=12, string_value="B-3"),
                spb.metric("Reactor/pH", alias=2, datatype=10, double_value=7.1),
                timestamp=T0_MS + 10_000,
            )
            await run.send(dbirth, rebirth)
            await run.send(
                ddata, spb.payload(spb.metric(alias=1, string_value="B-4"), timestamp=T0_MS + 11_000)
            )

    asyncio.run(main())
    s = timedelta(seconds=1)
    ph = run.values("F-1.ph")
    assert ph[0] == (T0 - s, 7.0, GOOD)  # sent before the BIRTH, kept, and replayed after it
    ph = ph[1:]
    assert math.isnan(ph[3][1])  # a null: no value (NaN in a numeric series), status Bad
    assert [*ph[:3], (ph[3][0], None, ph[3][2]), *ph[4:]] == [
        (T0, 7.01, GOOD),  # from the BIRTH
        (T0 + s, 7.02, UNCERTAIN_LAST_USABLE_VALUE),  # Quality 500: stale
        (T0 + 3 * s, 7.03, GOOD),
        (T0 + 4 * s, None, NULL_STATUS),
        (T0 + 10 * s, 7.1, GOOD),
    ]
    assert [(t, v) for t, v, _ in run.values("F-1.batch_id")] == [
        (T0, "B-1"),
        (T0 + 3 * s, "B-2"),
        (T0 + 10 * s, "B-3"),
        (T0 + 11 * s, "B-4"),
    ]
    assert [(t, v) for t, v, _ in run.values("F-1.air_flow")] == [(T0, 10.0), (T0 + s, -2.0)]
    assert run.outcomes() == {
        "msg_parked": 1,  # DATA before BIRTH ...
        "waiting_for_birth": 1,
        "sp_replayed": 1,  # ... replayed after it
        "msg_accepted": 8,  # BIRTH, by alias, by name, null, NBIRTH, NDATA, rebirth, B-4
        "msg_rejected:wrong_type": 1,  # a double for the text tag Batch
        "msg_rejected:undecodable_sparkplug": 1,
        "wrong_type": 1,
        "undecodable_sparkplug": 1,
        "values": 12,  # pH 6, batch 4, air 2
    }


def test_topic_templates_map_segments_to_equipment_and_tag(mqtt_broker: Broker, tmp_path: Path) -> None:
    run = _Run(mqtt_broker, tmp_path)
    assert sorted(run.collector.subscriptions) == sorted(
        [
            f"{run.p}/lp",
            f"{run.p}/hall/+/+",
            f"{run.p}/state/+/+",
            f"spBv1.0/{run.p}/+/edge1/#",  # every message of the edge node: births, data, deaths, seq
        ]
    )
    ts = T0.isoformat()

    async def main() -> None:
        async with run:
            await run.send(f"{run.p}/hall/F-1/LT-101", "55.5")
            await run.send(f"{run.p}/hall/R-1/FT-201", "410")
            await run.send(f"{run.p}/hall/R-1/LT-101", "1")  # R-1 has no LT-101
            await run.send(f"{run.p}/hall/F-9/LT-101", "1")  # no such equipment
            await run.send(f"{run.p}/state/line2/R-1", f'{{"ts": "{ts}", "rpm": 9000, "ntu": 12.5}}')
            await run.send(f"{run.p}/state/line2/R-1", f'{{"ts": "{ts}", "rpm": 9100}}')  # ntu missing
            await run.send(f"{run.p}/state/line2/F-1", f'{{"ts": "{ts}", "rpm": 1}}')  # F-1 has none here

    asyncio.run(main())
    assert [v for _, v, _ in run.values("F-1.level")] == [55.5]
    assert [v for _, v, _ in run.values("R-1.flow")] == [410.0]
    assert run.values("R-1.speed") == [(T0, 9100.0, GOOD)]  # the second message overwrote the first
    assert run.values("R-1.turbidity") == [(T0, 12.5, GOOD)]
    assert run.outcomes() == {
        "msg_accepted": 3,
        "msg_partial": 1,
        "missing_field": 1,
        "msg_rejected:unknown_topic": 3,
        "unknown_topic": 3,
        "values": 5,
    }
    reasons = {reason: detail for _, _, reason, detail in run.collector.counts.quarantine}
    assert "no tag of template 'state' has equipment 'F-1'" in reasons["unknown_topic"]
