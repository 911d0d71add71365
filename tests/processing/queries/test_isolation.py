"""The isolation matrix: two startups, one partner invited to one trial, one operator and the admin. For every
read of the query layer and every CLI command that reads or exports, the runs, trials, KPI rows, lab results
and series samples each viewer reaches are exactly the allowed set (tests/processing/queries/site.py writes
that set down from the runs' windows, not from the query layer). The count of forbidden rows reached is
printed and must be 0; so must the number of other startups' names (and baseline run ids) in what they are
shown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from biopilot.app.cli import main as cli
from biopilot.config import load_config
from biopilot.samples import to_us
from processing.queries import Forbidden, open_query
from processing.queries.query import MIN_BASELINE_RUNS
from storage import Catalog, HealthStore, SqliteStore
from tests.processing.queries.site import (
    BASELINE_TITER,
    CONFIG,
    RUNS,
    TEXT,
    TRIALS,
    USERS,
    allowed,
    build,
    hour,
    word_counts,
)

SERIES = ["F-101.temperature", "F-101.dissolved_oxygen", "R-201.turbidity", "F-101.batch_id", "F-101.phase"]
MATRIX: dict[tuple[str, str], tuple[int, int]] = {}  # (channel, user) -> (reached, forbidden reached)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("site")
    build(data_dir)
    return data_dir


@pytest.fixture(scope="module", autouse=True)
def _print_matrix() -> Iterator[None]:
    yield
    if not MATRIX:
        return
    channels = sorted({c for c, _ in MATRIX})
    print("\nisolation matrix: reached / FORBIDDEN reached, per channel and user")
    print(f"{'channel':28}" + "".join(f"{u:>12}" for u in USERS))
    for c in channels:
        cells = [MATRIX.get((c, u)) for u in USERS]
        print(
            f"{c:28}"
            + "".join(
                f"{f'{r}/{f}' if (r, f) != (None, None) else '—':>12}"
                for r, f in (x or (None, None) for x in cells)
            )
        )
    total = sum(f for _, f in MATRIX.values())
    print(f"forbidden rows reached, all channels and users: {total}")


def _record(channel: str, user: str, reached: set, allowed_set: frozenset | set) -> None:  # type: ignore[type-arg]
    forbidden = reached - set(allowed_set)
    MATRIX[(channel, user)] = (len(reached), len(forbidden))
    assert not forbidden, f"{user} reached forbidden {channel}: {sorted(forbidden)[:5]}"
    assert reached == set(allowed_set), (
        f"{user} misses allowed {channel}: {sorted(set(allowed_set) - reached)[:5]}"
    )


def _query(site: Path, user: str):  # type: ignore[no-untyped-def]
    config = load_config(CONFIG)
    catalog = Catalog(site / "biopilot.db")
    store = SqliteStore(site / "biopilot.db", read_only=True)
    health = HealthStore(site / "biopilot.db", read_only=True)
    viewer = catalog.user(user).viewer  # type: ignore[union-attr]
    return open_query(viewer, config, catalog, store, health), (catalog, store, health)


# -- the query layer ------------------------------------------------------------------------------------
@pytest.mark.parametrize("user", USERS)
def test_query_layer_reaches_exactly_the_allowed_set(site: Path, user: str) -> None:
    ok = allowed(user)
    q, handles = _query(site, user)
    try:
        listed = {r.id for r in q.runs()}
        probed = {rid for rid in RUNS if q.run(rid) is not None}
        _record("query runs()", user, listed, ok.runs)
        _record("query run(id)", user, probed, ok.runs)
        kpi_rows = {(rid, k.name) for rid in RUNS for k in q.kpis(rid)}
        _record("query kpis", user, kpi_rows, {(r, "titer") for r in ok.runs})
        lab = {r.source for rid in RUNS for r in q.lab_results(rid)}
        _record("query lab results", user, lab, ok.lab)
        _record("query trials", user, {t.id for t in q.trials()}, ok.trials)
        _record("query trial(id)", user, {t for t in TRIALS if q.trial(t) is not None}, ok.trials)
        down = {r.id for rid in RUNS for r in q.downstream_runs(rid)}
        assert down <= ok.runs
        # series: every configured tag over all time, raw and as buckets and latest
        samples: set[tuple[str, int]] = set()
        bucketed: set[tuple[str, int]] = set()
        for tag in SERIES:
            data = q.series(tag, hour(-10), hour(1000))
            samples |= {(tag, int(t)) for t in data.ts.tolist()}
            if tag in TEXT:
                continue
            b = q.buckets(tag, hour(-10), hour(1000), 2000)
            bucketed |= {(tag, int(t)) for t in np.concatenate([b.t_first, b.t_last]).tolist()}
            latest = q.latest([tag]).get(tag)
            if latest is not None:
                bucketed.add((tag, to_us(latest.sample.ts)))
        _record("query series (raw)", user, samples, ok.samples)
        forbidden_b = bucketed - ok.samples
        MATRIX[("query buckets+latest", user)] = (len(bucketed), len(forbidden_b))
        assert not forbidden_b, sorted(forbidden_b)[:5]
        # a startup's run never names a run it may not see
        for run in q.runs():
            assert run.upstream_id is None or run.upstream_id in ok.runs
    finally:
        for h in handles:
            h.close()


@pytest.mark.parametrize("user", USERS)
def test_baseline_only_as_aggregates(site: Path, user: str) -> None:
    q, handles = _query(site, user)
    try:
        for trial_id in TRIALS:
            summary = q.baseline(trial_id)
            if trial_id not in allowed(user).trials:
                assert summary is None
                assert q.baseline_envelope(trial_id, "temperature") is None
                continue
            assert summary is not None and summary.n_runs == 3 >= MIN_BASELINE_RUNS
            titer = next(k for k in summary.kpis if k.name == "titer")
            values = list(BASELINE_TITER.values())
            assert titer.n == 3 and titer.mean == pytest.approx(np.mean(values))
            assert titer.ci_low < titer.mean < titer.ci_high  # type: ignore[operator]
            env = q.baseline_envelope(trial_id, "temperature")
            assert env is not None and env.n_runs == 3
            assert np.nanmax(env.count) == 3 and np.isfinite(env.mean).any()
            # the baseline runs themselves are out of reach of startups and partners
            if user in ("ann", "bob", "pat"):
                assert not any(q.run(r) for r in BASELINE_TITER)
                assert not any(len(q.kpis(r)) for r in BASELINE_TITER)
    finally:
        for h in handles:
            h.close()


def _numbers(x: object) -> list[float]:
    if isinstance(x, dict):
        return [n for v in x.values() for n in _numbers(v)]
    if isinstance(x, list):
        return [n for v in x for n in _numbers(v)]
    return [float(x)] if isinstance(x, int | float) and not isinstance(x, bool) else []


@pytest.mark.parametrize("user", USERS)
def test_charter_and_verdict_reads(site: Path, user: str) -> None:
    """The charter, its versions, the exclusions and the verdict reach whoever may see the trial; the
    baseline run by run only an admin (and an operator of the baseline's equipment): others get no baseline
    run id and no baseline run's value anywhere in what they receive."""
    q, handles = _query(site, user)
    try:
        if "TA" not in allowed(user).trials:
            assert q.charter("TA") is None and q.charter_versions("TA") == []
            assert q.verdict("TA") is None and q.exclusions("TA") == [] and q.trial_members("TA") == []
            MATRIX[("query verdict", user)] = (0, 0)
            return
        assert [v.version for v in q.charter_versions("TA")] == [1]
        assert q.charter("TA").charter.primary_kpi == "titer"  # type: ignore[union-attr]
        doc = q.verdict("TA")
        assert doc is not None
        # A-2 is open: its titer is provisional, so the verdict names it and judges nothing
        a2 = "trial run 2" if user == "olga" else "F-101:A-2"  # olga may not see the run: named by place
        assert doc["word"] == "not judgeable" and a2 in doc["reason"], doc["reason"]
        assert doc["charter_version"] == 1 and doc["charter_changed_after_start"] is True
        text = json.dumps(doc) + json.dumps([e.__dict__ for e in q.exclusions("TA")], default=str)
        members = {m.run_id for m in q.trial_members("TA")}
        baseline_values = set(BASELINE_TITER.values())
        if user == "root":
            assert members == {"F-101:BL-1", "F-101:BL-2", "F-101:BL-3", "F-101:A-1", "F-101:A-2"}
            assert [e.run_id for e in q.exclusions("TA")] == ["F-101:BL-2"]
            assert baseline_values <= set(_numbers(doc))
            assert q.judged("TA") is not None
            MATRIX[("query verdict", user)] = (len(members), 0)
            return
        leaked_ids = [r for r in BASELINE_TITER if r in text]
        leaked_values = sorted(baseline_values & set(_numbers(doc)))
        MATRIX[("query verdict", user)] = (len(members), len(leaked_ids) + len(leaked_values))
        # olga operates R-201 only: TA's trial runs on F-101 are as hidden from her as its baseline
        assert members == (set() if user == "olga" else {"F-101:A-1", "F-101:A-2"})
        assert [e.run_id for e in q.exclusions("TA")] == ["baseline run 2"]
        if user == "olga":
            assert "F-101:A-" not in text and "trial run 2" in doc["reason"], doc["reason"]
        assert not leaked_ids and not leaked_values, (leaked_ids, leaked_values)
        assert "baseline run 2" in text  # the exclusion is still listed, by its place in the baseline
        assert {r["group"] for r in doc["primary"]["runs"]} == (set() if user == "olga" else {"trial"})
        assert doc["baseline_stability"]["values"] == [] and doc["baseline_stability"]["runs"] == []
        assert q.judged("TA") is None
    finally:
        for h in handles:
            h.close()


def test_too_few_baseline_runs_give_no_numbers_to_startups(tmp_path: Path) -> None:
    """Two runs' mean would be as good as their values: below MIN_BASELINE_RUNS a startup gets flags only."""
    build(tmp_path)
    catalog = Catalog(tmp_path / "biopilot.db")
    catalog.update_run("F-101:BL-3", kind="other")
    # TA's baseline was frozen when its charter was locked: a trial without a charter takes the baseline
    # runs on its equipment as they are now
    catalog.create_trial("TC", title="acme again", equipment=["F-101"], startup="acme", created_by="root")
    catalog.close()
    q, handles = _query(tmp_path, "ann")
    try:
        summary = q.baseline("TC")
        assert summary is not None and summary.n_runs == 2
        titer = next(k for k in summary.kpis if k.name == "titer")
        assert (
            titer.mean is None
            and titer.ci_low is None
            and titer.flags == (f"fewer_than_{MIN_BASELINE_RUNS}_runs",)
        )
        env = q.baseline_envelope("TC", "temperature")
        assert env is not None and not np.isfinite(env.mean).any()
    finally:
        for h in handles:
            h.close()


def test_admin_only_reads_are_forbidden_to_others(site: Path) -> None:
    for user in USERS:
        q, handles = _query(site, user)
        try:
            if user == "root":
                assert {u.name for u in q.users()} == set(USERS)
                assert q.audit()
            else:
                with pytest.raises(Forbidden):
                    q.users()
                with pytest.raises(Forbidden):
                    q.audit()
            health = q.health()
            assert bool(health.components) == (user in ("root", "olga"))
            if user == "olga":
                assert {t.equipment for t in health.tags} == {"R-201"}
        finally:
            for h in handles:
                h.close()


def test_a_revoked_invitation_takes_effect_at_once(tmp_path: Path) -> None:
    build(tmp_path)
    q, handles = _query(tmp_path, "pat")
    try:
        assert {t.id for t in q.trials()} == {"TA"}
        handles[0].uninvite("TA", "pat")
        assert q.trials() == [] and q.runs() == [] and q.baseline("TA") is None
    finally:
        for h in handles:
            h.close()


# -- the CLI: every command that reads, and the export ---------------------------------------------------
def _run(capsys: pytest.CaptureFixture[str], site: Path, user: str, *argv: str) -> tuple[int, str]:
    code = cli([*argv, "--config", str(CONFIG), "--data-dir", str(site), "--user", user])
    out, err = capsys.readouterr()
    return code, out + err


def _answer(code: int, out: str) -> str:
    """What a command showed of the data (a refusal only repeats the name the user typed)."""
    return out if code == 0 else ""


@pytest.mark.parametrize("user", USERS)
def test_cli_reads_and_exports_reach_exactly_the_allowed_set(
    site: Path, user: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok = allowed(user)
    shown: list[str] = []

    code, out = _run(capsys, site, user, "runs", "list", "--json")
    assert code == 0, out
    shown.append(_answer(code, out))
    listed = json.loads(out)
    _record("cli runs list", user, {r["id"] for r in listed}, ok.runs)
    _record(
        "cli runs list kpis",
        user,
        {(r["id"], k["name"]) for r in listed for k in r["kpis"]},
        {(r, "titer") for r in ok.runs},
    )

    reached_show, reached_kpis, reached_lab = set(), set(), set()
    exported: set[tuple[str, int]] = set()
    for rid in RUNS:
        code, out = _run(capsys, site, user, "runs", "show", rid, "--json")
        shown.append(_answer(code, out))
        if code == 0:
            item = json.loads(out)
            reached_show.add(item["id"])
            reached_lab |= {r["source"] for r in item["lab_results"]}
        else:
            assert "no run" in out and "that you may see" in out, out
        code, out = _run(capsys, site, user, "kpis", rid, "--json")
        shown.append(_answer(code, out))
        if code == 0:
            reached_kpis |= {(rid, k["name"]) for k in json.loads(out)["kpis"]}
        code, out = _run(capsys, site, user, "lab", "list", rid, "--json")
        shown.append(_answer(code, out))
        if code == 0:
            reached_lab |= {r["source"] for r in json.loads(out)}
        target = tmp_path / f"{rid.replace(':', '_')}.csv"
        code, out = _run(capsys, site, user, "runs", "export", rid, "--out", str(target), "--why", "matrix")
        shown.append(_answer(code, out))
        if code == 0:
            for row in csv.DictReader(io.StringIO(target.read_text())):
                from datetime import datetime

                exported.add((row["tag"], to_us(datetime.fromisoformat(row["time"]))))
    _record("cli runs show", user, reached_show, ok.runs)
    _record("cli kpis", user, reached_kpis, {(r, "titer") for r in ok.runs})
    _record("cli lab list + show", user, reached_lab, ok.lab)
    # an export holds the run's own window: the samples of the runs the viewer may see, on their equipment
    allowed_export = {
        s
        for s in ok.samples
        if any(
            s[0].startswith(RUNS[r][0] + ".")
            and to_us(hour(RUNS[r][3]))
            <= s[1]
            <= to_us(hour(RUNS[r][4] if RUNS[r][4] is not None else 10_000))
            for r in ok.runs
        )
    }
    _record("cli runs export (CSV)", user, exported, allowed_export)

    code, out = _run(capsys, site, user, "trials", "list", "--json")
    shown.append(_answer(code, out))
    _record("cli trials list", user, {t["id"] for t in json.loads(out)}, ok.trials)
    reached_trials = set()
    for trial_id in TRIALS:
        code, out = _run(capsys, site, user, "trials", "show", trial_id, "--json")
        shown.append(_answer(code, out))
        if code == 0:
            reached_trials.add(trial_id)
            item = json.loads(out)
            assert set(item["runs"]) <= ok.runs
    _record("cli trials show", user, reached_trials, ok.trials)

    code, out = _run(capsys, site, user, "status", "--json")
    shown.append(_answer(code, out))
    if user in ("root", "olga"):
        assert code == 0, out
        tags = {t["tag"] for t in json.loads(out)["tags"]}
        assert all(t.startswith("R-201.") for t in tags) if user == "olga" else len(tags) > 10
    else:
        assert code != 0 and "operators and admins" in out

    code, out = _run(capsys, site, user, "audit", "list", "--json")
    shown.append(_answer(code, out))
    assert (code == 0) == (user == "root"), out

    text = "\n".join(shown)
    leaks = word_counts(text, ok.forbidden_words)
    MATRIX[("cli names of others", user)] = (len(ok.forbidden_words), sum(leaks.values()))
    assert not leaks, f"{user} was shown {leaks}"


def test_exports_are_audited(site: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out = _run(
        capsys, site, "ann", "runs", "export", "F-101:A-1", "--out", str(tmp_path / "a.csv"), "--why", "QA"
    )
    assert code == 0, out
    code, out = _run(capsys, site, "root", "audit", "list", "--json", "--action", "export")
    entries = [
        e for e in json.loads(out) if e["actor"] == "ann" and e["target"] == "F-101:A-1" and e["why"] == "QA"
    ]
    assert entries and entries[-1]["details"]["rows"] > 0


def test_cli_without_user_on_a_directory_with_users_refuses(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(["runs", "list", "--config", str(CONFIG), "--data-dir", str(site)])
    out, err = capsys.readouterr()
    assert code == 2 and "--user" in err and not out


def test_writes_need_the_role(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for user, argv in [
        ("ann", ["runs", "edit", "F-101:A-1", "--note", "mine"]),
        ("olga", ["runs", "edit", "F-101:A-1", "--note", "not hers"]),
        ("pat", ["kpis", "F-101:A-1", "--recompute"]),
        ("olga", ["users", "list"]),
        ("bob", ["trials", "create", "T9", "--title", "x", "--equipment", "F-101", "--startup", "beta"]),
    ]:
        code, out = _run(capsys, site, user, *argv)
        assert code == 2 and ("only an admin" in out or "may" in out), (user, argv, out)
    code, out = _run(
        capsys, site, "olga", "runs", "edit", "R-201:X-1", "--note", "checked", "--why", "shift log"
    )
    assert code == 0, out
    _ = timedelta


# -- ops reads (issue 11): batch chains and data quality ---------------------------------------------------
@pytest.mark.parametrize("user", USERS)
def test_chain_and_data_quality_reach_only_the_allowed_set(site: Path, user: str) -> None:
    """Query.chain over every run: only allowed runs, no link to a hidden one. Query.data_quality over all
    time: exactly the samples the user may read per tag (the site's ground truth), collector connections for
    the admin and the operator only."""
    from datetime import UTC, datetime

    ok = allowed(user)
    q, handles = _query(site, user)
    try:
        chained = {r.id for rid in RUNS for r in q.chain(rid)}
        _record("query chain", user, chained, ok.runs)
        links = {r.upstream_id for rid in RUNS for r in q.chain(rid) if r.upstream_id is not None}
        assert links <= ok.runs
        if user in ("root", "ann"):
            assert [r.id for r in q.chain("F-101:A-1")] == ["F-101:A-1", "R-201:A-1"]
        view = q.data_quality(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        counted = {(t.tag, t.quality.samples) for t in view.tags if t.quality.samples}
        truth: dict[str, int] = {}
        text = {t.name for t in load_config(CONFIG).tags if t.is_text}
        for tag, _ in ok.samples:
            if tag not in text:
                truth[tag] = truth.get(tag, 0) + 1
        if user == "ann":  # a startup: the tags of equipment where a run of hers is live (F-101)
            truth = {t: n for t, n in truth.items() if t.startswith("F-101.")}
        if user == "bob":  # no live run of his: no equipment, so no tags (as on the Live page)
            truth = {}
        _record("query data_quality", user, counted, set(truth.items()))
        assert bool(view.connections) == (user in ("root", "olga"))
    finally:
        for h in handles:
            h.close()
