"""The Energy & utilities, Yield waterfall and Data quality & collectors pages under Streamlit's AppTest, on
a simulated site whose KPIs the processing service computed (tests/dashboard/ops_site.py). Every number a
page shows is compared with processing's own result: the KPI records it stored, and for the data quality
processing.quality on the raw series read from the store here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from biopilot.config import load_config
from processing.quality import gaps
from storage import Catalog, SqliteStore
from tests.dashboard.ops_site import (
    CONFIG,
    CUT_TAG,
    GAP_H,
    GAP_TAG,
    RECONNECTS,
    OpsSite,
    build,
)
from tests.dashboard.test_pages import APP, RUN_TIMEOUT_S, open_page


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> OpsSite:
    return build(tmp_path_factory.mktemp("ops"))


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch, site: OpsSite) -> Iterator[None]:
    from streamlit import config

    st.cache_resource.clear()
    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    monkeypatch.setenv("BIOPILOT_CONFIG", str(CONFIG))
    monkeypatch.setenv("BIOPILOT_DATA_DIR", str(site.data_dir))
    yield
    config.set_option("server.address", before)
    st.cache_resource.clear()


def kpis(site: OpsSite, run_id: str) -> dict[str, float | None]:
    catalog = Catalog(site.data_dir / "biopilot.db")
    try:
        return {k.name: k.value for k in catalog.kpis(run_id)}
    finally:
        catalog.close()


def page(title: str) -> AppTest:
    at = open_page(AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S).run(), title)
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [title]
    return at


def rows(df: pd.DataFrame, key: str) -> dict[str, dict[str, str]]:
    return {str(r[key]): r for r in df.to_dict("records")}


def test_energy_page_shows_processing_s_kwh_and_kwh_per_kg(site: OpsSite) -> None:
    at = page("Energy & utilities")
    table = rows(at.dataframe[0].value, "run")
    first, second = site.batches
    assert set(table) == {first, second, site.recovery[first], site.recovery[second]}
    for run_id, row in table.items():
        k = kpis(site, run_id)
        assert row["energy [kWh]"] == f"{k['energy.total']:,.1f}", run_id
        if k.get("specific_energy") is not None:
            assert row["kWh/kg"] == f"{k['specific_energy']:,.2f}", run_id
            # processing's kWh/kg is its energy over its product (formed, or out of the step)
            product = k.get("product_out") or k["product_formed"]
            assert k["specific_energy"] == pytest.approx(k["energy.total"] / product, rel=1e-5)
    # the fermenter meters steam and water, the centrifuge does not: "—", never 0
    assert table[first]["steam [kg]"] == f"{kpis(site, first)['steam']:,.1f}"
    assert table[site.recovery[first]]["steam [kg]"] == "—"
    # the second centrifuge run has no product concentration: no product, no kWh/kg, and the flag says why
    cut = table[site.recovery[second]]
    assert cut["product [kg]"] == "—" and cut["kWh/kg"] == "—"
    assert f"missing_input:{CUT_TAG}" in cut["flags"]
    # the demo site has an electricity factor only: CO2e says so
    assert "no_emission_factor:steam" in table[first]["flags"]
    assert len(at.get("plotly_chart")) == 3  # per consumer, per kg, per unit operation
    spec = at.get("plotly_chart")[1].proto.spec  # kWh/kg across runs: the centrifuge run B02 is "missing"
    assert '"missing"' in spec

    # per unit operation of the first batch: fermenter + centrifuge, kWh per kg of product out of the chain
    at.selectbox(key="energy_batch").set_value(first).run()
    ops = rows(at.dataframe[1].value, "run")
    assert list(ops) == [first, site.recovery[first]]
    assert ops[first]["unit operation"] == "F-101 · Pilot fermenter, 1 m³"
    kf, kr = kpis(site, first), kpis(site, site.recovery[first])
    total = kf["energy.total"] + kr["energy.total"]  # by hand: the chain's two runs
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Batch energy [kWh]"] == f"{total:,.1f}"
    assert metrics["Product out of the last step [kg]"] == f"{kr['product_out']:,.3f}"
    assert metrics["kWh per kg of product"] == f"{total / kr['product_out']:,.2f}"

    at.selectbox(key="energy_batch").set_value(second).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["kWh per kg of product"] == "—"
    assert any("missing:product" in c.value for c in at.caption)


def test_yield_waterfall_steps_and_a_missing_step(site: OpsSite) -> None:
    at = page("Yield waterfall")
    first, second = site.batches
    assert set(at.selectbox(key="waterfall_batch").options) == {first, second}
    at.selectbox(key="waterfall_batch").set_value(first).run()
    kf, kr = kpis(site, first), kpis(site, site.recovery[first])
    steps = at.dataframe[0].value.to_dict("records")
    assert len(steps) == 1
    step = steps[0]
    assert step["run"] == site.recovery[first]
    assert step["step yield"] == f"{kr['step_yield']:.1%}"
    # processing's step yield is out / in of its own product figures
    assert kr["step_yield"] == pytest.approx(kr["product_out"] / kr["product_in"], rel=1e-5)
    assert step["product out [kg]"] == f"{kr['product_out']:,.3f}"
    text = "\n".join(m.value for m in at.markdown)
    assert f"**{kf['titer']:.2f} g/L**" in text and f"**{kf['product_harvested']:,.3f} kg**" in text
    assert f"Purified product: **{kr['product_out']:,.3f} kg**" in text
    fig = at.get("plotly_chart")[0].proto.spec
    assert '"purified product"' in fig

    at.selectbox(key="waterfall_batch").set_value(second).run()
    step = at.dataframe[0].value.to_dict("records")[0]
    assert (step["product out [kg]"], step["step yield"], step["overall yield"]) == ("missing",) * 3
    assert f"missing_input:{CUT_TAG}" in step["flags"]
    text = "\n".join(m.value for m in at.markdown)
    assert "Purified product: **unknown**" in text
    fig = at.get("plotly_chart")[0].proto.spec
    assert "R-201: missing" in fig and '"purified product"' not in fig and "100" not in step["step yield"]


def test_data_quality_page_counts_the_gap_and_the_collectors(site: OpsSite) -> None:
    at = page("Data quality & collectors")
    at.selectbox(key="dq_window").set_value("7 days").run()
    assert not at.exception
    tags = rows(at.dataframe[1].value, "tag")
    config = load_config(CONFIG)
    assert set(tags) == {t.name for t in config.tags if not t.is_text}
    # processing's gap count on the raw series, read from the store here
    store = SqliteStore(site.data_dir / "biopilot.db", read_only=True)
    try:
        for name in (GAP_TAG, "F-101.ph"):
            data = store.read(name, store.latest([name])[name].sample.ts - timedelta(days=7), _far())
            g = gaps(data.ts / 3.6e9)
            assert tags[name]["gaps"] == str(g.count), name
            assert tags[name]["samples"] == str(len(data)), name
            if g.count:
                assert tags[name]["longest gap [h]"] == f"{g.longest_h:.2f}", name
                # the cut 2 h plus up to a 5-min sampling step on either side
                assert GAP_H < g.longest_h <= GAP_H + 2 * 5 / 60 + 1e-9
    finally:
        store.close()
    assert tags[GAP_TAG]["gaps"] == "1" and "gaps" in tags[GAP_TAG]["flags"]
    assert tags["F-101.ph"]["gaps"] == "0"

    conns = rows(at.dataframe[0].value, "connection")
    assert {n: int(c["reconnects"]) for n, c in conns.items()} == RECONNECTS
    assert (conns["opcua:pilot"]["outages"], conns["opcua:pilot"]["quarantined"]) == ("1", "1")
    assert (conns["mqtt:plant"]["quarantined"], conns["mqtt:plant"]["reasons"]) == ("3", "unknown_topic 3")
    assert any("Spool backlog: **1.50 MB**" in m.value for m in at.markdown)


def _far() -> datetime:
    return datetime(2100, 1, 1, tzinfo=UTC)


def test_pages_say_so_without_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOPILOT_DATA_DIR", str(tmp_path))
    st.cache_resource.clear()
    for title, text in [
        ("Energy & utilities", "No runs yet"),
        ("Yield waterfall", "No runs yet"),
        ("Data quality & collectors", "No data yet"),
    ]:
        at = page(title)
        assert at.info and at.info[0].value.startswith(text), title
        assert not at.dataframe
