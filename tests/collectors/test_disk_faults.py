"""The spool under disk faults, counted, with real peers: a private Mosquitto, the collectors and the store
writer as `biopilot collect` runs them (in this process), a real SQLite store, and a real small file system
for the spool: a tmpfs of 2 MB that fills up and frees again, and one mounted read-only. During each fault
`biopilot status --json` must say so (the spool's error with its reason, never "ok"); after it, every message
sent is stored once, without a restart.

Mounting needs root (CAP_SYS_ADMIN); without it these tests are skipped, saying so."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from biopilot.config import SiteConfig, parse_config
from collectors.runner import Collectors
from storage import HealthStore, SqliteStore
from tests.conftest import REPO, PrivateMosquitto, wait_until

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _mount(where: Path, *options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A mount point for a small tmpfs (the test mounts it with the options it needs), unmounted after."""
    where = tmp_path / "spoolfs"
    where.mkdir()
    probe = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"SKIPPED: cannot mount a small tmpfs here (needs root): {probe.stderr.strip()}")
    subprocess.run(["umount", str(where)], check=True)
    try:
        yield where
    finally:
        while subprocess.run(["umount", str(where)], capture_output=True).returncode == 0:
            pass  # every mount the test stacked there


def _config(port: int, prefix: str) -> str:
    return f"""
[site]
name = "disk-faults"
[collector]
health_interval_s = 0.5
fsync_interval_s = 0.5
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


class Site:
    """A site config on disk, its data dir (store and health: not on the small file system), a publisher."""

    def __init__(self, tmp_path: Path, broker: PrivateMosquitto) -> None:
        self.prefix = uuid.uuid4().hex[:8]
        self.cfg = tmp_path / "site.toml"
        self.cfg.write_text(_config(broker.port, self.prefix))
        self.config: SiteConfig = parse_config(self.cfg.read_text())
        self.data_dir = tmp_path / "data"
        self.data_dir.mkdir()
        self.store = SqliteStore(self.data_dir / "biopilot.db")
        self.health = HealthStore(self.data_dir / "biopilot.db")
        self.pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{self.prefix}")
        self.pub.max_inflight_messages_set(100)
        self.pub.connect("127.0.0.1", broker.port)
        self.pub.loop_start()
        self.sent = 0
        self.where = ["--config", str(self.cfg), "--data-dir", str(self.data_dir)]

    def publish(self, n: int) -> None:
        """n more numbered QoS 1 messages (value i at T0 + i s), each acknowledged by the broker."""
        infos = []
        for i in range(self.sent, self.sent + n):
            payload = json.dumps({"ts": (T0 + timedelta(seconds=i)).isoformat(), "value": float(i)})
            infos.append(self.pub.publish(f"{self.prefix}/R-1/flow", payload, qos=1))
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
        self.sent += n

    def stored(self) -> int:
        return self.store.count("R-1.flow", T0)

    def status(self) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "biopilot", "status", "--json", *self.where],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
            timeout=60,
        )
        return json.loads(out.stdout)

    def assert_all_stored_once(self) -> None:
        data = self.store.read("R-1.flow", T0, T0 + timedelta(days=30))
        assert sorted(data.values.tolist()) == [float(i) for i in range(self.sent)], (
            f"stored {len(data)} of {self.sent}"
        )

    def close(self) -> None:
        self.pub.loop_stop()
        self.pub.disconnect()


async def _status_until(site: Site, check: Any, timeout: float = 30.0) -> dict[str, Any]:
    """`biopilot status --json` until `check(status)` holds; the last status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await asyncio.to_thread(site.status)
        if check(status) or loop.time() > deadline:
            return status
        await asyncio.sleep(0.3)


def _spool_alarm(status: dict[str, Any]) -> bool:
    sink = status["components"].get("sink", {})
    return bool(sink.get("spool_error")) and not status["store"]["ok"]


def test_disk_full_then_freed_loses_nothing(
    tmp_path: Path, small_fs: Path, private_mosquitto: PrivateMosquitto
) -> None:
    _mount(small_fs, "size=2m")
    site = Site(tmp_path, private_mosquitto)
    spool_dir = small_fs / "spool"
    n_before, n_during = 500, 2000

    async def main() -> dict[str, Any]:
        collectors = Collectors.from_config(site.config, site.store, spool_dir=spool_dir, health=site.health)
        stop = asyncio.Event()
        task = asyncio.create_task(collectors.run(stop))
        try:
            assert await collectors.wait_connected(15)
            assert await wait_until(lambda: all(m.subscribed.is_set() for m in collectors.mqtt), 10)
            await asyncio.to_thread(site.publish, n_before)
            assert await wait_until(lambda: site.stored() == n_before, 30)
            filler = small_fs / "filler"
            with filler.open("wb") as f:  # the disk fills up (with something else than the spool)
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            await asyncio.to_thread(site.publish, n_during)  # the broker takes them all: it keeps them
            during = await _status_until(site, _spool_alarm)
            assert _spool_alarm(during), json.dumps(during, indent=1)
            stored_during = site.stored()
            assert stored_during < site.sent
            filler.unlink()  # space returns
            assert await wait_until(lambda: site.stored() == site.sent, 60), f"{site.stored()} of {site.sent}"
            after = await _status_until(site, lambda s: s["store"]["ok"] and s["components"]["mqtt:b"]["ok"])
        finally:
            stop.set()
            await task
        print(
            f"\ndisk full: sent {site.sent}, stored {site.stored()} ({stored_during} during the fault); "
            f"status during it: store {during['store']['why']!r}, "
            f"mqtt:b {during['components']['mqtt:b']['why']!r}; after it: store {after['store']['why']!r}"
        )
        return during

    try:
        during = asyncio.run(main())
    finally:
        site.close()
    site.assert_all_stored_once()
    assert "No space left on device" in during["components"]["sink"]["spool_error"]
    assert during["store"]["why"].startswith("SPOOL ERROR") and "No space left" in during["store"]["why"]
    assert not during["components"]["mqtt:b"]["ok"]


def test_read_only_spool_loses_nothing(
    tmp_path: Path, small_fs: Path, private_mosquitto: PrivateMosquitto
) -> None:
    site = Site(tmp_path, private_mosquitto)
    spool_dir = small_fs
    n_before, n_during = 300, 1500

    async def collecting(until: Any) -> Any:
        collectors = Collectors.from_config(site.config, site.store, spool_dir=spool_dir, health=site.health)
        stop = asyncio.Event()
        task = asyncio.create_task(collectors.run(stop))
        try:
            return await until(collectors)
        finally:
            stop.set()
            await task

    async def first_run(collectors: Collectors) -> None:  # makes the collector's session at the broker
        assert await collectors.wait_connected(15)
        assert await wait_until(lambda: all(m.subscribed.is_set() for m in collectors.mqtt), 10)
        await asyncio.to_thread(site.publish, n_before)
        assert await wait_until(lambda: site.stored() == n_before, 30)

    async def read_only_run(collectors: Collectors) -> tuple[dict[str, Any], int]:
        await asyncio.to_thread(site.publish, n_during)  # kept by the broker for the collector's session
        during = await _status_until(
            site, lambda s: _spool_alarm(s) and s["components"]["writer"]["state"] != "ok"
        )
        assert _spool_alarm(during), json.dumps(during, indent=1)
        stored_during = site.stored()
        remount = ["mount", "-o", "remount,rw", str(small_fs)]
        await asyncio.to_thread(subprocess.run, remount, check=True)  # writable again
        assert await wait_until(lambda: site.stored() == site.sent, 60), f"{site.stored()} of {site.sent}"
        return during, stored_during

    _mount(small_fs, "size=2m")
    try:
        asyncio.run(collecting(first_run))
        subprocess.run(["umount", str(small_fs)], check=True)
        _mount(small_fs, "size=2m", "ro")  # an empty, read-only spool file system at the next start
        during, stored_during = asyncio.run(collecting(read_only_run))
    finally:
        site.close()
    print(
        f"\nread-only spool: sent {site.sent}, stored {site.stored()} ({stored_during} during the fault); "
        f"status during it: store {during['store']['why']!r}, "
        f"writer {during['components']['writer']['state']!r} ({during['components']['writer']['error']!r})"
    )
    site.assert_all_stored_once()
    assert stored_during == n_before
    assert "Read-only file system" in during["components"]["sink"]["spool_error"]
    assert during["components"]["writer"]["state"] == "cannot start"
    assert "Read-only file system" in during["components"]["writer"]["error"]
    assert not during["components"]["mqtt:b"]["ok"] and not during["store"]["ok"]
