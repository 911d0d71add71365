"""Logins: local accounts with Argon2id password hashes, throttling per user and per address, sessions that
expire, and the identity an OIDC provider vouched for (Streamlit's st.login) mapped to a BioPilot user.

Every login, success or failure, is appended to the audit log (who, from which address, why it failed). A
user name that does not exist is not written anywhere (people type their password into the user field); the
attempt counts against the address.

Sessions: a random token (32 bytes) the dashboard keeps in the browser tab's session; the catalog stores its
SHA-256 only. A session ends at logout, after `idle` without a request, after `max_age` whatever happens, and
when its user is disabled — checked on every page run by `resume`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from biopilot.access import User, Viewer
from biopilot.errors import BioPilotError
from biopilot.samples import utcnow
from storage.catalog import Catalog

_HASHER = PasswordHasher()  # Argon2id (RFC 9106), argon2-cffi's defaults: t=3, m=64 MiB, p=4
# verified against when the user does not exist, so an unknown name takes as long as a wrong password
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
LOCAL_ADDRESS = "local"  # what Streamlit reports for a browser on the same machine (no IP address)


class AuthError(BioPilotError):
    """A password that is refused (too short, the old one wrong)."""


@dataclass(frozen=True)
class LoginPolicy:
    user_failures: int = 5  # failed attempts per user name in `window` before it is locked for the window
    address_failures: int = 20  # failed attempts per address in `window` (several users behind one address)
    window: timedelta = timedelta(minutes=15)
    idle: timedelta = timedelta(minutes=30)
    max_age: timedelta = timedelta(hours=12)
    min_password_length: int = 12


@dataclass(frozen=True)
class Login:
    ok: bool
    message: str  # for the person at the login form (the same for a wrong name and a wrong password)
    token: str | None = None
    viewer: Viewer | None = None
    must_change_password: bool = False


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def one_time_password() -> str:
    """A password to hand out once (16 URL-safe characters, 96 bits); the user must change it."""
    return secrets.token_urlsafe(12)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(
        self, catalog: Catalog, policy: LoginPolicy | None = None, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._catalog = catalog
        self.policy = policy or LoginPolicy()
        self._clock = clock

    # -- local accounts ----------------------------------------------------------------------------------
    def login(self, name: str, password: str, address: str | None) -> Login:
        address = address or LOCAL_ADDRESS
        name = name.strip()
        now = self._clock()
        user = self._catalog.user(name) if name else None
        who = name if user is not None else "(unknown user)"
        wait = self._throttled(name if user is not None else None, address, now)
        if wait is not None:
            self._catalog.audit.append(who, "login.failed", address, why="throttled", method="password")
            minutes = max(1, math.ceil(wait.total_seconds() / 60))
            return Login(False, f"Too many failed logins. Try again in {minutes} min.")
        stored = self._catalog.password_hash(name) if user is not None else None
        matches = _verify(stored or _DUMMY_HASH, password) and stored is not None
        ok = matches and user is not None and not user.disabled
        self._catalog.record_login_attempt(name if user is not None else "", address, ok, now)
        if not ok:
            why = "unknown user" if user is None else "disabled" if matches else "wrong password"
            self._catalog.audit.append(who, "login.failed", address, why=why, method="password")
            return Login(False, "Wrong user name or password, or the account is disabled.")
        assert user is not None and stored is not None
        if _HASHER.check_needs_rehash(stored):
            self._catalog.set_password_hash(
                name, hash_password(password), must_change=user.must_change_password
            )
        return self._open_session(user, address, now, "password")

    def _throttled(self, name: str | None, address: str, now: datetime) -> timedelta | None:
        """How long this user name or address must wait, or None."""
        since = now - self.policy.window
        waits = []
        checks = [(self._catalog.failed_logins(since, address=address), self.policy.address_failures)]
        if name is not None:
            checks.append((self._catalog.failed_logins(since, user_name=name), self.policy.user_failures))
        for failures, limit in checks:
            if len(failures) >= limit:
                # locked until enough of the failures have left the window
                waits.append(failures[len(failures) - limit] + self.policy.window - now)
        return max(waits) if waits else None

    def _open_session(self, user: User, address: str, now: datetime, method: str) -> Login:
        token = secrets.token_urlsafe(32)
        self._catalog.create_session(_token_hash(token), user.name, address, now)
        self._catalog.audit.append(user.name, "login.ok", address, why="", method=method)
        return Login(
            True,
            f"Signed in as {user.name}.",
            token,
            user.viewer,
            user.must_change_password and method == "password",
        )

    # -- identity provider (OIDC) --------------------------------------------------------------------------
    def oidc_login(self, subject: str, address: str | None) -> Login:
        """The identity provider vouched for `subject` (its e-mail, else its sub): the BioPilot user that
        logs in as it (`biopilot users add NAME --oidc SUBJECT`), if enabled."""
        address = address or LOCAL_ADDRESS
        now = self._clock()
        user = self._catalog.user_by_oidc(subject)
        if user is None or user.disabled:
            why = "no user for this identity" if user is None else "disabled"
            self._catalog.audit.append(
                user.name if user else "(unknown user)", "login.failed", address, why=why
            )
            return Login(
                False,
                f"{subject} has no BioPilot account here (or it is disabled). Ask the admin: "
                f"`biopilot users add NAME --role ROLE --oidc {subject}`.",
            )
        self._catalog.record_login_attempt(user.name, address, True, now)
        return self._open_session(user, address, now, "oidc")

    # -- sessions ----------------------------------------------------------------------------------------
    def resume(self, token: str | None) -> tuple[User | None, str]:
        """The session's user, or None and why not ("" when there is no session)."""
        if not token:
            return None, ""
        digest = _token_hash(token)
        found = self._catalog.session(digest)
        if found is None:
            return None, "Signed out."
        name, created, last_seen, ended = found
        if ended:
            return None, "Signed out."
        now = self._clock()
        user = self._catalog.user(name)
        why = ""
        if user is None or user.disabled:
            why = "This account has been disabled."
        elif now - created > self.policy.max_age:
            why = f"The session expired ({_span(self.policy.max_age)} after sign-in). Please sign in again."
        elif now - last_seen > self.policy.idle:
            why = (
                f"The session expired after {_span(self.policy.idle)} without activity. Please sign in again."
            )
        if why:
            self._catalog.end_session(digest, now)
            self._catalog.audit.append(name, "session.expired", "", why=why)
            return None, why
        if now - last_seen > timedelta(seconds=30):  # one write per half minute at most
            self._catalog.touch_session(digest, now)
        return user, ""

    def logout(self, token: str | None) -> None:
        if not token:
            return
        found = self._catalog.session(_token_hash(token))
        self._catalog.end_session(_token_hash(token), self._clock())
        if found is not None and not found[3]:
            self._catalog.audit.append(found[0], "logout", "")

    # -- passwords ---------------------------------------------------------------------------------------
    def change_password(self, name: str, old: str, new: str) -> None:
        """The user changes their own password (the one-time password included)."""
        stored = self._catalog.password_hash(name)
        if stored is None or not _verify(stored, old):
            self._catalog.audit.append(
                name, "user.password.failed", name, why="the current password was wrong"
            )
            raise AuthError("the current password is wrong")
        self._check_new(new, old)
        self._catalog.set_password_hash(name, hash_password(new), must_change=False)
        self._catalog.audit.append(name, "user.password", name, why="changed by the user")

    def set_password(self, name: str, new: str, *, by: str, must_change: bool, why: str = "") -> None:
        """An admin sets a password (a one-time one: must_change)."""
        self._check_new(new, None)
        self._catalog.set_password_hash(name, hash_password(new), must_change=must_change)
        self._catalog.end_sessions(name)
        self._catalog.audit.append(by, "user.password", name, why=why, must_change=must_change)

    def check_new_password(self, new: str) -> None:
        self._check_new(new, None)

    def _check_new(self, new: str, old: str | None) -> None:
        if len(new) < self.policy.min_password_length:
            raise AuthError(f"a password has at least {self.policy.min_password_length} characters")
        if old is not None and new == old:
            raise AuthError("the new password must differ from the old one")


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _span(d: timedelta) -> str:
    minutes = int(d.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes >= 120 and minutes % 60 == 0 else f"{minutes} min"
