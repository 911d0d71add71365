"""Users, login attempts and sessions in the catalog (migration 10). Mixed into Catalog.

Passwords are stored only as Argon2id hashes made by processing/queries/auth.py; this module stores and
returns the hash and never sees a password. Sessions are stored by the SHA-256 of their token, so the catalog
holds no token a reader could replay.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from biopilot.access import User, UserRole
from biopilot.errors import StoreError
from biopilot.samples import from_us, to_us, utcnow

if TYPE_CHECKING:
    from storage.db import Database

_USER_COLUMNS = (
    "name, role, tenant, equipment, display_name, password_hash, must_change, disabled, oidc_subject,"
    " created_us, created_by"
)


def user_role(value: str) -> UserRole:
    try:
        return UserRole(value)
    except ValueError:
        raise StoreError(
            f"{value!r} is not a role; expected one of: {', '.join(r.value for r in UserRole)}"
        ) from None


class UsersMixin:
    db: Database

    # -- users -----------------------------------------------------------------------------------------
    def add_user(
        self,
        name: str,
        role: str | UserRole,
        *,
        created_by: str,
        tenant: str | None = None,
        equipment: tuple[str, ...] | list[str] = (),
        display_name: str = "",
        password_hash: str | None = None,
        must_change: bool = False,
        oidc_subject: str | None = None,
    ) -> User:
        """A new user; StoreError if the name is taken or the role and tenant do not fit."""
        role = user_role(str(role))
        if not name or any(c.isspace() for c in name):
            raise StoreError(f"user name {name!r}: one word without spaces")
        if role == UserRole.STARTUP and not tenant:
            raise StoreError(f"user {name}: a startup member needs a tenant (--tenant)")
        if role != UserRole.STARTUP and tenant:
            raise StoreError(f"user {name}: only startup members belong to a tenant")
        if role != UserRole.OPERATOR and equipment:
            raise StoreError(f"user {name}: only operators are limited to equipment")
        row = (
            name,
            role.value,
            tenant,
            json.dumps(list(equipment)),
            display_name,
            password_hash,
            int(must_change),
            0,
            oidc_subject,
            to_us(utcnow()),
            created_by,
        )
        with self.db.transaction(f"add user {name}") as cur:
            if cur.execute("SELECT 1 FROM users WHERE name = ?", (name,)):
                raise StoreError(f"user {name} exists already")
            if oidc_subject and cur.execute("SELECT 1 FROM users WHERE oidc_subject = ?", (oidc_subject,)):
                raise StoreError(f"another user logs in as {oidc_subject} already")
            cur.execute(f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        user = self.user(name)
        assert user is not None
        return user

    def user(self, name: str) -> User | None:
        rows = self.db.query(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))
        return _user(rows[0]) if rows else None

    def user_by_oidc(self, subject: str) -> User | None:
        rows = self.db.query(f"SELECT {_USER_COLUMNS} FROM users WHERE oidc_subject = ?", (subject,))
        return _user(rows[0]) if rows else None

    def users(self, *, tenant: str | None = None) -> list[User]:
        if tenant is not None:
            rows = self.db.query(
                f"SELECT {_USER_COLUMNS} FROM users WHERE tenant = ? ORDER BY name", (tenant,)
            )
        else:
            rows = self.db.query(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")
        return [_user(r) for r in rows]

    def has_users(self) -> bool:
        return bool(self.db.query("SELECT 1 FROM users LIMIT 1"))

    def password_hash(self, name: str) -> str | None:
        rows = self.db.query("SELECT password_hash FROM users WHERE name = ?", (name,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def set_password_hash(self, name: str, password_hash: str, *, must_change: bool) -> None:
        self._require_user(name)
        self.db.query(
            "UPDATE users SET password_hash = ?, must_change = ? WHERE name = ?",
            (password_hash, int(must_change), name),
        )

    def set_user_disabled(self, name: str, disabled: bool) -> User:
        self._require_user(name)
        self.db.query("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
        if disabled:
            self.end_sessions(name)
        user = self.user(name)
        assert user is not None
        return user

    def _require_user(self, name: str) -> User:
        user = self.user(name)
        if user is None:
            raise StoreError(f"no user {name!r}; `biopilot users list` shows them")
        return user

    # -- login attempts (throttling) -------------------------------------------------------------------
    def record_login_attempt(
        self, user_name: str, address: str, ok: bool, ts: datetime | None = None
    ) -> None:
        self.db.query(
            "INSERT INTO login_attempts (ts_us, user_name, address, ok) VALUES (?, ?, ?, ?)",
            (to_us(ts or utcnow()), user_name, address, int(ok)),
        )

    def failed_logins(
        self, since: datetime, *, user_name: str | None = None, address: str | None = None
    ) -> list[datetime]:
        """Times of the failed attempts since `since` for a user name (or an address) after its last
        successful login, oldest first."""
        column, value = ("user_name", user_name) if user_name is not None else ("address", address)
        last_ok = self.db.query(
            f"SELECT MAX(ts_us) FROM login_attempts WHERE {column} = ? AND ok = 1", (value,)
        )
        start = to_us(since)
        if last_ok and last_ok[0][0] is not None:
            start = max(start, int(last_ok[0][0]) + 1)
        rows = self.db.query(
            f"SELECT ts_us FROM login_attempts WHERE {column} = ? AND ok = 0 AND ts_us >= ? ORDER BY ts_us",
            (value, start),
        )
        return [from_us(int(r[0])) for r in rows]

    # -- sessions --------------------------------------------------------------------------------------
    def create_session(self, token_sha256: str, user_name: str, address: str, ts: datetime) -> None:
        self.db.query(
            "INSERT INTO sessions (token_sha256, user_name, address, created_us, last_seen_us)"
            " VALUES (?, ?, ?, ?, ?)",
            (token_sha256, user_name, address, to_us(ts), to_us(ts)),
        )

    def session(self, token_sha256: str) -> tuple[str, datetime, datetime, bool] | None:
        """(user name, created, last seen, ended) of a session."""
        rows = self.db.query(
            "SELECT user_name, created_us, last_seen_us, ended_us FROM sessions WHERE token_sha256 = ?",
            (token_sha256,),
        )
        if not rows:
            return None
        user, created, seen, ended = rows[0]
        return str(user), from_us(int(created)), from_us(int(seen)), ended is not None  # type: ignore[call-overload]

    def touch_session(self, token_sha256: str, ts: datetime) -> None:
        self.db.query(
            "UPDATE sessions SET last_seen_us = ? WHERE token_sha256 = ?", (to_us(ts), token_sha256)
        )

    def end_session(self, token_sha256: str, ts: datetime | None = None) -> None:
        self.db.query(
            "UPDATE sessions SET ended_us = ? WHERE token_sha256 = ? AND ended_us IS NULL",
            (to_us(ts or utcnow()), token_sha256),
        )

    def end_sessions(self, user_name: str) -> None:
        self.db.query(
            "UPDATE sessions SET ended_us = ? WHERE user_name = ? AND ended_us IS NULL",
            (to_us(utcnow()), user_name),
        )


def _user(row: tuple[Any, ...]) -> User:
    name, role, tenant, equipment, display, pw, must, disabled, oidc, created, by = row
    return User(
        name=str(name),
        role=UserRole(str(role)),
        tenant=str(tenant) if tenant is not None else None,
        equipment=tuple(json.loads(str(equipment))),
        display_name=str(display or ""),
        disabled=bool(disabled),
        must_change_password=bool(must),
        has_password=pw is not None,
        oidc_subject=str(oidc) if oidc is not None else None,
        created=from_us(int(created)),
        created_by=str(by),
    )
