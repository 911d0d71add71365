"""Storage: time series (TimeSeriesStore and its backends) and the catalog of runs and KPIs."""

from __future__ import annotations

from pathlib import Path

from biopilot.config import SiteConfig
from storage.base import TimeSeriesStore
from storage.catalog import Catalog
from storage.health import HealthStore
from storage.sqlite import SqliteStore

__all__ = [
    "Catalog",
    "HealthStore",
    "SqliteStore",
    "TimeSeriesStore",
    "database_path",
    "open_catalog",
    "open_health",
    "open_store",
]


def database_path(config: SiteConfig, data_dir: Path) -> Path:
    path = Path(config.storage.path)
    return path if path.is_absolute() else data_dir / path


def open_store(config: SiteConfig, data_dir: Path, *, read_only: bool = False) -> TimeSeriesStore:
    """The site's time-series store: the InfluxDB 2 server of [storage.influxdb] with backend "influxdb",
    else the embedded SQLite file in data_dir."""
    if config.storage.backend == "influxdb" and config.storage.influxdb is not None:
        from storage.influx import InfluxStore

        return InfluxStore.from_config(config.storage.influxdb, read_only=read_only)
    return SqliteStore(database_path(config, data_dir), read_only=read_only)


def open_catalog(config: SiteConfig, data_dir: Path) -> Catalog:
    """The site's catalog: on PostgreSQL when [storage] catalog names a server, else in the SQLite file."""
    if config.storage.catalog is not None:
        return Catalog(config.storage.catalog, password_env=config.storage.catalog_password_env)
    return Catalog(database_path(config, data_dir))


def open_health(config: SiteConfig, data_dir: Path, *, read_only: bool = False) -> HealthStore:
    """Collection health: in the SQLite file in data_dir, whatever the time-series backend."""
    return HealthStore(database_path(config, data_dir), read_only=read_only)
