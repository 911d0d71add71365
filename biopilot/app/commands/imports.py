"""`biopilot import FILE --equipment EQ`: a historian export (wide or long CSV, Parquet) becomes a run,
or is added to a named run; its KPIs are computed at once (final: an imported run is closed)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from biopilot.app.commands.common import add_config_options, site_config
from biopilot.app.commands.runs import KINDS, parse_time


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("import", help="import a historian export (CSV wide/long, Parquet) as a run")
    add_config_options(sp)
    sp.add_argument("file", type=Path)
    sp.add_argument("--equipment", required=True)
    sp.add_argument("--run-id", default=None, help="batch id or EQUIPMENT:BATCH (default: the file's name)")
    sp.add_argument("--kind", choices=KINDS, default="baseline", help="default: baseline")
    sp.add_argument("--trial", default=None, help="trial id")
    sp.add_argument("--mapping", type=Path, default=None, help="TOML mapping (keys of [historian])")
    sp.add_argument("--start", default=None, help="start time for elapsed-hours files (ISO-8601)")
    sp.add_argument("--skip-bad-rows", action="store_true", help="import the rest of a file with bad rows")
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

    _, config = site_config(args)
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
            progress=bar,
        )
        bar.done()
        took = time.monotonic() - t0
        run = result.run
        again = " (imported before: samples replaced, none duplicated)" if result.reimport else ""
        print(
            f"imported {args.file.name}: {result.rows:,} rows, {result.samples:,} samples of "
            f"{len(result.tags)} tags into run {run.id} ({run.kind}) in {took:.1f} s{again}"
        )
        if result.bad_rows:
            print(
                f"skipped {len(result.bad_rows)} bad values: "
                + "; ".join(str(b) for b in result.bad_rows[:5])
            )
        if result.ignored_columns:
            print("not imported (no configured tag of this equipment): " + ", ".join(result.ignored_columns))
        if not args.no_kpis:
            from processing.service import Processing

            records = Processing(config, store, catalog).update_run(run)
            print(
                f"computed {len(records)} KPIs in {time.monotonic() - t0 - took:.1f} s: "
                f"`biopilot kpis {run.id}` shows them"
            )
        if isinstance(store, RunArchive) and run.end is not None:
            archived = store.archive_run(run, [t.name for t in config.tags_of(run.equipment)])
            print(f"archived run {run.id} as Parquet: {archived.rows:,} samples in {archived.seconds:.1f} s")
    finally:
        bar.done()
        catalog.close()
        store.close()
    return 0
