"""The Run review, Compare runs and Live pages in a real headless Chromium: `biopilot dashboard` on the small
site of tests/dashboard/test_review_pages.py (open local dashboard: the admin), numbers read off the page
(plotly's drawn data, the page text, the dataframe cells) and compared with what processing stored and
computes. Screenshots go to /tmp/biopilot-shots (review-*.png)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import chromium_or_skip, free_port
from tests.dashboard.test_browser import CHROMIUM_ARGS, SHOTS
from tests.dashboard.test_review_pages import TITER, small_site, stored_alarms, stored_envelope

# the drawn data of every plotly chart: per trace its name, hover template, x and y (as plain arrays)
_TRACES_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd => (gd._fullData || [])
    .map(t => ({name: t.name || '', hover: t.hovertemplate || '', yaxis: t.yaxis || 'y',
                x: Array.from(t.x || [], v => (typeof v === 'number' ? v : String(v))),
                y: Array.from(t.y || [], v => (v === null || v === undefined ? null : Number(v)))})))"""
_CELLS_JS = """() => [...document.querySelectorAll('[data-testid="stDataFrame"] [role="gridcell"], '
    + '[data-testid="stDataFrame"] td')].map(c => c.innerText.trim()).filter(t => t)"""
_IDLE_JS = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"


@pytest.mark.browser
@pytest.mark.slow
def test_review_compare_and_live_pages_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from biopilot.app.supervisor import wait_http_ok

    chromium = chromium_or_skip()
    site = small_site(tmp_path / "site")
    env = stored_envelope(site, "F-1.dissolved_oxygen")
    alarms = stored_alarms(site)
    port = free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "biopilot", "dashboard", "--no-browser", "--port", str(port),
            "--config", str(site.config_path), "--data-dir", str(site.dir),
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        assert wait_http_ok(f"{url}/_stcore/health", 90.0, lambda: proc.poll() is None), (
            tmp_path / "dashboard.log"
        ).read_text()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
                # -- Run review: the envelope's lower bound of DO as drawn = the stored envelope's
                page.goto(f"{url}/review?run={site.reviewed}", wait_until="domcontentloaded", timeout=60_000)
                page.locator("h1", has_text="Run review").wait_for(timeout=60_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.js-plotly-plot')].some(d => d._fullData)",
                    timeout=60_000,
                )
                page.wait_for_function(_IDLE_JS, timeout=60_000)
                traces = page.evaluate(_TRACES_JS)
                lower = [
                    t for t in traces if t["name"].startswith("envelope (") and len(t["x"]) == len(env.grid)
                ]
                # the DO row: the band whose mean is the stored mean of DO
                do = [t for t in lower if np.allclose(_arr(t["y"]), env.lower, equal_nan=True)]
                assert len(do) == 1, [t["name"] for t in lower]
                assert np.allclose(_arr(do[0]["x"]), env.grid)
                runs = {t["hover"].split("<br>")[0] for t in traces if t["hover"]}
                assert runs == {site.reviewed, *site.baseline}
                body = page.inner_text("body")
                assert f"n = {len(env.runs)} baseline runs" in body
                page.locator('[data-testid="stDataFrame"]').first.scroll_into_view_if_needed()
                page.wait_for_function(f"() => ({_CELLS_JS})().includes('{TITER:.5g}')", timeout=30_000)
                cells = page.evaluate(_CELLS_JS)
                assert f"{TITER:.5g}" in cells  # the KPI, as processing stored it
                review_alarms = [a for a in alarms if a.run_id == site.reviewed]
                assert {str(a.id) for a in review_alarms} <= set(cells)
                page.screenshot(path=str(SHOTS / "review-admin-run-review.png"), full_page=True)

                # -- Compare runs: two runs' DO overlaid, their titer side by side
                page.locator('[data-testid="stSidebarNavLink"]', has_text="Compare").click()
                page.locator("h1", has_text="Compare runs").wait_for(timeout=30_000)
                page.wait_for_function(_IDLE_JS, timeout=60_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.js-plotly-plot')].some(d => d._fullData)",
                    timeout=60_000,
                )
                traces = page.evaluate(_TRACES_JS)
                compared = {t["hover"].split("<br>")[0] for t in traces if t["hover"]}
                assert len(compared) == 3 and compared <= {
                    site.reviewed,
                    site.live,
                    *site.baseline,
                }  # the newest 3
                page.screenshot(path=str(SHOTS / "review-admin-compare.png"), full_page=True)

                # -- Live: the alarms heading counts the open alarms; the progress is the live run's hours
                page.locator('[data-testid="stSidebarNavLink"]', has_text="Live").click()
                page.locator("h1", has_text="Live").wait_for(timeout=30_000)
                page.get_by_text("into the batch").first.wait_for(timeout=60_000)
                page.get_by_text("Alarms ·").first.wait_for(timeout=60_000)
                body = page.inner_text("body")
                heading = re.search(r"Alarms · (\d+) open", body)
                assert heading is not None and int(heading.group(1)) == sum(a.is_open for a in alarms)
                hours = float(re.search(r"([\d.]+) h into the batch", body).group(1))  # type: ignore[union-attr]
                assert hours == pytest.approx(_live_hours(site), abs=0.051)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.js-plotly-plot')].some(d => d._fullData)",
                    timeout=60_000,
                )
                names = [t["name"] for t in page.evaluate(_TRACES_JS)]
                assert "envelope F-1.dissolved_oxygen" in names
                page.screenshot(path=str(SHOTS / "review-admin-live.png"), full_page=True)
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        log.close()


def _arr(v: list) -> np.ndarray:  # type: ignore[type-arg]
    return np.array([np.nan if x is None else x for x in v], dtype=float)


def _live_hours(site) -> float:  # type: ignore[no-untyped-def]
    """The live run's aligned hours at its newest sample, by processing.alignment on its phases and the
    stored envelope's alignment (independently of the page)."""
    from processing.alignment import warp_for
    from storage import Catalog, SqliteStore

    catalog = Catalog(site.dir / "biopilot.db")
    store = SqliteStore(site.dir / "biopilot.db", read_only=True)
    try:
        run = catalog.run(site.live)
        env = stored_envelope(site, "F-1.dissolved_oxygen")
        warp, _, _ = warp_for(catalog.phases(run.id), env.alignment, run_start=run.start)  # type: ignore[union-attr]
        newest = max(v.sample.ts for v in store.latest([t.name for t in site.config.tags]).values())
        return float(warp.forward(np.array([newest.timestamp() * 1e6]))[0])
    finally:
        catalog.close()
        store.close()
