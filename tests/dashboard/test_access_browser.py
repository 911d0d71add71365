"""Who sees what, in a real headless Chromium: `biopilot dashboard` on the isolation site (two startups, a
partner, an operator, the admin; tests/processing/queries/site.py), signed in as each user in turn. What the
Runs and Trials pages offer (the run and trial choosers, the tables' cells, the page text) must be allowed to
that user; the forbidden count is printed and must be 0. Screenshots of the sign-in page and of each user's
pages go to /tmp/biopilot-shots."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import chromium_or_skip, free_port
from tests.dashboard.test_browser import CHROMIUM_ARGS, SHOTS
from tests.processing.queries.site import CONFIG, PASSWORD, RUNS, TRIALS, USERS, allowed, build, word_counts
from tests.processing.queries.test_review_queries import add_references_and_alarms

if TYPE_CHECKING:
    from playwright.sync_api import Page

# every cell a Streamlit dataframe shows, read from its grid (the canvas grid keeps an accessible table)
_CELLS_JS = """() => [...document.querySelectorAll('[data-testid="stDataFrame"] [role="gridcell"], '
    + '[data-testid="stDataFrame"] td')].map(c => c.innerText.trim()).filter(t => t)"""


def _options(page: Page, label: str) -> list[str]:
    """The options of a selectbox: open it, read the list, close it."""
    box = page.get_by_role("combobox", name=label)
    box.wait_for(timeout=30_000)  # every user here has runs and trials: the chooser comes
    for _ in range(5):  # a click while the page is still rendering may not open the list
        box.click()
        try:
            page.get_by_role("option").first.wait_for(timeout=5_000)
            break
        except Exception:
            page.keyboard.press("Escape")
    options = [o.inner_text().strip() for o in page.get_by_role("option").all()]
    page.keyboard.press("Escape")
    return options


def _shot(page: Page, name: str, tmp: Path) -> None:
    path = tmp / name
    page.screenshot(path=str(path), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / name)


def _sign_in(page: Page, url: str, user: str) -> None:
    page.goto(url, wait_until="domcontentloaded", timeout=30_000)
    page.locator("h1", has_text="sign in").wait_for(timeout=30_000)
    page.get_by_label("User", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").first.click()
    page.locator("h1", has_text="Live").wait_for(timeout=30_000)


def _go(page: Page, title: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
    page.locator("h1", has_text=title).wait_for(timeout=20_000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000
    )


@pytest.mark.browser
@pytest.mark.slow
def test_each_user_sees_only_their_runs_and_trials_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    build(data)
    add_references_and_alarms(data)  # a stored envelope and alarms: the Run review and Live show them
    port = free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "biopilot",
            "dashboard",
            "--no-browser",
            "--port",
            str(port),
            "--config",
            str(CONFIG),
            "--data-dir",
            str(data),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    matrix: dict[str, tuple[int, int]] = {}
    try:
        from biopilot.app.supervisor import wait_http_ok

        assert wait_http_ok(f"{url}/_stcore/health", 90.0, lambda: proc.poll() is None), (
            tmp_path / "dashboard.log"
        ).read_text()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                for user in USERS:
                    ok = allowed(user)
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = context.new_page()
                    page.goto(url, wait_until="domcontentloaded", timeout=30_000)
                    page.locator("h1", has_text="sign in").wait_for(timeout=30_000)
                    if user == USERS[0]:
                        _shot(page, "access-login.png", tmp_path)
                        # a wrong password keeps the sign-in page and shows no data
                        page.get_by_label("User", exact=True).fill(user)
                        page.get_by_label("Password", exact=True).fill("not the password")
                        page.get_by_role("button", name="Sign in").first.click()
                        page.get_by_text("Wrong user name or password").wait_for(timeout=20_000)
                    _sign_in(page, url, user)
                    if user != "pat" and user != "bob":  # they have no live run: no tiles
                        page.locator(".bp-tile").first.wait_for(timeout=30_000)
                    _shot(page, f"access-{user}-live.png", tmp_path)
                    texts = [page.inner_text("body")]

                    _go(page, "Runs")
                    runs = set(_options(page, "Run"))
                    cells = page.evaluate(_CELLS_JS)
                    texts += [page.inner_text("body"), "\n".join(cells)]
                    _shot(page, f"access-{user}-runs.png", tmp_path)

                    _go(page, "Trials")
                    trials = set(_options(page, "Trial"))
                    cells = page.evaluate(_CELLS_JS)
                    texts += [page.inner_text("body"), "\n".join(cells)]
                    _shot(page, f"access-{user}-trials.png", tmp_path)

                    # Run review and Compare runs (issue 11 B2): the run chooser offers the allowed runs
                    _go(page, "Run review")
                    reviewed = set(_options(page, "Run"))
                    page.wait_for_function(
                        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
                    )
                    texts.append(page.inner_text("body"))
                    _shot(page, f"access-{user}-review.png", tmp_path)
                    page.locator('[data-testid="stSidebarNavLink"]', has_text="Compare").click()
                    page.locator("h1", has_text="Compare runs").wait_for(timeout=20_000)
                    page.wait_for_function(
                        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
                    )
                    page.wait_for_function(  # the chart, or what the page says instead
                        "() => [...document.querySelectorAll('.js-plotly-plot')].some(d => d._fullData)"
                        " || document.querySelector('[data-testid=\"stAlert\"]')",
                        timeout=60_000,
                    )
                    texts.append(page.inner_text("body"))
                    _shot(page, f"access-{user}-compare.png", tmp_path)
                    context.close()
                    forbidden_review = reviewed - ok.runs
                    assert reviewed == set(ok.runs), (user, reviewed)
                    assert not forbidden_review

                    text = "\n".join(texts)
                    forbidden = (runs - ok.runs) | (trials - ok.trials)
                    forbidden |= {r for r in set(RUNS) - ok.runs if r in text}
                    forbidden |= set(word_counts(text, ok.forbidden_words))
                    matrix[user] = (len(runs) + len(trials), len(forbidden))
                    print(
                        f"chromium {user:5}: runs {sorted(runs)} trials {sorted(trials)} "
                        f"forbidden {sorted(forbidden)}"
                    )
                    assert runs == set(ok.runs), (user, runs)
                    assert trials == set(ok.trials), (user, trials)
                    assert not forbidden, (user, forbidden)
                    assert set(TRIALS) >= trials
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the dashboard and anything it started
        proc.wait(20)
        log.close()
    total = sum(f for _, f in matrix.values())
    print(f"chromium: forbidden items reached, all users: {total}; screenshots in {SHOTS}")
    assert total == 0 and len(matrix) == len(USERS)
