"""The manifest of an evidence pack and its verification.

manifest.json (format "biopilot-evidence-1") lists every other file of the pack with its SHA-256 and size,
with the trial id, the charter version and SHA-256, the verdict word, when and by which BioPilot version
the pack was generated. It cannot hold its own digest: that is printed when the pack is made and written
beside it as manifest.json.sha256, in the format of `sha256sum` (so `sha256sum -c manifest.json.sha256`
checks the manifest without BioPilot). `verify_pack` names every file changed, missing or added, and a
manifest that disagrees with its digest; with `expect` it also checks the digest published elsewhere (in
the catalog's audit log, or a mail that came with the pack).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from processing.evidence.errors import EvidenceError

PACK_FORMAT = "biopilot-evidence-1"
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.json.sha256"
PURPOSE = (
    "Every file of this evidence pack with its SHA-256 and size; manifest.json.sha256 holds this file's own "
    "SHA-256. Verify with: biopilot report verify DIR"
)


@dataclass(frozen=True)
class PackFile:
    path: str  # relative to the pack, '/'-separated
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class Manifest:
    """What `build_evidence_pack` wrote: the directory, the manifest's own SHA-256, and every file."""

    directory: Path
    sha256: str  # of manifest.json's bytes
    trial_id: str
    charter_version: int
    charter_sha256: str
    word: str
    generated: datetime
    biopilot_version: str
    files: tuple[PackFile, ...]

    def to_json(self) -> dict[str, Any]:
        """The manifest.json document."""
        return {
            "format": PACK_FORMAT,
            "purpose": PURPOSE,
            "trial": self.trial_id,
            "charter_version": self.charter_version,
            "charter_sha256": self.charter_sha256,
            "verdict": self.word,
            "generated": self.generated.isoformat(),
            "biopilot_version": self.biopilot_version,
            "files": [f.to_json() for f in self.files],
        }


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def digest_line(sha256: str) -> bytes:
    """manifest.json.sha256: one line as `sha256sum` writes it."""
    return f"{sha256}  {MANIFEST}\n".encode("ascii")


# -- verifying ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verification:
    directory: Path
    manifest_sha256: str | None
    checked: int  # files whose digest was compared
    problems: tuple[str, ...]  # one line each, naming the file

    @property
    def ok(self) -> bool:
        return not self.problems


def _files_under(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir())


def _safe(path: str) -> bool:
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and "\\" not in path


def verify_pack(directory: Path, *, expect: str | None = None) -> Verification:
    """Check an evidence pack against its manifest: every listed file present with its size and SHA-256,
    no file that is not listed, the manifest equal to manifest.json.sha256 (and to `expect`, a SHA-256 given
    from elsewhere). EvidenceError when the directory is not a pack at all."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EvidenceError(f"{directory}: not a directory")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise EvidenceError(
            f"{directory}: no {MANIFEST}, so not an evidence pack (or its manifest is missing)"
        )
    raw = manifest_path.read_bytes()
    digest = sha256_bytes(raw)
    problems: list[str] = []
    side = directory / MANIFEST_DIGEST
    if not side.is_file():
        problems.append(f"missing: {MANIFEST_DIGEST} (the manifest's own SHA-256)")
    else:
        text = side.read_bytes()
        if text != digest_line(digest):
            said = text.decode("ascii", "replace").split(" ", 1)[0].strip()
            problems.append(
                f"changed: {MANIFEST} or {MANIFEST_DIGEST}: the manifest's SHA-256 is {digest}, "
                f"{MANIFEST_DIGEST} says {said!r}"
            )
    if expect is not None and expect.lower() != digest:
        problems.append(f"changed: {MANIFEST}: its SHA-256 is {digest}, expected {expect.lower()}")
    try:
        doc = json.loads(raw.decode("utf-8"))
        files = doc["files"]
        if doc.get("format") != PACK_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {PACK_FORMAT!r}")
        listed = [(str(f["path"]), str(f["sha256"]), int(f["bytes"])) for f in files]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        problems.append(f"changed: {MANIFEST} cannot be read as a manifest ({type(exc).__name__}: {exc})")
        return Verification(directory, digest, 0, tuple(problems))
    seen: set[str] = set()
    checked = 0
    for path, sha, size in listed:
        if not _safe(path) or path in (MANIFEST, MANIFEST_DIGEST):
            problems.append(f"changed: {MANIFEST} lists {path!r}, which cannot be a file of the pack")
            continue
        if path in seen:
            problems.append(f"changed: {MANIFEST} lists {path} twice")
            continue
        seen.add(path)
        p = directory / path
        if not p.is_file():
            problems.append(f"missing: {path}")
            continue
        checked += 1
        actual_size = p.stat().st_size
        actual = sha256_file(p)
        if actual != sha or actual_size != size:
            problems.append(
                f"changed: {path} (SHA-256 {actual}, {actual_size} bytes; the manifest says {sha}, "
                f"{size} bytes)"
            )
    for path in _files_under(directory):
        if path not in seen and path not in (MANIFEST, MANIFEST_DIGEST):
            problems.append(f"extra: {path} (not in the manifest)")
    return Verification(directory, digest, checked, tuple(problems))


def list_files(directory: Path, skip: Sequence[str] = (MANIFEST, MANIFEST_DIGEST)) -> tuple[PackFile, ...]:
    """Every file under `directory` with its SHA-256 and size, sorted by path."""
    return tuple(
        PackFile(path, sha256_file(directory / path), (directory / path).stat().st_size)
        for path in _files_under(directory)
        if path not in skip
    )
