"""Sign-in through an identity provider (OIDC, Streamlit's st.login), in headless Chromium against a real
OpenID Connect provider running locally: oidc-provider-mock (a Flask + Authlib provider for tests; its
authorize page asks for the subject instead of a password). `.streamlit/secrets.toml` holds the [auth] keys
exactly as the README tells a plant to write them.

A partner mapped to the identity (`users add --oidc`) lands on the dashboard with the partner's view; an
identity without a BioPilot user is refused and told whom to ask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import chromium_or_skip, free_port
from tests.dashboard.test_browser import CHROMIUM_ARGS, SHOTS
from tests.processing.queries.site import CONFIG, build


@pytest.mark.browser
@pytest.mark.slow
def test_oidc_sign_in_maps_the_identity_to_its_user(tmp_path: Path) -> None:
    pytest.importorskip("authlib")
    oidc = pytest.importorskip("oidc_provider_mock")
    from playwright.sync_api import sync_playwright

    from biopilot.app.supervisor import wait_http_ok
    from storage import Catalog

    chromium = chromium_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    build(data)
    catalog = Catalog(data / "biopilot.db")
    catalog.add_user("pia", "partner", created_by="root", oidc_subject="pia@buyer.example")
    catalog.invite("TA", "pia", invited_by="root")
    catalog.close()

    port = free_port()
    with oidc.run_server_in_thread(port=free_port()) as provider:
        issuer = f"http://127.0.0.1:{provider.server_port}"
        (tmp_path / ".streamlit").mkdir()
        secrets = tmp_path / ".streamlit" / "secrets.toml"
        secrets.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            'cookie_secret = "a-long-random-test-cookie-secret-0123456789"\n'
            'client_id = "biopilot"\n'
            'client_secret = "biopilot-test-secret"\n'
            f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n'
        )
        secrets.chmod(0o600)
        log = (tmp_path / "dashboard.log").open("wb")
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "biopilot", "dashboard", "--no-browser", "--port", str(port)),
                *("--config", str(CONFIG), "--data-dir", str(data)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,  # where Streamlit finds .streamlit/secrets.toml
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            assert wait_http_ok(f"{url}/_stcore/health", 90.0, lambda: proc.poll() is None)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                try:
                    for subject, expect_in in (("pia@buyer.example", True), ("eve@elsewhere.example", False)):
                        context = browser.new_context(viewport={"width": 1400, "height": 1000})
                        page = context.new_page()
                        page.goto(url, wait_until="domcontentloaded", timeout=30_000)
                        page.get_by_role("button", name="Sign in with the plant's identity provider").click(
                            timeout=30_000
                        )
                        page.wait_for_url(f"{issuer}/**", timeout=30_000)  # the provider's own page
                        page.locator("input[name=sub]").fill(subject)
                        page.get_by_role("button", name="Authorize").click()
                        page.wait_for_url(f"{url}/**", timeout=30_000)  # back at the dashboard
                        if expect_in:
                            page.locator("h1", has_text="Live").wait_for(timeout=30_000)
                            assert "Signed in as pia · partner" in page.inner_text("body")
                            page.locator('[data-testid="stSidebarNavLink"]', has_text="Trials").click()
                            page.locator("h1", has_text="Trials").wait_for(timeout=20_000)
                            page.get_by_role("combobox", name="Trial").wait_for(timeout=20_000)
                            assert page.get_by_role("combobox", name="Trial").input_value() == "TA"
                            page.screenshot(
                                path=str(SHOTS / "access-oidc-partner-trials.png"), full_page=True
                            )
                        else:
                            page.get_by_text("has no BioPilot account here").wait_for(timeout=30_000)
                            text = page.inner_text("body")
                            assert "eve@elsewhere.example" in text and "biopilot users add" in text
                            assert "Live" not in [h.inner_text() for h in page.locator("h1").all()]
                        context.close()
                finally:
                    browser.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the dashboard and anything it started
            proc.wait(20)
            log.close()
    catalog = Catalog(data / "biopilot.db")
    try:
        logins = [(e.actor, e.action, e.details.get("method")) for e in catalog.audit.entries(action="login")]
    finally:
        catalog.close()
    assert ("pia", "login.ok", "oidc") in logins
    assert ("(unknown user)", "login.failed", None) in logins
