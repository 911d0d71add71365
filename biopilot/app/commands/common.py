"""What every command shares: the site config, the data directory, their options."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from biopilot.config import SiteConfig, load_config
from biopilot.errors import BioPilotError

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA_DIR = Path("biopilot-data")


def default_config() -> Path:
    """config/demo.toml of the working directory, else the one beside the installed code."""
    local = Path("config/demo.toml")
    return local if local.exists() else REPO_ROOT / "config" / "demo.toml"


def add_config_options(sp: argparse.ArgumentParser, *, data: bool = True) -> None:
    sp.add_argument("--config", type=Path, default=None, help="site config (default: config/demo.toml)")
    if data:
        sp.add_argument(
            "--data-dir",
            type=Path,
            default=DEFAULT_DATA_DIR,
            help=f"where the embedded store and logs live (default: ./{DEFAULT_DATA_DIR})",
        )


def site_config(args: argparse.Namespace) -> tuple[Path, SiteConfig]:
    path = args.config or default_config()
    return path, load_config(path)


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
