"""The catalog's schema, as one ordered list of migrations for both backends (storage/db.py).

Add a table or a column by adding a Migration with a new version, in version order; never edit one that has
shipped. Each version is recorded when applied (catalog_migrations), so versions need not be consecutive:
work on separate features takes its versions from separate ranges (10–19 access control, 20–29 trials,
30–39 baseline review, 40–49 storage), and a database gets every migration it lacks.
Types are portable (TEXT, BIGINT, DOUBLE PRECISION, INTEGER); see storage/db.py for the SQL rules.

  1  runs (id, equipment, batch_id, start_us, end_us), run_kpis, cursors   (the first release)
  2  runs gain kind, trial_id, product, upstream_id, origin, note; run_kpis gains inputs (per-input
     coverage); new tables phases, lab_results, imports
 10  users, login_attempts, sessions                         (access control, storage/users.py)
 11  trials, trial_invitations                                (storage/trials.py; charters etc. build on it)
 12  audit_log (hash chain), audit_anchors                    (storage/audit.py)
 20  trial_charters (versions; 0 = the draft, 1 = the lock), trial_members (trial and frozen baseline runs),
     trial_exclusions (the ledger)                            (storage/charters.py)
 30  baseline_envelopes, mspc_models: stored golden-batch envelopes and MSPC models (storage/references.py)
 31  alarms: live deviation alarms and their acknowledgement (storage/alarms.py)
 40  runs gain state ('ready', or 'importing' while an import that created the run publishes its samples);
     new table pending_imports, the journal of imports under way (storage/importers.py)
"""

from __future__ import annotations

from storage.db import Cursor, Migration, add_columns

_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    equipment TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    start_us BIGINT NOT NULL,
    end_us BIGINT
);
CREATE INDEX IF NOT EXISTS runs_by_equipment ON runs (equipment, start_us);
CREATE TABLE IF NOT EXISTS run_kpis (
    run_id TEXT NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    value DOUBLE PRECISION,
    unit TEXT NOT NULL,
    coverage DOUBLE PRECISION NOT NULL,
    flags TEXT NOT NULL,
    final INTEGER NOT NULL,
    computed_us BIGINT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    ts_us BIGINT NOT NULL
)
"""

_V2_TABLES = """
CREATE TABLE IF NOT EXISTS phases (
    run_id TEXT NOT NULL REFERENCES runs (id),
    start_us BIGINT NOT NULL,
    end_us BIGINT,
    name TEXT NOT NULL,
    PRIMARY KEY (run_id, start_us)
);
CREATE TABLE IF NOT EXISTS lab_results (
    equipment TEXT NOT NULL,
    ts_us BIGINT NOT NULL,
    analyte TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    unit TEXT NOT NULL,
    sample_volume_l DOUBLE PRECISION NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (equipment, ts_us, analyte)
);
CREATE TABLE IF NOT EXISTS imports (
    sha256 TEXT NOT NULL,
    run_id TEXT NOT NULL,
    file TEXT NOT NULL,
    rows BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    imported_us BIGINT NOT NULL,
    PRIMARY KEY (sha256, run_id)
);
CREATE INDEX IF NOT EXISTS runs_by_upstream ON runs (upstream_id)
"""


def _v2(cur: Cursor, dialect: str) -> None:
    add_columns(
        cur,
        dialect,
        "runs",
        [
            ("kind", "TEXT NOT NULL DEFAULT 'other'"),
            ("trial_id", "TEXT"),
            ("product", "TEXT"),
            ("upstream_id", "TEXT"),
            ("origin", "TEXT NOT NULL DEFAULT 'live'"),
            ("note", "TEXT NOT NULL DEFAULT ''"),
        ],
    )
    add_columns(cur, dialect, "run_kpis", [("inputs", "TEXT NOT NULL DEFAULT '{}'")])
    for statement in _V2_TABLES.split(";"):
        if statement.strip():
            cur.execute(statement)


# -- 10–19: access control (issue 12) ---------------------------------------------------------------------
# equipment: a JSON list (an operator's equipment; [] = all); times in µs since the epoch, UTC.
_V10_USERS = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    tenant TEXT,
    equipment TEXT NOT NULL DEFAULT '[]',
    display_name TEXT NOT NULL DEFAULT '',
    password_hash TEXT,
    must_change INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    oidc_subject TEXT UNIQUE,
    created_us BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS login_attempts (
    ts_us BIGINT NOT NULL,
    user_name TEXT NOT NULL,
    address TEXT NOT NULL,
    ok INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS login_attempts_by_user ON login_attempts (user_name, ts_us);
CREATE INDEX IF NOT EXISTS login_attempts_by_address ON login_attempts (address, ts_us);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    address TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    last_seen_us BIGINT NOT NULL,
    ended_us BIGINT
)
"""

# The trial a startup runs on the host's equipment, and the partners invited to see it. The trials feature
# adds its charter versions, exclusions and verdicts as tables of their own referring to trials (id).
_V11_TRIALS = """
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    equipment TEXT NOT NULL,
    startup TEXT NOT NULL,
    product TEXT,
    created_us BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_by_startup ON trials (startup);
CREATE TABLE IF NOT EXISTS trial_invitations (
    trial_id TEXT NOT NULL REFERENCES trials (id),
    user_name TEXT NOT NULL REFERENCES users (name),
    invited_by TEXT NOT NULL,
    invited_us BIGINT NOT NULL,
    PRIMARY KEY (trial_id, user_name)
);
CREATE INDEX IF NOT EXISTS runs_by_trial ON runs (trial_id)
"""

# -- 20–29: trials (issue 10) ------------------------------------------------------------------------------
# Charter versions: version 0 is the draft (replaced until the lock), 1 the locked charter, 2… each change
# after the lock with its reason. charter: the canonical JSON text (biopilot.charter.canonical_json),
# sha256: its SHA-256.
# Members: the trial's runs (grp 'trial') and the baseline runs frozen at the lock (grp 'baseline').
_V20_CHARTERS = """
CREATE TABLE IF NOT EXISTS trial_charters (
    trial_id TEXT NOT NULL REFERENCES trials (id),
    version BIGINT NOT NULL,
    charter TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,
    by_user TEXT NOT NULL,
    at_us BIGINT NOT NULL,
    PRIMARY KEY (trial_id, version)
);
CREATE TABLE IF NOT EXISTS trial_members (
    trial_id TEXT NOT NULL REFERENCES trials (id),
    run_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    added_by TEXT NOT NULL,
    added_us BIGINT NOT NULL,
    PRIMARY KEY (trial_id, run_id)
);
CREATE TABLE IF NOT EXISTS trial_exclusions (
    trial_id TEXT NOT NULL REFERENCES trials (id),
    run_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    by_user TEXT NOT NULL,
    at_us BIGINT NOT NULL,
    PRIMARY KEY (trial_id, run_id)
)
"""

# -- 30–39: runs against the baseline (envelopes, MSPC models, alarms) --------------------------------------
_V30 = """
CREATE TABLE IF NOT EXISTS baseline_envelopes (
    equipment TEXT NOT NULL,
    product TEXT NOT NULL,
    tag TEXT NOT NULL,
    alignment TEXT NOT NULL,
    unit TEXT NOT NULL,
    runs TEXT NOT NULL,
    n_runs BIGINT NOT NULL,
    points BIGINT NOT NULL,
    computed_us BIGINT NOT NULL,
    computed_by TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (equipment, product, tag, alignment)
);
CREATE TABLE IF NOT EXISTS mspc_models (
    equipment TEXT NOT NULL,
    product TEXT NOT NULL,
    alignment TEXT NOT NULL,
    variables TEXT NOT NULL,
    runs TEXT NOT NULL,
    n_runs BIGINT NOT NULL,
    n_components BIGINT NOT NULL,
    points BIGINT NOT NULL,
    computed_us BIGINT NOT NULL,
    computed_by TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (equipment, product)
)
"""

_V31 = """
CREATE TABLE IF NOT EXISTS alarms (
    id BIGINT PRIMARY KEY,
    run_id TEXT NOT NULL,
    alarm_key TEXT NOT NULL,
    equipment TEXT NOT NULL,
    tag TEXT NOT NULL,
    variable TEXT,
    kind TEXT NOT NULL,
    direction TEXT NOT NULL,
    start_us BIGINT NOT NULL,
    raised_us BIGINT NOT NULL,
    last_us BIGINT NOT NULL,
    end_us BIGINT,
    start_t DOUBLE PRECISION NOT NULL,
    raised_t DOUBLE PRECISION NOT NULL,
    axis_unit TEXT NOT NULL,
    size DOUBLE PRECISION NOT NULL,
    peak DOUBLE PRECISION NOT NULL,
    size_unit TEXT NOT NULL,
    size_relative DOUBLE PRECISION,
    peak_relative DOUBLE PRECISION,
    state TEXT NOT NULL,
    ack_by TEXT,
    ack_us BIGINT,
    ack_comment TEXT,
    detail TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    UNIQUE (run_id, alarm_key)
);
CREATE INDEX IF NOT EXISTS alarms_by_state ON alarms (state, raised_us);
CREATE INDEX IF NOT EXISTS alarms_by_equipment ON alarms (equipment, raised_us)
"""


# Append-only; each entry's hash covers the previous entry's hash (storage/audit.py).
_V12_AUDIT = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGINT PRIMARY KEY,
    ts_us BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    why TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit_log (actor, ts_us);
CREATE TABLE IF NOT EXISTS audit_anchors (
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    ts_us BIGINT NOT NULL,
    note TEXT NOT NULL
)
"""
_PENDING_IMPORTS = """
CREATE TABLE IF NOT EXISTS pending_imports (
    token TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    equipment TEXT NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    phase TEXT NOT NULL,
    created_run INTEGER NOT NULL DEFAULT 0,
    rows BIGINT NOT NULL DEFAULT 0,
    samples BIGINT NOT NULL DEFAULT 0,
    replaced TEXT NOT NULL DEFAULT '[]',
    started_us BIGINT NOT NULL
)
"""


def _v40(cur: Cursor, dialect: str) -> None:
    add_columns(cur, dialect, "runs", [("state", "TEXT NOT NULL DEFAULT 'ready'")])
    cur.execute(_PENDING_IMPORTS)


MIGRATIONS: list[Migration] = [
    Migration(1, "runs, KPIs, processing cursors", _V1),
    Migration(2, "run kinds and lineage, phases, lab results, imports", _v2),
    Migration(10, "users, login attempts, sessions", _V10_USERS),
    Migration(11, "trials and trial invitations", _V11_TRIALS),
    Migration(12, "audit log (hash chain) and its anchors", _V12_AUDIT),
    Migration(20, "trial charter versions, trial members, exclusions ledger", _V20_CHARTERS),
    Migration(30, "stored golden-batch envelopes and MSPC models", _V30),
    Migration(31, "live deviation alarms", _V31),
    Migration(40, "run state and the journal of imports under way", _v40),
]
