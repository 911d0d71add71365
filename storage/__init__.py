"""Storage: time series (TimeSeriesStore and its backends) and the catalog of runs and KPIs."""

from __future__ import annotations

import logging
from pathlib import Path

from biopilot.config import SiteConfig
from biopilot.errors import StoreError
from storage.base import RunArchive, TimeSeriesStore
from storage.catalog import Catalog
from storage.health import HealthStore
from storage.sqlite import SqliteStore
from storage.tiered import TieredStore

__all__ = [
    "Catalog",
    "HealthStore",
    "RunArchive",
    "SqliteStore",
    "TieredStore",
    "TimeSeriesStore",
    "archive_path",
    "database_path",
    "open_catalog",
    "open_health",
    "open_store",
]


log = logging.getLogger(__name__)


def database_path(config: SiteConfig, data_dir: Path) -> Path:
    """The embedded database: storage.path inside the data directory (the config refuses a path that
    leaves it; this checks again, for a config built in code)."""
    path = data_dir / config.storage.path
    if not path.resolve().is_relative_to(data_dir.resolve()) or Path(config.storage.path).is_absolute():
        raise StoreError(f"storage.path {config.storage.path!r} leads outside the data directory {data_dir}")
    return path


def archive_path(config: SiteConfig, data_dir: Path) -> Path:
    """The Parquet archive of closed runs: storage.archive.path inside the data directory."""
    path = data_dir / config.storage.archive.path
    if (
        not path.resolve().is_relative_to(data_dir.resolve())
        or Path(config.storage.archive.path).is_absolute()
    ):
        raise StoreError(
            f"storage.archive.path {config.storage.archive.path!r} leads outside the data directory"
            f" {data_dir}"
        )
    return path


def open_store(config: SiteConfig, data_dir: Path, *, read_only: bool = False) -> TimeSeriesStore:
    """The site's time-series store: the InfluxDB 2 server of [storage.influxdb] with backend "influxdb",
    else the embedded SQLite file in data_dir with its Parquet archive of closed runs (TieredStore)."""
    if config.storage.backend == "influxdb" and config.storage.influxdb is not None:
        from storage.influx import InfluxStore

        return InfluxStore.from_config(config.storage.influxdb, read_only=read_only)
    archive = config.storage.archive
    return TieredStore(
        database_path(config, data_dir),
        archive_path(config, data_dir),
        read_only=read_only,
        keep_raw_s=archive.keep_raw_days * 86400.0,
        compact_after_s=archive.compact_after_s,
    )


def open_catalog(config: SiteConfig, data_dir: Path) -> Catalog:
    """The site's catalog: on PostgreSQL when [storage] catalog names a server, else in the SQLite file.
    Imports that a killed process left half-done are rolled back or finished first (storage/importers.py),
    so no command sees samples without their run."""
    if config.storage.catalog is not None:
        catalog = Catalog(config.storage.catalog, password_env=config.storage.catalog_password_env)
    else:
        catalog = Catalog(database_path(config, data_dir))
    if catalog.pending_imports():
        from storage.importers import recover_imports

        store = SqliteStore(database_path(config, data_dir))
        try:
            for message in recover_imports(store, catalog):
                log.warning("%s", message)
        finally:
            store.close()
    return catalog


def open_health(config: SiteConfig, data_dir: Path, *, read_only: bool = False) -> HealthStore:
    """Collection health: in the SQLite file in data_dir, whatever the time-series backend."""
    return HealthStore(database_path(config, data_dir), read_only=read_only)
