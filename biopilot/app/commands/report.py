"""`biopilot report verify DIR`: check an evidence pack against its manifest, naming every file changed,
missing or added (exit 1), or say it is intact (exit 0). `--expect SHA256` also checks the manifest's own
digest against one published elsewhere.

`biopilot report TRIAL --out DIR` (the pack of a trial from the catalog) comes with the trials' catalog
tables. Until then the hidden `biopilot report build-json INPUTS --out DIR` builds a pack from an inputs
file (processing.evidence.inputs, format "biopilot-evidence-inputs-1") for testing and review.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from biopilot.errors import BioPilotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("report", help="evidence packs of trials: verify one")
    rsub = sp.add_subparsers(dest="report_command", required=True, metavar="{verify}")
    v = rsub.add_parser(
        "verify",
        help="check every file of an evidence pack against its manifest",
        description="Check every file of an evidence pack against manifest.json: names any file changed, "
        "missing or added; exit 0 when intact, 1 when not.",
    )
    v.add_argument("dir", type=Path, help="the pack's directory (it holds manifest.json)")
    v.add_argument("--expect", metavar="SHA256", help="the manifest's SHA-256 as published with the pack")
    v.set_defaults(func=_cmd_verify)
    b = rsub.add_parser("build-json")  # hidden (not in the metavar): a pack from an inputs JSON file
    b.add_argument("inputs", type=Path)
    b.add_argument("--out", type=Path, required=True)
    b.set_defaults(func=_cmd_build_json)


def _cmd_verify(args: argparse.Namespace) -> int:
    from processing.evidence import verify_pack

    result = verify_pack(args.dir, expect=args.expect)
    print(f"manifest SHA-256 {result.manifest_sha256}")
    for problem in result.problems:
        print(problem)
    if result.ok:
        print(f"{args.dir}: intact, {result.checked} files match the manifest")
        return 0
    n = len(result.problems)
    print(f"{args.dir}: NOT intact, {n} problem{'s' if n > 1 else ''}")
    return 1


def _cmd_build_json(args: argparse.Namespace) -> int:
    from processing.evidence import build_evidence_pack, inputs_from_json

    try:
        doc = json.loads(args.inputs.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BioPilotError(f"{args.inputs}: file not found") from None
    except (OSError, ValueError) as exc:
        raise BioPilotError(f"{args.inputs}: cannot read as JSON ({exc})") from None
    manifest = build_evidence_pack(inputs_from_json(doc), args.out)
    print(f"evidence pack of trial {manifest.trial_id} in {args.out}: {manifest.word}")
    print(f"manifest SHA-256 {manifest.sha256}")
    return 0
