"""The audit log: who did what, when and why — append-only and tamper-evident (migration 12).

Every entry carries the SHA-256 of the entry before it; its own hash is the SHA-256 of the canonical
serialisation of all its fields (seq, time, actor, action, target, why, details, prev_hash): JSON with sorted
keys, no spaces, UTF-8, times as integer µs since the epoch. So changing an entry breaks its own hash,
deleting one breaks the link of the next, and moving one breaks both its link and its neighbours'.
`verify` walks the chain and names the first entry that does not fit, and how.

Anchors: `anchor` stores the head (seq and hash) with a time and a note and returns it, for printing or
copying elsewhere (a ticket, an e-mail): someone who rewrites the whole chain from an entry on cannot make it
match an anchor kept outside the database.

Appending is one write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock) that reads the
head and inserts the next entry, so any number of processes may append at once.

Call `AuditLog.append(actor, action, target, why=..., **details)` — through `catalog.audit` — for every change
a person makes (the trials feature: charter changes and run exclusions). Never put a secret in `details`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from biopilot.access import AuditEntry
from biopilot.samples import from_us, to_us, utcnow

if TYPE_CHECKING:
    from storage.db import Database

GENESIS = "0" * 64  # the previous hash of the first entry
_LOCK_KEY = 0x42696F41  # "BioA": PostgreSQL advisory lock held while appending
_COLUMNS = "seq, ts_us, actor, action, target, why, details, prev_hash, hash"


def canonical(
    seq: int, ts_us: int, actor: str, action: str, target: str, why: str, details: dict[str, Any], prev: str
) -> bytes:
    """The bytes an entry's hash is taken of."""
    doc = {
        "seq": seq,
        "ts_us": ts_us,
        "actor": actor,
        "action": action,
        "target": target,
        "why": why,
        "details": details,
        "prev_hash": prev,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(
    seq: int, ts_us: int, actor: str, action: str, target: str, why: str, details: dict[str, Any], prev: str
) -> str:
    return hashlib.sha256(canonical(seq, ts_us, actor, action, target, why, details, prev)).hexdigest()


@dataclass(frozen=True)
class Problem:
    seq: int  # the entry named
    kind: str  # "altered" | "deleted" | "reordered" | "anchor"
    message: str


@dataclass(frozen=True)
class Verification:
    entries: int
    head: str  # hash of the last entry (GENESIS when empty)
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    ts: datetime
    note: str


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(
        self, actor: str, action: str, target: str = "", *, why: str = "", **details: Any
    ) -> AuditEntry:
        """Append one entry and return it. `details`: JSON-serialisable facts (never a secret)."""
        ts_us = to_us(utcnow())
        # a JSON round trip: the stored text is what later verification hashes again
        details = json.loads(json.dumps(details, sort_keys=True, default=str))
        with self.db.transaction(f"append to the audit log ({action})") as cur:
            if self.db.dialect == "postgresql":
                cur.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
            head = cur.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            seq, prev = (int(head[0][0]) + 1, str(head[0][1])) if head else (1, GENESIS)
            digest = entry_hash(seq, ts_us, actor, action, target, why, details, prev)
            cur.execute(
                f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, ts_us, actor, action, target, why, _dumps(details), prev, digest),
            )
        return AuditEntry(seq, from_us(ts_us), actor, action, target, why, details, prev, digest)

    def entries(
        self, *, since: datetime | None = None, actor: str | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        sql = f"SELECT {_COLUMNS} FROM audit_log"
        where: list[str] = []
        params: list[object] = []
        if since is not None:
            where.append("ts_us >= ?")
            params.append(to_us(since))
        if actor is not None:
            where.append("actor = ?")
            params.append(actor)
        if action is not None:
            where.append("(action = ? OR action LIKE ?)")
            params += [action, f"{action}.%"]
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        return [_entry(r) for r in self.db.query(sql, tuple(params))]

    def head(self) -> tuple[int, str]:
        rows = self.db.query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)

    # -- anchors ---------------------------------------------------------------------------------------
    def anchor(self, note: str = "") -> Anchor:
        """Store the head of the chain (print it, and keep a copy outside the database)."""
        seq, digest = self.head()
        now = utcnow()
        self.db.query(
            "INSERT INTO audit_anchors (seq, hash, ts_us, note) VALUES (?, ?, ?, ?)",
            (seq, digest, to_us(now), note),
        )
        return Anchor(seq, digest, now, note)

    def anchors(self) -> list[Anchor]:
        rows = self.db.query("SELECT seq, hash, ts_us, note FROM audit_anchors ORDER BY ts_us, seq")
        return [Anchor(int(s), str(h), from_us(int(t)), str(n)) for s, h, t, n in rows]  # type: ignore[call-overload]

    # -- verification ----------------------------------------------------------------------------------
    def verify(self, *, external: list[tuple[int, str]] = ()) -> Verification:  # type: ignore[assignment]
        """Walk the chain in seq order; name every entry that does not fit. `external`: (seq, hash) anchors
        kept outside the database, checked like the stored ones."""
        rows = self.db.query(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq")
        entries = [_entry(r) for r in rows]
        problems: list[Problem] = []
        known = {e.hash for e in entries} | {GENESIS}
        last_seq = entries[-1].seq if entries else 0
        prev_seq = 0
        for e in entries:
            label = f"entry {e.seq} ({e.ts.isoformat()} {e.actor} {e.action} {e.target}".rstrip() + ")"
            if _hash_of(e, e.seq) != e.hash:
                # the seq is sealed in the hash: an intact entry moved elsewhere hashes with its old seq
                written_as = next(
                    (s for s in range(max(1, e.seq - 1000), last_seq + 1001) if _hash_of(e, s) == e.hash),
                    None,
                )
                if written_as is None:
                    problems.append(
                        Problem(e.seq, "altered", f"{label}: altered — its content does not match its hash")
                    )
                else:
                    problems.append(
                        Problem(
                            e.seq, "reordered", f"{label}: reordered — it was written as entry {written_as}"
                        )
                    )
            elif e.prev_hash not in known or (e.seq == 1) != (e.prev_hash == GENESIS):
                # intact, but the entry it sealed (the one written before it) is gone
                first = prev_seq + 1 if prev_seq < e.seq - 1 else e.seq - 1
                gone = f"entry {first}" if first == e.seq - 1 else f"entries {first}–{e.seq - 1}"
                problems.append(
                    Problem(first, "deleted", f"{gone} deleted: {label} follows entry {prev_seq or 'none'}")
                )
            prev_seq = e.seq
        hashes = {e.seq: e.hash for e in entries}
        stored = [(a.seq, a.hash, f"anchor of {a.ts.isoformat()}") for a in self.anchors()]
        for seq, digest, what in [*stored, *((s, h, "the anchor given") for s, h in external)]:
            if seq == 0:
                continue
            if seq not in hashes:
                problems.append(Problem(seq, "anchor", f"{what} names entry {seq}, which is gone"))
            elif hashes[seq] != digest:
                problems.append(
                    Problem(
                        seq, "anchor", f"{what}: entry {seq} no longer has the anchored hash {digest[:16]}…"
                    )
                )
        head = entries[-1].hash if entries else GENESIS
        return Verification(len(entries), head, problems)


def record_tag_changes(log: AuditLog, tags: dict[str, dict[str, Any]], config_file: str) -> AuditEntry | None:
    """Append a "config.tags" entry when the site config's tags differ from those last recorded (tags are
    edited in the config file, so the collector records the change when it starts with the new file).
    `tags`: name -> what defines the tag (equipment, role, unit, source). None when nothing changed."""
    last = next(iter(reversed(log.entries(action="config.tags"))), None)
    before: dict[str, Any] = last.details.get("tags", {}) if last is not None else {}
    now = json.loads(json.dumps(tags, sort_keys=True, default=str))
    if now == before:
        return None
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    changed = sorted(n for n in set(now) & set(before) if now[n] != before[n])
    return log.append(
        f"config file {config_file}",
        "config.tags",
        config_file,
        why="first record of the tags" if last is None else "the site config's tags changed",
        added=added,
        removed=removed,
        changed=changed,
        tags=now,
    )


def _hash_of(e: AuditEntry, seq: int) -> str:
    return entry_hash(seq, to_us(e.ts), e.actor, e.action, e.target, e.why, e.details, e.prev_hash)


def _dumps(details: dict[str, Any]) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    seq, ts_us, actor, action, target, why, details, prev, digest = row
    return AuditEntry(
        seq=int(seq),
        ts=from_us(int(ts_us)),
        actor=str(actor),
        action=str(action),
        target=str(target),
        why=str(why),
        details=json.loads(str(details)),
        prev_hash=str(prev),
        hash=str(digest),
    )
