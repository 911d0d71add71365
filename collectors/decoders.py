"""Payload decoders: bytes from a broker → values, source timestamps and status codes.

A decoder never raises for bad input: it returns a `Rejected` with a reason that is counted by the
collector. Timestamps without a zone are read in the site's time zone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE

_STATUS_WORDS = {"good": GOOD, "uncertain": UNCERTAIN_LAST_USABLE_VALUE, "bad": BAD_SENSOR_FAILURE}
MAX_PAYLOAD = 256 * 1024  # bytes; a plant message is a few hundred


@dataclass(frozen=True)
class Rejected:
    reason: str  # short and stable: counted by it
    detail: str


def parse_json_object(payload: bytes) -> dict[str, object] | Rejected:
    if len(payload) > MAX_PAYLOAD:
        return Rejected("payload_too_large", f"{len(payload)} bytes")
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # ValueError: also an integer beyond Python's digit limit
        return Rejected("undecodable_json", f"{exc}: {payload[:80]!r}")
    if not isinstance(obj, dict):
        return Rejected("not_a_json_object", repr(payload[:80]))
    return obj


def parse_number(payload: bytes) -> float | Rejected:
    if len(payload) > 64:
        return Rejected("undecodable_number", repr(payload[:80]))
    try:
        value = float(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return Rejected("undecodable_number", repr(payload[:80]))
    if not math.isfinite(value):
        return Rejected("not_finite", repr(payload[:80]))
    return value


def parse_time(raw: object, tz: tzinfo) -> datetime | Rejected:
    """ISO-8601 text (a naive time is read in tz) or Unix epoch seconds as a number."""
    if isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError:
            return Rejected("bad_timestamp", repr(raw[:64]))
        return ts.replace(tzinfo=tz).astimezone(UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:  # an int too large for a float overflows in isfinite
            if math.isfinite(raw):
                return datetime.fromtimestamp(raw, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return Rejected("bad_timestamp", repr(raw)[:64])


@dataclass(frozen=True)
class TimeWindow:
    """Source timestamps a collector accepts, relative to its own clock at arrival."""

    max_future: timedelta = timedelta(minutes=10)
    max_past: timedelta = timedelta(days=3650)

    def check(self, ts: datetime, now: datetime) -> Rejected | None:
        if ts - now > self.max_future:
            return Rejected(
                "timestamp_in_future", f"{ts.isoformat()} is {ts - now} ahead of {now.isoformat()}"
            )
        if now - ts > self.max_past:
            return Rejected("timestamp_too_old", f"{ts.isoformat()} is older than {self.max_past.days} days")
        return None


def parse_status(raw: object) -> int | Rejected:
    if raw is None:
        return GOOD
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**32:
        return raw
    if isinstance(raw, str) and raw.lower() in _STATUS_WORDS:
        return _STATUS_WORDS[raw.lower()]
    return Rejected("bad_status", repr(raw)[:64])


def numeric_value(raw: object) -> float | Rejected:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return Rejected("wrong_type", f"expected a number, got {type(raw).__name__} {raw!r:.40}")
    try:
        value = float(raw)
    except OverflowError:  # an int too large for a float
        return Rejected("not_finite", f"{raw!r:.40}")
    if not math.isfinite(value):
        return Rejected("not_finite", repr(raw))
    return value


def text_value(raw: object) -> str | Rejected:
    if isinstance(raw, str):
        return raw[:256]
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    return Rejected("wrong_type", f"expected text, got {type(raw).__name__} {raw!r:.40}")
