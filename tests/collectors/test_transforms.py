"""Tag transforms (stored = raw × scale + offset) where collected values become stored samples: the sinks of
Collectors.from_config, through a real broker into a real SQLite store, and into the on-disk spool."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from biopilot.config import parse_config
from biopilot.samples import Sample, to_us
from biopilot.units import Transform
from collectors.runner import Collectors
from collectors.spool import SpoolReader
from storage import SqliteStore
from tests.conftest import Broker, wait_until


def _config(broker: Broker, prefix: str) -> str:
    return f"""
[site]
name = "transforms"
[mqtt.brokers.b]
host = "{broker.host}"
port = {broker.port}
client_id = "c-{prefix}"
[[equipment]]
id = "F-1"
kind = "fermenter"
[[tags]]
name = "F-1.discharge"
equipment = "F-1"
role = "discharge_flow"
unit = "L/h"
scale = -1        # the source writes outflows as negative numbers
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/F-1/state", field = "out" }}
[[tags]]
name = "F-1.level"
equipment = "F-1"
role = "level"
unit = "%"
scale = 6.25      # a raw 4–20 mA reading: (mA − 4) · 100/16 = mA · 6.25 − 25
offset = -25.0
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/F-1/state", field = "level_ma" }}
[[tags]]
name = "F-1.phase"
equipment = "F-1"
role = "phase"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/F-1/state", field = "phase" }}
"""


def test_collected_values_are_stored_transformed(mqtt_broker: Broker, tmp_path: Path) -> None:
    prefix = f"tr-{uuid.uuid4().hex[:8]}"
    config = parse_config(_config(mqtt_broker, prefix))
    store = SqliteStore(tmp_path / "t.db")
    collectors = Collectors.from_config(config, store)
    assert collectors.sink.transforms == {
        "F-1.discharge": Transform(-1.0),
        "F-1.level": Transform(6.25, -25.0),
    }
    (collector,) = collectors.mqtt
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    n = 20

    async def main() -> None:
        stop = asyncio.Event()
        sink = collectors.sink
        tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(sink.run(stop))]  # type: ignore[union-attr]
        await asyncio.wait_for(collector.connected.wait(), 10)
        await asyncio.wait_for(collector.subscribed.wait(), 10)  # the broker confirmed the SUBSCRIBE
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{prefix}")
        pub.connect(mqtt_broker.host, mqtt_broker.port)
        pub.loop_start()
        for i in range(n):
            payload = {
                "ts": (t0 + timedelta(seconds=i)).isoformat(),
                "out": -10.0 * i,
                "level_ma": 4.0 + i * 0.8,
                "phase": "fed",
            }
            pub.publish(f"{prefix}/F-1/state", json.dumps(payload), qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        assert await wait_until(lambda: store.count("F-1.level") == n and store.count("F-1.phase") == n)
        stop.set()
        await asyncio.gather(*tasks)

    try:
        asyncio.run(main())
        out = store.read("F-1.discharge", t0, t0 + timedelta(hours=1)).values
        level = store.read("F-1.level", t0, t0 + timedelta(hours=1)).values
        phase = store.read("F-1.phase", t0, t0 + timedelta(hours=1)).values
    finally:
        store.close()
    assert out.tolist() == [10.0 * i for i in range(n)]  # −10·i written, 10·i stored
    # 4 mA → 0 %, 4.8 mA → 5 %, …, 19.2 mA → 95 %
    assert level.tolist() == pytest.approx([5.0 * i for i in range(n)], abs=1e-9)
    assert set(phase.tolist()) == {"fed"}  # text passes untouched


def test_the_spool_holds_the_transformed_values(tmp_path: Path) -> None:
    config = parse_config(_config(Broker("127.0.0.1", 1883, "none", "not started"), "x"))
    store = SqliteStore(tmp_path / "t.db")
    try:
        collectors = Collectors.from_config(config, store, spool_dir=tmp_path / "spool", writer=False)
        ts = datetime(2026, 3, 1, tzinfo=UTC)
        collectors.sink.put([Sample("F-1.discharge", ts, -42.0), Sample("F-1.phase", ts, "fed")])
        collectors.sink.spool.close()  # type: ignore[union-attr]
    finally:
        store.close()
    reader = SpoolReader(tmp_path / "spool")
    ((_, rows),) = reader.read(0)
    reader.close()
    assert rows == [("F-1.discharge", to_us(ts), 42.0, 0, None), ("F-1.phase", to_us(ts), "fed", 0, None)]
