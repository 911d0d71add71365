"""The conformance suite: every catalog backend and every TimeSeriesStore backend runs the same tests.

Catalog backends: the embedded SQLite file, and PostgreSQL — the server at 127.0.0.1:5432 that these machines
run (trust auth), or the one BIOPILOT_TEST_POSTGRES names (a postgresql:// URL). Each PostgreSQL test gets a
schema of its own, dropped afterwards. Without a reachable server the PostgreSQL cases say SKIPPED with the
reason; in CI (BIOPILOT_CI=1) they fail instead.

TimeSeriesStore backends (test_store_conformance.py), by the `store_backend` fixture's parameters:
  sqlite             SqliteStore on a real file
  tiered             TieredStore (SQLite + Parquet archive), nothing archived: its live path
  tiered-archived    TieredStore whose data under test is archived: before each read, everything written so
                     far is archived as one run (archive_run, its span growing with the data), so reads come
                     from Parquet, and a write after a read is a late sample (a delta in SQLite) until the
                     next read
  tiered-compacted   the same, and the late samples are folded into the files (compact) before each read

To add a backend: write a factory `def open_mine(place: Path) -> TimeSeriesStore` that opens the store whose
state lives at `place` (the test's temporary folder; a second call with the same place opens the same data,
as another process would: the reopen and concurrency tests do that), and add it to STORE_BACKENDS, with a
skip when its server is not configured, e.g. for InfluxDB 2:

    def _influx(place: Path) -> TimeSeriesStore:
        url = os.environ.get("INFLUXDB_URL")
        if not url:
            pytest.skip("INFLUXDB_URL is not set: the InfluxDB 2 store conformance run is skipped")
        return InfluxStore(url, bucket=..., measurement=place.name)   # one measurement/bucket per test
    STORE_BACKENDS["influxdb"] = _influx
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from biopilot.records import Run
from biopilot.samples import from_us, to_us
from storage.base import TimeSeriesStore
from storage.catalog import Catalog
from storage.sqlite import SqliteStore
from storage.tiered import TieredStore

IN_CI = os.environ.get("BIOPILOT_CI") == "1"
POSTGRES = os.environ.get("BIOPILOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
CATALOG_BACKENDS = ["sqlite", "postgresql"]


def _postgres_or_skip() -> None:
    import psycopg

    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = f"PostgreSQL at {POSTGRES} is not reachable ({str(exc).strip().splitlines()[0]})"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A postgresql:// URL whose search_path is a fresh schema of this test's own."""
    import psycopg

    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES else "?"
    yield f"{POSTGRES}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=CATALOG_BACKENDS)
def catalog_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a catalog lives: an SQLite file, or a PostgreSQL URL with a schema of the test's own."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.db")
    return str(request.getfixturevalue("postgres_schema"))


@pytest.fixture
def catalog(catalog_target: str) -> Iterator[Catalog]:
    c = Catalog(catalog_target)
    yield c
    c.close()


# -- TimeSeriesStore backends ---------------------------------------------------------------------------
class ArchivingStore:
    """A TieredStore that archives everything written so far before each read (see the module doc): the
    data a conformance test reads comes from the Parquet tier, later writes are late samples."""

    READS = ("read", "read_buckets", "latest", "list_series", "count")

    def __init__(self, store: TieredStore, *, compact: bool) -> None:
        self.inner = store
        self.compact = compact
        self._series: set[str] = set()
        self._span: tuple[int, int] | None = None
        self._dirty = False

    def _wrote(self, series: set[str], lo: int, hi: int) -> None:
        self._series |= series
        self._span = (lo, hi) if self._span is None else (min(lo, self._span[0]), max(hi, self._span[1]))
        self._dirty = True

    def write(self, samples):  # type: ignore[no-untyped-def]
        n = self.inner.write(samples)
        if samples:
            us = [to_us(s.ts) for s in samples]
            self._wrote({s.series for s in samples}, min(us), max(us))
        return n

    def write_arrays(self, series, ts_us, values, status=0, server_us=None):  # type: ignore[no-untyped-def]
        n = self.inner.write_arrays(series, ts_us, values, status, server_us)
        if len(ts_us):
            self._wrote({series}, int(min(ts_us)), int(max(ts_us)))
        return n

    def seal(self) -> None:
        if self._dirty and self._span is not None:
            run = Run("X:conformance", "X", "conformance", from_us(self._span[0]), from_us(self._span[1]))
            result = self.inner.archive_run(run, sorted(self._series))
            assert result.skipped is None, result.skipped
            if self.compact:
                self.inner.compact()
            self._dirty = False

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        attr = getattr(self.inner, name)
        if name in self.READS:

            def sealed(*args, **kwargs):  # type: ignore[no-untyped-def]
                self.seal()
                return attr(*args, **kwargs)

            return sealed
        return attr


def _sqlite(place: Path) -> TimeSeriesStore:
    return SqliteStore(place / "ts.db")


def _tiered(place: Path) -> TimeSeriesStore:
    return TieredStore(place / "ts.db", place / "archive")


def _tiered_archived(place: Path) -> TimeSeriesStore:
    return ArchivingStore(TieredStore(place / "ts.db", place / "archive"), compact=False)  # type: ignore[return-value]


def _tiered_compacted(place: Path) -> TimeSeriesStore:
    return ArchivingStore(TieredStore(place / "ts.db", place / "archive"), compact=True)  # type: ignore[return-value]


STORE_BACKENDS: dict[str, Callable[[Path], TimeSeriesStore]] = {
    "sqlite": _sqlite,
    "tiered": _tiered,
    "tiered-archived": _tiered_archived,
    "tiered-compacted": _tiered_compacted,
}


@pytest.fixture(params=list(STORE_BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], TimeSeriesStore]]:
    """Opens (again) the store of this test's backend at this test's place; every store opened is closed
    at the end."""
    factory = STORE_BACKENDS[request.param]
    opened: list[TimeSeriesStore] = []

    def open_() -> TimeSeriesStore:
        s = factory(tmp_path)
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Callable[[], TimeSeriesStore]) -> TimeSeriesStore:
    return open_store()
