"""The TimeSeriesStore interface: what every backend (sqlite embedded, InfluxDB 2) provides.

The arrays it returns (SeriesData, Buckets, Latest) are kernel records (biopilot.records)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from biopilot.records import Buckets, Latest, SeriesData
from biopilot.samples import Sample


class TimeSeriesStore(Protocol):
    def write(self, samples: Sequence[Sample]) -> int:
        """Store samples (idempotent: a series and source timestamp that exist already are overwritten)."""
        ...

    def read(self, series: str, start: datetime, end: datetime) -> SeriesData:
        """Raw samples with start ≤ source timestamp < end."""
        ...

    def read_buckets(self, series: str, start: datetime, end: datetime, n: int) -> Buckets:
        """[start, end) split into n equal buckets, min/max/mean computed in the store."""
        ...

    def latest(self, series: Sequence[str] | None = None) -> dict[str, Latest]:
        """Newest sample per series (all series when None); series without samples are absent."""
        ...

    def list_series(self) -> list[str]: ...

    def count(self, series: str, start: datetime | None = None, end: datetime | None = None) -> int: ...

    def close(self) -> None: ...
