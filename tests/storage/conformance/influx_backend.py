"""The InfluxDB 2 backend of the store conformance suite: where the server is, and a store per test.

Set INFLUXDB_URL (e.g. http://127.0.0.1:8086) with INFLUXDB_TOKEN, INFLUXDB_ORG and INFLUXDB_BUCKET (an
all-access or read/write token for that bucket) to run it; without INFLUXDB_URL every InfluxDB case is
SKIPPED with that reason, in CI too (no InfluxDB server runs on these machines). With INFLUXDB_URL set, a
missing variable or an unreachable server fails the cases instead: the run was asked for.

Each store gets a measurement of its own (bp_<random>), deleted afterwards, so runs and tests never see
each other's points and the bucket can be shared. `influx_store_factory` is the hook for a shared suite:
a context manager yielding a fresh InfluxStore.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

from storage.influx import InfluxStore

ENV = ("INFLUXDB_URL", "INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET")


def influx_settings_or_skip() -> dict[str, str]:
    """url, token, org, bucket from the environment; SKIPPED without INFLUXDB_URL, FAILED when incomplete."""
    if not os.environ.get("INFLUXDB_URL"):
        pytest.skip(
            "SKIPPED FOR NO INFLUXDB SERVER: set INFLUXDB_URL, INFLUXDB_TOKEN, INFLUXDB_ORG and "
            "INFLUXDB_BUCKET to run the InfluxDB conformance run (README, Deploy)"
        )
    missing = [name for name in ENV if not os.environ.get(name)]
    if missing:
        pytest.fail(f"INFLUXDB_URL is set but {', '.join(missing)} not: the InfluxDB run needs all four")
    return {
        "url": os.environ["INFLUXDB_URL"],
        "token": os.environ["INFLUXDB_TOKEN"],
        "org": os.environ["INFLUXDB_ORG"],
        "bucket": os.environ["INFLUXDB_BUCKET"],
    }


@contextlib.contextmanager
def influx_store_factory(**kwargs: object) -> Iterator[InfluxStore]:
    """A store on a fresh measurement of the configured bucket; its points are deleted afterwards."""
    cfg = influx_settings_or_skip()
    measurement = f"bp_{uuid.uuid4().hex[:12]}"
    store = InfluxStore(
        cfg["url"], cfg["org"], cfg["bucket"], cfg["token"], measurement=measurement, **kwargs
    )  # type: ignore[arg-type]
    if not store.ping():
        store.close()
        pytest.fail(f"INFLUXDB_URL={cfg['url']} does not answer /ping")
    try:
        yield store
    finally:
        try:
            store._client.delete_api().delete(
                "1677-09-22T00:00:00Z",
                "2262-04-10T00:00:00Z",
                f'_measurement="{measurement}"',
                bucket=cfg["bucket"],
                org=cfg["org"],
            )
        finally:
            store.close()
