"""Storage: time series (TimeSeriesStore and its backends) and the catalog of runs and KPIs."""

from __future__ import annotations

from pathlib import Path

from biopilot.config import SiteConfig
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


def database_path(config: SiteConfig, data_dir: Path) -> Path:
    path = Path(config.storage.path)
    return path if path.is_absolute() else data_dir / path


def archive_path(config: SiteConfig, data_dir: Path) -> Path:
    path = Path(config.storage.archive.path)
    return path if path.is_absolute() else data_dir / path


def open_store(config: SiteConfig, data_dir: Path, *, read_only: bool = False) -> TimeSeriesStore:
    """The site's time-series store: the embedded SQLite file with its Parquet archive of closed runs."""
    archive = config.storage.archive
    return TieredStore(
        database_path(config, data_dir),
        archive_path(config, data_dir),
        read_only=read_only,
        keep_raw_s=archive.keep_raw_days * 86400.0,
        compact_after_s=archive.compact_after_s,
    )


def open_catalog(config: SiteConfig, data_dir: Path) -> Catalog:
    """The site's catalog: on PostgreSQL when [storage] catalog names a server, else in the SQLite file."""
    if config.storage.catalog is not None:
        return Catalog(config.storage.catalog, password_env=config.storage.catalog_password_env)
    return Catalog(database_path(config, data_dir))


def open_health(config: SiteConfig, data_dir: Path, *, read_only: bool = False) -> HealthStore:
    return HealthStore(database_path(config, data_dir), read_only=read_only)
