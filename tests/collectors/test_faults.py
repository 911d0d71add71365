"""Fault tests of the MQTT path with real peers, counted: broker killed, collector killed, store gone,
garbage payloads. They need Mosquitto (the embedded amqtt broker loses queued messages of persistent
sessions) and are skipped, saying so, without it; CI always has it."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt

from biopilot.config import SiteConfig, parse_config
from collectors.mqtt import ACCEPTED, PARKED, PARTIAL, REJECTED, MqttCollector
from collectors.sink import Counts, SpoolSink
from collectors.spool import Spool
from collectors.writer import StoreWriter
from storage import SqliteStore
from tests.collectors import sparkplug_wire as spb
from tests.conftest import REPO, PrivateMosquitto, require_mosquitto, wait_until

T0 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


def _config(port: int, prefix: str) -> str:
    return f"""
[site]
name = "faults"
[mqtt.brokers.b]
host = "127.0.0.1"
port = {port}
client_id = "collector-{prefix}"
[[equipment]]
id = "R-1"
kind = "recovery"
[[tags]]
name = "R-1.flow"
equipment = "R-1"
role = "flow"
unit = "L/h"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/R-1/flow" }}
"""


class SteadyPublisher(threading.Thread):
    """Publishes n numbered QoS 1 messages (value i at T0 + i s) at a steady rate, through broker restarts:
    paho keeps every message the broker has not acknowledged and sends it again after reconnecting."""

    def __init__(self, port: int, topic: str, n: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.topic, self.n, self.rate = topic, n, rate
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.reconnect_delay_set(0.1, 1)
        self.client.max_inflight_messages_set(100)
        self.acked = 0
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.published = 0

    def _on_publish(self, *args: object) -> None:
        with self._lock:
            self.acked += 1

    def run(self) -> None:
        start = time.monotonic()
        for i in range(self.n):
            payload = json.dumps({"ts": (T0 + timedelta(seconds=i)).isoformat(), "value": float(i)})
            self.client.publish(self.topic, payload, qos=1)
            self.published = i + 1
            delay = start + (i + 1) / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def wait_all_acked(self, timeout: float) -> bool:
        self.join(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.acked < self.n:
            time.sleep(0.05)
        return self.acked >= self.n

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@asynccontextmanager
async def collecting(
    config: SiteConfig, store: SqliteStore, spool_dir: Path
) -> AsyncIterator[tuple[MqttCollector, StoreWriter]]:
    """The production path in one process: the collector into the spool, a store writer tailing it into the
    store; subscribed on entry, stopped on exit."""
    writer = StoreWriter(spool_dir, store, poll_s=0.01)
    sink = SpoolSink(Spool(spool_dir))
    collector = MqttCollector("b", config.mqtt.brokers["b"], config.tags, sink, Counts(), UTC)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(writer.run(stop))]
    try:
        await asyncio.wait_for(collector.subscribed.wait(), 10)
        yield collector, writer
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def _missing(store: SqliteStore, n: int) -> list[int]:
    have = {int(v) for v in store.read("R-1.flow", T0, T0 + timedelta(days=1)).values.tolist()}
    return [i for i in range(n) if i not in have]


def _assert_all_stored_once(store: SqliteStore, n: int) -> None:
    data = store.read("R-1.flow", T0, T0 + timedelta(days=1))
    assert len(data) == n, f"stored {len(data)} of {n}; missing {_missing(store, n)[:50]}"
    assert sorted(data.values.tolist()) == [float(i) for i in range(n)]


def test_broker_killed_mid_stream_loses_nothing(tmp_path: Path, private_mosquitto: PrivateMosquitto) -> None:
    """kill -9 of a durable Mosquitto mid-stream: every message the broker delivered to the collector is
    stored once, and every message published is stored - but for what the broker itself lost.

    Mosquitto 2.0.11 (Debian 12's) can lose a message it held for a subscriber across a kill -9: on restoring
    its persistence it gives a new message the id of a restored one, and one of the two is gone (found when
    this test failed 1 of 4 runs on a loaded machine with one value short; a bare paho subscriber with manual
    acks loses one the same way, 2 of 6 runs under load). So the test counts what
    reached the collector (a tap on its decoder) and asserts: all of that stored, and anything else missing is
    a message the broker held at the kill (published before it), never one published after the restart, and
    no more than 1 % of the stream."""
    broker = private_mosquitto
    prefix = uuid.uuid4().hex[:8]
    config = parse_config(_config(broker.port, prefix))
    store = SqliteStore(tmp_path / "t.db")
    n = 3000
    received: set[int] = set()

    async def main() -> tuple[MqttCollector, int]:
        async with collecting(config, store, tmp_path / "spool") as (collector, _):
            decode = collector.decode

            def tap(topic: str, payload: bytes) -> list:
                samples = decode(topic, payload)
                received.update(int(s.value) for s in samples)
                return samples

            collector.decode = tap  # type: ignore[method-assign]
            publisher = SteadyPublisher(broker.port, f"{prefix}/R-1/flow", n, rate=1500)
            publisher.start()
            try:
                assert await wait_until(lambda: publisher.published >= n // 3, 10)
                broker.kill()  # kill -9, mid-stream
                killed_at = publisher.published
                assert await wait_until(lambda: not collector.connected.is_set(), 10)
                broker.start()  # same port, same persistence file
                assert await asyncio.to_thread(publisher.wait_all_acked, 60), "the publisher could not finish"
                # done when everything is stored, or (a message the broker lost) all it delivered is
                assert await wait_until(
                    lambda: (
                        store.count("R-1.flow") >= n
                        or (n - 1 in received and store.count("R-1.flow") >= len(received))
                    ),
                    60,
                ), f"stored {store.count('R-1.flow')} of {n}, {len(received)} received"
            finally:
                publisher.close()
        return collector, killed_at

    collector, killed_at = asyncio.run(main())
    missing = _missing(store, n)
    lost_by_broker = [i for i in range(n) if i not in received]
    print(
        f"\nbroker kill -9 after {killed_at} published: {n} published, {n - len(lost_by_broker)} delivered "
        f"by the broker, {store.count('R-1.flow')} stored; lost by the broker: {lost_by_broker}; collector "
        f"connected {collector.connects} times, counts {collector.counts.of('mqtt:b')}"
    )
    assert missing == lost_by_broker, "the collector lost what the broker delivered"
    assert all(i < killed_at for i in lost_by_broker), "the broker lost a message published after its restart"
    # What the broker loses is what it had acknowledged but not yet saved or delivered at the kill: one or two
    # on a quiet machine (the id reuse above), 12 consecutive ones (1062-1073 of 1077 published) once in CI at
    # load average 9 on 2 cores, when the collector drained the broker's queue more slowly. More than 1 % of
    # the stream would be something else (a broker without persistence loses its whole queue).
    assert len(lost_by_broker) <= n // 100, f"the broker lost {len(lost_by_broker)} of {n}"
    data = store.read("R-1.flow", T0, T0 + timedelta(days=1))
    assert len(data) == len(set(data.values.tolist())) == n - len(lost_by_broker)  # each stored once
    assert collector.connects >= 2


def test_collector_killed_mid_stream_loses_no_acknowledged_value(
    tmp_path: Path, private_mosquitto: PrivateMosquitto
) -> None:
    broker = private_mosquitto
    prefix = uuid.uuid4().hex[:8]
    cfg = tmp_path / "site.toml"
    cfg.write_text(_config(broker.port, prefix))
    data_dir = tmp_path / "data"
    n = 3000
    cmd = [sys.executable, "-m", "biopilot", "collect", "--config", str(cfg), "--data-dir", str(data_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (tmp_path / "collector.log").open("ab")
    collector = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    publisher = None
    try:
        store = SqliteStore(data_dir / "biopilot.db")
        # The collector's first connect creates its persistent session: publish once it exists, that is
        # once a probe (a day before T0, outside the counted window) is stored, however long the start takes.
        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{prefix}")
        probe.connect("127.0.0.1", broker.port)
        probe.loop_start()
        deadline = time.monotonic() + 60
        while store.count("R-1.flow") == 0:
            assert time.monotonic() < deadline, "the collector never stored anything"
            payload = json.dumps({"ts": (T0 - timedelta(days=1)).isoformat(), "value": -1.0})
            probe.publish(f"{prefix}/R-1/flow", payload, qos=1)
            time.sleep(0.2)
        probe.disconnect()
        probe.loop_stop()
        publisher = SteadyPublisher(broker.port, f"{prefix}/R-1/flow", n, rate=1000)
        publisher.start()
        while publisher.published < n // 2:
            time.sleep(0.01)
        collector.send_signal(signal.SIGKILL)  # kill -9, mid-stream
        collector.wait(5)
        killed_at = store.count("R-1.flow", T0)
        collector = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        assert publisher.wait_all_acked(60)
        deadline = time.monotonic() + 60
        while store.count("R-1.flow", T0) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        stored = store.count("R-1.flow", T0)
        print(f"\ncollector kill -9: {killed_at} stored when killed; after restart {stored} of {n}")
        _assert_all_stored_once(store, n)
    finally:
        if publisher is not None:
            publisher.close()
        collector.send_signal(signal.SIGTERM)
        collector.wait(10)


def test_store_unavailable_for_30_s_while_ingesting(
    tmp_path: Path, private_mosquitto: PrivateMosquitto
) -> None:
    """Another connection holds the database's write lock for 30 s while messages keep coming."""
    broker = private_mosquitto
    prefix = uuid.uuid4().hex[:8]
    config = parse_config(_config(broker.port, prefix))
    store = SqliteStore(tmp_path / "t.db")
    store.write([])  # creates the schema
    n, rate = 4000, 100.0  # 40 s of messages

    async def main() -> StoreWriter:
        async with collecting(config, store, tmp_path / "spool") as (_, writer):
            publisher = SteadyPublisher(broker.port, f"{prefix}/R-1/flow", n, rate=rate)
            publisher.start()
            try:
                assert await wait_until(lambda: store.count("R-1.flow") > 100, 10)
                locker = sqlite3.connect(tmp_path / "t.db", timeout=10, isolation_level=None)
                locker.execute("BEGIN EXCLUSIVE")  # the store is gone for writers
                outage_start = store.count("R-1.flow")
                await asyncio.sleep(30)
                during = store.count("R-1.flow")
                locker.execute("ROLLBACK")
                locker.close()
                assert during == outage_start, "writes got through the lock"
                assert await asyncio.to_thread(publisher.wait_all_acked, 30)
                assert await wait_until(lambda: store.count("R-1.flow") >= n, 30)
                print(
                    f"\nstore outage 30 s: {outage_start} stored before, {during} during, "
                    f"{store.count('R-1.flow')} of {n} after; {writer.write_failures} refused writes"
                )
            finally:
                publisher.close()
        return writer

    writer = asyncio.run(main())
    assert writer.write_failures >= 1 and writer.store_ok
    _assert_all_stored_once(store, n)


# The fuzz test's other payload formats: line protocol and Sparkplug B, each on a topic of its own.
FUZZ_TAGS = """
[[tags]]
name = "R-1.lp"
equipment = "R-1"
role = "flow"
unit = "L/h"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/R-1/lp", format = "influx", precision = "s" }}
[[tags]]
name = "R-1.spb"
equipment = "R-1"
role = "flow"
unit = "L/h"
[tags.source]
protocol = "mqtt"
broker = "b"
topic = "spBv1.0/{prefix}/DDATA/e/R-1"
format = "sparkplug"
metric = "f"
"""


def _mutate(rng: random.Random, good: bytes) -> bytes:
    b = bytearray(good)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(b))
        op = rng.random()
        if op < 0.5:
            b[i] = rng.getrandbits(8)
        elif op < 0.75:
            b.insert(i, rng.getrandbits(8))
        else:
            del b[i]
    return bytes(b[: rng.randint(1, len(b))]) if rng.random() < 0.3 else bytes(b)


def _fuzz(rng: random.Random, i: int) -> tuple[str, bytes, str]:
    """Which topic (json, lp, spb), a hostile payload, and what kind it is."""
    kinds = ["bytes", "truncated", "wrong_type", "not_finite", "huge", "array", "no_value", "good"]
    kinds += ["lp_garbage", "lp_good", "spb_garbage", "spb_good"]
    kind = rng.choices(kinds, weights=[20, 20, 15, 10, 0.05, 10, 10, 15, 8, 2, 8, 2])[0]
    t = T0 + timedelta(seconds=i)
    if kind.startswith("lp_"):
        good_lp = f'R-1,unit=a\\ b value={i}.5,status=0i,s="x y" {int(t.timestamp())}'.encode()
        return "lp", (good_lp if kind == "lp_good" else _mutate(rng, good_lp)), kind
    if kind.startswith("spb_"):
        ms = int(t.timestamp() * 1000)
        good_spb = spb.payload(
            spb.metric("f", timestamp=ms, datatype=10, double_value=i + 0.5), timestamp=ms, seq=1
        )
        return "spb", (good_spb if kind == "spb_good" else _mutate(rng, good_spb)), kind
    ts = t.isoformat()
    good = json.dumps({"ts": ts, "value": float(i)}).encode()
    if kind == "bytes":
        return "json", bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))), kind
    if kind == "truncated":
        return "json", good[: rng.randint(0, len(good) - 1)], kind
    if kind == "wrong_type":
        value = rng.choice(["high", [1, 2], {"v": 1}, "1.5", None])  # (a boolean is a number: 1 or 0)
        return "json", json.dumps({"ts": ts, "value": value}).encode(), kind
    if kind == "not_finite":
        return (
            "json",
            f'{{"ts": "{ts}", "value": {rng.choice(["NaN", "Infinity", "-Infinity"])}}}'.encode(),
            kind,
        )
    if kind == "huge":
        return "json", b'{"ts": "' + ts.encode() + b'", "value": 1, "pad": "' + b"x" * 300_000 + b'"}', kind
    if kind == "array":
        return "json", b"[" + good + b"]", kind
    if kind == "no_value":
        return "json", json.dumps({"ts": ts}).encode(), kind
    return "json", good, kind


def test_100k_fuzzed_payloads_are_all_counted_and_the_collector_stays_up(tmp_path: Path) -> None:
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    broker = PrivateMosquitto(tmp_path / "broker")
    broker.start()
    prefix = uuid.uuid4().hex[:8]
    config = parse_config(_config(broker.port, prefix) + FUZZ_TAGS.format(prefix=prefix))
    store = SqliteStore(tmp_path / "t.db")
    rng = random.Random(20261121)
    n = 100_000
    topics = {"json": f"{prefix}/R-1/flow", "lp": f"{prefix}/R-1/lp", "spb": f"spBv1.0/{prefix}/DDATA/e/R-1"}
    fuzzed = [_fuzz(rng, i) for i in range(n)]
    messages = [(topics[where], payload) for where, payload, _ in fuzzed]
    good = sum(1 for _, _, kind in fuzzed if kind == "good")
    assert sum(1 for _, _, kind in fuzzed if kind == "huge") > 0
    # Line protocol and Sparkplug garbage may still be valid after a mutation: what the collector's own
    # decoding makes of those messages, offline, is what the live run must count.
    offline = MqttCollector(
        "b", config.mqtt.brokers["b"], config.tags, SpoolSink(Spool(tmp_path / "x")), Counts(), UTC
    )
    for topic, payload in messages:
        if topic != topics["json"]:
            offline.decode(topic, payload)
    other_accepted = offline.counts.of("mqtt:b").get(ACCEPTED, 0)

    async def main() -> MqttCollector:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fuzz-{prefix}")
        pub.max_inflight_messages_set(1000)
        try:
            async with collecting(config, store, tmp_path / "spool") as (collector, _):
                pub.connect("127.0.0.1", broker.port)
                pub.loop_start()

                def publish_all() -> None:
                    infos = []
                    for topic, p in messages:
                        infos.append(pub.publish(topic, p, qos=1))
                        if len(infos) >= 20_000:  # cap what is in flight (paho stalls beyond 65,535)
                            for info in infos:
                                info.wait_for_publish(30)
                            infos = []
                    for info in infos:
                        info.wait_for_publish(30)

                await asyncio.to_thread(publish_all)
                assert await wait_until(lambda: collector.messages >= n, 60), (
                    f"{collector.messages} of {n} handled"
                )
                # and it still works: a good message after the storm is stored
                late = T0 + timedelta(days=2)
                pub.publish(f"{prefix}/R-1/flow", json.dumps({"ts": late.isoformat(), "value": -1.0}), qos=1)
                assert await wait_until(lambda: store.count("R-1.flow", late) == 1, 10)
        finally:
            pub.disconnect()
            pub.loop_stop()
            broker.stop()
        return collector

    collector = asyncio.run(main())
    counts = collector.counts.of("mqtt:b")
    outcomes = {
        k: v
        for k, v in counts.items()
        if k in (ACCEPTED, PARTIAL, PARKED) or k.startswith(REJECTED)  # parked: a mutated alias
    }
    print(f"\nfuzz: {n + 1} messages, outcomes {dict(sorted(outcomes.items()))}")
    assert sum(outcomes.values()) == n + 1, "every message has exactly one outcome"
    assert counts[ACCEPTED] == good + 1 + other_accepted
    assert store.count("R-1.flow") == good + 1
    lp_good = sum(1 for _, _, kind in fuzzed if kind == "lp_good")
    spb_good = sum(1 for _, _, kind in fuzzed if kind == "spb_good")
    assert store.count("R-1.lp") >= lp_good > 0 and store.count("R-1.spb") >= spb_good > 0
    for reason in (
        "undecodable_json",
        "wrong_type",
        "not_finite",
        "not_a_json_object",
        "missing_field",
        "payload_too_large",
        "undecodable_line_protocol",
        "undecodable_sparkplug",
    ):
        assert counts.get(REJECTED + reason, 0) > 0, reason
