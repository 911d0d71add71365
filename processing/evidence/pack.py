"""`build_evidence_pack`: an evidence pack written to a directory (the layout is in the package docstring).

Deterministic apart from the generated time: the same inputs give the same bytes in every file but the PDF
and the manifest (and those too for the same `generated`)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from biopilot import __version__
from processing.evidence import pdf
from processing.evidence.errors import EvidenceError
from processing.evidence.inputs import EvidenceInputs
from processing.evidence.manifest import (
    MANIFEST,
    MANIFEST_DIGEST,
    Manifest,
    digest_line,
    list_files,
    manifest_bytes,
    sha256_bytes,
)
from processing.evidence.tables import Table, gather, schema_doc, write_csv, write_parquet
from processing.verdict import hide_runs, verdict_to_json

log = logging.getLogger(__name__)

PDF_NAME = "evidence.pdf"
HIDDEN_NOTE = (
    "runs the reader may not see are named by their place (baseline run K); the canonical JSON, whose "
    "SHA-256 is {sha256}, names them by id and is kept by the host plant"
)


def build_evidence_pack(
    inputs: EvidenceInputs,
    out_dir: Path,
    *,
    generated: datetime | None = None,
    biopilot_version: str = __version__,
) -> Manifest:
    """Write the evidence pack of `inputs` into `out_dir` (created; it must not exist or be empty) and
    return its manifest. The pack is built in a temporary directory beside `out_dir` and renamed into
    place, so a failed build leaves nothing half-written. generated: the time the pack is dated (default
    now, UTC)."""
    out_dir = Path(out_dir)
    generated = (generated or datetime.now(UTC)).astimezone(UTC)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise EvidenceError(f"{out_dir}: exists and is not an empty directory; give a new one for the pack")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        manifest = _write(inputs, work, generated, biopilot_version)
        if out_dir.exists():
            out_dir.rmdir()
        work.replace(out_dir)
        out_dir.chmod(0o755)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info(
        "evidence pack of trial %s in %s, manifest SHA-256 %s", inputs.trial_id, out_dir, manifest.sha256
    )
    return replace(manifest, directory=out_dir)


def _write(inputs: EvidenceInputs, work: Path, generated: datetime, biopilot_version: str) -> Manifest:
    v = inputs.verdict
    verdict_json = verdict_to_json(v)
    charter = v.charter.model_dump(mode="json")
    if inputs.hidden:  # the baseline as aggregates: no hidden run's id, row or value anywhere in the pack
        verdict_json = hide_runs(verdict_json, dict(inputs.hidden))
        charter = _hide_in_charter(charter, inputs.hidden)
    tables = gather(inputs, verdict_json)
    if inputs.hidden:
        tables = {name: _hide_rows(t, inputs.hidden) for name, t in tables.items()}
    (work / "verdict.json").write_bytes(
        (json.dumps(verdict_json, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    )
    (work / "charter").mkdir()
    for cv in inputs.charter_versions:
        if inputs.hidden:  # the canonical JSON names baseline runs: the charter's keys without them
            doc = json.loads(cv.canonical_json)
            doc["charter"] = _hide_in_charter(doc["charter"], inputs.hidden)
            doc["note"] = HIDDEN_NOTE.format(sha256=cv.sha256)
            text = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False)
            (work / "charter" / f"v{cv.version}-runs-by-place.json").write_bytes(text.encode("utf-8"))
        else:
            (work / "charter" / f"v{cv.version}.json").write_bytes(cv.canonical_json.encode("utf-8"))
    data = work / "data"
    data.mkdir()
    for t in tables.values():
        write_csv(t, data / f"{t.name}.csv")
        write_parquet(t, data / f"{t.name}.parquet")
    (data / "tables.json").write_bytes(
        (json.dumps(schema_doc(tables), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    )
    data_files = [(f.path, f.sha256, f.bytes) for f in list_files(work)]
    (work / PDF_NAME).write_bytes(
        pdf.render(
            tables,
            verdict_json,
            trial_id=inputs.trial_id,
            site=inputs.site,
            charter=charter,
            generated=generated,
            biopilot_version=biopilot_version,
            data_files=data_files,
        )
    )
    manifest = Manifest(
        directory=work,
        sha256="",
        trial_id=inputs.trial_id,
        charter_version=v.charter_version,
        charter_sha256=v.charter_sha256,
        word=v.word,
        generated=generated,
        biopilot_version=biopilot_version,
        files=list_files(work),
    )
    raw = manifest_bytes(manifest.to_json())
    (work / MANIFEST).write_bytes(raw)
    digest = sha256_bytes(raw)
    (work / MANIFEST_DIGEST).write_bytes(digest_line(digest))
    return replace(manifest, sha256=digest)


def _hide_in_charter(charter: dict[str, Any], hidden: Mapping[str, str]) -> dict[str, Any]:
    out = dict(charter)
    for key in ("baseline_runs", "trial_runs"):
        out[key] = [hidden.get(r, r) for r in out.get(key) or []]
    return out


def _hide_rows(t: Table, hidden: Mapping[str, str]) -> Table:
    """A table without the rows of hidden runs (the exclusions keep theirs, the run named by its place)."""
    names = [c.name for c in t.columns]
    if "run" not in names:
        return t
    i = names.index("run")
    if t.name == "exclusions":
        rows = tuple((*r[:i], hidden.get(r[i], r[i]), *r[i + 1 :]) for r in t.rows)
    else:
        rows = tuple(r for r in t.rows if r[i] not in hidden)
    return replace(t, rows=rows)
