"""`biopilot report TRIAL --out DIR`: the evidence pack of a trial from the catalog (PDF, CSV and Parquet of
every number, the charter versions, the verdict JSON, a manifest of SHA-256 per file), judged as `biopilot
verdict TRIAL` judges it. For an admin (and an operator of the baseline's equipment) the pack lists every
run; for a startup or a partner the baseline is in it as aggregates only (baseline runs named by their place,
no single baseline run's value), as in `biopilot verdict`.

`biopilot report verify DIR`: check an evidence pack against its manifest, naming every file changed,
missing or added (exit 1), or say it is intact (exit 0). `--expect SHA256` also checks the manifest's own
digest against one published elsewhere.

The hidden `biopilot report build-json INPUTS --out DIR` builds a pack from an inputs file
(processing.evidence.inputs, format "biopilot-evidence-inputs-1") for testing and review.

(One parser: the first word is `verify`, `build-json` or a trial id, so a trial cannot be called `verify`.)
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from biopilot.app.commands.acting import acting_viewer, add_user_option, query_for
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.app.commands.verdict import require_judgeable
from biopilot.errors import BioPilotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser(
        "report",
        help="evidence packs of trials: build one (TRIAL --out DIR), verify one (verify DIR)",
        description="biopilot report TRIAL --out DIR: write the evidence pack of a trial. "
        "biopilot report verify DIR [--expect SHA256]: check every file of a pack against manifest.json "
        "(names any file changed, missing or added; exit 0 when intact, 1 when not).",
        usage="biopilot report TRIAL --out DIR | biopilot report verify DIR [--expect SHA256]",
    )
    sp.add_argument("target", metavar="TRIAL|verify", help="a trial id, or `verify`")
    sp.add_argument("dir", type=Path, nargs="?", help="verify: the pack's directory (it holds manifest.json)")
    sp.add_argument("--out", type=Path, help="TRIAL: a new (or empty) directory for the pack")
    sp.add_argument("--expect", metavar="SHA256", help="verify: the manifest's SHA-256 as published")
    add_config_options(sp)
    add_user_option(sp)
    sp.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    if args.target == "verify":
        if args.dir is None:
            raise BioPilotError("report verify: give the pack's directory, `biopilot report verify DIR`")
        return _cmd_verify(args)
    if args.target == "build-json":
        if args.dir is None or args.out is None:
            raise BioPilotError("report build-json INPUTS --out DIR")
        args.inputs = args.dir
        return _cmd_build_json(args)
    if args.dir is not None:
        raise BioPilotError(f"report {args.target}: give the pack's directory as --out {args.dir}")
    if args.out is None:
        raise BioPilotError(f"report {args.target}: say where the pack goes, --out DIR (a new directory)")
    return _cmd_trial(args)


def _cmd_trial(args: argparse.Namespace) -> int:
    from storage import open_catalog, open_store

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # fpdf2's font subsetting chatters at INFO
    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    store = open_store(config, args.data_dir, read_only=True)
    try:
        viewer = acting_viewer(args, catalog)
        query = query_for(viewer, config, catalog, store)
        trial_id = args.target
        require_judgeable(query, trial_id)
        manifest = query.evidence_pack(trial_id, args.out)
        assert manifest is not None
        catalog.audit.append(
            viewer.name,
            "trial.report",
            trial_id,
            why="evidence pack",
            out=str(args.out),
            manifest_sha256=manifest.sha256,
            word=manifest.word,
        )
    finally:
        catalog.close()
        store.close()
    print(f"evidence pack of trial {trial_id} in {args.out}: {manifest.word}")
    print(f"manifest SHA-256 {manifest.sha256}  (`biopilot report verify {args.out}` checks it)")
    return 0


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
