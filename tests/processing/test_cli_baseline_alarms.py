"""`biopilot baseline build/show` and `biopilot alarms list/ack` as a user runs them (subprocesses), on a data
directory the processing service filled from simulated runs (tests/processing/livesim.py): ten baseline runs
and a live run whose feed pump stopped 3 h ago. Each subprocess pays ~2 s of imports on a loaded machine, so
the refusals that only check a message go through the same entry point in this process (`main`)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from processing.service import Processing
from storage import Catalog, SqliteStore
from tests.processing import livesim

H = timedelta(hours=1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config file, data dir) after the processing service saw the live run 3 h past its fault."""
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "demo.toml"
    cfg.write_text(livesim.config_text(), encoding="utf-8")
    data = root / "data"
    data.mkdir()
    plant = livesim.plant(1, 10, 2, [livesim.feed_fault(11, at_h=30.0, duration_h=2.0)])
    store = SqliteStore(data / "biopilot.db")
    catalog = Catalog(data / "biopilot.db")
    livesim.Feed(plant, store).until(plant.fault_start("L01") + 3 * H)
    Processing(livesim.site_config(), store, catalog, provisional_interval_s=0).process_once()
    catalog.close()
    store.close()
    return cfg, data


def cli(site: tuple[Path, Path], *args: str) -> subprocess.CompletedProcess[str]:
    cfg, data = site
    return subprocess.run(
        [sys.executable, "-m", "biopilot", *args, "--config", str(cfg), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def main(site: tuple[Path, Path], capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The `biopilot` entry point in this process: (exit code, stdout, stderr)."""
    from biopilot.app.cli import main as biopilot

    cfg, data = site
    capsys.readouterr()
    code = biopilot([*args, "--config", str(cfg), "--data-dir", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


def test_baseline_show_then_build_by_rule_and_by_run_ids(
    site: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    shown = cli(site, "baseline", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    (model,) = doc["models"]
    assert model["computed_by"] == "processing (automatic)" and len(model["runs"]) == 10
    assert len(doc["envelopes"]) == 10 and {e["alignment"] for e in doc["envelopes"]} == {model["alignment"]}

    built = cli(site, "baseline", "build", "--equipment", "F-101", "--by", "tester", "--json")
    assert built.returncode == 0, built.stderr
    b = json.loads(built.stdout)
    assert (b["product"], len(b["runs"]), b["computed_by"]) == ("demo enzyme", 10, "tester")
    assert b["alignment_key"] == "phase_landmarks:fed_batch,harvest" and b["grid"]["step"] == 0.25
    assert b["model"]["n_components"] >= 1 and b["refused"] == []
    assert len(b["envelopes"]) == 10
    code, text, _ = main(site, capsys, "baseline", "show")
    assert code == 0 and "by tester" in text and "processing (automatic)" not in text

    # by run ids: three runs give envelopes and no model, with the reason; two are refused
    ids = b["runs"][:4]
    few = cli(site, "baseline", "build", "--equipment", "F-101", "--runs", ",".join(ids[:3]),
              "--alignment", "inoculation", "--tags", "F-101.temperature,F-101.ph")  # fmt: skip
    assert few.returncode == 0, few.stderr
    assert "envelopes  2: F-101.temperature, F-101.ph" in few.stdout
    assert "not built  no MSPC model for F-101: 3 baseline run(s); it needs 5" in few.stdout
    two = cli(site, "baseline", "build", "--equipment", "F-101", "--runs", ",".join(ids[:2]))
    assert two.returncode == 2
    assert two.stderr.strip().splitlines() == [
        f"biopilot: 2 baseline run(s) of F-101 ({', '.join(ids[:2])}): an envelope needs at least 3 and an"
        " MSPC model 5"
    ]
    code, _, err = main(site, capsys, "baseline", "build", "--equipment", "F-101", "--since", "2999-01-01")
    assert code == 2 and "no closed baseline runs of F-101 (demo enzyme) started in" in err
    code, _, err = main(site, capsys, "baseline", "build", "--equipment", "F-999")
    assert code == 2 and "'F-999' is not a configured equipment id" in err
    code, _, err = main(site, capsys, "baseline", "build", "--equipment", "F-101", "--alignment", "maturity")
    assert code == 2 and "maturity alignment is not offered" in err


def test_alarms_list_and_acknowledge(site: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    listed = cli(site, "alarms", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    alarms = json.loads(listed.stdout)
    assert alarms and all(a["run"].endswith("-L01") for a in alarms)
    (spe,) = [a for a in alarms if a["tag"] == "mspc:SPE"]
    assert (spe["variable"], spe["kind"], spe["state"], spe["acknowledged"]) == (
        livesim.FEED_TAG,
        "mspc",
        "open",
        False,
    )
    feed = next(a for a in alarms if a["tag"] == livesim.FEED_TAG)
    assert feed["direction"] == "below" and feed["size_unit"] == "L/h"

    table = cli(site, "alarms", "list", "--open")
    assert table.returncode == 0
    assert f"mspc:SPE → {livesim.FEED_TAG}" in table.stdout and "(times in Europe/Copenhagen;" in table.stdout
    assert f"{spe['id']:>4}  open   —" in table.stdout

    ack = cli(site, "alarms", "ack", str(spe["id"]), "--by", "alice", "--comment", "feed pump restarted")
    assert ack.returncode == 0, ack.stderr
    assert f"alarm {spe['id']} (" in ack.stdout and "acknowledged by alice at" in ack.stdout
    after = {a["id"]: a for a in json.loads(cli(site, "alarms", "list", "--json").stdout)}
    assert (after[spe["id"]]["ack_by"], after[spe["id"]]["ack_comment"]) == ("alice", "feed pump restarted")
    assert after[spe["id"]]["ack_at"] is not None
    assert not any(a["acknowledged"] for i, a in after.items() if i != spe["id"])

    twice = cli(site, "alarms", "ack", str(spe["id"]), "--by", "bob")
    assert twice.returncode == 2
    assert twice.stderr.strip().startswith(
        f"biopilot: alarm {spe['id']} was acknowledged already by alice at"
    )
    code, _, err = main(site, capsys, "alarms", "ack", "999", "--by", "bob")
    assert code == 2 and "no alarm 999" in err
    code, _, err = main(site, capsys, "alarms", "ack", "#x", "--by", "bob")
    assert code == 2 and "'#x' is not an alarm number" in err
    code, _, err = main(site, capsys, "alarms", "list", "--run", "F-101:nope")
    assert code == 2 and "no run 'F-101:nope'" in err
