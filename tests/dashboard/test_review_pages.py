"""The Run review, Compare runs and Live (envelope, alarms, progress) pages, run by Streamlit's AppTest on a
small site written by benchmarks/page_load.py (a fermenter, 5 archived baseline runs, a reviewed run with a
DO dip, an open live run; envelopes built and stored by processing.baseline, the reviewed run's alarms
evaluated by processing.live_alarms). What the pages show is compared with what processing stored."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from benchmarks.page_load import EQUIPMENT, PRODUCT, Site, build
from biopilot.records import KpiRecord
from processing.envelope import Envelope
from storage.alarms import Alarms
from storage.catalog import Catalog
from storage.references import References
from tests.dashboard.test_pages import APP, RUN_TIMEOUT_S, open_page

TITER = 7.654  # a KPI of the reviewed run, written here and read back off the page


def small_site(work: Path) -> Site:
    """1 day at 60 s, 20 tags, 5 baseline runs, 6 h of live run: about 2 s to write."""
    site = build(work, days=1, n_tags=20, interval_s=60, n_baseline=5, live_hours=6, quiet=True)
    catalog = Catalog(work / "biopilot.db")
    try:
        catalog.set_kpis(site.reviewed, [KpiRecord("titer", TITER, "g/L", 1.0, (), final=True)])
    finally:
        catalog.close()
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return small_site(tmp_path_factory.mktemp("review-site"))


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, site: Site) -> Iterator[None]:
    from streamlit import config

    st.cache_resource.clear()
    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")  # no users: the open local dashboard (admin)
    monkeypatch.setenv("BIOPILOT_CONFIG", str(site.config_path))
    monkeypatch.setenv("BIOPILOT_DATA_DIR", str(site.dir))
    yield
    config.set_option("server.address", before)
    st.cache_resource.clear()


def stored_envelope(site: Site, tag: str) -> Envelope:
    catalog = Catalog(site.dir / "biopilot.db")
    try:
        (env,) = References(catalog.db).envelopes(EQUIPMENT, PRODUCT, tag=tag)
        assert env.doc is not None
        return Envelope.from_json(env.doc)
    finally:
        catalog.close()


def stored_alarms(site: Site, run_id: str | None = None) -> list:  # type: ignore[type-arg]
    catalog = Catalog(site.dir / "biopilot.db")
    try:
        return Alarms(catalog.db).alarms(run_id=run_id)
    finally:
        catalog.close()


def figure(at: AppTest, index: int = 0) -> dict:  # type: ignore[type-arg]
    return json.loads(at.get("plotly_chart")[index].proto.spec)  # type: ignore[attr-defined]


def values(v: object) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array {"dtype", "bdata" (base64)} as plotly 6 writes numpy."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).astype(float)
    return np.array([np.nan if x is None else x for x in v], dtype=float)  # type: ignore[attr-defined]


def table(at: AppTest, first_column: str):  # type: ignore[no-untyped-def]
    """The dataframe whose first column is `first_column`."""
    (df,) = [d.value for d in at.dataframe if list(d.value.columns)[:1] == [first_column]]
    return df


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_run_review_draws_the_run_the_baseline_and_the_stored_envelope(site: Site) -> None:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.query_params["run"] = site.reviewed
    at = _run(open_page(_run(at), "Run review"))
    assert [t.value for t in at.title] == ["Run review"]
    assert at.selectbox(key="review_run").value == site.reviewed
    assert at.selectbox(key="review_alignment").value.startswith("phase landmarks")
    tags = at.multiselect(key="review_tags").value
    assert "F-1.dissolved_oxygen" in tags
    fig = figure(at)
    traces = fig["data"]
    # the reviewed run, and the 5 baseline runs in grey, per tag
    runs = {t["hovertemplate"].split("<br>")[0] for t in traces if "hovertemplate" in t}
    assert runs == {site.reviewed, *site.baseline}
    # the envelope band drawn is the stored one (processing.baseline built it): lower bound of DO
    env = stored_envelope(site, "F-1.dissolved_oxygen")
    row = tags.index("F-1.dissolved_oxygen") + 1
    axis = "y" if row == 1 else f"y{row}"
    lower = next(t for t in traces if t.get("name", "").startswith("envelope (") and t.get("yaxis") == axis)
    assert np.allclose(values(lower["y"]), env.lower, equal_nan=True)
    assert np.allclose(values(lower["x"]), env.grid)
    assert f"n = {len(env.runs)} baseline runs" in " ".join(c.value for c in at.caption)
    # phases shaded (one shape each, over every row) and named
    assert len([s for s in fig["layout"]["shapes"] if s["type"] == "rect"]) == 3
    names = {a["text"] for a in fig["layout"]["annotations"]}
    assert {"batch", "fed_batch", "harvest", "lab: titer"} <= names
    # the KPI and the alarms of the run, as stored
    kpis = table(at, "KPI")
    assert float(kpis.loc[kpis["KPI"] == "titer", "value"].iloc[0]) == pytest.approx(TITER)
    alarms = table(at, "#")
    assert sorted(alarms["#"]) == sorted(a.id for a in stored_alarms(site, site.reviewed))
    assert len(alarms) >= 1 and "F-1.dissolved_oxygen" in " ".join(alarms["tag"])  # the DO dip


def test_run_review_csv_is_the_shown_data_and_the_overlay_can_be_left_off(site: Site) -> None:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.query_params["run"] = site.reviewed
    at = _run(open_page(_run(at), "Run review"))
    at.multiselect(key="review_tags").set_value(["F-1.dissolved_oxygen"])
    at.checkbox(key="review_overlay").uncheck()
    at = _run(at)
    fig = figure(at)
    runs = {t["hovertemplate"].split("<br>")[0] for t in fig["data"] if "hovertemplate" in t}
    assert runs == {site.reviewed}
    # the CSV is what the chart shows: the run's points and the envelope's bounds
    assert at.get("download_button")  # its data is made on click: review.csv below is that function
    from dashboard.data import DashboardData

    data = DashboardData.from_environment()
    from biopilot.access import Viewer

    page = data.page(Viewer.local_admin())
    choice = page.alignment_choices(site.reviewed)[0]
    review = page.review([site.reviewed], ["F-1.dissolved_oxygen"], choice)
    lines = review.csv().splitlines()
    shown = [t for t in fig["data"] if t.get("hovertemplate", "").startswith(site.reviewed)]
    points = int(np.isfinite(values(shown[0]["y"])).sum())
    assert sum(1 for x in lines if x.startswith(f"{site.reviewed},")) == points
    env = stored_envelope(site, "F-1.dissolved_oxygen")
    assert sum(1 for x in lines if x.startswith("envelope_lower,")) == int(np.isfinite(env.lower).sum())


def test_time_since_inoculation_has_no_stored_envelope_and_says_so(site: Site) -> None:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.query_params["run"] = site.reviewed
    at = _run(open_page(_run(at), "Run review"))
    at.selectbox(key="review_alignment").set_value("time since inoculation")
    at = _run(at)
    fig = figure(at)
    assert not [t for t in fig["data"] if t.get("name", "").startswith("envelope")]
    assert any("No stored envelope" in c.value for c in at.caption)
    assert fig["layout"]["xaxis" + str(len(at.multiselect(key="review_tags").value) + 1)]["title"][
        "text"
    ] == ("time since inoculation [h]")


def test_compare_runs_overlays_runs_by_role_with_their_kpis_side_by_side(site: Site) -> None:
    at = _run(open_page(_run(AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)), "Compare"))
    assert [t.value for t in at.title] == ["Compare runs"]
    at.multiselect(key="compare_runs").set_value([site.reviewed, site.baseline[0]])
    at.multiselect(key="compare_roles").set_value(["dissolved_oxygen", "volume"])
    at = _run(at)
    traces = figure(at)["data"]
    runs = {t["hovertemplate"].split("<br>")[0] for t in traces if "hovertemplate" in t}
    assert runs == {site.reviewed, site.baseline[0]}
    assert len([t for t in traces if "hovertemplate" in t]) == 4  # 2 runs × 2 signals
    kpis = table(at, "KPI")
    assert list(kpis.columns) == ["KPI", "unit", site.reviewed, site.baseline[0]]
    assert kpis.loc[kpis["KPI"] == "titer", site.reviewed].iloc[0] == f"{TITER:.4g}"


def test_live_shows_progress_envelope_and_alarms_and_an_operator_acknowledges(site: Site) -> None:
    at = _run(AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S))
    assert [t.value for t in at.title] == ["Live"]
    progress = [c.value for c in at.caption if "into the batch" in c.value]
    assert len(progress) == 1 and progress[0].startswith(f"{site.live}: ")  # the live run's aligned hours
    alarms = stored_alarms(site)
    heading = [s.value for s in at.subheader if s.value.startswith("Alarms")]
    assert heading == [f"Alarms · {sum(a.is_open for a in alarms)} open"]
    lines = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert sorted(int(x[3:].split("**")[0]) for x in lines) == sorted(a.id for a in alarms)
    # the envelope behind the DO trend of the live run
    names = [t.get("name", "") for t in figure(at)["data"]]
    assert "envelope F-1.dissolved_oxygen" in names
    # acknowledge (the local admin): who and when stored, and in the audit log
    first = min(a.id for a in alarms)
    at.button(key=f"ack_{first}").click()
    at = _run(at)
    (acked,) = [a for a in stored_alarms(site) if a.id == first]
    assert acked.ack_by == "local" and acked.ack_at is not None
    catalog = Catalog(site.dir / "biopilot.db")
    try:
        entries = [e for e in catalog.audit.entries(actor="local") if e.action == "alarm.ack"]
    finally:
        catalog.close()
    assert [e.target for e in entries] == [str(first)]
    # a closed alarm once acknowledged leaves the list (`biopilot alarms list` keeps it); no button for it
    assert not [b for b in at.button if b.key == f"ack_{first}"]
    assert any("acknowledged and over" in c.value for c in at.caption)
