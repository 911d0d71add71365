"""The TimeSeriesStore interface: what every backend (sqlite embedded, InfluxDB 2) provides, and RunArchive:
what a backend with a columnar tier for closed runs (storage/tiered.py) adds.

The arrays it returns (SeriesData, Buckets, Latest) are kernel records (biopilot.records)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np

from biopilot.records import Buckets, Latest, Run, SeriesData
from biopilot.samples import GOOD, Sample


class TimeSeriesStore(Protocol):
    def write(self, samples: Sequence[Sample]) -> int:
        """Store samples (idempotent: a series and source timestamp that exist already are overwritten)."""
        ...

    def write_arrays(
        self,
        series: str,
        ts_us: np.ndarray,
        values: np.ndarray,
        status: np.ndarray | int = GOOD,
        server_us: np.ndarray | None = None,
    ) -> int:
        """Store samples of one series given as arrays (no Sample objects): ts_us source timestamps [µs]
        int64; values float64 (NaN: no value) or object (str for text samples); status OPC UA codes (an
        array, or one code for all); server_us server timestamps [µs] or None. Idempotent like `write`.
        The path of imports and the simulator's historical mode."""
        ...

    def read(self, series: str, start: datetime, end: datetime) -> SeriesData:
        """Raw samples with start ≤ source timestamp < end."""
        ...

    def read_buckets(self, series: str, start: datetime, end: datetime, n: int) -> Buckets:
        """[start, end) split into n equal buckets, min/max/mean computed in the store."""
        ...

    def latest(self, series: Sequence[str] | None = None) -> dict[str, Latest]:
        """Newest sample per series (all series when None; server timestamp included when the source sent
        one); series without samples are absent."""
        ...

    def list_series(self) -> list[str]: ...

    def count(self, series: str, start: datetime | None = None, end: datetime | None = None) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class RunArchive(Protocol):
    """A store that moves closed runs to a columnar tier (TieredStore). Processing archives each closed run
    and calls `maintain` every pass; `biopilot import` archives the run it imported."""

    def archive_run(self, run: Run, series: Sequence[str]) -> Any:
        """Archive the closed run's samples of these series (the run's tags); reads of its span then come
        from the archive. Archiving again after the run grew or changed rewrites it."""
        ...

    def archived_runs(self) -> dict[str, Any]:
        """The archived runs by run id, each with a `covers(run)` method."""
        ...

    def maintain(self) -> None:
        """Housekeeping: fold late samples into the archive, delete raw rows past their retention."""
        ...
