"""Trials and trial invitations in the catalog (migration 11). Mixed into Catalog.

A trial is minimal on purpose: id, title, the equipment it runs on, the startup (tenant) that owns it, the
product, when and by whom it was created. Runs join a trial through runs.trial_id (kind "trial" for the
trial's own runs). The trials feature keeps its charter versions, exclusions and verdicts in tables of its
own that refer to trials (id); partners see a trial when they are invited (trial_invitations).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from biopilot.access import Trial, TrialInvitation, UserRole
from biopilot.errors import StoreError
from biopilot.samples import from_us, to_us, utcnow

if TYPE_CHECKING:
    from storage.db import Database

_TRIAL_COLUMNS = "id, title, equipment, startup, product, created_us, created_by"


class TrialsMixin:
    db: Database

    def create_trial(
        self,
        trial_id: str,
        *,
        title: str,
        equipment: tuple[str, ...] | list[str],
        startup: str,
        created_by: str,
        product: str | None = None,
    ) -> Trial:
        """A new trial; StoreError if the id is taken."""
        if not trial_id or any(c.isspace() for c in trial_id):
            raise StoreError(f"trial id {trial_id!r}: one word without spaces")
        if not equipment:
            raise StoreError(f"trial {trial_id}: name the equipment it runs on")
        if not startup:
            raise StoreError(f"trial {trial_id}: name the startup (tenant) that owns it")
        row = (trial_id, title, json.dumps(list(equipment)), startup, product, to_us(utcnow()), created_by)
        with self.db.transaction(f"create trial {trial_id}") as cur:
            if cur.execute("SELECT 1 FROM trials WHERE id = ?", (trial_id,)):
                raise StoreError(f"trial {trial_id} exists already")
            cur.execute(f"INSERT INTO trials ({_TRIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        trial = self.trial(trial_id)
        assert trial is not None
        return trial

    def trial(self, trial_id: str) -> Trial | None:
        rows = self.db.query(f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE id = ?", (trial_id,))
        return _trial(rows[0]) if rows else None

    def trials(self, *, startup: str | None = None, ids: set[str] | None = None) -> list[Trial]:
        """Trials, oldest first; of one startup, or with these ids only."""
        if startup is not None:
            rows = self.db.query(
                f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE startup = ? ORDER BY created_us, id", (startup,)
            )
        else:
            rows = self.db.query(f"SELECT {_TRIAL_COLUMNS} FROM trials ORDER BY created_us, id")
        out = [_trial(r) for r in rows]
        return [t for t in out if t.id in ids] if ids is not None else out

    # -- invitations -----------------------------------------------------------------------------------
    def invite(self, trial_id: str, user_name: str, *, invited_by: str) -> TrialInvitation:
        """Invite a partner to a trial (again: no change)."""
        if self.trial(trial_id) is None:
            raise StoreError(f"no trial {trial_id!r}; `biopilot trials list` shows them")
        rows = self.db.query("SELECT role FROM users WHERE name = ?", (user_name,))
        if not rows:
            raise StoreError(f"no user {user_name!r}; `biopilot users list` shows them")
        if rows[0][0] != UserRole.PARTNER.value:
            raise StoreError(
                f"user {user_name} is a {rows[0][0]}, not a partner: only partners are invited to trials "
                "(startup members see their tenant's trials, operators their equipment's)"
            )
        self.db.query(
            "INSERT INTO trial_invitations (trial_id, user_name, invited_by, invited_us) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (trial_id, user_name) DO NOTHING",
            (trial_id, user_name, invited_by, to_us(utcnow())),
        )
        return next(i for i in self.invitations(trial_id=trial_id) if i.user == user_name)

    def uninvite(self, trial_id: str, user_name: str) -> bool:
        """Withdraw an invitation; False if there was none."""
        with self.db.transaction(f"withdraw the invitation of {user_name} to {trial_id}") as cur:
            found = cur.execute(
                "SELECT 1 FROM trial_invitations WHERE trial_id = ? AND user_name = ?", (trial_id, user_name)
            )
            cur.execute(
                "DELETE FROM trial_invitations WHERE trial_id = ? AND user_name = ?", (trial_id, user_name)
            )
        return bool(found)

    def invitations(
        self, *, trial_id: str | None = None, user_name: str | None = None
    ) -> list[TrialInvitation]:
        sql = "SELECT trial_id, user_name, invited_by, invited_us FROM trial_invitations"
        where, params = [], []
        for column, value in (("trial_id", trial_id), ("user_name", user_name)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY invited_us, trial_id, user_name"
        return [
            TrialInvitation(str(t), str(u), str(b), from_us(int(ts)))  # type: ignore[call-overload]
            for t, u, b, ts in self.db.query(sql, tuple(params))
        ]


def _trial(row: tuple[Any, ...]) -> Trial:
    trial_id, title, equipment, startup, product, created, by = row
    return Trial(
        id=str(trial_id),
        title=str(title),
        equipment=tuple(json.loads(str(equipment))),
        startup=str(startup),
        product=str(product) if product is not None else None,
        created=from_us(int(created)),
        created_by=str(by),
    )
