"""`biopilot verdict TRIAL [--json]`: the trial's verdict by its locked charter (the newest version), over
the KPI records of its trial runs and of the baseline runs frozen when the charter was locked.

`--json` prints the stable verdict JSON (format "biopilot-verdict-1", documented in processing/verdict.py and
the README: "word", "reason", "charter_version", "charter_sha256", "primary" and "secondary" KPI objects with
"kpi", "n_trial", "n_baseline", "mean_trial", "mean_baseline", "difference", "difference_pct", "ci",
"ci_pct", "p_welch", "p_permutation", "hedges_g", "mde_pct", "excluded", …). A startup or a partner (or an
operator of other equipment) gets the baseline as aggregates: no baseline run ids (named "baseline run K")
and no baseline run's value. Exit 0 with a verdict, 2 with an error (no such trial, no locked charter).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from biopilot.app.commands.acting import acting_viewer, add_user_option, not_found, query_for
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.errors import BioPilotError

if TYPE_CHECKING:
    from processing.queries import Query


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("verdict", help="a trial's verdict against its baseline, by its locked charter")
    add_config_options(sp)
    add_user_option(sp)
    sp.add_argument("trial", help="trial id")
    sp.add_argument("--json", action="store_true", help="the stable verdict JSON")
    sp.set_defaults(func=_cmd_verdict)


def require_judgeable(query: Query, trial_id: str) -> None:
    """BioPilotError naming the fix unless the acting user sees the trial and its charter is locked (what a
    verdict, and an evidence pack, needs)."""
    if query.trial(trial_id) is None:
        raise not_found("trial", trial_id, "`biopilot trials list` shows yours")
    record = query.charter(trial_id)
    if record is None or not record.locked:
        raise BioPilotError(
            f"trial {trial_id} has no locked charter, so no verdict: `biopilot trials lock {trial_id}` "
            "(an admin; the charter comes first: `trials charter-edit` when there is none)"
        )


def trial_verdict(args: argparse.Namespace, trial_id: str) -> dict[str, Any]:
    """The verdict JSON for the acting user; BioPilotError naming the fix when there is none."""
    from storage import open_catalog, open_store

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    store = open_store(config, args.data_dir, read_only=True)
    try:
        query = query_for(acting_viewer(args, catalog), config, catalog, store)
        require_judgeable(query, trial_id)
        doc = query.verdict(trial_id)
    finally:
        catalog.close()
        store.close()
    assert doc is not None
    return doc


def _cmd_verdict(args: argparse.Namespace) -> int:
    doc = trial_verdict(args, args.trial)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print(render_text(args.trial, doc))
    return 0


def _g(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}g}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:+.1f} %"


def _pair(p: list[float | None] | None, pct: bool = False) -> str:
    if not p or p[0] is None or p[1] is None:
        return "—"
    return f"[{_pct(p[0])}, {_pct(p[1])}]" if pct else f"[{_g(p[0])}, {_g(p[1])}]"


def render_text(trial_id: str, doc: dict[str, Any]) -> str:
    lines = [
        f"trial {trial_id} · {doc['title']}",
        f"charter version {doc['charter_version']} (SHA-256 {doc['charter_sha256']}): {doc['hypothesis']} "
        f"by {doc['margin']:g} {doc['margin_unit']}, α = {doc['alpha']:g}",
        "",
        f"VERDICT: {doc['word'].upper()}",
        f"  {doc['reason']}",
        "",
    ]
    for k in [doc["primary"], *doc["secondary"]]:
        lines.append(f"{k['role']:9} {k['kpi']} [{k['unit']}] ({k['direction']} is better): {k['word']}")
        if k["n_trial"] or k["n_baseline"]:
            lines.append(
                f"  trial n={k['n_trial']} mean {_g(k['mean_trial'])}   baseline n={k['n_baseline']} mean "
                f"{_g(k['mean_baseline'])}"
            )
            lines.append(
                f"  difference {_g(k['difference'])} {_pair(k['ci'])}  = {_pct(k['difference_pct'])} "
                f"{_pair(k['ci_pct'], pct=True)} at {k['ci_level'] * 100:g} %"
            )
            lines.append(
                f"  p Welch {_g(k['p_welch'], 3)}, p permutation {_g(k['p_permutation'], 3)}, Hedges g "
                f"{_g(k['hedges_g'], 3)}, MDE ±{_g(k['mde_pct'], 3)} %"
            )
        for u in k["unusable"]:
            lines.append(f"  not usable: {u['run']} {u['problem']}")
    money = doc.get("money")
    if money:
        lines.append("")
        diff = money.get("saving_per_kg")
        if diff:
            lines.append(
                f"money: saving {_g(diff.get('low'))} to {_g(diff.get('high'))} €/kg of product "
                f"({money['level'] * 100:g} % interval)"
            )
        annual = money.get("annual_savings")
        if annual:
            lines.append(f"  annual savings {_g(annual.get('low'))} to {_g(annual.get('high'))} €")
        if money.get("reason"):
            lines.append(f"  {money['reason']}")
    if doc["exclusions"]:
        lines.append("")
        for e in doc["exclusions"]:
            lines.append(f"excluded {e['run']}: {e['reason']} ({e['by']}, {e['at']})")
        w = doc.get("without_exclusions")
        if w:
            lines.append(f"  without the exclusions: {w['word']} — {w['reason']}")
    if doc["warnings"]:
        lines.append("")
        lines += [f"WARNING: {w}" for w in doc["warnings"]]
    return "\n".join(lines)
