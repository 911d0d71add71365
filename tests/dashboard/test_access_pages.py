"""The dashboard's pages per viewer, run by Streamlit's AppTest: sign in as each user of the isolation site
(tests/processing/queries/site.py) and read what the Live, Runs and Trials pages show. Every run id, trial id
and tag a page shows must be allowed to that user; the forbidden count is printed and must be 0. Also: the
pages get no store or catalog handle, sign-in is required, a one-time password must be changed first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from biopilot.config import load_config
from dashboard.data import DashboardData, PageData
from storage import Catalog, HealthStore, SqliteStore
from storage.db import PostgresDatabase, SqliteDatabase
from tests.dashboard.test_pages import APP, RUN_TIMEOUT_S, open_page, tiles_of
from tests.processing.queries.site import CONFIG, PASSWORD, RUNS, TRIALS, USERS, allowed, build, word_counts

FORBIDDEN: dict[tuple[str, str], tuple[int, int]] = {}  # (page, user) -> (items shown, forbidden shown)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("site")
    build(data_dir)
    return data_dir


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch, site: Path) -> Iterator[None]:
    from streamlit import config

    st.cache_resource.clear()
    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    monkeypatch.setenv("BIOPILOT_CONFIG", str(CONFIG))
    monkeypatch.setenv("BIOPILOT_DATA_DIR", str(site))
    yield
    config.set_option("server.address", before)
    st.cache_resource.clear()


@pytest.fixture(scope="module", autouse=True)
def _print() -> Iterator[None]:
    yield
    if FORBIDDEN:
        print("\npages: items shown / FORBIDDEN shown")
        for (page, user), (n, f) in sorted(FORBIDDEN.items()):
            print(f"  {page:8} {user:6} {n:4} / {f}")
        print(f"forbidden items shown on pages, all users: {sum(f for _, f in FORBIDDEN.values())}")


def sign_in(user: str, password: str = PASSWORD) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S).run()
    assert [t.value for t in at.title] == ["BioPilot · sign in"], [t.value for t in at.title]
    at.text_input(key="login_user").input(user)
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()
    return at


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
    parts += [s.value for s in at.subheader] + [str(i.value) for i in at.info]
    parts += [str(w.value) for kind in ("success", "warning", "error") for w in at.get(kind)]
    for df in at.dataframe:
        parts.append(df.value.to_csv())
    for tb in at.table:  # the charter, the verdict, money and exclusions
        parts.append(tb.value.to_csv())
    for sb in at.selectbox:
        parts += [str(o) for o in sb.options]
    for ms in at.multiselect:
        parts += [str(o) for o in ms.options]
    return "\n".join(parts)


@pytest.mark.parametrize("user", USERS)
def test_each_page_shows_only_what_the_user_may_see(user: str) -> None:
    ok = allowed(user)
    at = sign_in(user)
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Live"]
    assert any(f"Signed in as **{user}**" in m.value for m in at.sidebar.markdown)

    # Live: the tags of the tiles and trend choices belong to equipment the user may see live
    live_tags = set(tiles_of(at)) | {str(o) for ms in at.multiselect for o in ms.options}
    allowed_tags = {t for t, _ in ok.samples} if user != "root" else live_tags
    if user == "olga":
        allowed_tags = {t.name for t in load_config(CONFIG).tags if t.equipment == "R-201"}
    if user == "ann":  # the live run A-2 is on F-101: its tags, nothing of R-201 (no live run of hers there)
        allowed_tags = {t.name for t in load_config(CONFIG).tags if t.equipment == "F-101"}
    bad = live_tags - allowed_tags
    FORBIDDEN[("Live", user)] = (len(live_tags), len(bad))
    assert not bad, sorted(bad)
    texts = [_text(at)]

    # Runs: the table and the chooser list exactly the allowed runs
    at = open_page(at, "Runs")
    assert not at.exception, [e.value for e in at.exception]
    shown = set(at.dataframe[0].value["run"]) if at.dataframe else set()
    chooser = set(at.selectbox(key="run_choice").options) if shown else set()
    bad = (shown | chooser) - ok.runs
    FORBIDDEN[("Runs", user)] = (len(shown | chooser), len(bad))
    assert not bad and shown == set(ok.runs) == chooser
    texts.append(_text(at))

    # Trials: the trials table and, for the chosen trial, runs of that trial and the baseline as aggregates
    at = open_page(at, "Trials")
    assert not at.exception, [e.value for e in at.exception]
    trials = set(at.dataframe[0].value["trial"]) if at.dataframe else set()
    bad = trials - ok.trials
    # dataframes: the trials, the chosen trial's runs (every trial here has runs), its baseline aggregates
    runs_shown = set(at.dataframe[1].value["run"]) if trials else set()
    bad |= runs_shown - ok.runs
    FORBIDDEN[("Trials", user)] = (len(trials | runs_shown), len(bad))
    assert not bad and trials == set(ok.trials)
    if trials:
        baseline = at.dataframe[2].value
        assert list(baseline["n"]) == [3]  # titer over the three baseline runs, no single run
        # the verdict's CI chart, runs and baseline stability (TA has a locked charter), and the envelope
        assert len(at.get("plotly_chart")) == (4 if "TA" in trials else 1)
    if "TA" in trials:  # the verdict reaches everyone who sees the trial (A-2 is still open)
        assert any(w.value.startswith("**Verdict: not judgeable**") for w in at.warning)
    texts.append(_text(at))

    text = "\n".join(texts)
    leaks = word_counts(text, ok.forbidden_words)
    FORBIDDEN[("names", user)] = (len(ok.forbidden_words), sum(leaks.values()))
    assert not leaks, leaks
    for rid in set(RUNS) - ok.runs:
        assert rid not in text, rid
    for trial in set(TRIALS) - ok.trials:
        assert f"{trial} " not in text and f"\n{trial}\n" not in text


def test_wrong_password_stays_on_the_sign_in_page() -> None:
    at = sign_in("ann", "not her password")
    assert [t.value for t in at.title] == ["BioPilot · sign in"]
    assert any("Wrong user name or password" in e.value for e in at.error)
    assert not at.dataframe and not tiles_of(at)


def test_a_one_time_password_must_be_changed_first(site: Path) -> None:
    from processing.queries.auth import Authenticator

    catalog = Catalog(site / "biopilot.db")
    Authenticator(catalog).set_password("bob", "one-time-pass-42", by="root", must_change=True)
    catalog.close()
    at = sign_in("bob", "one-time-pass-42")
    assert [t.value for t in at.title] == ["Choose your password"]
    assert not at.dataframe and not tiles_of(at)  # nothing of the data before the password is changed
    at.text_input(key="pw_old").input("one-time-pass-42")
    at.text_input(key="pw_new").input(PASSWORD)
    at.text_input(key="pw_again").input(PASSWORD)
    at.button[0].click().run()
    assert [t.value for t in at.title] == ["Live"]


def test_sign_out_returns_to_the_sign_in_page() -> None:
    at = sign_in("pat")
    at.sidebar.button(key="sign_out").click().run()
    assert [t.value for t in at.title] == ["BioPilot · sign in"]


def test_listening_beyond_loopback_requires_sign_in_even_without_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit import config

    monkeypatch.setenv("BIOPILOT_DATA_DIR", str(tmp_path))  # an empty data directory: no users
    config.set_option("server.address", "0.0.0.0")
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S).run()
    assert [t.value for t in at.title] == ["BioPilot · sign in"]
    config.set_option("server.address", "127.0.0.1")
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S).run()
    assert [t.value for t in at.title] == ["Live"]
    assert any("Open dashboard, no login" in w.value for w in at.sidebar.warning)


def test_pages_get_no_store_or_catalog_handle(site: Path) -> None:
    """What a view receives (PageData, and the Query inside it) has no attribute leading to a store, a
    catalog, a database or the health store; both refuse new attributes."""
    config = load_config(CONFIG)
    catalog = Catalog(site / "biopilot.db")
    store = SqliteStore(site / "biopilot.db", read_only=True)
    health = HealthStore(site / "biopilot.db", read_only=True)
    try:
        data = DashboardData(config, store, catalog, health)
        page = data.page(catalog.user("ann").viewer)  # type: ignore[union-attr]
        assert isinstance(page, PageData)
        handles = (Catalog, SqliteStore, HealthStore, DashboardData, SqliteDatabase, PostgresDatabase)
        seen: set[int] = set()

        def walk(obj: object, path: str, depth: int = 0) -> None:
            if id(obj) in seen or depth > 4:
                return
            seen.add(id(obj))
            assert not isinstance(obj, handles), f"{path} is a {type(obj).__name__}"
            names = list(getattr(obj, "__dict__", {})) + list(getattr(type(obj), "__slots__", ()))
            for name in names:
                if hasattr(obj, name):
                    walk(getattr(obj, name), f"{path}.{name}", depth + 1)

        walk(page, "page")
        for attr in ("store", "catalog", "config", "_store", "_catalog", "_health", "_backend", "db"):
            assert not hasattr(page, attr), attr
            assert not hasattr(page._q, attr), attr
        with pytest.raises(AttributeError):
            page.catalog = catalog  # type: ignore[attr-defined]
        with pytest.raises(AttributeError):
            page._q.viewer = None  # type: ignore[misc]
    finally:
        catalog.close()
        store.close()
        health.close()


# -- Run review, Compare runs, and the Live page's alarms (issue 11 B2) -------------------------------------
@pytest.fixture(scope="module")
def review_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The isolation site with a stored envelope of F-101.temperature and an open alarm on five runs."""
    from tests.processing.queries.test_review_queries import add_references_and_alarms

    data_dir = tmp_path_factory.mktemp("review-site")
    build(data_dir)
    add_references_and_alarms(data_dir)
    return data_dir


def _figure_runs(at: AppTest) -> set[str]:
    import json

    runs: set[str] = set()
    for chart in at.get("plotly_chart"):
        for trace in json.loads(chart.proto.spec)["data"]:  # type: ignore[attr-defined]
            if "hovertemplate" in trace:
                runs.add(trace["hovertemplate"].split("<br>")[0])
    return runs


@pytest.mark.parametrize("user", USERS)
def test_review_compare_and_alarms_show_only_what_the_user_may_see(
    user: str, review_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.processing.queries.test_review_queries import ALARMED

    monkeypatch.setenv("BIOPILOT_DATA_DIR", str(review_site))
    ok = allowed(user)
    at = sign_in(user)
    assert not at.exception, [e.value for e in at.exception]
    # Live: the alarms listed are of runs the user may see (none for the partner)
    alarm_runs = {r for m in at.markdown if m.value.startswith("**#") for r in ALARMED if f" {r} " in m.value}
    # pat and bob have no live run: the Live page has nothing for them (bob's alarm is on his Run review)
    expected = {r for r in ALARMED if r in ok.runs} if user not in ("pat", "bob") else set()
    bad = alarm_runs - ok.runs
    FORBIDDEN[("Alarms", user)] = (len(alarm_runs), len(bad))
    assert not bad and alarm_runs == expected, (user, alarm_runs)
    texts = [_text(at)]

    # Run review: the chooser offers exactly the allowed runs; every run drawn is allowed
    at = open_page(at, "Run review")
    assert not at.exception, [e.value for e in at.exception]
    offered = set(at.selectbox(key="review_run").options)
    drawn = set()
    for run_id in sorted(offered):
        at.selectbox(key="review_run").set_value(run_id).run()
        assert not at.exception, [e.value for e in at.exception]
        drawn |= _figure_runs(at)
        texts.append(_text(at))
        if run_id in ALARMED:  # the run's alarm is in its review (never for the partner: no series)
            assert any(list(d.value.columns)[:1] == ["#"] for d in at.dataframe) == (user != "pat")
    bad = (offered | drawn) - ok.runs
    FORBIDDEN[("Review", user)] = (len(offered | drawn), len(bad))
    assert not bad and offered == set(ok.runs), (user, offered, drawn)
    if user in ("ann", "bob", "pat"):  # the baseline only as the envelope
        assert not {r for r in drawn if "BL-" in r}

    # Compare runs: only runs whose series the user may see
    at = open_page(at, "Compare")
    assert not at.exception, [e.value for e in at.exception]
    offered = set(at.multiselect(key="compare_runs").options) if at.multiselect else set()
    drawn = _figure_runs(at)
    bad = (offered | drawn) - ok.runs
    FORBIDDEN[("Compare", user)] = (len(offered | drawn), len(bad))
    assert not bad, (user, offered, drawn)
    if user == "pat":
        assert not offered  # a partner sees no series
    texts.append(_text(at))

    leaks = word_counts("\n".join(texts), ok.forbidden_words)
    FORBIDDEN[("names B2", user)] = (len(ok.forbidden_words), sum(leaks.values()))
    assert not leaks, leaks


# -- ops pages (issue 11): Energy & utilities, Yield waterfall, Data quality & collectors --------------------
@pytest.mark.parametrize("user", USERS)
def test_ops_pages_show_only_what_the_user_may_see(user: str) -> None:
    """Energy: the runs table and the batch chooser; Yield waterfall: the batch chooser and the chosen chain's
    steps; Data quality: the tags (of equipment the user may see live) and, per tag, as many samples as the
    user may read in the window (the ground truth of site.py) — and collector internals for the host only."""
    from biopilot.samples import to_us
    from tests.processing.queries.site import NOW_H, hour

    ok = allowed(user)
    at = sign_in(user)
    texts = []

    at = open_page(at, "Energy & utilities")
    assert not at.exception, [e.value for e in at.exception]
    shown = set(at.dataframe[0].value["run"]) if at.dataframe else set()
    batches = set(at.selectbox(key="energy_batch").options) if shown else set()
    operations = set(at.dataframe[1].value["run"]) if len(at.dataframe) > 1 else set()
    bad = (shown | batches | operations) - ok.runs
    FORBIDDEN[("Energy", user)] = (len(shown | batches | operations), len(bad))
    assert not bad and shown == set(ok.runs)
    texts.append(_text(at))

    at = open_page(at, "Yield waterfall")
    assert not at.exception, [e.value for e in at.exception]
    batches = {str(o) for sb in at.selectbox for o in sb.options}
    steps = set(at.dataframe[0].value["run"]) if at.dataframe else set()
    bad = (batches | steps) - ok.runs
    FORBIDDEN[("Yield", user)] = (len(batches | steps), len(bad))
    assert not bad and batches
    texts.append(_text(at))

    at = open_page(at, "Data quality & collectors")
    assert not at.exception, [e.value for e in at.exception]
    frames = {next(iter(df.value.columns)): df.value for df in at.dataframe}
    tags = frames["tag"].to_dict("records") if "tag" in frames else []
    shown_tags = {r["tag"] for r in tags}
    may = {t.name for t in load_config(CONFIG).tags if not t.is_text}
    if user == "olga":
        may = {t for t in may if t.startswith("R-201.")}
    elif user == "ann":  # her live run A-2 is on F-101
        may = {t for t in may if t.startswith("F-101.")}
    elif user in ("bob", "pat"):  # no live run of his; a partner reads no series
        may = set()
    bad_tags = shown_tags - may
    # samples per tag: exactly those the user may read in the page's 24 h window
    end_h = max((NOW_H if u.startswith("F-101") else 144) for u in shown_tags) if shown_tags else NOW_H
    end = to_us(hour(end_h)) + 1
    start = end - 24 * 3_600_000_000
    wrong = {
        r["tag"]
        for r in tags
        if int(r["samples"]) != sum(1 for t, ts in ok.samples if t == r["tag"] and start <= ts < end)
    }
    host = "connection" in frames
    FORBIDDEN[("Quality", user)] = (
        len(shown_tags),
        len(bad_tags | wrong) + (host and user not in ("root", "olga")),
    )
    assert not bad_tags and not wrong and shown_tags == may
    assert host == (user in ("root", "olga"))  # collector internals: admin and operator only
    texts.append(_text(at))

    text = "\n".join(texts)
    leaks = word_counts(text, ok.forbidden_words)
    FORBIDDEN[("ops names", user)] = (len(ok.forbidden_words), sum(leaks.values()))
    assert not leaks, leaks
    for rid in set(RUNS) - ok.runs:
        assert rid not in text, rid
