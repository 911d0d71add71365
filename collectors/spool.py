"""The on-disk spool between the collectors and the store.

An append-only log of frames in segment files named by the global offset of their first byte
(`00000000000000000000.spool`, …). A frame is one batch of samples:

    length (4 bytes, big endian) · CRC-32 of the payload (4 bytes) · payload (JSON array of rows)

A row is [series, source µs, value, status, server µs or null]; the value is a number, a string or null.
A position is a global byte offset. Two sides, usually in two processes:

- `Spool`, the appender (the collector): `append` returns once the frame is written to the file, so it
  survives a kill -9 of the process (the bytes are in the OS page cache; `sync` makes them survive a power
  loss too). The size is bounded: past `max_bytes` not yet committed, `append` refuses (SpoolFullError)
  instead of dropping anything.
- `SpoolReader`, the consumer (the store writer): reads complete frames from a position and `commit`s the
  position up to which everything is in the store (the `checkpoint` file, replaced atomically), deleting
  segments no longer needed. One reader at a time (a lock file).

After a crash the store is brought up to date from the checkpoint; rewriting a sample is harmless (the
store's writes are idempotent per series and source timestamp). A torn last frame (a power loss) is cut off
when the appender opens the spool.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from biopilot.errors import BioPilotError
from biopilot.records import Row
from biopilot.samples import Sample, to_us

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_SUFFIX = ".spool"


class SpoolError(BioPilotError):
    """The spool cannot take the samples; nothing was written (the caller keeps or redelivers them)."""


class SpoolFullError(SpoolError):
    """The spool reached its size limit."""


class SpoolWriteError(SpoolError):
    """The file system refused a write (disk full, read-only, gone): an OSError while spooling."""


PROBE_FREE_BYTES = 256 << 10  # after a write error, resume only with at least this much free space


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


def _name(offset: int) -> str:
    return f"{offset:020d}{_SUFFIX}"


def _segments(directory: Path) -> list[int]:
    return sorted(int(p.name.removesuffix(_SUFFIX)) for p in directory.glob(f"*{_SUFFIX}"))


def read_checkpoint(directory: Path) -> int:
    path = directory / "checkpoint"
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        raise BioPilotError(f"{path}: not a spool checkpoint; move it away to rebuild") from None


class Spool:
    """The appending side.

    Any OSError while opening or writing (a full disk, a read-only file system) is a SpoolWriteError: the
    frame is taken back (the file is cut to the last complete frame), the spool remembers the error
    (`error`, `error_since`) and the caller stops acknowledging its source. `probe` tells when the spool
    takes writes again."""

    def __init__(self, directory: Path, *, max_bytes: int = 1 << 30, segment_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.committed = 0
        self.end = 0
        self._segment_start = 0
        self._fd: int | None = None
        self._checkpoint_mtime = 0.0
        self.error: str | None = None  # the last write error, until a write succeeds again
        self.error_since: float | None = None  # wall clock of the first error of the current streak
        self.write_errors = 0
        self.last_append: float | None = None  # wall clock of the last successful append
        try:
            self._open()
        except OSError as exc:
            self._failed(exc, "cannot open the spool")

    def _open(self) -> None:
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        self.committed = read_checkpoint(directory)
        segments = _segments(directory)
        if not segments:
            segments = [self.committed]
            (directory / _name(self.committed)).touch()
        self._segment_start = segments[-1]
        path = directory / _name(self._segment_start)
        size = self._truncate_torn_tail(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.end = self._segment_start + size
        if self.committed > self.end:  # a checkpoint ahead of the data: the data was lost or removed
            log.error(
                "spool checkpoint %d is past the end %d; restarting at the end", self.committed, self.end
            )
            self.committed = self.end

    def _failed(self, exc: OSError, what: str) -> SpoolWriteError:
        why = f"{what}: {exc.strerror or exc} ({self.directory})"
        if self.error is None:
            log.error("SPOOL ERROR: %s; the collectors stop taking data until it writes again", why)
            self.error_since = time.time()
        self.error = why
        self.write_errors += 1
        return SpoolWriteError(f"spool {self.directory}: {why}")

    def append(self, samples: Sequence[Sample]) -> int:
        """Append one frame; return the position after it. Raises SpoolFullError when over max_bytes and
        SpoolWriteError when the file system refuses (nothing of the frame stays in the file)."""
        frame = encode(samples)
        if self._fd is None:
            try:
                self._open()
            except OSError as exc:
                raise self._failed(exc, "cannot open the spool") from None
        if self.depth + len(frame) > self.max_bytes:
            self.refresh()  # the store writer may have committed meanwhile
            if self.depth + len(frame) > self.max_bytes:
                raise SpoolFullError(
                    f"spool {self.directory} is full "
                    f"({self.depth} of {self.max_bytes} bytes not yet in the store)"
                )
        try:
            if self.end - self._segment_start >= self.segment_bytes:
                fd = os.open(
                    self.directory / _name(self.end),
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                    0o644,
                )
                self._close_fd()
                self._fd, self._segment_start = fd, self.end
            self._write(frame)
        except OSError as exc:
            raise self._failed(exc, "cannot write") from None
        self.end += len(frame)
        if self.error is not None:
            log.warning(
                "the spool writes again after %.0f s: %s", time.time() - (self.error_since or 0), self.error
            )
            self.error = self.error_since = None
        self.last_append = time.time()
        return self.end

    def _write(self, frame: bytes) -> None:
        """Write the whole frame into the OS (it survives the death of this process), or nothing of it."""
        assert self._fd is not None
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            try:  # take back what part of the frame got in: a reader must never see half a frame for good
                os.ftruncate(self._fd, self.end - self._segment_start)
            except OSError:
                self._close_fd()  # reopening cuts the torn tail off (_truncate_torn_tail)
            raise

    def probe(self) -> str | None:
        """After a write error: None when the spool takes writes again (it could open its file, there is some
        free space, and an empty frame was written), else why not. Without an error: None."""
        if self.error is None:
            return None
        try:
            stat = os.statvfs(self.directory)
            if stat.f_bavail * stat.f_frsize < PROBE_FREE_BYTES:
                return f"{self.error} (still {stat.f_bavail * stat.f_frsize >> 10} KiB free)"
            self.append([])  # an empty frame: the reader skips it
        except SpoolWriteError:
            return self.error
        except OSError as exc:
            return f"{self.error} ({exc.strerror or exc})"
        return None

    def refresh(self) -> None:
        """Learn how far the store writer got (it commits in the checkpoint file)."""
        path = self.directory / "checkpoint"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        if mtime != self._checkpoint_mtime:
            self._checkpoint_mtime = mtime
            with contextlib.suppress(BioPilotError, OSError):
                self.committed = min(read_checkpoint(self.directory), self.end)

    def sync(self) -> None:
        """Make what was appended survive a power loss (fsync)."""
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._failed(exc, "cannot sync")

    @property
    def depth(self) -> int:
        """Bytes appended but not yet committed to the store (as of the last refresh)."""
        return self.end - self.committed

    @property
    def fill(self) -> float:
        return self.depth / self.max_bytes

    def close(self) -> None:
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _truncate_torn_tail(self, path: Path) -> int:
        """Length of the valid frames of a segment; a torn or corrupt tail is cut off (logged)."""
        valid, torn = 0, False
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


class SpoolReader:
    """The consuming side: one per spool at a time (it waits for the lock of a previous reader)."""

    def __init__(self, directory: Path, *, lock_timeout_s: float = 30.0) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        lock = directory / "reader.lock"
        try:
            self._lock = lock.open("a")
        except OSError:
            if not lock.exists():
                raise
            self._lock = lock.open("r")  # a read-only spool: still readable (an flock needs no write access)
        deadline = time.monotonic() + lock_timeout_s
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BioPilotError(f"{directory}: another store writer holds the spool") from None
                time.sleep(0.1)
        self.committed = read_checkpoint(directory)

    def read(self, start: int, max_rows: int = 20_000) -> list[tuple[int, list[Row]]]:
        """Complete frames from `start` on, as (position after the frame, rows), up to about max_rows.

        A frame still being written (at the end of the newest segment) is left for the next call; a
        corrupt frame inside an older segment is skipped with the rest of that segment (logged)."""
        out: list[tuple[int, list[Row]]] = []
        n = 0
        segments = _segments(self.directory)
        for i, seg in enumerate(segments):
            is_last = i == len(segments) - 1
            path = self.directory / _name(seg)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if seg + size <= start and not is_last:
                continue
            if start < seg:
                start = seg  # the end of the previous segment is the start of this one
            with path.open("rb") as f:
                f.seek(start - seg)
                pos = start
                while True:
                    header = f.read(_HEADER.size)
                    if len(header) < _HEADER.size:
                        break
                    length, crc = _HEADER.unpack(header)
                    payload = f.read(length)
                    if len(payload) < length:
                        break  # still being written
                    if zlib.crc32(payload) != crc:
                        log.error(
                            "spool %s: corrupt frame at %d; skipping the rest of the segment", path, pos
                        )
                        if is_last:
                            return out
                        break
                    pos += _HEADER.size + length
                    rows = [tuple(r) for r in json.loads(payload)]
                    out.append((pos, rows))  # type: ignore[arg-type]
                    n += len(rows)
                    if n >= max_rows:
                        return out
            if out:
                start = out[-1][0]
        return out

    def commit(self, position: int) -> None:
        """Everything before `position` is in the store: delete the segments no longer needed, then
        checkpoint it. Segments go first: on a full disk the checkpoint needs the space they free (a
        deleted segment was wholly in the store, and a reader starting from an older checkpoint skips to the
        first segment there is). OSError when the file system refuses: the position is committed again by
        the next call."""
        if position <= self.committed:
            return
        segments = _segments(self.directory)
        for seg, nxt in itertools.pairwise(segments):
            if nxt <= position:
                (self.directory / _name(seg)).unlink(missing_ok=True)
        tmp = self.directory / "checkpoint.tmp"
        tmp.write_text(str(position))
        tmp.replace(self.directory / "checkpoint")
        self.committed = position

    def end(self) -> int:
        """Position after the last byte in the spool files (complete frames or not)."""
        segments = _segments(self.directory)
        if not segments:
            return self.committed
        last = segments[-1]
        try:
            return last + (self.directory / _name(last)).stat().st_size
        except FileNotFoundError:
            return self.committed

    def close(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
