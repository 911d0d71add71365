"""`biopilot import FILE --equipment EQ`: a historian export (wide or long CSV, Parquet) becomes a run,
or is added to a named run; its KPIs are computed at once (final: an imported run is closed).

What it refuses and why, and how an interrupted import is rolled back or finished: storage/importers.py.
The counts it prints are what the store holds of the file: one sample per tag and time."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from biopilot.app.commands.acting import acting_viewer, add_user_option, require_equipment
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.app.commands.runs import KINDS, parse_time


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("import", help="import a historian export (CSV wide/long, Parquet) as a run")
    add_config_options(sp)
    add_user_option(sp)
    sp.add_argument("file", type=Path)
    sp.add_argument("--equipment", required=True)
    sp.add_argument("--run-id", default=None, help="batch id or EQUIPMENT:BATCH (default: the file's name)")
    sp.add_argument("--kind", choices=KINDS, default="baseline", help="default: baseline")
    sp.add_argument("--trial", default=None, help="trial id")
    sp.add_argument("--mapping", type=Path, default=None, help="TOML mapping (keys of [historian])")
    sp.add_argument("--start", default=None, help="start time for elapsed-hours files (ISO-8601)")
    sp.add_argument("--skip-bad-rows", action="store_true", help="import the rest of a file with bad rows")
    sp.add_argument(
        "--replace",
        action="store_true",
        help="the file may overlap other runs of the equipment: its samples replace theirs (their KPIs are"
        " recomputed)",
    )
    sp.add_argument("--no-kpis", action="store_true", help="do not compute the run's KPIs now")
    sp.set_defaults(func=_cmd_import)


class _Bar:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        share = done / total if total else 1.0
        bar = "█" * int(share * 30)
        print(f"\r{stage:5} [{bar:30}] {share:4.0%}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print("\r" + " " * 50 + "\r", end="", file=sys.stderr, flush=True)


def _cmd_import(args: argparse.Namespace) -> int:
    from storage import RunArchive, open_catalog, open_store
    from storage.importers import import_historian, load_mapping

    _, config = site_config(args, writes=True)
    mapping = load_mapping(args.mapping) if args.mapping else None
    start = parse_time(args.start, config, "--start") if args.start else None
    if mapping is not None and mapping.time_format == "elapsed_h" and start is None:
        from biopilot.errors import BioPilotError

        raise BioPilotError(f"{args.mapping}: elapsed hours need --start (the time of hour 0)")
    store = open_store(config, args.data_dir)
    catalog = open_catalog(config, args.data_dir)
    bar = _Bar()
    t0 = time.monotonic()
    try:
        viewer = acting_viewer(args, catalog)
        require_equipment(viewer, args.equipment, "import runs")
        result = import_historian(
            args.file,
            config,
            store,
            catalog,
            equipment=args.equipment,
            run_id=args.run_id,
            kind=args.kind,
            trial_id=args.trial,
            mapping=mapping,
            start=start,
            skip_bad_rows=args.skip_bad_rows,
            replace=args.replace,
            progress=bar,
        )
        bar.done()
        took = time.monotonic() - t0
        run = result.run
        again = " (imported before: samples replaced, none duplicated)" if result.reimport else ""
        tags = f"{len(result.tags)} tag{'s' if len(result.tags) != 1 else ''}"
        print(
            f"imported {args.file.name}: {result.rows:,} rows, {result.samples:,} samples of {tags} stored in"
            f" run {run.id} ({run.kind}) in {took:.1f} s{again}"
        )
        catalog.audit.append(
            viewer.name,
            "run.import",
            run.id,
            file=args.file.name,
            sha256=result.sha256,
            rows=result.rows,
            samples=result.samples,
            kind=run.kind,
            trial=run.trial_id,
            replaced=list(result.replaced_runs),
        )
        for line in _notes(result):
            print(f"  {line}")
        if not args.no_kpis:
            from processing.service import Processing

            processing = Processing(config, store, catalog)
            records = processing.update_run(run)
            print(
                f"computed {len(records)} KPIs in {time.monotonic() - t0 - took:.1f} s: "
                f"`biopilot kpis {run.id}` shows them"
            )
            for rid in result.replaced_runs:
                other = catalog.run(rid)
                if other is not None:
                    processing.update_run(other)
                    print(f"recomputed the KPIs of {rid}: this file replaced its samples in the overlap")
        elif result.replaced_runs:
            print(
                f"the KPIs of {', '.join(result.replaced_runs)} are flagged stale: this file replaced samples"
                " in their window; `biopilot kpis --recompute RUN` updates them"
            )
        if isinstance(store, RunArchive) and run.end is not None:
            # the closed run goes to the Parquet archive now (an archived run it replaced samples of reads
            # them at once as late samples; processing folds them into its files)
            archived = store.archive_run(run, [t.name for t in config.tags_of(run.equipment)])
            print(f"archived run {run.id} as Parquet: {archived.rows:,} samples in {archived.seconds:.1f} s")
    finally:
        bar.done()
        catalog.close()
        store.close()
    return 0


def _notes(result) -> list[str]:  # type: ignore[no-untyped-def]
    """What the import did besides storing samples, one line each."""
    out = []
    if result.duplicates:
        n = result.duplicates
        plural = "s" if n > 1 else ""
        out.append(f"collapsed {n:,} identical duplicate sample{plural} (same tag, time and value)")
    if result.bad_count:
        out.append(
            f"skipped {result.bad_count:,} bad value{'s' if result.bad_count > 1 else ''}: "
            + "; ".join(str(b) for b in result.bad_rows[:5])
            + (" …" if result.bad_count > 5 else "")
        )
    if result.missing_columns:
        out.append(
            "missing from the file (mapped, not imported; the KPIs that need them say missing_input): "
            + ", ".join(result.missing_columns)
        )
    if result.ignored_columns:
        shown = result.ignored_columns[:20]
        more = f" and {len(result.ignored_columns) - 20} more" if len(result.ignored_columns) > 20 else ""
        out.append("not imported (no configured tag of this equipment): " + ", ".join(shown) + more)
    if result.replaced_runs:
        out.append(f"replaced (--replace) samples of: {', '.join(result.replaced_runs)}")
    return out
