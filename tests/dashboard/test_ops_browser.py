"""The Runs, Energy & utilities, Yield waterfall and Data quality & collectors pages in headless Chromium:
`biopilot dashboard` on the simulated site of tests/dashboard/ops_site.py, numbers read off the rendered
tables and compared with processing's own results (the KPI records the processing service stored, and
processing.quality on the raw series); then on the isolation site (tests/processing/queries/site.py) signed in
as the operator and a startup, nothing forbidden reached. Screenshots go to /tmp/biopilot-shots/ops-*.png."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from processing.quality import gaps
from storage import Catalog, SqliteStore
from tests.conftest import chromium_or_skip, free_port
from tests.dashboard.ops_site import CONFIG, CUT_TAG, GAP_TAG, build
from tests.dashboard.test_access_browser import _go, _options, _shot, _sign_in
from tests.dashboard.test_browser import CHROMIUM_ARGS, SHOTS
from tests.processing.queries import site as isolation

if TYPE_CHECKING:
    from playwright.sync_api import Page

# each dataframe's rows (header first) as the cells' text, from the grid's accessible table
_TABLES_JS = """() => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
  .filter(df => !df.closest('[data-stale="true"]')).map(df =>
  [...df.querySelectorAll('[role="row"]')].map(r =>
     [...r.querySelectorAll('[role="gridcell"], [role="columnheader"]')].map(c => c.innerText.trim())))"""
_METRICS_JS = """() => Object.fromEntries([...document.querySelectorAll('[data-testid="stMetric"]')].map(m =>
  [m.querySelector('[data-testid="stMetricLabel"]').innerText.trim(),
   m.querySelector('[data-testid="stMetricValue"]').innerText.trim()]))"""


@contextmanager
def dashboard(config: Path, data: Path, log_path: Path) -> Iterator[str]:
    from biopilot.app.supervisor import wait_http_ok

    port = free_port()
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "biopilot", "dashboard", "--no-browser", "--port", str(port)),
            *("--config", str(config), "--data-dir", str(data)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=log_path.parent,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_http_ok(f"{url}/_stcore/health", 90.0, lambda: proc.poll() is None), log_path.read_text()
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the dashboard and anything it started
        proc.wait(20)
        log.close()


def _tables(page: Page, n: int) -> list[dict[str, dict[str, str]]]:
    """The first n dataframes, each as {first cell: {column: cell}}, once they are drawn."""
    page.wait_for_function(
        """(n) => {
            const dfs = [...document.querySelectorAll('[data-testid="stDataFrame"]')]
                .filter(df => !df.closest('[data-stale="true"]'));
            return dfs.length >= n && dfs.slice(0, n).every(df => df.querySelector('[role="gridcell"]'));
        }""",
        arg=n,
        timeout=30_000,
    )
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000
    )
    out = []
    for table in page.evaluate(_TABLES_JS)[:n]:
        header, *rows = table
        out.append({r[0]: dict(zip(header, r, strict=True)) for r in rows})
    return out


def _wait_row(page: Page, first_cell: str, column: str, text: str) -> None:
    """Wait until a (current) dataframe has a row starting with first_cell whose `column` reads text: a
    rerun draws its elements one by one, and a table may still show the previous run's rows."""
    page.wait_for_function(
        """([first, column, text]) => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
            .filter(df => !df.closest('[data-stale="true"]')).some(df => {
                const rows = [...df.querySelectorAll('[role="row"]')].map(r =>
                    [...r.querySelectorAll('[role="gridcell"], [role="columnheader"]')]
                        .map(c => c.innerText.trim()));
                if (!rows.length) return false;
                const i = rows[0].indexOf(column);
                return i >= 0 && rows.some(r => r[0] === first && r[i] === text);
            })""",
        arg=[first_cell, column, text],
        timeout=30_000,
    )


def _choose(page: Page, label: str, option: str) -> None:
    box = page.get_by_role("combobox", name=label)
    box.wait_for(timeout=30_000)
    choice = page.get_by_role("option", name=option, exact=True)
    for _ in range(5):  # a click while the page is still rendering may not open the list
        box.click()
        try:
            choice.wait_for(timeout=5_000)
            break
        except Exception:
            page.keyboard.press("Escape")
    choice.click()
    page.wait_for_timeout(300)  # the rerun starts; callers then wait for what it draws
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000
    )


@pytest.mark.browser
@pytest.mark.slow
def test_ops_pages_in_chromium_show_processing_s_numbers(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    site = build(tmp_path)
    catalog = Catalog(tmp_path / "biopilot.db")
    k = {r.id: {x.name: x.value for x in catalog.kpis(r.id)} for r in catalog.runs()}
    catalog.close()
    first, second = site.batches
    rec1, rec2 = site.recovery[first], site.recovery[second]
    with dashboard(CONFIG, tmp_path, tmp_path / "dashboard.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 1100})
            page.goto(f"{url}/energy", wait_until="domcontentloaded", timeout=30_000)
            page.locator("h1", has_text="Energy & utilities").wait_for(timeout=30_000)
            runs, _ = _tables(page, 2)
            assert set(runs) == set(k)
            for run_id, row in runs.items():
                assert row["energy [kWh]"] == f"{k[run_id]['energy.total']:,.1f}"
            assert runs[first]["kWh/kg"] == f"{k[first]['specific_energy']:,.2f}"
            assert runs[rec1]["kWh/kg"] == f"{k[rec1]['specific_energy']:,.2f}"
            assert runs[rec2]["kWh/kg"] == "—" and f"missing_input:{CUT_TAG}" in runs[rec2]["flags"]
            _choose(page, "Batch", first)
            # the rerun for the chosen batch is drawn once its product out shows (B02's is "—")
            _wait_row(page, rec1, "unit operation", "R-201 · Disc-stack centrifuge")
            metrics = page.evaluate(_METRICS_JS)
            by_hand = (k[first]["energy.total"] + k[rec1]["energy.total"]) / k[rec1]["product_out"]
            assert metrics["kWh per kg of product"] == f"{by_hand:,.2f}", metrics
            _shot(page, "ops-admin-energy.png", tmp_path)

            _go(page, "Yield waterfall")
            _choose(page, "Batch", first)
            _wait_row(page, "1", "run", rec1)
            (steps,) = _tables(page, 1)
            assert steps["1"]["run"] == rec1
            assert steps["1"]["step yield"] == f"{k[rec1]['step_yield']:.1%}"
            assert steps["1"]["product out [kg]"] == f"{k[rec1]['product_out']:,.3f}"
            page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
            _shot(page, "ops-admin-yield.png", tmp_path)
            _choose(page, "Batch", second)
            _wait_row(page, "1", "run", rec2)
            page.get_by_text("Purified product: unknown").wait_for(timeout=30_000)
            (steps,) = _tables(page, 1)
            assert steps["1"]["step yield"] == "missing" and steps["1"]["product out [kg]"] == "missing"
            _shot(page, "ops-admin-yield-missing.png", tmp_path)

            _go(page, "Data quality & collectors")
            _choose(page, "Window (process time)", "7 days")
            page.get_by_text("Tags · last 7 days").wait_for(timeout=30_000)
            store = SqliteStore(tmp_path / "biopilot.db", read_only=True)
            try:
                data = store.read(GAP_TAG, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
            finally:
                store.close()
            _wait_row(page, GAP_TAG, "samples", str(len(data)))  # all of it: the 7-day window is drawn
            conns, tags = _tables(page, 2)
            g = gaps(data.ts / 3.6e9)
            assert g.count == 1
            assert tags[GAP_TAG]["gaps"] == "1" and tags[GAP_TAG]["longest gap [h]"] == f"{g.longest_h:.2f}"
            assert tags[GAP_TAG]["samples"] == str(len(data))
            assert conns["opcua:pilot"]["reconnects"] == "2" and conns["mqtt:plant"]["quarantined"] == "3"
            _shot(page, "ops-admin-quality.png", tmp_path)
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.slow
def test_ops_pages_in_chromium_for_the_operator_and_a_startup(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    isolation.build(data)
    with dashboard(isolation.CONFIG, data, tmp_path / "dashboard.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for user in ("olga", "ann"):
                ok = isolation.allowed(user)
                context = browser.new_context(viewport={"width": 1600, "height": 1000})
                page = context.new_page()
                _sign_in(page, url, user)
                texts = []
                _go(page, "Energy & utilities")
                batches = set(_options(page, "Batch"))
                texts.append(page.inner_text("body"))
                _shot(page, f"ops-{user}-energy.png", tmp_path)
                _go(page, "Yield waterfall")
                batches |= set(_options(page, "Batch"))
                texts.append(page.inner_text("body"))
                _shot(page, f"ops-{user}-yield.png", tmp_path)
                _go(page, "Data quality & collectors")
                page.get_by_text("Tags · last 24 h").wait_for(timeout=30_000)
                (*_, tags) = _tables(page, 2 if user == "olga" else 1)
                texts.append(page.inner_text("body"))
                _shot(page, f"ops-{user}-quality.png", tmp_path)
                context.close()
                text = "\n".join(texts)
                equipment = "R-201." if user == "olga" else "F-101."
                forbidden = (batches - ok.runs) | {t for t in tags if not t.startswith(equipment)}
                forbidden |= {r for r in set(isolation.RUNS) - ok.runs if r in text}
                forbidden |= set(isolation.word_counts(text, ok.forbidden_words))
                print(f"chromium {user}: batches {sorted(batches)}, {len(tags)} tags, forbidden {forbidden}")
                assert batches and tags and not forbidden
                assert ("Collectors" in text) == (user == "olga")  # collector internals: the host's
        finally:
            browser.close()
    print(f"screenshots in {SHOTS}")


@pytest.mark.browser
@pytest.mark.slow
def test_runs_page_in_chromium_shows_the_stored_kpis(tmp_path: Path) -> None:
    """The Runs page's table of runs and a run's KPI table, read off the rendered grids, equal the KPI
    records the processing service stored for the simulated site (formatted as the page formats them)."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    site = build(tmp_path)
    catalog = Catalog(tmp_path / "biopilot.db")
    k = {r.id: {x.name: x.value for x in catalog.kpis(r.id)} for r in catalog.runs()}
    catalog.close()
    first, _ = site.batches
    rec1 = site.recovery[first]
    with dashboard(CONFIG, tmp_path, tmp_path / "dashboard.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 1100})
            page.goto(f"{url}/runs", wait_until="domcontentloaded", timeout=30_000)
            page.locator("h1", has_text="Runs").wait_for(timeout=30_000)
            runs, _ = _tables(page, 2)
            assert set(runs) == set(k)
            assert runs[first]["titer [g/L]"] == f"{k[first]['titer']:.2f}"
            assert runs[first]["product [kg]"] == f"{k[first]['product_formed']:.3f}"
            assert runs[first]["Y P/S [g/g]"] == f"{k[first]['yield_product_substrate_consumed']:.4f}"
            assert runs[first]["energy [kWh]"] == f"{k[first]['energy.total']:,.1f}"
            assert runs[rec1]["step yield"] == f"{k[rec1]['step_yield']:.1%}"
            _choose(page, "Run", first)
            _wait_row(page, "titer", "unit", "g/L")
            _, kpis = _tables(page, 2)
            # the value column shows %.5g of the stored value
            for name in ("titer", "batch_duration", "yield_product_substrate_consumed", "energy.total"):
                assert float(kpis[name]["value"].replace(",", "")) == pytest.approx(k[first][name], rel=1e-4)
            _shot(page, "runs-admin.png", tmp_path)
        finally:
            browser.close()
