"""Which site config a command uses: --config, else $BIOPILOT_CONFIG; without either, a command that only
reads says in one line that it uses config/demo.toml, and a command that writes a site's data asks for one
(biopilot/app/commands/common.py). Through the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTICE = "biopilot: using config/demo.toml (no --config or BIOPILOT_CONFIG given)"


def biopilot(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "BIOPILOT_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "biopilot", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
    )


def test_a_reading_command_says_which_config_it_used(tmp_path: Path) -> None:
    result = biopilot("runs", "list", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [NOTICE]
    assert result.stdout.strip() == "no runs yet"


@pytest.mark.parametrize(
    "argv",
    [
        ["import", "x.csv", "--equipment", "F-101"],
        ["kpis", "--recompute", "F-101:B-1"],
        ["lab", "add", "F-101:B-1", "--time", "2024-01-01T00:00", "--analyte", "titer", "--value", "1"],
        ["runs", "create", "--equipment", "F-101", "--batch", "B-1", "--start", "2024-01-01T00:00"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_writing_command_asks_for_a_config(argv: list[str], tmp_path: Path) -> None:
    result = biopilot(*argv, "--data-dir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "writes a site's data: give its config with --config FILE or BIOPILOT_CONFIG=FILE" in lines[0]
    assert not (tmp_path / "biopilot.db").exists()


def test_biopilot_config_names_the_file_without_a_notice(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    text = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    site.write_text(text.replace('name = "Pilot Hall (simulated)"', 'name = "Hall 9"', 1), encoding="utf-8")
    result = biopilot(
        "runs",
        "create",
        "--equipment",
        "F-101",
        "--batch",
        "B-1",
        "--start",
        "2024-01-01T00:00",
        "--data-dir",
        str(tmp_path / "data"),
        env={"BIOPILOT_CONFIG": str(site)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "created run F-101:B-1" in result.stdout
