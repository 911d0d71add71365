"""`biopilot simulate`: the command line of historical mode, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biopilot.app.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "config" / "demo.toml")


def test_historical_runs_as_csv_with_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        '[scenario]\nname = "cli"\nsample_interval_s = 600.0\n[fermenter]\nt_fed_batch = 4.0\n'
    )
    out = tmp_path / "out"
    code = main(
        [
            "simulate",
            "--config",
            DEMO,
            "--scenario",
            str(scenario),
            "--historical",
            "--runs",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    assert "simulated 2 runs" in printed.out and str(out / "historian" / "F-101.csv") in printed.out
    assert "2/2" in printed.err  # the progress bar
    truths = sorted((out / "truth").glob("*.json"))
    assert [p.stem.rsplit("-", 1)[1] for p in truths] == ["B01", "B02"]
    doc = json.loads(truths[0].read_text())
    assert doc["scenario"] == "cli" and doc["recovery"]["R-201"] is not None
    header = (out / "historian" / "R-201.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "timestamp" and "R-201.outlet_flow" in header


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runs", "3"], "--runs is for --historical"),
        (["--historical", "--runs", "0"], "--runs must be at least 1"),
        (["--historical", "--start", "2025-01-01T00:00"], "give the time zone"),
        (["--scenario", "nowhere.toml"], "nowhere.toml: file not found"),
    ],
)
def test_mistakes_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--config", DEMO, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
