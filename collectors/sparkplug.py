"""BioPilot as a Sparkplug B host application: what it must remember about edge nodes and devices.

- Births: the alias map and datatypes of the last BIRTH of every edge node and device, on disk
  (`births.json`, replaced atomically before the BIRTH is acknowledged), so a restarted collector resolves
  the DATA its persistent session held while it was down. With them: whether the node or device is alive
  (an NDEATH or DDEATH since its BIRTH) and the bdSeq of the node's session.
- Parked messages: DATA that no BIRTH resolves yet (an alias no BIRTH declared) is kept with its raw payload
  (`parked/<key>.log`) before it is acknowledged, and replayed when the BIRTH arrives.
- Sequence numbers: every message of an edge node (its own and its devices') carries seq 0..255, one more
  than the one before; a jump is counted (`seq_gap`, and `seq_missing` messages).

Keys: (group, edge node) for a node, (group, edge node, device) for a device.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

Key = tuple[str, ...]
_HEADER = struct.Struct(">II")  # length, CRC-32 of the JSON record


@dataclass
class Birth:
    """What the last BIRTH of an edge node or device declared, and whether it is alive since."""

    names: dict[int, str]  # alias -> metric name
    datatypes: dict[str, int]  # metric name -> datatype
    bd_seq: int | None = None  # NBIRTH: the session's bdSeq, which its NDEATH must carry
    alive: bool = True
    died: float | None = None  # wall clock of the NDEATH/DDEATH
    died_why: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "names": {str(a): n for a, n in self.names.items()},
            "datatypes": self.datatypes,
            "bd_seq": self.bd_seq,
            "alive": self.alive,
            "died": self.died,
            "died_why": self.died_why,
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Birth:
        names = doc.get("names", {})
        datatypes = doc.get("datatypes", {})
        assert isinstance(names, dict) and isinstance(datatypes, dict)
        return cls(
            {int(a): str(n) for a, n in names.items()},
            {str(n): int(t) for n, t in datatypes.items()},
            doc.get("bd_seq"),  # type: ignore[arg-type]
            bool(doc.get("alive", True)),
            doc.get("died"),  # type: ignore[arg-type]
            str(doc.get("died_why", "")),
        )


@dataclass
class HostState:
    """Births, parked messages and sequence numbers of one broker's Sparkplug edge nodes. Without a
    directory (tests and tools) everything stays in memory."""

    directory: Path | None
    births: dict[Key, Birth] = field(default_factory=dict)
    parked_bytes: int = 0
    _dirty: bool = False
    _seq: dict[Key, int] = field(default_factory=dict)  # edge node -> the last seq seen
    _parked_memory: dict[Key, list[tuple[str, bytes, int]]] = field(default_factory=dict)  # with frame sizes
    _replayed: dict[Key, int] = field(default_factory=dict)  # parked bytes (or messages) replayed, to delete
    _rebirth_asked: dict[Key, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.directory is None:
            return
        path = self.directory / "births.json"
        try:
            doc = json.loads(path.read_text())
            self.births = {tuple(k.split("/")): Birth.from_json(v) for k, v in doc["births"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
            log.error(
                "%s: unreadable (%s); Sparkplug aliases are learnt again from the next BIRTHs", path, exc
            )
        parked = self.directory / "parked"
        with contextlib.suppress(OSError):
            self.parked_bytes = sum(p.stat().st_size for p in parked.glob("*.log"))
        if self.births:
            log.info("Sparkplug: %d BIRTHs known from %s", len(self.births), path)

    # -- births and deaths -----------------------------------------------------------------------------
    def birth(self, key: Key, birth: Birth) -> None:
        self.births[key] = birth
        self._dirty = True

    def death(self, key: Key, why: str) -> list[Key]:
        """An NDEATH (key of the node: it and its devices) or DDEATH; the keys that were alive and died."""
        died = []
        now = time.time()
        for k, b in self.births.items():
            if (k == key or (len(key) == 2 and k[:2] == key)) and b.alive:
                b.alive, b.died, b.died_why = False, now, why
                died.append(k)
        if died:
            self._dirty = True
        return died

    def save(self) -> None:
        """Write the births to disk if they changed (OSError: nothing changed on disk; call again)."""
        if not self._dirty or self.directory is None:
            self._dirty = False
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = {"births": {"/".join(k): b.to_json() for k, b in self.births.items()}}
        tmp = self.directory / "births.json.tmp"
        with tmp.open("w") as f:
            json.dump(doc, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.directory / "births.json")
        self._dirty = False

    # -- sequence numbers ------------------------------------------------------------------------------
    def check_seq(self, node: Key, kind: str, seq: int | None) -> int:
        """Messages missing before this one, judged by its seq (0 for a BIRTH, a repeat, or the first)."""
        if seq is None:
            return 0
        seq &= 0xFF
        last = self._seq.get(node)
        self._seq[node] = seq
        if kind == "NBIRTH" or last is None or seq == last:
            return 0
        return (seq - last - 1) % 256

    # -- parked messages -------------------------------------------------------------------------------
    def park(self, key: Key, topic: str, payload: bytes) -> None:
        """Keep a message no BIRTH resolves (written to the OS before it returns; OSError if it cannot be)."""
        record = json.dumps({"t": time.time(), "topic": topic, "payload": base64.b64encode(payload).decode()})
        data = record.encode()
        frame = _HEADER.pack(len(data), zlib.crc32(data)) + data
        if self.directory is None:
            self._parked_memory.setdefault(key, []).append((topic, payload, len(frame)))
        else:
            path = self._parked_path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as f:
                f.write(frame)
        self.parked_bytes += len(frame)

    def parked(self, key: Key) -> list[tuple[str, bytes]]:
        """The parked messages of a node or device, oldest first; deleted by `commit` once replayed (what is
        parked after this call stays)."""
        if self.directory is None:
            kept = self._parked_memory.get(key, [])
            self._replayed[key] = len(kept)
            return [(topic, payload) for topic, payload, _ in kept]
        path = self._parked_path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        self._replayed[key] = len(data)
        out, i = [], 0
        while i + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, i)
            body = data[i + _HEADER.size : i + _HEADER.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                log.error("%s: a torn record at byte %d (an interrupted write); the rest is skipped", path, i)
                break
            record = json.loads(body)
            out.append((record["topic"], base64.b64decode(record["payload"])))
            i += _HEADER.size + length
        return out

    def has_parked(self, key: Key) -> bool:
        if self.directory is None:
            return bool(self._parked_memory.get(key))
        return self._parked_path(key).exists()

    def commit(self) -> None:
        """After the samples of a batch are spooled: save changed births, delete replayed parked messages,
        make parked messages durable. OSError: call again (nothing is lost, some work is redone)."""
        self.save()
        for key, done in self._replayed.items():
            if self.directory is None:
                entries = self._parked_memory.get(key, [])
                self.parked_bytes -= sum(size for _, _, size in entries[:done])
                kept = entries[done:]
                if kept:
                    self._parked_memory[key] = kept
                else:
                    self._parked_memory.pop(key, None)
                continue
            path = self._parked_path(key)
            with contextlib.suppress(FileNotFoundError):
                data = path.read_bytes()
                if len(data) > done:  # parked after the replay (in the same batch): keep those
                    tmp = path.with_suffix(".tmp")
                    tmp.write_bytes(data[done:])
                    tmp.replace(path)
                else:
                    path.unlink()
                self.parked_bytes -= min(done, len(data))
        self._replayed.clear()
        self.parked_bytes = max(self.parked_bytes, 0)

    def forget_replays(self) -> None:
        """The batch was not spooled: keep the parked messages it replayed (they are replayed again)."""
        self._replayed.clear()

    def _parked_path(self, key: Key) -> Path:
        assert self.directory is not None
        name = hashlib.sha1("/".join(key).encode()).hexdigest()[:16]  # topic segments may hold any character
        return self.directory / "parked" / f"{name}.log"

    # -- rebirth requests ------------------------------------------------------------------------------
    def may_ask_rebirth(self, node: Key, every_s: float) -> bool:
        now = time.monotonic()
        if now - self._rebirth_asked.get(node, -1e9) < every_s:
            return False
        self._rebirth_asked[node] = now
        return True
