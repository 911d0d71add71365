"""Trial charters (versions, lock), members (frozen baseline, trial runs) and the exclusions ledger on every
catalog backend (conftest.py: a real SQLite file, and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from biopilot.charter import Charter, canonical_json, charter_sha256
from biopilot.errors import StoreError
from storage.catalog import Catalog

T0 = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _charter(**changes: object) -> Charter:
    doc: dict[str, object] = {
        "title": "Strain X",
        "equipment": "F-101",
        "startup": "acme",
        "product": "enzyme-X",
        "primary_kpi": "titer",
        "direction": "higher",
        "hypothesis": "superiority",
        "margin": 0.0,
        "margin_unit": "%",
        "alpha": 0.05,
        "planned_runs": 3,
        "baseline_runs": ["F-101:BL1", "F-101:BL2", "F-101:BL3"],
        "trial_runs": ["F-101:TR1"],
    }
    doc.update(changes)
    return Charter.model_validate(doc)


def _setup(catalog: Catalog) -> None:
    catalog.create_trial("T1", title="Strain X", equipment=["F-101"], startup="acme", created_by="root")
    for i in range(1, 5):
        catalog.create_run(
            "F-101", f"BL{i}", at(24 * i), at(24 * i + 20), kind="baseline", product="enzyme-X"
        )
    for i in range(1, 3):
        catalog.create_run("F-101", f"TR{i}", at(200 + 24 * i), at(220 + 24 * i), product="enzyme-X")
    catalog.create_run("R-201", "TR9", at(300), at(310))


def test_draft_lock_and_versions(catalog: Catalog) -> None:
    _setup(catalog)
    assert catalog.charter_record("T1") is None
    draft = catalog.set_charter_draft("T1", _charter(title="first draft"), by="root")
    assert (draft.version, draft.locked) == (0, False)
    draft = catalog.set_charter_draft("T1", _charter(), by="root")  # a draft is replaced freely
    assert [v.version for v in catalog.charter_versions("T1")] == [0]
    assert draft.sha256 == charter_sha256(_charter()) and draft.canonical_json == canonical_json(_charter())

    v1 = catalog.lock_charter("T1", by="root")
    assert (v1.version, v1.locked, v1.by) == (1, True, "root")
    assert v1.charter == _charter()
    members = catalog.trial_members("T1")
    assert sorted((m.run_id, m.group) for m in members) == [
        ("F-101:BL1", "baseline"),
        ("F-101:BL2", "baseline"),
        ("F-101:BL3", "baseline"),
        ("F-101:TR1", "trial"),
    ]
    tr1 = catalog.run("F-101:TR1")
    assert tr1 is not None and (tr1.trial_id, tr1.kind) == ("T1", "trial")

    with pytest.raises(StoreError, match="locked already"):
        catalog.lock_charter("T1", by="root")
    with pytest.raises(StoreError, match="is locked"):
        catalog.set_charter_draft("T1", _charter(), by="root")
    with pytest.raises(StoreError, match="reason"):
        catalog.edit_charter("T1", _charter(alpha=0.1), reason="  ", by="root")
    with pytest.raises(StoreError, match="the same as version 1"):
        catalog.edit_charter("T1", _charter(), reason="nothing", by="root")

    v2 = catalog.edit_charter("T1", _charter(alpha=0.1), reason="the partner asked for 10 %", by="ann")
    assert (v2.version, v2.reason, v2.by) == (2, "the partner asked for 10 %", "ann")
    assert [v.version for v in catalog.charter_versions("T1")] == [1, 2]
    assert catalog.charter_versions("T1")[0].sha256 == v1.sha256  # version 1 is kept as it was


def test_lock_needs_a_draft_and_existing_runs(catalog: Catalog) -> None:
    _setup(catalog)
    with pytest.raises(StoreError, match="no charter to lock"):
        catalog.lock_charter("T1", by="root")
    catalog.set_charter_draft("T1", _charter(baseline_runs=["F-101:BL1", "F-101:nope"]), by="root")
    with pytest.raises(StoreError, match="baseline run 'F-101:nope' is not in the catalog"):
        catalog.lock_charter("T1", by="root")
    catalog.set_charter_draft("T1", _charter(trial_runs=["R-201:TR9"]), by="root")
    with pytest.raises(StoreError, match="is on R-201"):
        catalog.lock_charter("T1", by="root")
    assert catalog.trial_members("T1") == []  # nothing half-written
    assert not catalog.charter_record("T1").locked  # type: ignore[union-attr]


def test_baseline_rule_is_resolved_and_frozen_at_the_lock(catalog: Catalog) -> None:
    _setup(catalog)
    rule = {"start": at(30), "end": at(100)}  # BL2 (48 h), BL3 (72 h), BL4 (96 h)
    catalog.set_charter_draft("T1", _charter(baseline_runs=[], baseline=rule), by="root")
    catalog.lock_charter("T1", by="root")
    frozen = [m.run_id for m in catalog.trial_members("T1", "baseline")]
    assert frozen == ["F-101:BL2", "F-101:BL3", "F-101:BL4"]
    # a baseline run made later inside the rule's dates does not join: the list was frozen at the lock
    catalog.create_run("F-101", "BL5", at(90), at(95), kind="baseline", product="enzyme-X")
    assert [m.run_id for m in catalog.trial_members("T1", "baseline")] == frozen


def test_a_rule_selecting_fewer_than_two_runs_is_refused(catalog: Catalog) -> None:
    _setup(catalog)
    catalog.set_charter_draft(
        "T1", _charter(baseline_runs=[], baseline={"start": at(0), "end": at(30)}), by="r"
    )
    with pytest.raises(StoreError, match="selects 1 run; a verdict needs at least 2"):
        catalog.lock_charter("T1", by="root")


def test_add_run_after_lock_and_changed_after_start(catalog: Catalog) -> None:
    _setup(catalog)
    catalog.set_charter_draft("T1", _charter(trial_runs=[]), by="root")
    with pytest.raises(StoreError, match="lock the charter before adding"):
        catalog.add_trial_run("T1", "F-101:TR1", by="root")
    catalog.lock_charter("T1", by="root")
    catalog.add_trial_run("T1", "F-101:TR1", by="root")
    with pytest.raises(StoreError, match="in the trial already"):
        catalog.add_trial_run("T1", "F-101:TR1", by="root")
    with pytest.raises(StoreError, match="is a baseline run"):
        catalog.add_trial_run("T1", "F-101:BL1", by="root")
    with pytest.raises(StoreError, match="is not in the catalog"):
        catalog.add_trial_run("T1", "F-101:TR7", by="root")
    # The runs started in 2025, the lock is now: the lock itself came after the first trial run started.
    assert catalog.charter_changed_after_start("T1")
    catalog.update_run("F-101:TR1", start=datetime.now(UTC) + timedelta(days=1), end=None)
    assert not catalog.charter_changed_after_start("T1")  # locked before the (only) trial run started
    catalog.edit_charter("T1", _charter(trial_runs=[], alpha=0.1), reason="typo", by="root")
    assert not catalog.charter_changed_after_start("T1")
    catalog.add_trial_run("T1", "F-101:TR2", by="root")  # started in 2025, before version 2
    assert catalog.charter_changed_after_start("T1")


def test_exclusions_ledger(catalog: Catalog) -> None:
    _setup(catalog)
    catalog.set_charter_draft("T1", _charter(), by="root")
    catalog.lock_charter("T1", by="root")
    with pytest.raises(StoreError, match="written reason"):
        catalog.exclude_run("T1", "F-101:BL2", reason=" ", by="root")
    with pytest.raises(StoreError, match="neither a trial nor a baseline run"):
        catalog.exclude_run("T1", "F-101:BL4", reason="contaminated", by="root")
    e = catalog.exclude_run("T1", "F-101:BL2", reason="contaminated (lab report 17)", by="ann")
    assert (e.run_id, e.reason, e.by) == ("F-101:BL2", "contaminated (lab report 17)", "ann")
    with pytest.raises(StoreError, match="excluded already"):
        catalog.exclude_run("T1", "F-101:BL2", reason="again", by="root")
    catalog.exclude_run("T1", "F-101:TR1", reason="feed pump failed at 12 h", by="root")
    assert [x.run_id for x in catalog.trial_exclusions("T1")] == ["F-101:BL2", "F-101:TR1"]
