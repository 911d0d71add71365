"""The evidence pack of a trial (issue 10, item 8): what a partner takes to a board.

`build_evidence_pack(inputs, out_dir) -> Manifest` writes, from an `EvidenceInputs` (everything the pack
shows, no store needed):

  evidence.pdf                 the report: title page with the verdict, the charter and its history, the
                               verdict per KPI with its intervals, the runs with KPIs, coverage and flags,
                               the baseline's individuals chart, money as ranges, exclusions, data sources
  verdict.json                 the verdict's JSON (processing.verdict.verdict_to_json)
  charter/v<N>.json            each charter version's canonical JSON (its SHA-256 is the version's)
  data/<table>.csv, .parquet   every number in the PDF and the runs' KPI inputs (processing.evidence.tables);
  data/tables.json             what each table and column means
  manifest.json                every file above with its SHA-256 and size, the trial, the charter's
                               SHA-256, the verdict word, the generated time and BioPilot version
  manifest.json.sha256         the manifest's own SHA-256 (`sha256sum -c` reads it)

`verify_pack(dir)` (the CLI's `biopilot report verify DIR`) names every file changed, missing or added.

The seam: tables.py gathers the numbers (and writes them as CSV/Parquet); charts.py, document.py (the PDF's
building blocks) and pdf.py (its pages) draw them; manifest.py seals and verifies; pack.py puts it together.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Loaded on first use, so `biopilot report verify` (manifest only) does not import matplotlib, fpdf2, scipy.
_EXPORTS = {
    "CharterVersion": "inputs",
    "EvidenceInputs": "inputs",
    "RunSource": "inputs",
    "inputs_from_json": "inputs",
    "inputs_to_json": "inputs",
    "EvidenceError": "errors",
    "Manifest": "manifest",
    "PackFile": "manifest",
    "Verification": "manifest",
    "verify_pack": "manifest",
    "build_evidence_pack": "pack",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"processing.evidence.{_EXPORTS[name]}"), name)
