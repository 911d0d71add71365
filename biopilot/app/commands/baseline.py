"""`biopilot baseline …`: golden-batch envelopes and batch MSPC models from baseline runs, stored so live runs
are judged against them (processing/baseline.py; storage/references.py).

  biopilot baseline build --equipment F-101 [--product P] [--runs ID,ID,… | --kind baseline --since T
                          --until T] [--tags TAG,TAG,…] [--alignment landmarks|landmarks:P1,P2|inoculation]
                          [--components N] [--by NAME] [--json]
  biopilot baseline show [--equipment E] [--product P] [--json]

`build` selects the baseline runs by rule (processing.baseline.select_baseline_runs: closed runs of the
equipment and product, of the kind, started in [--since, --until)) or takes the runs named, reads their
series from the store at the grid's resolution, and stores an envelope per tag and an MSPC model (a rebuild
replaces them). Fewer than 3 runs are refused with the reason; with 3 or 4 the envelopes are stored and the
model is refused (it needs 5).

JSON (stable): build → {"equipment", "product", "runs": [ids], "alignment": {...}, "alignment_key", "grid":
{"start", "end", "step", "points"}, "envelopes": [summary], "model": summary or null, "refused": [reasons],
"computed", "computed_by"}; show → {"envelopes": [summary], "models": [summary]}, a summary being
storage.references.StoredEnvelope.to_json / StoredModel.to_json (equipment, product, tag or variables,
alignment, unit, runs, points, n_components, computed, computed_by).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from typing import Any

from biopilot.app.commands.common import add_config_options, site_config
from biopilot.app.commands.runs import KINDS, parse_time, require_run
from biopilot.errors import BioPilotError


def default_by() -> str:
    """Who is acting: $BIOPILOT_USER, else the login name."""
    return os.environ.get("BIOPILOT_USER") or getpass.getuser()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("baseline", help="golden-batch envelopes and MSPC models from baseline runs")
    bs = sp.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")

    b = bs.add_parser("build", help="build and store the envelopes and the MSPC model of baseline runs")
    add_config_options(b)
    b.add_argument("--equipment", required=True)
    b.add_argument("--product", default=None, help="product of the runs (default: the [[process]] product)")
    b.add_argument("--runs", default=None, help="run ids, comma-separated (instead of the rule)")
    b.add_argument("--kind", choices=KINDS, default="baseline", help="rule: runs of this kind (baseline)")
    b.add_argument("--since", default=None, help="rule: runs started at or after (ISO-8601; site time)")
    b.add_argument("--until", default=None, help="rule: runs started before (ISO-8601; site time)")
    b.add_argument("--tags", default=None, help="tags, comma-separated (default: the ten fermenter roles)")
    b.add_argument(
        "--alignment",
        default="landmarks",
        help="landmarks (default: the phases every run reached), landmarks:PHASE,PHASE… or inoculation",
    )
    b.add_argument("--components", type=int, default=None, help="MSPC components (default: cross-validation)")
    b.add_argument("--by", default=None, help="who builds them (default: $BIOPILOT_USER, else the login)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=_cmd_build)

    s = bs.add_parser("show", help="list the stored envelopes and MSPC models")
    add_config_options(s)
    s.add_argument("--equipment", default=None)
    s.add_argument("--product", default=None)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_cmd_show)


def _cmd_build(args: argparse.Namespace) -> int:
    from biopilot.config import process_spec
    from processing.baseline import alignment_key, build_references, select_baseline_runs
    from storage import open_catalog, open_store
    from storage.references import References

    _, config = site_config(args)
    try:
        config.equipment_by_id(args.equipment)
    except KeyError:
        known = ", ".join(e.id for e in config.equipment)
        raise BioPilotError(f"{args.equipment!r} is not a configured equipment id (known: {known})") from None
    product = args.product if args.product is not None else process_spec(config, args.equipment).product
    by = args.by or default_by()
    if args.runs and (args.since or args.until):
        raise BioPilotError("give either --runs or the rule (--kind, --since, --until), not both")
    store = open_store(config, args.data_dir, read_only=True)
    catalog = open_catalog(config, args.data_dir)
    try:
        if args.runs:
            runs = [require_run(catalog, r.strip()) for r in args.runs.split(",") if r.strip()]
        else:
            since = parse_time(args.since, config, "--since") if args.since else None
            until = parse_time(args.until, config, "--until") if args.until else None
            runs = select_baseline_runs(
                catalog.runs(args.equipment),
                equipment=args.equipment,
                product=product,
                kind=args.kind,
                since=since,
                until=until,
            )
            if not runs:
                window = f" started in [{args.since or '…'}, {args.until or '…'})" if since or until else ""
                raise BioPilotError(
                    f"no closed {args.kind} runs of {args.equipment} ({product or 'no product'}){window};"
                    f" mark runs with `biopilot runs edit RUN --kind {args.kind}`"
                )
        built = build_references(
            config,
            store.read_buckets,
            catalog.phases,
            equipment=args.equipment,
            runs=runs,
            tags=[t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None,
            alignment=args.alignment,
            n_components=args.components,
        )
        built.save(References(catalog.db), by)
    finally:
        catalog.close()
        store.close()
    g, a = built.grid, built.alignment
    key = alignment_key(a)
    if args.json:
        doc: dict[str, Any] = {
            "equipment": built.equipment,
            "product": built.product,
            "runs": list(built.runs),
            "alignment": a.to_json(),
            "alignment_key": key,
            "grid": {"start": float(g[0]), "end": float(g[-1]), "step": _step(g), "points": len(g)},
            "envelopes": [
                {"tag": e.tag, "unit": e.unit, "runs": list(e.runs), "points": len(e.grid)}
                for e in built.envelopes
            ],
            "model": None,
            "refused": list(built.refused),
            "computed": built.computed.isoformat(),
            "computed_by": by,
        }
        if built.model is not None:
            m = built.model
            doc["model"] = {
                "variables": list(m.variables),
                "runs": list(m.runs),
                "n_components": m.n_components,
                "components_by": m.components_by,
                "t2_limits": {str(k): v for k, v in m.t2_limits.items()},
                "spe_limits": {str(k): v for k, v in m.spe_limits.items()},
            }
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"baseline references of {built.equipment} ({built.product or 'no product'}) from {len(built.runs)}"
        f" runs: {', '.join(built.runs)}"
    )
    marks = (
        "; ".join(f"{n} at {t:.2f} h" for n, t in zip(a.landmarks, a.reference_h, strict=True))
        if a.landmarks
        else "time since inoculation"
    )
    print(f"  alignment  {key} ({marks})")
    print(f"  grid       {g[0]:g} to {g[-1]:g} {a.unit} every {_step(g):g} {a.unit} ({len(g)} points)")
    print(f"  envelopes  {len(built.envelopes)}: {', '.join(e.tag for e in built.envelopes) or 'none'}")
    if built.model is not None:
        m = built.model
        print(
            f"  MSPC model {len(m.variables)} variables, {m.n_components} components ({m.components_by});"
            f" 99 % limits: T² {m.t2_limits[0.99]:.3g}, SPE {m.spe_limits[0.99]:.3g}"
        )
    for why in built.refused:
        print(f"  not built  {why}")
    print(f"stored, computed by {by} at {built.computed:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def _step(g: Any) -> float:
    return float(g[1] - g[0]) if len(g) > 1 else 0.0


def _cmd_show(args: argparse.Namespace) -> int:
    from storage import open_catalog
    from storage.references import References

    _, config = site_config(args)
    catalog = open_catalog(config, args.data_dir)
    try:
        refs = References(catalog.db)
        envelopes = refs.envelopes(args.equipment, args.product, docs=False)
        models = refs.models(args.equipment, args.product)
    finally:
        catalog.close()
    if args.json:
        print(
            json.dumps(
                {"envelopes": [e.to_json() for e in envelopes], "models": [m.to_json() for m in models]},
                indent=2,
            )
        )
        return 0
    if not envelopes and not models:
        print(
            "no baseline references stored; build them with `biopilot baseline build --equipment EQUIPMENT`"
        )
        return 0
    groups = sorted(
        {(e.equipment, e.product) for e in envelopes} | {(m.equipment, m.product) for m in models}
    )
    for eq, product in groups:
        print(f"{eq} · {product or 'no product'}")
        for m in (m for m in models if (m.equipment, m.product) == (eq, product)):
            print(
                f"  MSPC model  {len(m.variables)} variables, {m.n_components} components,"
                f" {len(m.runs)} runs, {m.points} points, {m.alignment};"
                f" computed {m.computed:%Y-%m-%d %H:%M} UTC by {m.computed_by}"
            )
        mine = [e for e in envelopes if (e.equipment, e.product) == (eq, product)]
        for key in sorted({e.alignment for e in mine}):
            print(f"  envelopes   {key}")
            for e in (e for e in mine if e.alignment == key):
                print(
                    f"    {e.tag:28} {e.unit:8} {len(e.runs)} runs, {e.points} points;"
                    f" computed {e.computed:%Y-%m-%d %H:%M} UTC by {e.computed_by}"
                )
    return 0
