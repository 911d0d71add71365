"""The on-disk spool: every sample is appended here before it goes to the store.

An append-only log of frames in segment files named by their first byte's global offset
(`00000000000000000000.spool`, …). A frame is one batch of samples:

    length (4 bytes, big endian) · CRC-32 of the payload (4 bytes) · payload (JSON array of samples)

A sample in the payload is [series, source µs, value, status, server µs or null]; the value is a number,
a string or null. A position is a global byte offset: everything before `committed` is in the store
(the checkpoint file, replaced atomically). After a crash the store is brought up to date by replaying from
the checkpoint; a torn last frame (power loss) is cut off. Rewriting a sample is harmless: the store's
writes are idempotent per (series, source timestamp).

`append` returns once the frame is written to the file: it survives a kill -9 of the process (the bytes
are in the OS page cache); `sync` makes it survive a power loss too. Size is bounded: `append` refuses
(raises SpoolFullError) instead of dropping anything, and `fill` tells how close that is.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from biopilot.errors import BioPilotError
from biopilot.samples import Sample, from_us, to_us

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_SUFFIX = ".spool"


class SpoolFullError(BioPilotError):
    """The spool reached its size limit; nothing was written."""


def encode(samples: Sequence[Sample]) -> bytes:
    payload = json.dumps(
        [
            [
                s.series,
                to_us(s.ts),
                s.value,
                s.status,
                to_us(s.server_ts) if s.server_ts is not None else None,
            ]
            for s in samples
        ],
        separators=(",", ":"),
        allow_nan=False,
    ).encode()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> list[Sample]:
    return [
        Sample(series, from_us(ts), value, status, from_us(server) if server is not None else None)
        for series, ts, value, status, server in json.loads(payload)
    ]


class Spool:
    def __init__(self, directory: Path, *, max_bytes: int = 1 << 30, segment_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._checkpoint_path = directory / "checkpoint"
        self.committed = self._read_checkpoint()
        segments = self._segments()
        if not segments:
            start = self.committed
            segments = [start]
            (directory / _name(start)).touch()
        self._segment_start = segments[-1]
        self._file = (directory / _name(self._segment_start)).open("ab")
        self.end = self._segment_start + self._truncate_torn_tail(directory / _name(self._segment_start))
        if self.committed > self.end:  # a checkpoint ahead of the data: the data was lost or removed
            log.error(
                "spool checkpoint %d is past the end %d; restarting at the end", self.committed, self.end
            )
            self.committed = self.end

    # -- writing ---------------------------------------------------------------------------------------
    def append(self, samples: Sequence[Sample]) -> int:
        """Append one frame; return the position after it. Raises SpoolFullError when over max_bytes."""
        frame = encode(samples)
        if self.depth + len(frame) > self.max_bytes:
            raise SpoolFullError(
                f"spool {self.directory} is full "
                f"({self.depth} of {self.max_bytes} bytes not yet in the store)"
            )
        if self.end - self._segment_start >= self.segment_bytes:
            self._rotate()
        self._file.write(frame)
        self._file.flush()  # into the OS: survives the death of this process
        self.end += len(frame)
        return self.end

    def sync(self) -> None:
        """Make what was appended survive a power loss (fsync)."""
        os.fsync(self._file.fileno())

    def _rotate(self) -> None:
        self._file.close()
        self._segment_start = self.end
        self._file = (self.directory / _name(self.end)).open("ab")

    # -- reading and committing --------------------------------------------------------------------------
    def read(self, start: int, max_samples: int = 50_000) -> Iterator[tuple[int, list[Sample]]]:
        """Frames from position `start` on, as (position after the frame, samples); stops at max_samples."""
        n = 0
        for seg in self._segments():
            seg_path = self.directory / _name(seg)
            size = seg_path.stat().st_size
            if seg + size <= start:
                continue
            with seg_path.open("rb") as f:
                f.seek(max(start - seg, 0))
                pos = seg + f.tell()
                while pos < min(seg + size, self.end):
                    header = f.read(_HEADER.size)
                    if len(header) < _HEADER.size:
                        break
                    length, crc = _HEADER.unpack(header)
                    payload = f.read(length)
                    if len(payload) < length or zlib.crc32(payload) != crc:
                        log.error(
                            "spool %s: corrupt frame at %d; skipping the rest of the segment", seg_path, pos
                        )
                        break
                    pos += _HEADER.size + length
                    samples = decode(payload)
                    yield pos, samples
                    n += len(samples)
                    if n >= max_samples:
                        return

    def commit(self, position: int) -> None:
        """Everything before `position` is in the store: checkpoint it, delete segments no longer needed."""
        if position <= self.committed:
            return
        self.committed = position
        tmp = self._checkpoint_path.with_suffix(".tmp")
        tmp.write_text(str(position))
        tmp.replace(self._checkpoint_path)
        segments = self._segments()
        for seg, nxt in itertools.pairwise(segments):
            if nxt <= position:
                (self.directory / _name(seg)).unlink(missing_ok=True)

    @property
    def depth(self) -> int:
        """Bytes appended but not yet committed to the store."""
        return self.end - self.committed

    @property
    def fill(self) -> float:
        return self.depth / self.max_bytes

    def close(self) -> None:
        self._file.close()

    # -- files -----------------------------------------------------------------------------------------
    def _segments(self) -> list[int]:
        return sorted(int(p.name.removesuffix(_SUFFIX)) for p in self.directory.glob(f"*{_SUFFIX}"))

    def _read_checkpoint(self) -> int:
        try:
            return int(self._checkpoint_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            raise BioPilotError(
                f"{self._checkpoint_path}: not a spool checkpoint; move it away to rebuild"
            ) from None

    def _truncate_torn_tail(self, path: Path) -> int:
        """Length of the valid frames of a segment; a torn or corrupt tail is cut off (logged)."""
        valid = 0
        with path.open("rb") as f:
            while True:
                header = f.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    torn = len(header) > 0
                    break
                length, crc = _HEADER.unpack(header)
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    torn = True
                    break
                valid += _HEADER.size + length
        if torn:
            log.error("spool %s: cutting a torn frame at byte %d (an interrupted write)", path, valid)
            with path.open("r+b") as f:
                f.truncate(valid)
        return valid


def _name(offset: int) -> str:
    return f"{offset:020d}{_SUFFIX}"
