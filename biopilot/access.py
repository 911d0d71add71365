"""Who may see what: the roles, the viewer every read is made for, and the records of users, trials,
trial invitations and audit entries.

These are kernel records (no I/O): the catalog persists them (storage/users.py, storage/trials.py,
storage/audit.py), the query layer (processing/queries/) filters every read by a `Viewer`, and the dashboard
and the CLI both build one — the dashboard from a login, the CLI from `--user`/BIOPILOT_USER.

Roles:
  admin     the host plant's IT: users, tags, trials; sees everything
  operator  the host plant: everything on its equipment (all equipment when none is named)
  startup   a member of one tenant (a startup company): its tenant's trials and the runs in them only
  partner   invited per trial: the trial, its runs' KPIs (the evidence) and the baseline as aggregates only
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class UserRole(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    STARTUP = "startup"
    PARTNER = "partner"


def is_loopback(address: str | None) -> bool:
    """127.0.0.0/8, ::1 and localhost; an empty address means every interface (not loopback)."""
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


LOCAL_ADMIN = "local"  # the viewer of a data directory that has no users yet (see Viewer.local_admin)


@dataclass(frozen=True)
class Viewer:
    """The person a read is made for. `tenant`: a startup member's tenant. `equipment`: an operator's
    equipment (empty: every equipment of the site). Built from a User (the catalog is asked again for trial
    membership and invitations on every read, so a revoked invitation takes effect at once)."""

    name: str
    role: UserRole
    tenant: str | None = None
    equipment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.role == UserRole.STARTUP and not self.tenant:
            raise ValueError(f"viewer {self.name!r}: a startup member belongs to a tenant")

    @classmethod
    def local_admin(cls) -> Viewer:
        """Who acts on a data directory without users: its host (file access is the admin boundary)."""
        return cls(LOCAL_ADMIN, UserRole.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.ADMIN

    def describe(self) -> str:
        extra = f", tenant {self.tenant}" if self.tenant else ""
        if self.role == UserRole.OPERATOR:
            extra = f", equipment {', '.join(self.equipment)}" if self.equipment else ", all equipment"
        return f"{self.name} ({self.role.value}{extra})"


@dataclass(frozen=True)
class User:
    name: str
    role: UserRole
    tenant: str | None
    equipment: tuple[str, ...]
    display_name: str
    disabled: bool
    must_change_password: bool
    has_password: bool
    oidc_subject: str | None  # the identity provider's e-mail or subject this user logs in as (OIDC)
    created: datetime
    created_by: str

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.name, self.role, self.tenant, self.equipment)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.value,
            "tenant": self.tenant,
            "equipment": list(self.equipment),
            "display_name": self.display_name,
            "disabled": self.disabled,
            "must_change_password": self.must_change_password,
            "has_password": self.has_password,
            "oidc_subject": self.oidc_subject,
            "created": self.created.isoformat(),
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class Trial:
    """A trial: a startup (tenant) tries its product or process on the host's equipment. Minimal on
    purpose: charters, exclusions and verdicts are tables of their own that refer to `id`."""

    id: str
    title: str
    equipment: tuple[str, ...]
    startup: str  # the tenant id of the startup that owns the trial
    product: str | None
    created: datetime
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "equipment": list(self.equipment),
            "startup": self.startup,
            "product": self.product,
            "created": self.created.isoformat(),
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class TrialInvitation:
    trial_id: str
    user: str
    invited_by: str
    invited: datetime


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log. `hash` is the SHA-256 of the canonical serialisation of every other field
    (prev_hash included), so each entry seals the one before it (storage/audit.py)."""

    seq: int
    ts: datetime
    actor: str
    action: str  # e.g. login.ok, login.failed, user.add, trial.create, run.edit, kpis.recompute, export
    target: str
    why: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.ts.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "why": self.why,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }
