"""What every command shares: the site config, the data directory, their options.

Which site config a command uses: --config, else the file named by BIOPILOT_CONFIG. Without either, a
command that only reads (runs list, kpis, status, the dashboard) or plays the demo (demo, simulate) uses
config/demo.toml and says so in one line on stderr; a command that writes a site's data (import, lab
import/add, runs create/edit/close, kpis --recompute, collect, process) asks for one instead, so a plant's
data never goes through the demo's config by accident."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from biopilot.config import SiteConfig, load_config
from biopilot.errors import BioPilotError

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA_DIR = Path("biopilot-data")
CONFIG_ENV = "BIOPILOT_CONFIG"


def default_config() -> Path:
    """config/demo.toml of the working directory, else the one beside the installed code."""
    local = Path("config/demo.toml")
    return local if local.exists() else REPO_ROOT / "config" / "demo.toml"


def add_config_options(sp: argparse.ArgumentParser, *, data: bool = True) -> None:
    sp.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"site config (default: ${CONFIG_ENV}; commands that only read fall back to config/demo.toml)",
    )
    if data:
        sp.add_argument(
            "--data-dir",
            type=Path,
            default=DEFAULT_DATA_DIR,
            help=f"where the embedded store and logs live (default: ./{DEFAULT_DATA_DIR})",
        )


def config_path(args: argparse.Namespace, *, writes: bool = False) -> Path:
    """The site config a command uses (see the module doc); BioPilotError when a writing command has none."""
    if getattr(args, "config", None) is not None:
        return Path(args.config)
    named = os.environ.get(CONFIG_ENV, "").strip()
    if named:
        return Path(named)
    if writes:
        raise BioPilotError(
            f"`biopilot {_command(args)}` writes a site's data: give its config with --config FILE or"
            f" {CONFIG_ENV}=FILE (the demo plant's is config/demo.toml)"
        )
    path = default_config()
    shown = path if not path.is_absolute() else _relative(path)
    print(f"biopilot: using {shown} (no --config or {CONFIG_ENV} given)", file=sys.stderr)
    return path


def site_config(args: argparse.Namespace, *, writes: bool = False) -> tuple[Path, SiteConfig]:
    path = config_path(args, writes=writes)
    return path, load_config(path)


def _command(args: argparse.Namespace) -> str:
    words = [str(getattr(args, "command", "") or "")]
    for attr in ("runs_command", "lab_command"):
        if getattr(args, attr, None):
            words.append(str(getattr(args, attr)))
    return " ".join(w for w in words if w)


def _relative(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def require_free_port(host: str, port: int, what: str, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise BioPilotError(
                f"port {port} on {host} is in use, so {what} cannot start there "
                f"(another BioPilot demo?); stop it or choose another with {option}"
            ) from None
