"""The TimeSeriesStore interface: what every backend (sqlite embedded, InfluxDB 2) provides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from biopilot.samples import Sample


@dataclass(frozen=True)
class SeriesData:
    """Raw samples of one series in a time range, in time order.

    ts: source timestamps [µs since the Unix epoch, UTC], int64
    values: float64 for numeric series (NaN where a text value was stored), object (str) for text series
    status: OPC UA status codes, int64
    """

    series: str
    ts: np.ndarray
    values: np.ndarray
    status: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    def hours(self, origin_us: int | None = None) -> np.ndarray:
        """Timestamps as hours since origin (default: the first sample) [h]."""
        if len(self.ts) == 0:
            return np.empty(0)
        origin = self.ts[0] if origin_us is None else origin_us
        return (self.ts - origin) / 3.6e9


@dataclass(frozen=True)
class Buckets:
    """A range of one series downsampled in the store into equal time buckets (bad-status values excluded).

    Only non-empty buckets are returned. start: bucket start [µs]; t_first/t_last: first and last sample
    in the bucket [µs]; count: samples in the bucket."""

    series: str
    start: np.ndarray
    t_first: np.ndarray
    t_last: np.ndarray
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


@dataclass(frozen=True)
class Latest:
    """The newest sample of a series and when the store received it (wall clock)."""

    sample: Sample
    received: datetime | None


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
