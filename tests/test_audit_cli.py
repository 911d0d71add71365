"""`biopilot audit verify` catches an edited, a deleted and a reordered entry, and names it; `audit list`
filters; `audit anchor` prints what an outside copy must match. The entries come from real commands (users
and trials made through the CLI); the tampering is done with sqlite3 on the file, as an admin with file
access would."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from biopilot.app.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "config" / "demo.toml")


def _cli(
    capsys: pytest.CaptureFixture[str], data: Path, *argv: str, user: str | None = "root"
) -> tuple[int, str]:
    extra = ["--user", user] if user else []
    code = main([*argv, "--config", CONFIG, "--data-dir", str(data), *extra])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "data"
    assert _cli(capsys, d, "users", "add", "root", "--role", "admin", user=None)[0] == 0
    for argv in (
        ["trials", "create", "T1", "--title", "strain X", "--equipment", "F-101", "--startup", "acme"],
        ["users", "add", "ann", "--role", "startup", "--tenant", "acme", "--why", "acme's engineer"],
        ["users", "add", "pat", "--role", "partner"],
        ["users", "invite", "pat", "--trial", "T1", "--why", "due diligence"],
        ["users", "disable", "ann", "--why", "left acme"],
    ):
        code, out = _cli(capsys, d, *argv)
        assert code == 0, out
    code, out = _cli(capsys, d, "audit", "verify")
    assert code == 0 and "audit log OK: 6 entries" in out, out
    return d


def _sql(data: Path, *statements: str) -> None:
    with sqlite3.connect(data / "biopilot.db") as conn:
        for s in statements:
            conn.execute(s)


def test_list_filters_and_json(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(capsys, data, "audit", "list", "--json")
    entries = json.loads(out)
    assert [e["action"] for e in entries] == [
        "user.add",
        "trial.create",
        "user.add",
        "user.add",
        "trial.invite",
        "user.disable",
    ]
    assert entries[0]["actor"] == "local" and entries[1]["actor"] == "root"
    assert entries[4]["why"] == "due diligence" and entries[4]["details"] == {"user": "pat"}
    assert entries[1]["prev_hash"] == entries[0]["hash"]
    code, out = _cli(capsys, data, "audit", "list", "--action", "user", "--actor", "root")
    assert code == 0 and out.count("user.") == 3 and "trial.create" not in out
    code, out = _cli(capsys, data, "audit", "list", "--since", "2999-01-01")
    assert out.strip() == "no audit entries"


def test_verify_catches_an_edited_entry(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(data, "UPDATE audit_log SET why = 'routine' WHERE seq = 5")
    code, out = _cli(capsys, data, "audit", "verify")
    print(out)
    assert code == 1
    assert "ALTERED   entry 5 (" in out and "root trial.invite T1): altered" in out
    assert "1 problem(s) in 6 entries" in out


def test_verify_catches_a_deleted_entry(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(data, "DELETE FROM audit_log WHERE seq = 3")
    code, out = _cli(capsys, data, "audit", "verify")
    print(out)
    assert code == 1 and "DELETED   entry 3 deleted: entry 4 (" in out and "follows entry 2" in out


def test_verify_catches_a_reordered_entry(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(
        data,
        "UPDATE audit_log SET seq = 100 WHERE seq = 6",
        "UPDATE audit_log SET seq = 6 WHERE seq = 4",
        "UPDATE audit_log SET seq = 4 WHERE seq = 100",
    )
    code, out = _cli(capsys, data, "audit", "verify")
    print(out)
    assert code == 1
    assert "REORDERED entry 4 (" in out and "user.disable ann): reordered — it was written as entry 6" in out
    assert "REORDERED entry 6 (" in out and "written as entry 4" in out


def test_anchor_printed_and_checked(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(capsys, data, "audit", "anchor", "--note", "month end")
    anchor = out.split()[2]  # "audit anchor SEQ:HASH at …"
    assert code == 0 and anchor.startswith("6:") and len(anchor) == 66
    _sql(
        data, "DELETE FROM audit_log WHERE seq = 6", "DELETE FROM audit_anchors"
    )  # the whole tail, anchor too
    code, out = _cli(capsys, data, "audit", "verify")
    assert code == 0  # what is left is a consistent chain…
    code, out = _cli(capsys, data, "audit", "verify", "--anchor", anchor)
    assert code == 1 and "the anchor given names entry 6, which is gone" in out  # …but not the one anchored


def test_only_an_admin_reads_the_audit_log(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(capsys, data, "audit", "list", user="pat")
    assert code == 2 and "only an admin may read the audit log" in out


def test_tag_changes_in_the_config_are_recorded(tmp_path: Path) -> None:
    """Tags are edited in the config file: the collector records added, removed and changed tags at start."""
    from biopilot.config import load_config
    from storage import Catalog
    from storage.audit import record_tag_changes

    config = load_config(CONFIG)
    tags = {t.name: t.model_dump(mode="json", exclude={"name"}) for t in config.tags}
    catalog = Catalog(tmp_path / "biopilot.db")
    try:
        first = record_tag_changes(catalog.audit, tags, "site.toml")
        assert first is not None and first.why == "first record of the tags"
        assert record_tag_changes(catalog.audit, tags, "site.toml") is None  # unchanged: nothing appended
        edited = dict(tags)
        edited.pop("F-101.ph")
        edited["F-101.temperature"] = {**tags["F-101.temperature"], "unit": "K"}
        edited["F-101.new_probe"] = tags["F-101.temperature"]
        entry = record_tag_changes(catalog.audit, edited, "site.toml")
        assert entry is not None and entry.action == "config.tags" and entry.actor == "config file site.toml"
        assert entry.details["added"] == ["F-101.new_probe"]
        assert entry.details["removed"] == ["F-101.ph"]
        assert entry.details["changed"] == ["F-101.temperature"]
        assert catalog.audit.verify().ok
    finally:
        catalog.close()
