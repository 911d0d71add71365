"""Trial charters, the trial's runs and the exclusions ledger in the catalog (migration 20). Mixed into
Catalog.

- Charter versions (`trial_charters`): version 0 is the draft, written by `trials create --charter` and
  replaced freely until the lock; `lock_charter` makes version 1 from it (locking twice is an error). Every
  change after the lock is a new version (2, 3, …) with a required reason. Each version keeps the canonical
  JSON text (biopilot.charter.canonical_json) and its SHA-256, who made it and when.
- Members (`trial_members`): the trial runs (grp "trial": the charter's trial_runs at the lock, then
  `add_trial_run`) and the baseline runs frozen at the lock (grp "baseline": the charter's baseline_runs, or
  its [baseline] rule resolved then). A trial run also gets runs.trial_id = the trial and kind "trial", which
  is what the query layer lets the startup and invited partners see.
- Exclusions (`trial_exclusions`): a member run left out of the verdict, with a written reason, who and when.
- "Changed after the first trial run started" (`charter_changed_after_start`) is computed from the runs' start
  times: the judged (newest) version was made after the earliest start of a trial run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from biopilot.charter import CHARTER_FORMAT, Charter, canonical_json, charter_sha256
from biopilot.errors import StoreError
from biopilot.records import Run, RunKind
from biopilot.samples import from_us, to_us, utcnow

if TYPE_CHECKING:
    from biopilot.access import Trial
    from storage.db import Cursor, Database

DRAFT = 0
TRIAL = "trial"
BASELINE = "baseline"


@dataclass(frozen=True)
class CharterRecord:
    """One stored version of a trial's charter (version 0: the draft, not locked)."""

    trial_id: str
    version: int
    canonical_json: str
    sha256: str
    reason: str
    by: str
    at: datetime

    @property
    def locked(self) -> bool:
        return self.version > DRAFT

    @property
    def charter(self) -> Charter:
        doc = json.loads(self.canonical_json)
        if doc.get("format") != CHARTER_FORMAT:
            raise StoreError(f"trial {self.trial_id} charter version {self.version}: not {CHARTER_FORMAT}")
        return Charter.model_validate(doc["charter"])

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "reason": self.reason,
            "by": self.by,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True)
class ExclusionRecord:
    """A run left out of a trial's verdict: the written reason, who and when."""

    trial_id: str
    run_id: str
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True)
class TrialMember:
    trial_id: str
    run_id: str
    group: str  # "trial" | "baseline"
    added_by: str
    added: datetime


class ChartersMixin:
    db: Database

    if TYPE_CHECKING:  # provided by Catalog and TrialsMixin

        def trial(self, trial_id: str) -> Trial | None: ...
        def run(self, run_id: str) -> Run | None: ...
        def runs(
            self,
            equipment: str | None = None,
            *,
            open_only: bool = False,
            kind: str | None = None,
            trial_id: str | None = None,
        ) -> list[Run]: ...

    # -- charter versions -------------------------------------------------------------------------------
    def charter_versions(self, trial_id: str) -> list[CharterRecord]:
        """Every stored version, oldest first (the draft, version 0, only while it is not locked)."""
        rows = self.db.query(
            "SELECT trial_id, version, charter, sha256, reason, by_user, at_us FROM trial_charters"
            " WHERE trial_id = ? ORDER BY version",
            (trial_id,),
        )
        return [
            CharterRecord(str(t), int(v), str(c), str(h), str(r), str(b), from_us(int(a)))
            for t, v, c, h, r, b, a in rows
        ]

    def charter_record(self, trial_id: str) -> CharterRecord | None:
        """The charter in force: the newest locked version, else the draft, else None."""
        versions = self.charter_versions(trial_id)
        return versions[-1] if versions else None

    def _trial_or_error(self, trial_id: str) -> Trial:
        trial = self.trial(trial_id)
        if trial is None:
            raise StoreError(f"no trial {trial_id!r}; `biopilot trials list` shows them")
        return trial

    def set_charter_draft(self, trial_id: str, charter: Charter, *, by: str) -> CharterRecord:
        """Write (or replace) the unlocked draft; StoreError once the charter is locked."""
        self._trial_or_error(trial_id)
        text, digest = canonical_json(charter), charter_sha256(charter)
        with self.db.transaction(f"store the draft charter of {trial_id}") as cur:
            if cur.execute("SELECT 1 FROM trial_charters WHERE trial_id = ? AND version > 0", (trial_id,)):
                raise StoreError(
                    f"trial {trial_id}: the charter is locked; change it with `biopilot trials charter-edit "
                    f"{trial_id} --charter FILE --reason TEXT` (a new version)"
                )
            cur.execute("DELETE FROM trial_charters WHERE trial_id = ? AND version = 0", (trial_id,))
            cur.execute(
                "INSERT INTO trial_charters (trial_id, version, charter, sha256, reason, by_user, at_us)"
                " VALUES (?, 0, ?, ?, '', ?, ?)",
                (trial_id, text, digest, by, to_us(utcnow())),
            )
        record = self.charter_record(trial_id)
        assert record is not None
        return record

    def lock_charter(self, trial_id: str, *, by: str, at: datetime | None = None) -> CharterRecord:
        """Lock the draft as version 1: freeze the baseline runs (the rule resolved now) and record the trial
        runs it names. StoreError when there is no draft, it is locked already, or a run is wrong.
        at: when it was locked (default now; the demo dates its simulated past with it)."""
        trial = self._trial_or_error(trial_id)
        versions = self.charter_versions(trial_id)
        if any(v.locked for v in versions):
            raise StoreError(
                f"trial {trial_id}: the charter is locked already (version {versions[-1].version}); a change "
                f"is `biopilot trials charter-edit {trial_id} --charter FILE --reason TEXT`"
            )
        if not versions:
            raise StoreError(
                f"trial {trial_id} has no charter to lock; give one with `biopilot trials charter-edit "
                f"{trial_id} --charter FILE`"
            )
        draft = versions[0]
        charter = draft.charter
        baseline = self._resolve_baseline(trial, charter)
        trial_runs = self._check_trial_runs(trial, charter.trial_runs, set(baseline))
        now = to_us(at if at is not None else utcnow())
        with self.db.transaction(f"lock the charter of {trial_id}") as cur:
            if cur.execute("SELECT 1 FROM trial_charters WHERE trial_id = ? AND version > 0", (trial_id,)):
                raise StoreError(f"trial {trial_id}: the charter is locked already")
            cur.execute("DELETE FROM trial_charters WHERE trial_id = ? AND version = 0", (trial_id,))
            cur.execute(
                "INSERT INTO trial_charters (trial_id, version, charter, sha256, reason, by_user, at_us)"
                " VALUES (?, 1, ?, ?, ?, ?, ?)",
                (trial_id, draft.canonical_json, draft.sha256, "locked", by, now),
            )
            self._freeze_baseline(cur, trial_id, baseline, by, now)
            for run in trial_runs:
                self._add_member(cur, trial_id, run, by, now)
        record = self.charter_record(trial_id)
        assert record is not None
        return record

    def edit_charter(self, trial_id: str, charter: Charter, *, reason: str, by: str) -> CharterRecord:
        """Before the lock: replace the draft. After it: a new version with a required reason; the baseline is
        resolved and frozen again when its keys changed; trial runs it names are added."""
        trial = self._trial_or_error(trial_id)
        current = self.charter_record(trial_id)
        if current is None or not current.locked:
            return self.set_charter_draft(trial_id, charter, by=by)
        if not reason.strip():
            raise StoreError(
                f"trial {trial_id}: the charter is locked; a new version needs a written reason "
                "(--reason TEXT)"
            )
        digest = charter_sha256(charter)
        if digest == current.sha256:
            raise StoreError(f"trial {trial_id}: the charter is the same as version {current.version}")
        old = current.charter
        members = self.trial_members(trial_id)
        baseline_ids = [m.run_id for m in members if m.group == BASELINE]
        rebase = (old.baseline_runs, old.baseline) != (charter.baseline_runs, charter.baseline)
        if rebase:
            baseline_ids = self._resolve_baseline(trial, charter)
        known_trial = {m.run_id for m in members if m.group == TRIAL}
        new_trial = self._check_trial_runs(
            trial, [r for r in charter.trial_runs if r not in known_trial], set(baseline_ids)
        )
        clash = sorted(known_trial & set(baseline_ids))
        if clash:
            raise StoreError(
                f"trial {trial_id}: {', '.join(clash)} is a trial run and cannot be a baseline run"
            )
        now = to_us(utcnow())
        with self.db.transaction(f"store a new charter version of {trial_id}") as cur:
            rows = cur.execute("SELECT MAX(version) FROM trial_charters WHERE trial_id = ?", (trial_id,))
            version = int(rows[0][0]) + 1
            cur.execute(
                "INSERT INTO trial_charters (trial_id, version, charter, sha256, reason, by_user, at_us)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (trial_id, version, canonical_json(charter), digest, reason.strip(), by, now),
            )
            if rebase:
                self._freeze_baseline(cur, trial_id, baseline_ids, by, now)
            for run in new_trial:
                self._add_member(cur, trial_id, run, by, now)
        record = self.charter_record(trial_id)
        assert record is not None
        return record

    def _resolve_baseline(self, trial: Trial, charter: Charter) -> list[str]:
        if charter.baseline is not None:
            rule = charter.baseline
            ids = [
                r.id
                for r in self.runs(rule.equipment, kind=RunKind.BASELINE.value)
                if not r.is_open
                and r.product == rule.product
                and to_us(rule.start) <= to_us(r.start) < to_us(rule.end)
            ]
            if len(ids) < 2:
                raise StoreError(
                    f"trial {trial.id}: the [baseline] rule (closed {rule.kind} runs of {rule.product} on "
                    f"{rule.equipment}, started {rule.start.isoformat()} to {rule.end.isoformat()}) selects "
                    f"{len(ids)} run{'s' if len(ids) != 1 else ''}; a verdict needs at least 2: widen the "
                    "dates or list baseline_runs"
                )
            return sorted(ids)
        for run_id in charter.baseline_runs:
            if self.run(run_id) is None:
                raise StoreError(
                    f"trial {trial.id}: baseline run {run_id!r} is not in the catalog (`biopilot runs list`)"
                )
        return list(charter.baseline_runs)

    def _check_trial_runs(self, trial: Trial, run_ids: list[str], baseline: set[str]) -> list[Run]:
        out = []
        for run_id in run_ids:
            run = self.run(run_id)
            if run is None:
                raise StoreError(
                    f"trial {trial.id}: trial run {run_id!r} is not in the catalog (`biopilot runs list`)"
                )
            if run.equipment not in trial.equipment:
                raise StoreError(
                    f"trial {trial.id}: run {run_id} is on {run.equipment}, the trial runs on "
                    f"{', '.join(trial.equipment)}"
                )
            if run_id in baseline:
                raise StoreError(f"trial {trial.id}: run {run_id} is a baseline run of this trial")
            if run.trial_id is not None and run.trial_id != trial.id:
                raise StoreError(f"trial {trial.id}: run {run_id} belongs to trial {run.trial_id}")
            out.append(run)
        return out

    def _freeze_baseline(self, cur: Cursor, trial_id: str, run_ids: list[str], by: str, now: int) -> None:
        cur.execute("DELETE FROM trial_members WHERE trial_id = ? AND grp = ?", (trial_id, BASELINE))
        cur.executemany(
            "INSERT INTO trial_members (trial_id, run_id, grp, added_by, added_us) VALUES (?, ?, ?, ?, ?)",
            [(trial_id, r, BASELINE, by, now) for r in run_ids],
        )

    def _add_member(self, cur: Cursor, trial_id: str, run: Run, by: str, now: int) -> None:
        if cur.execute("SELECT grp FROM trial_members WHERE trial_id = ? AND run_id = ?", (trial_id, run.id)):
            raise StoreError(f"trial {trial_id}: run {run.id} is in the trial already")
        cur.execute(
            "INSERT INTO trial_members (trial_id, run_id, grp, added_by, added_us) VALUES (?, ?, ?, ?, ?)",
            (trial_id, run.id, TRIAL, by, now),
        )
        cur.execute(
            "UPDATE runs SET trial_id = ?, kind = ? WHERE id = ?", (trial_id, RunKind.TRIAL.value, run.id)
        )

    # -- members ----------------------------------------------------------------------------------------
    def add_trial_run(self, trial_id: str, run_id: str, *, by: str) -> TrialMember:
        """Add a trial run (after the lock: the charter comes first). StoreError naming the problem."""
        trial = self._trial_or_error(trial_id)
        current = self.charter_record(trial_id)
        if current is None or not current.locked:
            raise StoreError(
                f"trial {trial_id}: lock the charter before adding trial runs "
                f"(`biopilot trials lock {trial_id}`)"
            )
        baseline = {m.run_id for m in self.trial_members(trial_id) if m.group == BASELINE}
        (run,) = self._check_trial_runs(trial, [run_id], baseline)
        with self.db.transaction(f"add run {run_id} to trial {trial_id}") as cur:
            self._add_member(cur, trial_id, run, by, to_us(utcnow()))
        return next(m for m in self.trial_members(trial_id) if m.run_id == run_id)

    def trial_members(self, trial_id: str, group: str | None = None) -> list[TrialMember]:
        """The trial's runs and its frozen baseline runs, in the order they were added, then by run id."""
        rows = self.db.query(
            "SELECT trial_id, run_id, grp, added_by, added_us FROM trial_members WHERE trial_id = ?"
            " ORDER BY added_us, run_id",
            (trial_id,),
        )
        out = [TrialMember(str(t), str(r), str(g), str(b), from_us(int(a))) for t, r, g, b, a in rows]
        return [m for m in out if group is None or m.group == group]

    # -- exclusions -------------------------------------------------------------------------------------
    def exclude_run(self, trial_id: str, run_id: str, *, reason: str, by: str) -> ExclusionRecord:
        """Record that a trial or baseline run of the trial is left out of its verdict, and why."""
        self._trial_or_error(trial_id)
        if not reason.strip():
            raise StoreError(
                f"trial {trial_id}: excluding run {run_id} needs a written reason (--reason TEXT)"
            )
        if run_id not in {m.run_id for m in self.trial_members(trial_id)}:
            raise StoreError(
                f"trial {trial_id}: run {run_id!r} is neither a trial nor a baseline run of it "
                f"(`biopilot trials show {trial_id}`)"
            )
        with self.db.transaction(f"exclude run {run_id} from trial {trial_id}") as cur:
            if cur.execute(
                "SELECT 1 FROM trial_exclusions WHERE trial_id = ? AND run_id = ?", (trial_id, run_id)
            ):
                raise StoreError(f"trial {trial_id}: run {run_id} is excluded already")
            cur.execute(
                "INSERT INTO trial_exclusions (trial_id, run_id, reason, by_user, at_us)"
                " VALUES (?, ?, ?, ?, ?)",
                (trial_id, run_id, reason.strip(), by, to_us(utcnow())),
            )
        return next(e for e in self.trial_exclusions(trial_id) if e.run_id == run_id)

    def trial_exclusions(self, trial_id: str) -> list[ExclusionRecord]:
        rows = self.db.query(
            "SELECT trial_id, run_id, reason, by_user, at_us FROM trial_exclusions WHERE trial_id = ?"
            " ORDER BY at_us, run_id",
            (trial_id,),
        )
        return [ExclusionRecord(str(t), str(r), str(w), str(b), from_us(int(a))) for t, r, w, b, a in rows]

    # -- the charter against the runs --------------------------------------------------------------------
    def charter_changed_after_start(self, trial_id: str) -> bool:
        """Was the charter in force made after the first trial run started (by the runs' start times)?"""
        current = self.charter_record(trial_id)
        if current is None or not current.locked:
            return False
        starts = [
            run.start for m in self.trial_members(trial_id, TRIAL) if (run := self.run(m.run_id)) is not None
        ]
        return bool(starts) and current.at > min(starts)
