"""`biopilot trials create --charter|lock|add-run|exclude|charter-edit|show`, `biopilot verdict` and
`biopilot report TRIAL` as subprocesses on a small data directory (tests/trials_site.py), the way an admin,
a startup and a partner use them. The verdict's numbers are checked against scipy called independently
(Welch's t on the logs, the exact permutation test) on the same hand-written KPI values."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from biopilot.app.cli import main as cli
from tests.trials_site import BASELINE, CHARTER_TOML, CONFIG, TRIAL, TRIAL_RUNS, build

KPI = "yield_product_substrate_consumed"


def _cli(data: Path, user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """In this process (fast): biopilot.app.cli.main with stdout and stderr captured."""
    args = [*argv, "--config", str(CONFIG), "--data-dir", str(data), "--user", user]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(args)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _sub(data: Path, user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """As a user runs it: a subprocess."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "biopilot",
            *argv,
            "--config",
            str(CONFIG),
            "--data-dir",
            str(data),
            "--user",
            user,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _refused(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line  # one line naming the fix
    for w in words:
        assert w in line, line


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("trials")
    build(data)
    (data / "charter.toml").write_text(CHARTER_TOML)
    return data


def test_trial_lifecycle_verdict_and_report(site: Path, tmp_path: Path) -> None:
    charter = site / "charter.toml"
    _refused(_sub(site, "ann", "trials", "create", TRIAL, "--charter", str(charter)), "only an admin")
    out = _ok(_sub(site, "root", "trials", "create", TRIAL, "--charter", str(charter)))
    assert "charter draft" in out and f"biopilot trials lock {TRIAL}" in out
    _refused(_cli(site, "root", "verdict", TRIAL), "no locked charter", f"biopilot trials lock {TRIAL}")
    _refused(_cli(site, "root", "trials", "add-run", TRIAL, "F-101:TR3"), "lock the charter before")

    out = _ok(_sub(site, "root", "trials", "lock", TRIAL))
    assert "version 1" in out and "baseline frozen: 5 runs; trial runs: 2" in out
    _refused(_cli(site, "root", "trials", "lock", TRIAL), "locked already", "charter-edit")
    out = _ok(_cli(site, "root", "trials", "add-run", TRIAL, "F-101:TR3"))
    # the lock is now, the runs started in 2025: the charter came after the first trial run started
    assert "WARNING" in out and "after the first trial run started" in out
    _refused(_cli(site, "root", "trials", "add-run", TRIAL, "F-101:TR3"), "in the trial already")
    _refused(_cli(site, "root", "trials", "exclude", TRIAL, "F-101:BL2", "--reason", " "), "written reason")
    _refused(_cli(site, "pat", "trials", "exclude", TRIAL, "F-101:BL2", "--reason", "x"), "only an admin")

    verdict = json.loads(_ok(_sub(site, "root", "verdict", TRIAL, "--json")))
    for key in ("word", "reason", "charter_version", "charter_sha256", "primary"):
        assert key in verdict
    p = verdict["primary"]
    for key in (
        "kpi", "n_trial", "n_baseline", "mean_trial", "mean_baseline", "difference", "difference_pct", "ci",
        "ci_pct", "p_welch", "p_permutation", "hedges_g", "mde_pct", "excluded",
    ):  # fmt: skip
        assert key in p, key
    assert verdict["charter_version"] == 1 and verdict["charter_changed_after_start"] is True
    assert "THE CHARTER WAS CHANGED AFTER THE FIRST TRIAL RUN STARTED" in verdict["warnings"][0]

    # independently: Welch's t on ln(yield) (the relative margin's scale) and the exact permutation test
    t = np.log([v[1] for v in TRIAL_RUNS.values()])
    b = np.log([v[1] for v in BASELINE.values()])
    welch = stats.ttest_ind(t, b, equal_var=False)
    low, high = welch.confidence_interval(0.95)
    perm = stats.permutation_test(
        (t, b), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent", n_resamples=math.inf
    )
    assert (p["n_trial"], p["n_baseline"]) == (3, 5)
    assert p["difference_pct"] == pytest.approx((math.exp(t.mean() - b.mean()) - 1) * 100, rel=1e-9)
    assert p["ci_pct"] == pytest.approx([(math.exp(low) - 1) * 100, (math.exp(high) - 1) * 100], rel=1e-9)
    assert p["p_welch"] == pytest.approx(welch.pvalue, rel=1e-9)
    assert p["p_permutation"] == pytest.approx(perm.pvalue, rel=1e-9)  # 56 relabellings: 2/56
    assert verdict["word"] == "better"  # the whole interval above 0 and the permutation test agrees

    # an exclusion is listed with the verdict, which is also given without it
    _ok(_cli(site, "root", "trials", "exclude", TRIAL, "F-101:BL2", "--reason", "contaminated (lab 17)"))
    _refused(
        _cli(site, "root", "trials", "exclude", TRIAL, "F-101:BL2", "--reason", "again"), "excluded already"
    )
    verdict = json.loads(_ok(_cli(site, "root", "verdict", TRIAL, "--json")))
    assert verdict["primary"]["n_baseline"] == 4
    assert verdict["exclusions"][0]["run"] == "F-101:BL2" and verdict["exclusions"][0]["by"] == "root"
    assert verdict["without_exclusions"]["primary"]["n_baseline"] == 5

    # a new version needs a reason; the verdict names it
    changed = site / "charter-v2.toml"
    changed.write_text(CHARTER_TOML.replace("alpha = 0.05", "alpha = 0.1"))
    _refused(_cli(site, "root", "trials", "charter-edit", TRIAL, "--charter", str(changed)), "reason")
    out = _ok(
        _cli(
            site,
            "root",
            "trials",
            "charter-edit",
            TRIAL,
            "--charter",
            str(changed),
            "--reason",
            "partner asked",
        )
    )
    assert "version 2" in out
    shown = json.loads(_ok(_cli(site, "root", "trials", "show", TRIAL, "--json")))
    assert [v["version"] for v in shown["charter_versions"]] == [1, 2]
    assert shown["charter"]["locked"] and shown["charter"]["charter"]["alpha"] == 0.1
    assert {m["run"] for m in shown["members"]} == set(BASELINE) | set(TRIAL_RUNS)
    text = _ok(_cli(site, "root", "verdict", TRIAL))
    assert "charter version 2" in text and "VERDICT:" in text

    # the partner, once invited: the verdict with the baseline as aggregates only
    _refused(_cli(site, "pat", "verdict", TRIAL), f"no trial '{TRIAL}' that you may see")
    catalog_invite(site)
    for user in ("pat", "ann"):
        r = _cli(site, user, "verdict", TRIAL, "--json")
        doc = json.loads(_ok(r))
        assert doc["word"] and doc["primary"]["n_baseline"] == 4
        shown_text = r.stdout + _ok(_cli(site, user, "trials", "show", TRIAL, "--json"))
        leaked = [run for run in BASELINE if run in shown_text]
        assert not leaked, (user, leaked)
        values = {v[1] for v in BASELINE.values()} | {v[2] for v in BASELINE.values()}
        assert not values & set(_numbers(doc)), user
        # their evidence pack: the baseline as aggregates, no baseline run's id or value in any file
        pack = tmp_path / user
        _ok(_cli(site, user, "report", TRIAL, "--out", str(pack)))
        assert "intact" in _ok(_cli(site, user, "report", "verify", str(pack)))
        files = {f: f.read_bytes() for f in pack.rglob("*") if f.is_file() and f.suffix != ".pdf"}
        if shutil.which("pdftotext"):
            files[pack / "evidence.txt"] = subprocess.run(
                ["pdftotext", str(pack / "evidence.pdf"), "-"], capture_output=True, check=True
            ).stdout
        leaked = [(f.name, r) for f, data in files.items() for r in BASELINE if r.encode() in data]
        assert not leaked, (user, leaked)
        rows = json.loads((pack / "verdict.json").read_text())["primary"]["runs"]
        assert {r["group"] for r in rows} == {"trial"}
        assert not (pack / "charter" / "v1.json").exists()  # it names baseline runs; the pack has its keys
    _refused(_cli(site, "eve", "verdict", TRIAL), "that you may see")
    _refused(_cli(site, "olga", "verdict", TRIAL), "that you may see")  # an operator of R-201 only

    # the evidence pack from the catalog, verified
    pack = tmp_path / "pack"
    out = _ok(_sub(site, "root", "report", TRIAL, "--out", str(pack)))
    assert "manifest SHA-256" in out and (pack / "evidence.pdf").stat().st_size > 10_000
    assert json.loads((pack / "verdict.json").read_text())["charter_version"] == 2
    assert (pack / "charter" / "v1.json").exists() and (pack / "charter" / "v2.json").exists()
    assert "intact" in _ok(_cli(site, "root", "report", "verify", str(pack)))

    # every write is in the audit log under the admin's name
    audit = json.loads(_ok(_cli(site, "root", "audit", "list", "--json")))
    actions = [e["action"] for e in audit if e["target"] == TRIAL]
    for action in (
        "trial.create",
        "trial.charter.lock",
        "trial.add_run",
        "trial.exclude",
        "trial.charter.edit",
    ):
        assert action in actions, action
    assert "trial.report" in actions


def catalog_invite(site: Path) -> None:
    from storage import Catalog

    c = Catalog(site / "biopilot.db")
    c.invite(TRIAL, "pat", invited_by="root")
    c.close()


def _numbers(x: object) -> list[float]:
    if isinstance(x, dict):
        return [n for v in x.values() for n in _numbers(v)]
    if isinstance(x, list):
        return [n for v in x for n in _numbers(v)]
    return [float(x)] if isinstance(x, int | float) and not isinstance(x, bool) else []
