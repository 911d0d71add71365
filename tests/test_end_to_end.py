"""The whole path with real peers: the simulator serves over a real asyncua server and publishes to a real
MQTT broker; the collectors store into a real SQLite file; every value the simulator published (acknowledged
by the broker, or written to the OPC UA server) must be in the store, counted per protocol."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

from biopilot.config import OpcUaSource, Tag, parse_config
from collectors.runner import Collectors
from simulators.plant import PlantSimulator
from storage import SqliteStore
from tests.conftest import Broker, demo_config_text, free_port, wait_until

WINDOW_S = 6.0


def _key(tag: Tag) -> str:
    """The simulator's name for the address a tag is collected from."""
    src = tag.source
    return f"opcua:{src.browse_path}" if isinstance(src, OpcUaSource) else f"mqtt:{src.topic}#{src.field}"


def test_every_published_value_is_stored(mqtt_broker: Broker, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    config = parse_config(
        demo_config_text(
            opcua_port=free_port(), mqtt_host=mqtt_broker.host, mqtt_port=mqtt_broker.port, tag=tag
        )
    )
    store = SqliteStore(tmp_path / "e2e.db")

    async def main() -> tuple[PlantSimulator, Collectors]:
        sim = PlantSimulator(config, speed=3600, interval_s=0.1)
        collectors = Collectors.from_config(config, store)
        sim_stop, col_stop, ready, go = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
        hold = asyncio.Event()
        sim_task = asyncio.create_task(sim.run(sim_stop, ready, go, hold))
        await asyncio.wait_for(ready.wait(), 20)
        col_task = asyncio.create_task(collectors.run(col_stop))
        assert await collectors.wait_subscribed(20), "collectors did not connect and subscribe"
        go.set()
        await asyncio.sleep(WINDOW_S)  # the window the plant publishes in (not a wait for a result)
        hold.set()  # no more values; the OPC UA server and the broker stay up until all are collected
        await asyncio.wait_for(sim.held.wait(), 20)
        expected = sum(sim.published[_key(t)] for t in config.tags)
        assert await wait_until(lambda: collectors.sink.stored >= expected, 60)
        sim_stop.set()
        await sim_task
        col_stop.set()
        await col_task
        return sim, collectors

    sim, collectors = asyncio.run(main())
    published, stored = Counter[str](), Counter[str]()
    missing = []
    for t in config.tags:
        key, protocol = _key(t), t.source.protocol
        published[protocol] += sim.published[key]
        stored[protocol] += store.count(t.name)
        if sim.published[key] != store.count(t.name):
            missing.append(f"{t.name}: published {sim.published[key]}, stored {store.count(t.name)}")
    print(
        f"\nend-to-end over {WINDOW_S:.0f} s ({sim.ticks} ticks): "
        f"OPC UA published {published['opcua']} stored {stored['opcua']}; "
        f"MQTT published {published['mqtt']} stored {stored['mqtt']}"
    )
    assert not missing, "\n".join(missing)
    assert published["opcua"] >= 16 * 40 and published["mqtt"] >= 9 * 40, (
        "the window produced too little to judge"
    )
    assert published == stored
    assert {outcome for (_, outcome) in collectors.counts.by} <= {"values", "msg_accepted"}, (
        collectors.counts.by
    )
