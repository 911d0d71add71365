"""Live deviation alarms and their acknowledgement, in the catalog's database (storage/db.py, migration 31).

One row per excursion of a run: a tag leaving its golden-batch envelope (kind "envelope", tag = the tag's
name) or the run's online Hotelling T² or SPE above its limit (kind "mspc", tag "mspc:T²" or "mspc:SPE",
variable = the top contributing tag). Processing (processing/live_alarms.py) decides what is new, what
continues and what ended, and applies it here in one transaction; each alarm keeps its number (`id`, a
sequence taken in the inserting transaction) while its excursion lasts, and its stable `key` (unique per run).

Times are the plant's (source timestamps): start (first point outside), raised (the k-th point: the alarm),
last (the newest point at which it was still on), end (the first point back inside; None while open). The
aligned times start_t / raised_t are in `axis_unit` (h since inoculation, or the maturity's unit). size and
peak are in `size_unit`: the tag's unit beyond the alarm band (envelope), or the statistic as a multiple of
its 99 % limit ("x limit", MSPC); size_relative / peak_relative: the envelope distance in band half-widths.

Acknowledging stores who and when (and a comment); processing never touches those columns, so an
acknowledged alarm that is still on stays acknowledged. An alarm is acknowledged once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from biopilot.errors import StoreError
from biopilot.samples import from_us, to_us
from storage.db import Cursor, Database


class AlarmKind(StrEnum):
    ENVELOPE = "envelope"
    MSPC = "mspc"


class AlarmState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class AlarmObservation:
    """What an evaluation found about one excursion (see the module doc for the fields); `end` None: on."""

    run_id: str
    key: str
    equipment: str
    tag: str
    variable: str | None
    kind: str
    direction: str  # "above" | "below"
    start: datetime
    raised: datetime
    last: datetime
    end: datetime | None
    start_t: float
    raised_t: float
    axis_unit: str
    size: float
    peak: float
    size_unit: str
    size_relative: float | None = None
    peak_relative: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return AlarmState.OPEN.value if self.end is None else AlarmState.CLOSED.value


@dataclass(frozen=True)
class Alarm:
    """A stored alarm (see the module doc)."""

    id: int
    run_id: str
    key: str
    equipment: str
    tag: str
    variable: str | None
    kind: str
    direction: str
    start: datetime
    raised: datetime
    last: datetime
    end: datetime | None
    start_t: float
    raised_t: float
    axis_unit: str
    size: float
    peak: float
    size_unit: str
    size_relative: float | None
    peak_relative: float | None
    state: str
    ack_by: str | None
    ack_at: datetime | None
    ack_comment: str | None
    detail: Mapping[str, Any]
    created: datetime
    updated: datetime

    @property
    def is_open(self) -> bool:
        return self.state == AlarmState.OPEN

    @property
    def acknowledged(self) -> bool:
        return self.ack_by is not None

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form (`biopilot alarms list --json`)."""
        return {
            "id": self.id,
            "run": self.run_id,
            "key": self.key,
            "equipment": self.equipment,
            "tag": self.tag,
            "variable": self.variable,
            "kind": self.kind,
            "direction": self.direction,
            "start": self.start.isoformat(),
            "raised": self.raised.isoformat(),
            "last": self.last.isoformat(),
            "end": self.end.isoformat() if self.end is not None else None,
            "start_t": self.start_t,
            "raised_t": self.raised_t,
            "axis_unit": self.axis_unit,
            "size": self.size,
            "peak": self.peak,
            "size_unit": self.size_unit,
            "size_relative": self.size_relative,
            "peak_relative": self.peak_relative,
            "state": self.state,
            "acknowledged": self.acknowledged,
            "ack_by": self.ack_by,
            "ack_at": self.ack_at.isoformat() if self.ack_at is not None else None,
            "ack_comment": self.ack_comment,
            "detail": dict(self.detail),
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
        }


_COLUMNS = (
    "id, run_id, alarm_key, equipment, tag, variable, kind, direction, start_us, raised_us, last_us, end_us,"
    " start_t, raised_t, axis_unit, size, peak, size_unit, size_relative, peak_relative, state, ack_by,"
    " ack_us, ack_comment, detail, created_us, updated_us"
)
_INSERT = f"INSERT INTO alarms ({_COLUMNS}) VALUES ({', '.join(['?'] * 27)})"
_UPDATE = (
    "UPDATE alarms SET alarm_key = ?, variable = ?, start_us = ?, raised_us = ?, last_us = ?, end_us = ?,"
    " start_t = ?, raised_t = ?, size = ?, peak = ?, size_relative = ?, peak_relative = ?, state = ?,"
    " detail = ?, updated_us = ? WHERE id = ?"
)


class Alarms:
    """The alarms table, in the catalog's database (`catalog.db`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def apply(
        self,
        *,
        inserts: Sequence[AlarmObservation] = (),
        updates: Mapping[int, AlarmObservation] | None = None,
        closes: Mapping[int, tuple[datetime, str]] | None = None,
        now: datetime,
    ) -> list[int]:
        """In one transaction: insert new alarms (numbered in it), update alarms that continue (by id; the
        acknowledgement is kept), close alarms (id → (end, why), the reason kept in detail["closed"]).
        Returns the ids of the inserted alarms, in order."""
        now_us = to_us(now)
        ids: list[int] = []
        with self.db.transaction("store alarms") as cur:
            next_id = _next_id(cur)
            for obs in inserts:
                cur.execute(
                    _INSERT, (next_id, *_row(obs), None, None, None, _json(obs.detail), now_us, now_us)
                )
                ids.append(next_id)
                next_id += 1
            for alarm_id, obs in (updates or {}).items():
                cur.execute(_UPDATE, (*_update_row(obs), _json(obs.detail), now_us, alarm_id))
            for alarm_id, (end, why) in (closes or {}).items():
                rows = cur.execute("SELECT detail FROM alarms WHERE id = ?", (alarm_id,))
                if not rows:
                    continue
                detail = {**json.loads(str(rows[0][0])), "closed": why}
                cur.execute(
                    "UPDATE alarms SET state = ?, end_us = COALESCE(end_us, ?), detail = ?, updated_us = ?"
                    " WHERE id = ?",
                    (AlarmState.CLOSED.value, to_us(end), _json(detail), now_us, alarm_id),
                )
        return ids

    def alarms(
        self,
        *,
        run_id: str | None = None,
        equipment: str | None = None,
        open_only: bool = False,
        limit: int | None = None,
    ) -> list[Alarm]:
        """Alarms, newest raised first (ties by id), by run, equipment, and open ones only."""
        where, params = [], []
        for column, value in (("run_id", run_id), ("equipment", equipment)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if open_only:
            where.append("state = ?")
            params.append(AlarmState.OPEN.value)
        sql = f"SELECT {_COLUMNS} FROM alarms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY raised_us DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_alarm(r) for r in self.db.query(sql, tuple(params))]

    def alarm(self, alarm_id: int) -> Alarm | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM alarms WHERE id = ?", (alarm_id,))
        return _alarm(rows[0]) if rows else None

    def acknowledge(self, alarm_id: int, by: str, at: datetime, comment: str | None = None) -> Alarm:
        """Record who acknowledged the alarm, when, and why; StoreError for an unknown alarm, an empty name,
        or an alarm acknowledged already (by whom and when is said)."""
        if not by.strip():
            raise StoreError("an acknowledgement needs the name of who acknowledges")
        with self.db.transaction(f"acknowledge alarm {alarm_id}") as cur:
            rows = cur.execute("SELECT ack_by, ack_us FROM alarms WHERE id = ?", (alarm_id,))
            if not rows:
                raise StoreError(f"no alarm {alarm_id}; `biopilot alarms list` shows them")
            if rows[0][0] is not None:
                raise StoreError(
                    f"alarm {alarm_id} was acknowledged already by {rows[0][0]} at"
                    f" {from_us(int(rows[0][1])).isoformat()}"
                )
            cur.execute(
                "UPDATE alarms SET ack_by = ?, ack_us = ?, ack_comment = ? WHERE id = ?",
                (by.strip(), to_us(at), comment, alarm_id),
            )
        alarm = self.alarm(alarm_id)
        assert alarm is not None
        return alarm


def _next_id(cur: Cursor) -> int:
    rows = cur.execute("SELECT MAX(id) FROM alarms")
    return int(rows[0][0] or 0) + 1 if rows else 1


def _json(doc: Mapping[str, Any]) -> str:
    return json.dumps(dict(doc), separators=(",", ":"), sort_keys=True)


def _row(o: AlarmObservation) -> tuple[object, ...]:
    return (
        o.run_id,
        o.key,
        o.equipment,
        o.tag,
        o.variable,
        o.kind,
        o.direction,
        to_us(o.start),
        to_us(o.raised),
        to_us(o.last),
        to_us(o.end) if o.end is not None else None,
        float(o.start_t),
        float(o.raised_t),
        o.axis_unit,
        float(o.size),
        float(o.peak),
        o.size_unit,
        o.size_relative,
        o.peak_relative,
        o.state,
    )


def _update_row(o: AlarmObservation) -> tuple[object, ...]:
    return (
        o.key,
        o.variable,
        to_us(o.start),
        to_us(o.raised),
        to_us(o.last),
        to_us(o.end) if o.end is not None else None,
        float(o.start_t),
        float(o.raised_t),
        float(o.size),
        float(o.peak),
        o.size_relative,
        o.peak_relative,
        o.state,
    )


def _opt_us(v: object) -> datetime | None:
    return from_us(int(v)) if v is not None else None  # type: ignore[call-overload]


def _opt_float(v: object) -> float | None:
    return float(v) if v is not None else None  # type: ignore[arg-type]


def _alarm(r: tuple[Any, ...]) -> Alarm:
    return Alarm(
        id=int(r[0]),
        run_id=str(r[1]),
        key=str(r[2]),
        equipment=str(r[3]),
        tag=str(r[4]),
        variable=str(r[5]) if r[5] is not None else None,
        kind=str(r[6]),
        direction=str(r[7]),
        start=from_us(int(r[8])),
        raised=from_us(int(r[9])),
        last=from_us(int(r[10])),
        end=_opt_us(r[11]),
        start_t=float(r[12]),
        raised_t=float(r[13]),
        axis_unit=str(r[14]),
        size=float(r[15]),
        peak=float(r[16]),
        size_unit=str(r[17]),
        size_relative=_opt_float(r[18]),
        peak_relative=_opt_float(r[19]),
        state=str(r[20]),
        ack_by=str(r[21]) if r[21] is not None else None,
        ack_at=_opt_us(r[22]),
        ack_comment=str(r[23]) if r[23] is not None else None,
        detail=json.loads(str(r[24])),
        created=from_us(int(r[25])),
        updated=from_us(int(r[26])),
    )
