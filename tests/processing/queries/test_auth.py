"""Logins: Argon2id hashes, throttling per user and per address, session expiry (idle and absolute), logout,
disabled accounts, one-time passwords, OIDC identities — each login in the audit log. A clock the test moves
stands in for waiting 15 minutes (the only fake here: the catalog, hashing and audit log are real)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from biopilot.samples import utcnow
from processing.queries.auth import Authenticator, AuthError, LoginPolicy, hash_password
from storage import Catalog

PASSWORD = "a long enough secret"


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Catalog, Authenticator, Clock]:
    catalog = Catalog(tmp_path / "biopilot.db")
    clock = Clock()
    auth = Authenticator(catalog, LoginPolicy(user_failures=3, address_failures=5), clock)
    catalog.add_user(
        "ann", "startup", created_by="root", tenant="acme", password_hash=hash_password(PASSWORD)
    )
    catalog.add_user("bob", "operator", created_by="root", password_hash=hash_password(PASSWORD))
    yield catalog, auth, clock
    catalog.close()


def test_passwords_are_argon2id_and_login_opens_a_session(
    setup: tuple[Catalog, Authenticator, Clock],
) -> None:
    catalog, auth, _ = setup
    assert catalog.password_hash("ann").startswith("$argon2id$")  # type: ignore[union-attr]
    result = auth.login("ann", PASSWORD, "10.1.1.1")
    assert result.ok and result.viewer.tenant == "acme" and result.token  # type: ignore[union-attr]
    user, why = auth.resume(result.token)
    assert user is not None and user.name == "ann" and why == ""
    assert [(e.actor, e.action, e.target) for e in catalog.audit.entries()] == [
        ("ann", "login.ok", "10.1.1.1")
    ]
    # the catalog keeps only the token's hash
    assert catalog.session(result.token) is None  # type: ignore[arg-type]


def test_wrong_password_and_unknown_user_get_the_same_answer(
    setup: tuple[Catalog, Authenticator, Clock],
) -> None:
    catalog, auth, _ = setup
    wrong = auth.login("ann", "nope", "10.1.1.1")
    unknown = auth.login("mallory-typed-her-password-here", "x", "10.1.1.1")
    assert not wrong.ok and not unknown.ok and wrong.message == unknown.message
    entries = catalog.audit.entries()
    assert [(e.actor, e.action, e.why) for e in entries] == [
        ("ann", "login.failed", "wrong password"),
        ("(unknown user)", "login.failed", "unknown user"),
    ]
    assert "mallory" not in str([e.to_json() for e in entries])  # a typed name that is no user is not kept


def test_throttling_per_user(setup: tuple[Catalog, Authenticator, Clock]) -> None:
    catalog, auth, clock = setup
    for k in range(3):
        assert not auth.login("ann", f"guess {k}", f"10.0.0.{k}").ok  # three addresses: only the user counts
    locked = auth.login("ann", PASSWORD, "10.0.0.9")  # the right password, but locked
    assert not locked.ok and "Too many failed logins" in locked.message and "15 min" in locked.message
    assert auth.login("bob", PASSWORD, "10.0.0.9").ok  # another user is not locked
    assert catalog.audit.entries(action="login.failed")[-1].why == "throttled"
    clock.now += timedelta(minutes=15, seconds=1)  # the failures leave the window
    assert auth.login("ann", PASSWORD, "10.0.0.9").ok


def test_throttling_per_address(setup: tuple[Catalog, Authenticator, Clock]) -> None:
    _catalog, auth, clock = setup
    for k in range(5):  # five user names (some unknown) from one address
        auth.login(["ann", "bob", "carl", "dora", "eve"][k], "wrong", "10.9.9.9")
    blocked = auth.login("bob", PASSWORD, "10.9.9.9")
    assert not blocked.ok and "Too many" in blocked.message
    assert auth.login("bob", PASSWORD, "10.8.8.8").ok  # from elsewhere bob may sign in
    clock.now += timedelta(minutes=16)
    assert auth.login("bob", PASSWORD, "10.9.9.9").ok


def test_sessions_expire_when_idle_and_after_max_age(setup: tuple[Catalog, Authenticator, Clock]) -> None:
    catalog, auth, clock = setup
    token = auth.login("ann", PASSWORD, None).token
    clock.now += timedelta(minutes=29)
    assert auth.resume(token)[0] is not None  # active: the idle clock restarts
    clock.now += timedelta(minutes=29)
    assert auth.resume(token)[0] is not None
    clock.now += timedelta(minutes=31)  # 31 min without a request
    user, why = auth.resume(token)
    assert user is None and "without activity" in why
    assert auth.resume(token)[0] is None  # ended for good
    # absolute: 12 h after sign-in even while active
    token = auth.login("ann", PASSWORD, None).token
    for _ in range(25):
        clock.now += timedelta(minutes=29)
        user, why = auth.resume(token)
        if user is None:
            break
    assert user is None and "12 h after sign-in" in why
    assert any(e.action == "session.expired" for e in catalog.audit.entries())


def test_logout_and_disabling_end_the_session(setup: tuple[Catalog, Authenticator, Clock]) -> None:
    catalog, auth, _ = setup
    token = auth.login("ann", PASSWORD, None).token
    auth.logout(token)
    assert auth.resume(token) == (None, "Signed out.")
    token = auth.login("bob", PASSWORD, None).token
    catalog.set_user_disabled("bob", True)
    assert auth.resume(token)[0] is None
    assert not auth.login("bob", PASSWORD, None).ok
    assert catalog.audit.entries()[-1].why == "disabled"


def test_one_time_password_must_be_changed(setup: tuple[Catalog, Authenticator, Clock]) -> None:
    catalog, auth, _ = setup
    auth.set_password("ann", "one-time-0123456", by="root", must_change=True)
    result = auth.login("ann", "one-time-0123456", None)
    assert result.ok and result.must_change_password
    with pytest.raises(AuthError, match="at least 12"):
        auth.change_password("ann", "one-time-0123456", "short")
    with pytest.raises(AuthError, match="wrong"):
        auth.change_password("ann", "not it", "a brand new password")
    auth.change_password("ann", "one-time-0123456", "a brand new password")
    assert not catalog.user("ann").must_change_password  # type: ignore[union-attr]
    assert auth.login("ann", "a brand new password", None).ok


def test_oidc_identity_maps_to_a_user(setup: tuple[Catalog, Authenticator, Clock]) -> None:
    catalog, auth, _ = setup
    catalog.add_user("pat", "partner", created_by="root", oidc_subject="pat@buyer.example")
    assert auth.oidc_login("pat@buyer.example", "10.2.2.2").viewer.name == "pat"  # type: ignore[union-attr]
    refused = auth.oidc_login("eve@elsewhere.example", "10.2.2.2")
    assert not refused.ok and "biopilot users add" in refused.message


# -- the dashboard refuses to listen beyond 127.0.0.1 without login ---------------------------------------
REPO = Path(__file__).resolve().parents[3]


def _biopilot(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "biopilot", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_dashboard_on_all_interfaces_refuses_without_login(tmp_path: Path) -> None:
    config = str(REPO / "config" / "demo.toml")
    data = str(tmp_path / "data")
    result = _biopilot(
        "dashboard",
        "--address",
        "0.0.0.0",
        "--no-browser",
        "--config",
        config,
        "--data-dir",
        data,
        cwd=tmp_path,
    )
    print(result.stderr)
    assert result.returncode == 2 and result.stdout == ""
    assert "would listen on 0.0.0.0 without login" in result.stderr and "biopilot users add" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # with a user who has a password, login is on: the refusal is gone (the port check comes next)
    added = _biopilot(
        "users", "add", "root", "--role", "admin", "--config", config, "--data-dir", data, cwd=tmp_path
    )
    assert added.returncode == 0, added.stderr
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "biopilot",
            "dashboard",
            "--address",
            "0.0.0.0",
            "--port",
            str(port),
            "--no-browser",
            "--config",
            config,
            "--data-dir",
            data,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        from biopilot.app.broker import wait_reachable

        assert wait_reachable("127.0.0.1", port, 90), "the dashboard did not start on 0.0.0.0 with login on"
        # SIGTERM to `biopilot dashboard` alone (not its group) stops the server: it is the server
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        from biopilot.app.broker import reachable

        assert not reachable("127.0.0.1", port, 0.5), "Streamlit outlived `biopilot dashboard`"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # whatever is left of the dashboard's group
        proc.wait(20)
