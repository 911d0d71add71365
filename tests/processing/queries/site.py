"""A shared data directory with two startups, a partner, an operator and an admin — and the ground truth of
what each may reach, written down here independently of the query layer (from the runs' windows).

Equipment (config/demo.toml): F-101 (fermenter), R-201 (centrifuge).
Trials: TA (startup acme, F-101 and R-201; partner pat invited), TB (startup beta, F-101).
Runs:
  F-101:BL-1..BL-3  baseline, closed, final KPIs                  the host's baseline (aggregates only)
  F-101:A-1         trial TA, closed;   R-201:A-1 trial TA, its downstream run
  F-101:A-2         trial TA, open (live)
  F-101:B-1         trial TB, closed
  F-101:X-1         no trial (the plant's own run);  R-201:X-1 no trial
Charter of TA (locked): titer, higher, superiority; baseline BL-1..BL-3 frozen, trial runs F-101:A-1 and
F-101:A-2 (open: the verdict is "not judgeable" naming it); BL-2 excluded with a reason.
Users (password PASSWORD for all): root admin; olga operator of R-201; ann startup acme; bob startup beta;
pat partner invited to TA.
Series: F-101.temperature, F-101.dissolved_oxygen, R-201.turbidity every 10 min inside every run, and a few
samples between runs that belong to no run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from biopilot.charter import Charter
from biopilot.config import load_config
from biopilot.records import KpiRecord, LabResult
from biopilot.samples import Sample, to_us
from processing.queries.auth import Authenticator
from storage import Catalog, HealthStore, SqliteStore

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "config" / "demo.toml"
PASSWORD = "correct horse battery"
T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
TAGS = {"F-101": ["F-101.temperature", "F-101.dissolved_oxygen"], "R-201": ["R-201.turbidity"]}

# run id -> (equipment, kind, trial, start hour, end hour or None, upstream)
RUNS: dict[str, tuple[str, str, str | None, float, float | None, str | None]] = {
    "F-101:BL-1": ("F-101", "baseline", None, 0, 20, None),
    "F-101:BL-2": ("F-101", "baseline", None, 24, 46, None),
    "F-101:BL-3": ("F-101", "baseline", None, 48, 69, None),
    "F-101:A-1": ("F-101", "trial", "TA", 72, 92, None),
    "R-201:A-1": ("R-201", "trial", "TA", 93, 97, "F-101:A-1"),
    "F-101:B-1": ("F-101", "trial", "TB", 100, 120, None),
    "F-101:X-1": ("F-101", "other", None, 124, 140, None),
    "R-201:X-1": ("R-201", "other", None, 141, 144, "F-101:X-1"),
    "F-101:A-2": ("F-101", "trial", "TA", 150, None, None),
}
TEXT = {"F-101.batch_id": "A-2", "F-101.phase": "fed_batch"}
NOW_H = 160  # the newest sample: the open run A-2 lasts until here
BETWEEN_H = [22, 70, 98, 122, 146]  # samples in no run
USERS = ["root", "olga", "ann", "bob", "pat"]
TRIALS = {"TA": ("acme", ["F-101", "R-201"]), "TB": ("beta", ["F-101"])}
TA_CHARTER = Charter.model_validate(
    {
        "title": "acme trial",
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
        "baseline_runs": ["F-101:BL-1", "F-101:BL-2", "F-101:BL-3"],
        "trial_runs": ["F-101:A-1", "F-101:A-2"],
    }
)
BASELINE_TITER = {"F-101:BL-1": 10.0, "F-101:BL-2": 11.0, "F-101:BL-3": 12.5}


def hour(h: float) -> datetime:
    return T0 + timedelta(hours=h)


@dataclass(frozen=True)
class Allowed:
    """What a viewer may reach: run ids, trial ids, series samples (tag, µs), lab results (run id)."""

    runs: frozenset[str]
    trials: frozenset[str]
    samples: frozenset[tuple[str, int]]
    lab: frozenset[str]  # runs whose lab results the viewer may read
    forbidden_words: tuple[str, ...]  # names that must appear nowhere in what the viewer is shown


def all_samples() -> list[tuple[str, int]]:
    out = []
    for equipment, _, _, start, end, _ in RUNS.values():
        stop = end if end is not None else NOW_H
        h = start
        while h <= stop + 1e-9:
            out += [(tag, to_us(hour(h))) for tag in TAGS[equipment]]
            h += 1 / 6
    for h in BETWEEN_H:
        out += [(tag, to_us(hour(h))) for tags in TAGS.values() for tag in tags]
    out += [(tag, to_us(hour(150))) for tag in TEXT]  # the live run's batch id and phase
    return sorted(set(out))


def _in_runs(samples: list[tuple[str, int]], runs: set[str]) -> set[tuple[str, int]]:
    out = set()
    for tag, ts in samples:
        equipment = tag.split(".")[0]
        for rid in runs:
            eq, _, _, start, end, _ = RUNS[rid]
            stop = hour(end) if end is not None else hour(10_000)
            if eq == equipment and to_us(hour(start)) <= ts <= to_us(stop):
                out.add((tag, ts))
    return out


def allowed(user: str) -> Allowed:
    samples = all_samples()
    everything = set(RUNS)
    if user == "root":
        return Allowed(
            frozenset(everything), frozenset(TRIALS), frozenset(samples), frozenset(everything), ()
        )
    if user == "olga":  # operator of R-201
        runs = {r for r, v in RUNS.items() if v[0] == "R-201"}
        return Allowed(
            frozenset(runs),
            frozenset({"TA"}),
            frozenset(s for s in samples if s[0].startswith("R-201.")),
            frozenset(runs),
            ("F-101:BL", "F-101:X-1", "F-101:B-1", "TB"),
        )
    if user in ("ann", "pat"):
        runs = {"F-101:A-1", "R-201:A-1", "F-101:A-2"}
        own = _in_runs(samples, runs) if user == "ann" else set()
        return Allowed(
            frozenset(runs),
            frozenset({"TA"}),
            frozenset(own),
            frozenset(runs if user == "ann" else ()),
            ("beta", "TB", "B-1", "BL-", "X-1", "bob"),
        )
    runs = {"F-101:B-1"}  # bob, startup beta
    return Allowed(
        frozenset(runs),
        frozenset({"TB"}),
        frozenset(_in_runs(samples, runs)),
        frozenset(runs),
        ("acme", "TA", "A-1", "A-2", "BL-", "X-1", "ann", "pat"),
    )


def build(data_dir: Path) -> None:
    """Write the site's store, catalog and health into data_dir/biopilot.db."""
    config = load_config(CONFIG)
    db = data_dir / "biopilot.db"
    store = SqliteStore(db)
    rows = [
        Sample(tag, datetime.fromtimestamp(ts / 1e6, UTC), TEXT.get(tag, 20.0 + (ts // 600_000_000) % 7))
        for tag, ts in all_samples()
    ]
    store.write(rows)
    store.close()
    assert {t for t, _ in all_samples()} <= {t.name for t in config.tags}

    catalog = Catalog(db)
    for trial_id, (startup, equipment) in TRIALS.items():
        catalog.create_trial(
            trial_id, title=f"{startup} trial", equipment=equipment, startup=startup, created_by="root"
        )
    for rid, (equipment, kind, trial, start, end, upstream) in RUNS.items():
        batch = rid.split(":")[1]
        catalog.create_run(
            equipment,
            batch,
            hour(start),
            hour(end) if end is not None else None,
            kind=kind,
            trial_id=trial,
            upstream_id=upstream,
            origin="import",
        )
        titer = BASELINE_TITER.get(rid, 20.0 + len(rid))
        catalog.set_kpis(rid, [KpiRecord("titer", titer, "g/L", 1.0, (), final=end is not None, version="t")])
        catalog.set_phases(rid, [])
        catalog.add_lab_results([LabResult(equipment, hour(start + 1), "titer", 1.0, "g/L", 0.0, rid)])
    auth = Authenticator(catalog)
    for name, role, tenant, equipment in [
        ("root", "admin", None, []),
        ("olga", "operator", None, ["R-201"]),
        ("ann", "startup", "acme", []),
        ("bob", "startup", "beta", []),
        ("pat", "partner", None, []),
    ]:
        catalog.add_user(name, role, created_by="root", tenant=tenant, equipment=equipment)
        auth.set_password(name, PASSWORD, by="root", must_change=False)
    catalog.invite("TA", "pat", invited_by="root")
    catalog.set_charter_draft("TA", TA_CHARTER, by="root")
    catalog.lock_charter("TA", by="root")
    catalog.exclude_run("TA", "F-101:BL-2", reason="contaminated (lab report 17)", by="root")
    catalog.close()
    health = HealthStore(db)
    now = hour(NOW_H)
    health.publish(
        now,
        {
            "opcua:pilot": {"kind": "opcua", "state": "connected"},
            "mqtt:plant": {"kind": "mqtt", "state": "connected"},
        },
        [],
        [],
    )
    health.close()
    _ = config


def word_counts(text: str, words: tuple[str, ...]) -> dict[str, int]:
    """How often each word appears in text as a whole word (a user "ann" is not shown by "cannot")."""
    found = {w: len(re.findall(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)) for w in words}
    return {w: n for w, n in found.items() if n}
