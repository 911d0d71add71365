"""Health: what the collectors report, the stale-versus-dead rule, and `biopilot status`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt

from biopilot.config import parse_config
from collectors.runner import Collectors
from storage import HealthStore, SqliteStore
from storage.health import COLLECTOR_SILENT_S, liveness, source_alive
from tests.conftest import REPO, Broker, wait_until

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def test_liveness_tells_unchanged_from_dead() -> None:
    # a report-by-exception tag silent for an hour, its source alive and no max age: still live
    assert liveness(True, 3600.0, None) == "live"
    # the same with a max age of 10 min: stale
    assert liveness(True, 3600.0, 600.0) == "stale"
    assert liveness(True, 5.0, 600.0) == "live"
    # its source gone: dead, however fresh the value
    assert liveness(False, 1.0, None) == "dead"


def test_source_alive_needs_a_recent_report_a_connection_and_a_fresh_heartbeat() -> None:
    beat = (NOW - timedelta(seconds=1)).isoformat()
    opcua = {"kind": "opcua", "state": "connected", "last_heartbeat": beat}
    assert source_alive(opcua, NOW, NOW + timedelta(seconds=2))
    assert not source_alive(opcua, NOW, NOW + timedelta(seconds=COLLECTOR_SILENT_S + 1))  # collector silent
    assert not source_alive({**opcua, "state": "disconnected"}, NOW, NOW)
    old_beat = {**opcua, "last_heartbeat": (NOW - timedelta(seconds=6)).isoformat()}
    assert not source_alive(old_beat, NOW, NOW)  # connected, but the server stopped answering
    assert not source_alive({**opcua, "last_heartbeat": None}, NOW, NOW)
    assert source_alive({"kind": "mqtt", "state": "connected"}, NOW, NOW)
    assert not source_alive(None, None, NOW)


def _config(broker: Broker, prefix: str) -> str:
    return f"""
[site]
name = "health"
[mqtt.brokers.b]
host = "{broker.host}"
port = {broker.port}
client_id = "c-{prefix}"
[[equipment]]
id = "R-1"
kind = "recovery"
[[tags]]
name = "R-1.flow"
equipment = "R-1"
role = "flow"
unit = "L/h"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/flow" }}
[[tags]]
name = "R-1.speed"
equipment = "R-1"
role = "speed"
unit = "rpm"
max_age_s = 60
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/speed" }}
"""


def test_collectors_write_health_and_status_prints_it(mqtt_broker: Broker, tmp_path: Path) -> None:
    prefix = uuid.uuid4().hex[:8]
    cfg = tmp_path / "site.toml"
    cfg.write_text(_config(mqtt_broker, prefix))
    config = parse_config(cfg.read_text())
    store = SqliteStore(tmp_path / "biopilot.db")
    health = HealthStore(tmp_path / "biopilot.db")

    async def main() -> None:
        collectors = Collectors.from_config(config, store, spool_dir=tmp_path / "spool", health=health)
        stop = asyncio.Event()
        task = asyncio.create_task(collectors.run(stop))
        assert await collectors.wait_subscribed(10)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"p-{prefix}")
        pub.connect(mqtt_broker.host, mqtt_broker.port)
        pub.loop_start()
        for i in range(5):
            pub.publish(
                f"{prefix}/flow",
                json.dumps({"ts": (NOW + timedelta(seconds=i)).isoformat(), "value": 1.0 * i}),
                qos=1,
            ).wait_for_publish(5)
        pub.publish(f"{prefix}/flow", b"garbage", qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while store.count("R-1.flow") < 5 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        collectors.publish_health()
        stop.set()
        await task

    asyncio.run(main())
    components = health.components()
    doc, _ = components["mqtt:b"]
    assert doc["messages"] == 6 and doc["counts"]["msg_accepted"] == 5
    assert doc["counts"]["msg_rejected:undecodable_json"] == 1
    assert components["writer"][0]["stored"] == 5 and components["writer"][0]["lag_bytes"] == 0
    assert components["sink"][0]["received"] == 5
    tags = health.tags()
    assert tags["R-1.flow"].values_total == 5 and tags["R-1.flow"].last_ts == NOW + timedelta(seconds=4)
    assert tags["R-1.speed"].values_total == 0 and tags["R-1.speed"].last_seen is None
    assert [q[2] for q in health.quarantine()] == ["undecodable_json"]

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "biopilot",
            "status",
            "--config",
            str(cfg),
            "--data-dir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    status = json.loads(out.stdout)
    states = {row["tag"]: row["state"] for row in status["tags"]}
    # the collector stopped a moment ago: its last report says "disconnected", so both tags are dead
    assert states == {"R-1.flow": "dead", "R-1.speed": "dead"}
    assert status["components"]["mqtt:b"]["messages"] == 6
    text = subprocess.run(
        [sys.executable, "-m", "biopilot", "status", "--config", str(cfg), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    assert "mqtt:b" in text and "undecodable_json 1" in text and "R-1.flow" in text


def test_a_tag_whose_every_value_is_rejected_is_not_live(mqtt_broker: Broker, tmp_path: Path) -> None:
    prefix = uuid.uuid4().hex[:8]
    cfg = tmp_path / "site.toml"
    cfg.write_text(_config(mqtt_broker, prefix))
    config = parse_config(cfg.read_text())
    store = SqliteStore(tmp_path / "biopilot.db")
    health = HealthStore(tmp_path / "biopilot.db")

    async def main() -> dict:
        collectors = Collectors.from_config(config, store, spool_dir=tmp_path / "spool", health=health)
        stop = asyncio.Event()
        task = asyncio.create_task(collectors.run(stop))
        try:
            assert await collectors.wait_subscribed(10)
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"p-{prefix}")
            pub.connect(mqtt_broker.host, mqtt_broker.port)
            pub.loop_start()
            ts = NOW.isoformat()
            for value in ("fast", "slow", "stopped"):  # text where a speed is expected: all refused
                pub.publish(
                    f"{prefix}/speed", json.dumps({"ts": ts, "value": value}), qos=1
                ).wait_for_publish(5)
            pub.publish(f"{prefix}/flow", json.dumps({"ts": ts, "value": 1.5}), qos=1).wait_for_publish(5)
            pub.loop_stop()
            pub.disconnect()
            assert await wait_until(lambda: collectors.mqtt[0].messages == 4)
            await asyncio.to_thread(collectors.publish_health)
            out = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "biopilot",
                    "status",
                    "--json",
                    "--config",
                    str(cfg),
                    "--data-dir",
                    ".",
                ],
                capture_output=True,
                text=True,
                cwd=tmp_path,
                check=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        finally:
            stop.set()
            await task
        return json.loads(out.stdout)

    status = asyncio.run(main())
    rows = {r["tag"]: r for r in status["tags"]}
    speed = rows["R-1.speed"]
    print(f"\nstatus of a tag whose every value is refused: {speed['state']}: {speed['reason']}")
    assert rows["R-1.speed"]["state"] == "rejected" and rows["R-1.speed"]["rejected_total"] == 3
    assert "wrong_type" in rows["R-1.speed"]["reason"]
    assert rows["R-1.flow"]["state"] == "live"
