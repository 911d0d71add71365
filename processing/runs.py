"""Run detection from a batch-id signal (pure).

A run of one piece of equipment lasts while its batch-id tag carries the same non-blank value. It starts
at the first sample carrying the id and ends at the first sample that carries another id or a blank one.
Samples with bad status say nothing about the batch and are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from biopilot.samples import is_bad


class Change(StrEnum):
    START = "start"
    END = "end"


@dataclass(frozen=True)
class RunEvent:
    change: Change
    batch_id: str
    ts_us: int  # source timestamp of the sample that showed the change [µs since epoch, UTC]


def detect_runs(
    samples: Iterable[tuple[int, str | None, int]], open_batch: str | None
) -> tuple[list[RunEvent], str | None]:
    """Run starts and ends in time-ordered (ts_us, batch_id, status) samples.

    open_batch: the batch id of the run open before these samples (None if none).
    Returns the events and the batch id open after them."""
    events: list[RunEvent] = []
    current = open_batch
    for ts_us, raw, status in samples:
        if is_bad(status):
            continue
        batch = (raw or "").strip() or None
        if batch == current:
            continue
        if current is not None:
            events.append(RunEvent(Change.END, current, ts_us))
        if batch is not None:
            events.append(RunEvent(Change.START, batch, ts_us))
        current = batch
    return events, current


@dataclass(frozen=True)
class PhaseSpan:
    name: str
    start_us: int
    end_us: int | None  # None: the phase lasts until the run's end (or now)


def detect_phases(
    samples: Iterable[tuple[int, str | None, int]], end_us: int | None = None
) -> list[PhaseSpan]:
    """Phases in time-ordered (ts_us, phase name, status) samples of one run's phase tag.

    A phase starts at the first sample carrying its name and ends where the next phase starts (or at end_us,
    the run's end; None while the run is live). Bad-status and blank samples say nothing and are skipped;
    a name that repeats after another phase is a new phase."""
    spans: list[PhaseSpan] = []
    current: str | None = None
    start = 0
    for ts_us, raw, status in samples:
        if is_bad(status):
            continue
        name = (raw or "").strip() if isinstance(raw, str) or raw is None else str(raw).strip()
        if not name or name == current:
            continue
        if current is not None:
            spans.append(PhaseSpan(current, start, ts_us))
        current, start = name, ts_us
    if current is not None:
        spans.append(PhaseSpan(current, start, end_us))
    return spans
