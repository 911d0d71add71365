"""The run, import, lab and KPI commands end to end through biopilot.app.cli.main on a tmp data dir:
their JSON is the documented, stable interface; errors are one line without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biopilot.app.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "config" / "demo.toml")


def cli(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    rc = main([*argv, "--config", DEMO, "--data-dir", str(data)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_import_show_lab_and_kpis_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "hist-12.csv"
    # 2 h of F-101 at 10 min: agitator 3 kW → 6 kWh; naive times in Europe/Copenhagen (UTC+1 in January)
    rows = ["Timestamp,F-101.agitator_power,F-101.volume"]
    rows += [f"2024-01-10T{8 + i // 6:02d}:{(i % 6) * 10:02d}:00,3.0,{600 + i}" for i in range(13)]
    csv.write_text("\n".join(rows) + "\n")
    rc, out, err = cli(
        capsys, tmp_path, "import", str(csv), "--equipment", "F-101", "--kind", "trial", "--trial", "T-1"
    )
    assert rc == 0, err
    assert "13 rows, 26 samples of 2 tags stored in run F-101:hist-12 (trial)" in out
    # the closed run goes to the Parquet archive at once, and its reads come from there
    assert "archived run F-101:hist-12 as Parquet: 26 samples" in out
    assert (tmp_path / "archive" / "samples" / "equipment=F-101" / "run=hist-12" / "part-0.parquet").exists()
    rc, out, err = cli(capsys, tmp_path, "import", str(csv), "--equipment", "F-101", "--kind", "trial")
    assert rc == 0 and "samples replaced, none duplicated" in out and "archived run F-101:hist-12" in out, err

    rc, out, _ = cli(capsys, tmp_path, "kpis", "F-101:hist-12", "--json")
    doc = json.loads(out)
    assert doc["run"] == "F-101:hist-12"
    k = {x["name"]: x for x in doc["kpis"]}
    assert set(k["energy.total"]) == {
        "name",
        "value",
        "unit",
        "coverage",
        "flags",
        "final",
        "version",
        "computed",
        "inputs",
    }
    assert k["energy.F-101.agitator_power"]["value"] == pytest.approx(6.0)
    assert k["energy.F-101.agitator_power"]["coverage"] == 1.0
    assert k["energy.F-101.agitator_power"]["final"] is True
    assert k["batch_duration"] == {**k["batch_duration"], "value": 2.0, "unit": "h"}
    # the compressor and chiller were not in the export: their KPIs have no value, and neither has the
    # total (a sum that leaves out two of three meters is not the total), which names them
    assert k["energy.F-101.compressor_power"]["value"] is None
    assert "missing_input:F-101.compressor_power" in k["energy.F-101.compressor_power"]["flags"]
    assert k["energy.total"]["value"] is None
    assert {"missing_input:F-101.compressor_power", "missing_input:F-101.chiller_power"} <= set(
        k["energy.total"]["flags"]
    )

    rc, out, err = cli(
        capsys,
        tmp_path,
        "lab",
        "add",
        "F-101:hist-12",
        "--time",
        "2024-01-10T10:00",
        "--analyte",
        "titer",
        "--value",
        "4.5",
    )
    assert rc == 0, err
    rc, out, _ = cli(capsys, tmp_path, "kpis", "--recompute", "F-101:hist-12", "--json")
    k = {x["name"]: x for x in json.loads(out)["kpis"]}
    assert k["titer"]["value"] == 4.5
    # product harvested = V(end) · titer = 612 L · 4.5 g/L = 2754 g = 2.754 kg
    assert k["product_harvested"]["value"] == pytest.approx(2.754)

    rc, out, _ = cli(capsys, tmp_path, "runs", "show", "F-101:hist-12", "--json")
    run = json.loads(out)
    assert (run["kind"], run["trial_id"], run["origin"], run["status"]) == (
        "trial",
        "T-1",
        "import",
        "closed",
    )
    assert run["start"] == "2024-01-10T07:00:00+00:00"
    assert [r["analyte"] for r in run["lab_results"]] == ["titer"]
    assert {x["name"] for x in run["kpis"]} >= {"titer", "energy.total"}

    rc, out, _ = cli(capsys, tmp_path, "runs", "list", "--json", "--kind", "trial")
    assert [r["id"] for r in json.loads(out)] == ["F-101:hist-12"]
    rc, out, _ = cli(capsys, tmp_path, "runs", "list", "--kind", "baseline")
    assert out.strip() == "no runs yet"


def test_manual_run_create_edit_close(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(
        capsys,
        tmp_path,
        "runs",
        "create",
        "--equipment",
        "R-201",
        "--batch",
        "M-1",
        "--start",
        "2024-01-01T08:00",
    )
    assert rc == 0 and "created run R-201:M-1" in out, err
    rc, out, err = cli(
        capsys,
        tmp_path,
        "runs",
        "edit",
        "R-201:M-1",
        "--kind",
        "baseline",
        "--phase",
        "clarification",
        "2024-01-01T08:30",
        "2024-01-01T09:30",
    )
    assert rc == 0, err
    rc, out, err = cli(capsys, tmp_path, "runs", "close", "R-201:M-1", "--end", "2024-01-01T10:00")
    assert rc == 0 and "closed run R-201:M-1 at 2024-01-01T09:00:00+00:00" in out, err
    rc, out, _ = cli(capsys, tmp_path, "runs", "show", "R-201:M-1", "--json")
    run = json.loads(out)
    assert run["kind"] == "baseline" and run["end"] == "2024-01-01T09:00:00+00:00"
    assert run["phases"] == [
        {"name": "clarification", "start": "2024-01-01T07:30:00+00:00", "end": "2024-01-01T08:30:00+00:00"}
    ]


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli(capsys, tmp_path, "kpis", "F-101:nope")
    assert rc == 2 and err.count("\n") == 1 and "no run 'F-101:nope'" in err
    rc, _, err = cli(capsys, tmp_path, "import", str(tmp_path / "missing.csv"), "--equipment", "F-101")
    assert rc == 2 and err.strip().endswith("file not found") and "Traceback" not in err
    rc, _, err = cli(
        capsys, tmp_path, "runs", "create", "--equipment", "F-101", "--batch", "X", "--start", "soon"
    )
    assert rc == 2 and "'soon' is not an ISO-8601 time" in err
