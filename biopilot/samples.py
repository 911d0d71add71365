"""The one record type that crosses every boundary: a sample of one series.

A sample carries the *source* timestamp (when the value was measured, timezone-aware UTC), never the
arrival time, and the OPC UA status code of the value. The severity is the top two bits of the status
(00 good, 01 uncertain, 10 bad, per OPC UA Part 4, 7.34); decisions are made by severity, not by exact code.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import IntEnum
from typing import NamedTuple

GOOD = 0x00000000
UNCERTAIN_LAST_USABLE_VALUE = 0x40900000
BAD_NO_COMMUNICATION = 0x80310000
BAD_WAITING_FOR_INITIAL_DATA = 0x80320000
BAD_SENSOR_FAILURE = 0x808C0000
BAD_OUT_OF_SERVICE = 0x808D0000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Severity(IntEnum):
    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


def severity(status: int) -> Severity:
    """Severity of an OPC UA status code: its top two bits (11 is reserved and treated as bad)."""
    bits = (status >> 30) & 0b11
    return Severity.BAD if bits >= 2 else Severity(bits)


def is_bad(status: int) -> bool:
    return status & 0x80000000 != 0


MAX_ABS_VALUE = 1e12  # no plant sensor or lab assay reads beyond ±10^12 in any unit BioPilot accepts


def value_problem(value: float) -> str | None:
    """Why a number is no measurement at all (NaN, ±inf, beyond ±MAX_ABS_VALUE), or None."""
    if math.isnan(value):
        return "NaN is not a value a sensor or an assay can produce"
    if math.isinf(value):
        return "is infinite (or too large to be a number)"
    if abs(value) > MAX_ABS_VALUE:
        return f"is beyond ±{MAX_ABS_VALUE:.0e}, which no sensor or assay reads"
    return None


Value = float | str | None


class Sample(NamedTuple):
    """One measured value of one series (a configured tag)."""

    series: str
    ts: datetime  # source timestamp, timezone-aware UTC
    value: Value
    status: int = GOOD
    server_ts: datetime | None = None  # OPC UA server timestamp, kept for diagnosis


def to_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (naive datetimes are refused)."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts.isoformat()} has no time zone; BioPilot stores UTC")
    return (ts - _EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    """Aware UTC datetime of microseconds since the Unix epoch."""
    return _EPOCH + _ONE_US * us


def utcnow() -> datetime:
    return datetime.now(UTC)


_ONE_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
