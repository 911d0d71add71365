"""Users, sessions, trials, invitations and the audit log on every catalog backend (SQLite, PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from biopilot.access import UserRole
from biopilot.errors import StoreError
from biopilot.samples import utcnow
from storage.audit import GENESIS, canonical, entry_hash
from storage.catalog import Catalog


def test_users_roundtrip_and_rules(catalog: Catalog) -> None:
    assert not catalog.has_users()
    admin = catalog.add_user("root", "admin", created_by="local", password_hash="$argon2id$x")
    assert admin.role == UserRole.ADMIN and admin.has_password and not admin.disabled
    op = catalog.add_user("olga", "operator", created_by="root", equipment=["F-101"])
    assert op.equipment == ("F-101",) and op.viewer.equipment == ("F-101",)
    ann = catalog.add_user("ann", "startup", created_by="root", tenant="acme", must_change=True)
    assert ann.tenant == "acme" and ann.must_change_password and not ann.has_password
    catalog.add_user("pat", "partner", created_by="root", oidc_subject="pat@buyer.example")
    assert catalog.user_by_oidc("pat@buyer.example").name == "pat"  # type: ignore[union-attr]
    assert [u.name for u in catalog.users()] == ["ann", "olga", "pat", "root"]
    assert [u.name for u in catalog.users(tenant="acme")] == ["ann"]
    with pytest.raises(StoreError, match="exists already"):
        catalog.add_user("root", "admin", created_by="x")
    with pytest.raises(StoreError, match="needs a tenant"):
        catalog.add_user("bob", "startup", created_by="root")
    with pytest.raises(StoreError, match="not a role"):
        catalog.add_user("bob", "superuser", created_by="root")
    with pytest.raises(StoreError, match="only operators"):
        catalog.add_user("bob", "partner", created_by="root", equipment=["F-101"])
    catalog.set_password_hash("ann", "$argon2id$y", must_change=False)
    assert catalog.password_hash("ann") == "$argon2id$y" and not catalog.user("ann").must_change_password  # type: ignore[union-attr]
    assert catalog.set_user_disabled("ann", True).disabled


def test_login_attempts_count_failures_since_the_last_success(catalog: Catalog) -> None:
    now = utcnow()
    catalog.add_user("ann", "admin", created_by="x")
    for k in range(3):
        catalog.record_login_attempt("ann", "10.0.0.9", False, now - timedelta(minutes=10 - k))
    assert len(catalog.failed_logins(now - timedelta(minutes=15), user_name="ann")) == 3
    assert len(catalog.failed_logins(now - timedelta(minutes=15), address="10.0.0.9")) == 3
    assert len(catalog.failed_logins(now - timedelta(minutes=9), user_name="ann")) == 2
    catalog.record_login_attempt("ann", "10.0.0.9", True, now - timedelta(minutes=5))
    assert catalog.failed_logins(now - timedelta(minutes=15), user_name="ann") == []


def test_sessions_end(catalog: Catalog) -> None:
    now = utcnow()
    catalog.add_user("ann", "admin", created_by="x")
    catalog.create_session("h1", "ann", "local", now)
    assert catalog.session("h1") == ("ann", now.replace(microsecond=now.microsecond), now, False)
    catalog.touch_session("h1", now + timedelta(minutes=1))
    assert catalog.session("h1")[2] == now + timedelta(minutes=1)  # type: ignore[index]
    catalog.set_user_disabled("ann", True)  # disabling ends the user's sessions
    assert catalog.session("h1")[3] is True  # type: ignore[index]
    assert catalog.session("nope") is None


def test_trials_and_invitations(catalog: Catalog) -> None:
    catalog.add_user("pat", "partner", created_by="x")
    catalog.add_user("ann", "startup", created_by="x", tenant="acme")
    t1 = catalog.create_trial("T1", title="Strain X", equipment=["F-101"], startup="acme", created_by="root")
    catalog.create_trial(
        "T2", title="Enzyme Y", equipment=["F-101", "R-201"], startup="beta", product="Y", created_by="root"
    )
    assert catalog.trial("T1") == t1 and t1.equipment == ("F-101",) and t1.product is None
    assert catalog.trial("T2").equipment == ("F-101", "R-201")  # type: ignore[union-attr]
    assert [t.id for t in catalog.trials()] == ["T1", "T2"]
    assert [t.id for t in catalog.trials(startup="beta")] == ["T2"]
    assert [t.id for t in catalog.trials(ids={"T2"})] == ["T2"]
    with pytest.raises(StoreError, match="exists already"):
        catalog.create_trial("T1", title="again", equipment=["F-101"], startup="acme", created_by="root")
    inv = catalog.invite("T1", "pat", invited_by="root")
    assert (inv.trial_id, inv.user, inv.invited_by) == ("T1", "pat", "root")
    catalog.invite("T1", "pat", invited_by="root")  # again: no change
    assert len(catalog.invitations(trial_id="T1")) == 1
    with pytest.raises(StoreError, match="not a partner"):
        catalog.invite("T1", "ann", invited_by="root")
    with pytest.raises(StoreError, match="no trial"):
        catalog.invite("T9", "pat", invited_by="root")
    assert catalog.uninvite("T1", "pat") and not catalog.uninvite("T1", "pat")
    assert catalog.invitations() == []


def test_audit_chain_appends_and_verifies(catalog: Catalog) -> None:
    first = catalog.audit.append("root", "user.add", "ann", why="new colleague", role="startup")
    assert first.seq == 1 and first.prev_hash == GENESIS
    second = catalog.audit.append("ann", "login.ok", "10.0.0.9")
    assert second.prev_hash == first.hash
    # the hash is the SHA-256 of the canonical serialisation (sorted keys, no spaces, µs times)
    import hashlib

    from biopilot.samples import to_us

    raw = canonical(
        1, to_us(first.ts), "root", "user.add", "ann", "new colleague", {"role": "startup"}, GENESIS
    )
    assert raw.startswith(b'{"action":"user.add","actor":"root","details":{"role":"startup"}')
    assert (
        first.hash
        == hashlib.sha256(raw).hexdigest()
        == entry_hash(
            1, to_us(first.ts), "root", "user.add", "ann", "new colleague", {"role": "startup"}, GENESIS
        )
    )
    stored = catalog.audit.entries()
    assert [(e.seq, e.actor, e.action) for e in stored] == [(1, "root", "user.add"), (2, "ann", "login.ok")]
    assert stored[0].details == {"role": "startup"} and stored[0].why == "new colleague"
    assert [e.seq for e in catalog.audit.entries(actor="ann")] == [2]
    assert [e.seq for e in catalog.audit.entries(action="login")] == [2]
    result = catalog.audit.verify()
    assert result.ok and result.entries == 2 and result.head == second.hash
    anchor = catalog.audit.anchor("test")
    assert (anchor.seq, anchor.hash) == (2, second.hash)
    assert catalog.audit.verify(external=[(2, second.hash)]).ok
    assert not catalog.audit.verify(external=[(2, "f" * 64)]).ok


def test_audit_appends_from_many_threads_keep_one_chain(catalog_target: str) -> None:
    """Concurrent appenders (each with its own connection, like separate processes) never fork the chain."""
    catalogs = [Catalog(catalog_target) for _ in range(4)]
    try:

        def work(c: Catalog, k: int) -> None:
            for i in range(10):
                c.audit.append(f"user{k}", "export", f"run{i}")

        threads = [threading.Thread(target=work, args=(c, k)) for k, c in enumerate(catalogs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result = catalogs[0].audit.verify()
        assert result.ok, result.problems
        assert result.entries == 40
    finally:
        for c in catalogs:
            c.close()


# -- tampering: an edited, a deleted and a reordered entry are each named ------------------------------
def _chain(catalog: Catalog, n: int = 6) -> None:
    for i in range(1, n + 1):
        catalog.audit.append("root", "run.edit", f"F-101:B-{i}", why=f"change {i}")


def test_verify_names_an_altered_entry(catalog: Catalog) -> None:
    _chain(catalog)
    catalog.db.query("UPDATE audit_log SET why = 'nothing to see' WHERE seq = 3")
    result = catalog.audit.verify()
    assert [(p.seq, p.kind) for p in result.problems] == [(3, "altered")]
    assert "entry 3" in result.problems[0].message and "altered" in result.problems[0].message


def test_verify_names_a_deleted_entry(catalog: Catalog) -> None:
    _chain(catalog)
    catalog.db.query("DELETE FROM audit_log WHERE seq = 4")
    result = catalog.audit.verify()
    assert [(p.seq, p.kind) for p in result.problems] == [(4, "deleted")]
    assert result.problems[0].message.startswith("entry 4 deleted: entry 5")


def test_verify_names_a_reordered_entry(catalog: Catalog) -> None:
    _chain(catalog)
    with catalog.db.transaction("swap two entries") as cur:  # entries 2 and 5 trade places
        cur.execute("UPDATE audit_log SET seq = -2 WHERE seq = 2")
        cur.execute("UPDATE audit_log SET seq = 2 WHERE seq = 5")
        cur.execute("UPDATE audit_log SET seq = 5 WHERE seq = -2")
    result = catalog.audit.verify()
    kinds = {(p.seq, p.kind) for p in result.problems}
    assert kinds == {(2, "reordered"), (5, "reordered")}, result.problems
    assert any("written as entry 5" in p.message for p in result.problems)


def test_verify_catches_a_deleted_last_entry_through_the_anchor(catalog: Catalog) -> None:
    _chain(catalog)
    anchor = catalog.audit.anchor()
    catalog.db.query("DELETE FROM audit_log WHERE seq = 6")
    result = catalog.audit.verify()
    assert [(p.seq, p.kind) for p in result.problems] == [(anchor.seq, "anchor")]
