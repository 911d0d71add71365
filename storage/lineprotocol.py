"""InfluxDB line protocol for BioPilot samples: pure formatting, no I/O.

One sample is one point of the site's measurement (default ``biopilot``), tagged with its series name:

    biopilot,series=F-101.temperature server_us=1709280000123456i,status=0i,value=37.02 1709280000120000

- ``value`` (float) for numbers, ``text`` (string) for text series (batch ids, phases), absent for no value;
- ``status`` (integer): the OPC UA status code; ``server_us`` (integer, optional): the server timestamp
  [µs since the Unix epoch];
- the timestamp is the source timestamp, an integer in µs (written with precision ``us``). Integers, never
  datetimes: influxdb-client 1.50 turns some µs datetimes into a timestamp 1 µs early.

Escaping follows the InfluxDB 2 line-protocol reference (docs: reference/syntax/line-protocol): a comma
and a space are escaped with a backslash in the measurement; a comma, an equals sign and a space in tag keys,
tag values and field keys; a double quote and a backslash in string field values. Backslashes in names are
where the reference and the server part ways: the reference says a doubled backslash reads as one, while
the InfluxDB 1.x/2.x parser (pkg/escape.Unescape) keeps both, and a backslash right before an escaped
character or at the end of a name changes how the line is split. So a name is written only where both
readings agree: its backslashes are single, and none stands before a backslash, comma, equals sign, space or
double quote or at the end. A name (or text value) with a newline cannot be written at all: line protocol
has no escape for it. Such samples are refused by name (`Unwritable`), never altered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from biopilot.records import Row

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})
_AFTER_BACKSLASH = frozenset('\\,= "')


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a measurement, tag key, tag value or field key (None: it can)."""
    if not name:
        return "an empty name"
    if "\n" in name or "\r" in name:
        return "a line break (line protocol has no escape for it)"
    if name.endswith("\\"):
        return "a backslash at the end (InfluxDB would read it as escaping the next separator)"
    for i, ch in enumerate(name[:-1]):
        if ch == "\\" and name[i + 1] in _AFTER_BACKSLASH:
            return (
                f"a backslash before {name[i + 1]!r} (the reference and the InfluxDB 2 parser read it apart)"
            )
    return None


def text_problem(text: str) -> str | None:
    """Why `text` cannot be a string field value (None: it can)."""
    if "\n" in text or "\r" in text:
        return "a line break (line protocol does not carry one in a field value)"
    return None


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT)


def escape_key(name: str) -> str:
    """A tag key, tag value or field key."""
    return name.translate(_KEY)


def escape_string(text: str) -> str:
    """The inside of a string field value (the quotes are the caller's)."""
    return text.translate(_STRING)


def format_float(value: float) -> str:
    """The shortest text that reads back as the same float (Python's repr), without a trailing '.0'."""
    s = repr(value)
    return s[:-2] if s.endswith(".0") else s


@dataclass
class Encoded:
    """Lines ready to send, and what was refused: (series, source µs, why) per refused sample."""

    lines: list[str] = field(default_factory=list)
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    nonfinite: int = 0  # NaN or infinite values written without a value (line protocol has no NaN)


class Encoder:
    """Formats rows as line protocol for one measurement; caches the escaped prefix of each series."""

    def __init__(self, measurement: str = "biopilot", tag: str = "series") -> None:
        problem = name_problem(measurement) or name_problem(tag)
        if problem is not None:
            raise ValueError(f"measurement {measurement!r} or tag key {tag!r} has {problem}")
        if measurement.startswith("_") or tag.startswith("_") or measurement.startswith("#"):
            raise ValueError("measurement and tag key must not start with '_' (reserved) or '#' (a comment)")
        self.measurement = measurement
        self.tag = tag
        self._head = f"{escape_measurement(measurement)},{escape_key(tag)}="
        self._prefix: dict[str, str | None] = {}
        self._why: dict[str, str] = {}

    def prefix(self, series: str) -> str | None:
        """`measurement,series=<escaped> ` or None when the name cannot be written."""
        try:
            return self._prefix[series]
        except KeyError:
            problem = name_problem(series)
            if problem is not None:
                self._why[series] = f"the series name has {problem}"
                out = None
            else:
                out = f"{self._head}{escape_key(series)} "
            if len(self._prefix) > 100_000:  # names come from config: this only bounds a pathological feed
                self._prefix.clear()
            self._prefix[series] = out
            return out

    def encode(self, rows: Iterable[Row]) -> Encoded:
        """Rows of (series, source µs, value, status, server µs or None) as lines; refusals counted."""
        out = Encoded()
        lines = out.lines
        for series, ts_us, value, status, server_us in rows:
            prefix = self._prefix.get(series) or self.prefix(series)
            if prefix is None:
                out.refused.append((series, ts_us, self._why[series]))
                continue
            # Fields in key order (server_us, status, text, value), as influxdb-client's Point sorts them.
            head = f"{prefix}server_us={int(server_us)}i," if server_us is not None else prefix
            if value is None:
                lines.append(f"{head}status={int(status)}i {int(ts_us)}")
            elif isinstance(value, str):
                problem = text_problem(value)
                if problem is not None:
                    out.refused.append((series, ts_us, f"the text value has {problem}"))
                    continue
                lines.append(f'{head}status={int(status)}i,text="{escape_string(value)}" {int(ts_us)}')
            else:
                v = float(value)  # ints and bools from JSON payloads stay a float field
                if math.isfinite(v):
                    lines.append(f"{head}status={int(status)}i,value={format_float(v)} {int(ts_us)}")
                else:
                    out.nonfinite += 1
                    lines.append(f"{head}status={int(status)}i {int(ts_us)}")
        return out

    def encode_arrays(
        self, series: str, ts_us: Sequence[int], values: Sequence[float], status: Sequence[int] | None = None
    ) -> Encoded:
        """One numeric series from arrays (imports, the simulator's history): the same lines as `encode`."""
        out = Encoded()
        prefix = self.prefix(series)
        if prefix is None:
            out.refused.extend((series, int(t), self._why[series]) for t in ts_us)
            return out
        lines = out.lines
        st = [0] * len(ts_us) if status is None else status
        for t, v, s in zip(ts_us, values, st, strict=True):
            v = float(v)
            if math.isfinite(v):
                lines.append(f"{prefix}status={int(s)}i,value={format_float(v)} {int(t)}")
            else:
                out.nonfinite += 1
                lines.append(f"{prefix}status={int(s)}i {int(t)}")
        return out
