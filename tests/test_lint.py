"""ruff (lint and format) is part of the test command, so CI holds the code to it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.skip("ruff is not installed (pip install -e '.[test]')")


def test_ruff_check() -> None:
    result = subprocess.run([*_ruff(), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = subprocess.run([*_ruff(), "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contract() -> None:
    """Dependencies point one way (pyproject.toml [tool.importlinter]): kernel -> storage -> {collectors,
    processing, simulators} -> {dashboard, shell}."""
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout, whatever the venv's editable install
    result = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contract_lists_every_kernel_module() -> None:
    """A kernel module added to biopilot/ must be in the kernel's forbidden contract, or it could import
    the application unnoticed."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    kernel = next(c for c in config["contracts"] if c["type"] == "forbidden")
    modules = {
        f"biopilot.{p.stem}"
        for p in (REPO / "biopilot").glob("*.py")
        if p.stem not in ("__init__", "__main__")
    }
    modules |= {f"biopilot.{p.name}" for p in (REPO / "biopilot").iterdir() if (p / "__init__.py").exists()}
    assert modules - {"biopilot.app"} == set(kernel["source_modules"])
