"""The records that cross packages: runs, phases, lab results, KPI records, and the arrays a store reads.

They live in the kernel beside `biopilot.samples` (the one sample type), so processing, the dashboard and the
collectors use them without importing storage. Storage backends persist them; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import numpy as np

from biopilot.samples import Sample, utcnow

Row = tuple[str, int, float | str | None, int, int | None]
"""A sample as the spool and the store's fast path carry it: series, source µs, value, status, server µs."""


class RunKind(StrEnum):
    BASELINE = "baseline"
    TRIAL = "trial"
    OTHER = "other"


class RunOrigin(StrEnum):
    LIVE = "live"  # detected from batch-id samples
    IMPORT = "import"  # a historian export
    MANUAL = "manual"  # created from the CLI


def run_id_for(equipment: str, batch_id: str) -> str:
    return f"{equipment}:{batch_id}"


@dataclass(frozen=True)
class Run:
    id: str
    equipment: str
    batch_id: str
    start: datetime
    end: datetime | None  # None while the run is live
    kind: str = RunKind.OTHER.value
    trial_id: str | None = None
    product: str | None = None
    upstream_id: str | None = None  # the upstream run whose batch this (downstream) run processed
    origin: str = RunOrigin.LIVE.value
    note: str = ""

    @property
    def is_open(self) -> bool:
        return self.end is None

    @property
    def duration_h(self) -> float | None:
        return (self.end - self.start).total_seconds() / 3600 if self.end is not None else None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "equipment": self.equipment,
            "batch_id": self.batch_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "status": "open" if self.is_open else "closed",
            "kind": self.kind,
            "trial_id": self.trial_id,
            "product": self.product,
            "upstream_id": self.upstream_id,
            "origin": self.origin,
            "note": self.note,
        }


@dataclass(frozen=True)
class Phase:
    name: str
    start: datetime
    end: datetime | None  # None while the phase lasts

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
        }


@dataclass(frozen=True)
class LabResult:
    """An offline measurement of one analyte in a sample drawn from an equipment at a time.

    sample_volume_l: broth removed with the sample [L] (0 when unknown or negligible); fed-batch accounting
    adds the product it carried out."""

    equipment: str
    ts: datetime
    analyte: str  # "titer", "biomass", "substrate", or any other name
    value: float
    unit: str
    sample_volume_l: float = 0.0
    source: str = ""  # file name or "cli"

    def to_json(self) -> dict[str, object]:
        return {
            "equipment": self.equipment,
            "time": self.ts.isoformat(),
            "analyte": self.analyte,
            "value": self.value,
            "unit": self.unit,
            "sample_volume_l": self.sample_volume_l,
            "source": self.source,
        }


@dataclass(frozen=True)
class ImportRecord:
    sha256: str
    run_id: str
    file: str
    rows: int
    samples: int
    imported: datetime


@dataclass(frozen=True)
class KpiRecord:
    """One KPI of one run, as processing computed it.

    The JSON form (`to_json`) is the stable interface of `biopilot kpis --json` and the dashboard."""

    name: str
    value: float | None
    unit: str
    coverage: float  # share of the run with usable data for the inputs (the lowest of `inputs`), 0..1
    flags: tuple[
        str, ...
    ] = ()  # e.g. "incomplete", "provisional", "missing_input:<tag>" (processing/kpis.py)
    final: bool = False  # False while the run is live (a provisional value)
    version: str = ""
    computed: datetime = field(default_factory=utcnow)
    inputs: Mapping[str, float] = field(default_factory=dict)  # coverage per input (tag or lab analyte)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "coverage": round(self.coverage, 4),
            "flags": list(self.flags),
            "final": self.final,
            "version": self.version,
            "computed": self.computed.isoformat(),
            "inputs": {k: round(v, 4) for k, v in sorted(self.inputs.items())},
        }


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
