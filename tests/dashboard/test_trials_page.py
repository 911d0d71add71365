"""The Trials page with a judged trial (tests/trials_site.py: five baseline and three trial runs, a locked
charter): Streamlit's AppTest for the admin and the partner, and a real headless Chromium that reads the
verdict's numbers off the page and compares them with `biopilot verdict TRIAL --json` for the same user.
Screenshots go to /tmp/biopilot-shots (trials-admin.png, trials-partner.png)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.views.trials import g, interval, pct
from tests.conftest import chromium_or_skip, free_port
from tests.dashboard.test_browser import CHROMIUM_ARGS, SHOTS
from tests.dashboard.test_pages import APP, RUN_TIMEOUT_S, open_page
from tests.trials_site import BASELINE, CONFIG, PASSWORD, TRIAL, build


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("trials-page")
    build(data, lock=True)
    return data


@pytest.fixture
def _env(monkeypatch: pytest.MonkeyPatch, site: Path) -> Iterator[None]:
    from streamlit import config

    st.cache_resource.clear()
    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    monkeypatch.setenv("BIOPILOT_CONFIG", str(CONFIG))
    monkeypatch.setenv("BIOPILOT_DATA_DIR", str(site))
    yield
    config.set_option("server.address", before)
    st.cache_resource.clear()


def _verdict(site: Path, user: str) -> dict:  # type: ignore[type-arg]
    r = subprocess.run(
        [sys.executable, "-m", "biopilot", "verdict", TRIAL, "--json", "--config", str(CONFIG), "--data-dir",
         str(site), "--user", user],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _expected_cells(doc: dict) -> dict[str, list[str]]:  # type: ignore[type-arg]
    """The verdict table's cells as the page must show them, from the verdict JSON: row label -> one cell
    per KPI (primary first)."""
    kpis = [doc["primary"], *doc["secondary"]]
    return {
        "word": [k["word"] for k in kpis],
        "n trial / baseline": [f"{k['n_trial']} / {k['n_baseline']}" for k in kpis],
        "mean trial": [g(k["mean_trial"]) for k in kpis],
        "mean baseline": [g(k["mean_baseline"]) for k in kpis],
        "difference %": [pct(k["difference_pct"]) for k in kpis],
        "CI % (95 %)": [interval(k["ci_pct"], as_pct=True) for k in kpis],
        "p Welch": [g(k["p_welch"], 3) for k in kpis],
        "p permutation": [g(k["p_permutation"], 3) for k in kpis],
        "Hedges g": [g(k["hedges_g"], 3) for k in kpis],
        "MDE %": [g(k["mde_pct"], 3) for k in kpis],
    }


def _sign_in(user: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S).run()
    at.text_input(key="login_user").input(user)
    at.text_input(key="login_password").input(PASSWORD)
    at.button[0].click().run()
    return open_page(at, "Trials")


@pytest.mark.usefixtures("_env")
@pytest.mark.parametrize("user", ["root", "pat"])
def test_trials_page_shows_the_verdict_of_the_cli(site: Path, user: str) -> None:
    doc = _verdict(site, user)
    at = _sign_in(user)
    assert not at.exception, [e.value for e in at.exception]
    assert doc["word"] == "better"
    assert any(f"**Verdict: {doc['word']}** — {doc['reason']}" == s.value for s in at.success)
    tables = {tuple(t.value.columns): t.value for t in at.table}
    verdict = tables[(doc["primary"]["kpi"], "titer")]
    for row, cells in _expected_cells(doc).items():
        assert list(verdict.loc[row]) == cells, row
    charter = next(t.value for t in at.table if list(t.value.columns) == ["value"])
    assert charter.loc["primary KPI", "value"] == f"{doc['primary']['kpi']} (higher is better)"
    assert len(at.get("plotly_chart")) == 3  # CI per KPI, runs, baseline stability (no series: no envelope)
    specs = " ".join(c.proto.spec for c in at.get("plotly_chart"))
    if user == "pat":  # the baseline as a mean with its band: no baseline run, no baseline run's value
        assert not [r for r in BASELINE if r in specs]
        assert "baseline mean \\u00b1 CI" in specs  # the band, drawn from the aggregates
        assert any("baseline is shown as aggregates" in c.value for c in at.caption)
    else:
        assert all(r in specs for r in BASELINE)  # the admin sees the baseline runs as dots
    assert at.get("download_button")
    # what the download button hands out: the viewer's evidence pack as a zip
    name, data = _page_data(site, user).evidence_pack_zip(TRIAL)  # type: ignore[misc]
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        files = {n: z.read(n) for n in z.namelist()}
    assert name == f"evidence-{TRIAL}.zip" and any(n.endswith("/evidence.pdf") for n in files)
    verdict_json = json.loads(next(v for n, v in files.items() if n.endswith("/verdict.json")))
    assert verdict_json["word"] == doc["word"] and verdict_json["reason"] == doc["reason"]
    leaked = [(n, r) for n, v in files.items() if not n.endswith(".pdf") for r in BASELINE if r.encode() in v]
    assert bool(leaked) == (user == "root"), leaked[:3]


def _page_data(site: Path, user: str):  # type: ignore[no-untyped-def]
    from biopilot.config import load_config
    from dashboard.data import DashboardData
    from storage import Catalog, SqliteStore

    catalog = Catalog(site / "biopilot.db")
    store = SqliteStore(site / "biopilot.db", read_only=True)
    return DashboardData(load_config(CONFIG), store, catalog).page(catalog.user(user).viewer)  # type: ignore[union-attr]


@pytest.mark.browser
@pytest.mark.slow
def test_trials_page_numbers_in_chromium_equal_the_cli(site: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from biopilot.app.supervisor import wait_http_ok

    chromium = chromium_or_skip()
    port = free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "biopilot", "dashboard", "--no-browser", "--port", str(port), "--config",
         str(CONFIG), "--data-dir", str(site)],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_http_ok(f"{url}/_stcore/health", 90.0, lambda: proc.poll() is None)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                for user, name in (("root", "admin"), ("pat", "partner")):
                    doc = _verdict(site, user)
                    page = browser.new_context(viewport={"width": 1400, "height": 4000}).new_page()
                    page.goto(url, wait_until="domcontentloaded", timeout=30_000)
                    page.locator("h1", has_text="sign in").wait_for(timeout=30_000)
                    page.get_by_label("User", exact=True).fill(user)
                    page.get_by_label("Password", exact=True).fill(PASSWORD)
                    page.get_by_role("button", name="Sign in").first.click()
                    page.locator("h1", has_text="Live").wait_for(timeout=30_000)
                    page.locator('[data-testid="stSidebarNavLink"]', has_text="Trials").click()
                    page.get_by_text(f"Verdict: {doc['word']}").wait_for(timeout=60_000)
                    page.wait_for_function(
                        "() => document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=60_000
                    )
                    rows = page.evaluate(
                        """() => [...document.querySelectorAll('[data-testid="stTable"] tr')].map(
                            tr => [...tr.querySelectorAll('th, td')].map(c => c.innerText.trim()))"""
                    )
                    by_label = {r[0]: r[1:] for r in rows if r}
                    expected = _expected_cells(doc)
                    for label, cells in expected.items():
                        assert by_label.get(label) == cells, (user, label, by_label.get(label), cells)
                    body = page.inner_text("body")
                    assert doc["reason"] in body
                    if user == "pat":
                        assert not [r for r in BASELINE if r in body]
                    path = tmp_path / f"trials-{name}.png"
                    page.screenshot(path=str(path), full_page=True)
                    SHOTS.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, SHOTS / path.name)
                    print(f"\n{user}: {len(expected)} rows × {len(expected['word'])} KPIs equal the CLI's")
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
