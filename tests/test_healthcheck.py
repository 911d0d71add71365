"""`biopilot healthcheck`: the container health checks of docker-compose.yml, on a real health file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from biopilot.app.cli import main
from biopilot.samples import utcnow
from storage.health import HealthStore
from tests.conftest import REPO

DEMO = str(REPO / "config" / "demo.toml")


def publish(data_dir: Path, age_s: float, writer: dict[str, object] | None = None) -> None:
    health = HealthStore(data_dir / "biopilot.db")
    try:
        health.publish(
            utcnow() - timedelta(seconds=age_s),
            {
                "sink": {"kind": "sink", "received": 5},
                "writer": writer or {"kind": "writer", "store_ok": True},
            },
            [],
            [],
        )
    finally:
        health.close()


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["healthcheck", *argv])
    return code, capsys.readouterr().out.strip()


def test_collector_without_health_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check(capsys, "collector", "--config", DEMO, "--data-dir", str(tmp_path))
    assert code == 1 and out.startswith("unhealthy: no sink health")


def test_collector_with_fresh_health_is_healthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    publish(tmp_path, age_s=1)
    assert check(capsys, "collector", "--config", DEMO, "--data-dir", str(tmp_path)) == (
        0,
        "healthy: collector",
    )


def test_collector_with_stale_health_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    publish(tmp_path, age_s=60)  # the demo's health_interval_s is 2: the limit is max(5 × 2, 15) = 15 s
    code, out = check(capsys, "collector", "--config", DEMO, "--data-dir", str(tmp_path))
    assert code == 1 and "last wrote its health 60 s ago (limit 15 s)" in out
    assert (
        check(capsys, "collector", "--config", DEMO, "--data-dir", str(tmp_path), "--max-age", "120")[0] == 0
    )


def test_collector_whose_store_refuses_writes_is_unhealthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(tmp_path, 1, {"kind": "writer", "store_ok": False, "store": {"last_error": "InfluxDB down"}})
    code, out = check(capsys, "collector", "--config", DEMO, "--data-dir", str(tmp_path))
    assert code == 1 and "refuses writes" in out and "InfluxDB down" in out


def test_stores_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(capsys, "stores", "--config", DEMO, "--data-dir", str(tmp_path)) == (0, "healthy: stores")


def test_stores_unhealthy_when_influxdb_does_not_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port

    text = (REPO / "config" / "demo.toml").read_text()
    storage = '[storage]\nbackend = "sqlite"\n'
    assert storage in text
    influx = (
        '[storage]\nbackend = "influxdb"\n[storage.influxdb]\n'
        f'url = "http://127.0.0.1:{free_port()}"\norg = "o"\nbucket = "b"\n'
        'token_env = "BIOPILOT_TEST_TOKEN"\n'
    )
    site = tmp_path / "site.toml"
    site.write_text(text.replace(storage, influx).replace('path = "biopilot.db"', "", 1))
    monkeypatch.setenv("BIOPILOT_TEST_TOKEN", "t")
    code, out = check(capsys, "stores", "--config", str(site), "--data-dir", str(tmp_path))
    assert code == 1 and "does not answer" in out
