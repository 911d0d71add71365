"""The `biopilot` command. Logging handlers are set here and only here."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from biopilot import __version__
from biopilot.app.commands import MODULES
from biopilot.errors import BioPilotError
from biopilot.secrets import RedactingFilter


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `biopilot status | head` ends quietly, like any Unix tool
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except BioPilotError as exc:
        print(f"biopilot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="biopilot", description="BioPilot: the shared data record for pilot trials."
    )
    p.add_argument("--version", action="version", version=f"biopilot {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, including asyncua's")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.register(sub)
    return p


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:  # no secret reaches a log, -v included (biopilot.secrets)
        handler.addFilter(RedactingFilter())
    if not verbose:
        # asyncua logs every lost connection as an error with a traceback; the collector says it in one line
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        for name in ("amqtt", "transitions", "watchdog"):
            logging.getLogger(name).setLevel(logging.WARNING)
