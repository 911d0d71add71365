"""The dashboard pages, run by Streamlit's AppTest against a real SQLite store in tmp_path.

The app is the real dashboard/app.py with config/demo.toml; only BIOPILOT_DATA_DIR points at the test's
store. Tiles are HTML inside st.markdown, so they are parsed back into tag, label, value, unit, age, quality.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from biopilot.config import load_config
from biopilot.records import KpiRecord
from biopilot.samples import BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE, Sample, utcnow
from storage import Catalog, HealthStore, SqliteStore

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
DEMO_CONFIG = REPO / "config" / "demo.toml"
RUN_TIMEOUT_S = 30.0  # the first run imports plotly and pandas

F101_BATCH = "B-TEST-042"
R201_BATCH = "B-TEST-041"
F101_PHASE = "fed_batch"
R201_PHASE = "clarification"
NO_DATA_TAG = "F-101.chiller_power"  # never written: its tile says "no value yet"
BAD_TAG = "F-101.pressure"  # newest value has a bad status: shown as "—"
UNCERTAIN_TAG = "R-201.turbidity"  # newest value is uncertain: shown, marked "uncertain"

# Newest value written per numeric tag, and the text and unit its tile must show.
LAST_VALUES: dict[str, tuple[float, str, str]] = {
    "F-101.temperature": (30.04, "30.04", "°C"),
    "F-101.ph": (6.812, "6.81", ""),
    "F-101.dissolved_oxygen": (42.5, "42.50", "%"),
    "F-101.agitation_speed": (1234.4, "1,234", "rpm"),
    "F-101.air_flow": (800.94, "800.9", "NL/min"),
    "F-101.pressure": (0.51, "—", ""),  # a bad value shows no number and so no unit
    "F-101.feed_rate": (5.987, "5.99", "L/h"),
    "F-101.base_flow": (0.5821, "0.582", "L/h"),
    "F-101.volume": (792.44, "792.4", "L"),
    "F-101.weight": (815.6, "815.6", "kg"),
    "F-101.agitator_power": (1.2949, "1.29", "kW"),
    "F-101.compressor_power": (4.0, "4.00", "kW"),
    "F-101.cooling_water_flow": (20.55, "20.55", "L/min"),
    "F-101.offgas_o2": (18.8, "18.80", "%"),
    "F-101.offgas_co2": (2.24, "2.24", "%"),
    "R-201.feed_flow": (350.0, "350.0", "L/h"),
    "R-201.bowl_speed": (9500.0, "9,500", "rpm"),
    "R-201.power": (5.5, "5.50", "kW"),
    "R-201.turbidity": (12.34, "12.34", "NTU"),
    "R-201.product_concentration": (0.0, "0.000", "g/L"),
    "F-101.steam_flow": (0.0, "0.000", "kg/h"),
    "F-101.discharge_flow": (240.0, "240.0", "L/h"),
    "F-101.titer": (5.123, "5.12", "g/L"),
    "F-101.dcw": (41.87, "41.87", "g/L"),
    "F-101.glucose": (0.153, "0.153", "g/L"),
    "R-201.outlet_flow": (320.4, "320.4", "L/h"),
    "R-201.product_in": (8.256, "8.26", "g/L"),
    "R-201.feed_total": (788.14, "788.1", "L"),
    "R-201.outlet_total": (640.52, "640.5", "L"),
}

TILE_COUNT = 32  # the 34 tags of demo.toml but the two batch ids (shown above the tiles)

OPEN_RUN = f"F-101:{F101_BATCH}"  # live, provisional energy
CLOSED_RUN = f"F-101:{R201_BATCH}"  # finished, final but incomplete energy
NO_KPI_RUN = f"R-201:{R201_BATCH}"  # finished, no KPIs computed


# -- tiles ---------------------------------------------------------------------------------------------
@dataclass
class TileView:
    tag: str
    quality: str
    parts: dict[str, str] = field(default_factory=dict)  # bp-label / bp-value / bp-unit / bp-age -> text

    @property
    def label(self) -> str:
        return self.parts.get("bp-label", "").strip()

    @property
    def value(self) -> str:
        return self.parts.get("bp-value", "").strip()

    @property
    def unit(self) -> str:
        return self.parts.get("bp-unit", "").strip()

    @property
    def age(self) -> str:
        return self.parts.get("bp-age", "").strip()


class _TileParser(HTMLParser):
    """Collects the .bp-tile divs; text goes to the innermost bp-* part it is in (the unit is no value)."""

    _PARTS = ("bp-label", "bp-value", "bp-unit", "bp-age")

    def __init__(self) -> None:
        super().__init__()
        self.tiles: list[TileView] = []
        self._stack: list[str | None] = []  # the bp-* part each open element starts, else None
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "style":
            self._in_style = True
            return
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if "bp-tile" in classes:
            self.tiles.append(TileView(a.get("data-tag") or "", a.get("data-quality") or ""))
        part = next((c for c in classes if c in self._PARTS), None)
        self._stack.append(part)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        elif self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._in_style or not self.tiles:
            return
        # spans inside the age (quality, stale) belong to the age text; the unit span is not the value
        part = "bp-age" if "bp-age" in self._stack else next((p for p in reversed(self._stack) if p), None)
        if part is not None:
            tile = self.tiles[-1]
            tile.parts[part] = tile.parts.get(part, "") + data


def tiles_of(at: AppTest) -> dict[str, TileView]:
    parser = _TileParser()
    for md in at.markdown:
        if "bp-tile" in md.value:
            parser.feed(md.value)
    out = {t.tag: t for t in parser.tiles}
    assert len(out) == len(parser.tiles), "a tag has more than one tile"
    return out


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_dashboard_cache() -> Iterator[None]:
    """app.py keeps DashboardData in st.cache_resource; every test must open its own store."""
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture(autouse=True)
def _served_on_loopback() -> Iterator[None]:
    """As `biopilot dashboard` serves it by default: on 127.0.0.1 (AppTest has no server address; the
    dashboard requires login on any other). These tests' data directories have no users: no login."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", before)


def _point_app_at(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("BIOPILOT_CONFIG", str(DEMO_CONFIG))
    monkeypatch.setenv("BIOPILOT_DATA_DIR", str(data_dir))


def _write_store(data_dir: Path, now: datetime) -> None:
    config = load_config(DEMO_CONFIG)
    assert config.storage.path == "biopilot.db"
    store = SqliteStore(data_dir / "biopilot.db")
    samples: list[Sample] = []
    for name, (last, _, _) in LAST_VALUES.items():
        # two hours of history every 5 min (for the trend), the newest one a second ago
        for k in range(24, 0, -1):
            samples.append(Sample(name, now - timedelta(minutes=5 * k), last * (1 + 0.01 * k)))
        status = {BAD_TAG: BAD_SENSOR_FAILURE, UNCERTAIN_TAG: UNCERTAIN_LAST_USABLE_VALUE}.get(name, GOOD)
        samples.append(Sample(name, now - timedelta(seconds=1), last, status))
    for tag, text in [
        ("F-101.batch_id", F101_BATCH),
        ("F-101.phase", F101_PHASE),
        ("R-201.batch_id", R201_BATCH),
        ("R-201.phase", R201_PHASE),
    ]:
        samples.append(Sample(tag, now - timedelta(hours=1), "earlier"))
        samples.append(Sample(tag, now - timedelta(seconds=1), text))
    store.write(samples)
    store.close()
    written = {s.series for s in samples}
    assert NO_DATA_TAG not in written
    assert written | {NO_DATA_TAG} == {t.name for t in config.tags}, "every other tag of demo.toml has data"

    catalog = Catalog(data_dir / "biopilot.db")
    catalog.open_run("F-101", R201_BATCH, now - timedelta(hours=50))
    catalog.close_run(CLOSED_RUN, now - timedelta(hours=2))
    catalog.set_kpis(
        CLOSED_RUN,
        [
            KpiRecord("energy.total", 123.4567, "kWh", 0.93, ("incomplete",), final=True, version="t1"),
            KpiRecord("energy.F-101.agitator_power", 80.25, "kWh", 0.93, ("incomplete",), final=True),
        ],
    )
    catalog.open_run("R-201", R201_BATCH, now - timedelta(minutes=100))
    catalog.close_run(NO_KPI_RUN, now - timedelta(minutes=70))
    catalog.open_run("F-101", F101_BATCH, now - timedelta(hours=1))
    catalog.set_kpis(OPEN_RUN, [KpiRecord("energy.total", 3.2109, "kWh", 1.0, ("provisional",), final=False)])
    catalog.close()


@pytest.fixture
def filled_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    _write_store(tmp_path, utcnow())
    _point_app_at(monkeypatch, tmp_path)
    return AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)


@pytest.fixture
def empty_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    _point_app_at(monkeypatch, tmp_path)
    return AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)


def open_page(at: AppTest, title: str) -> AppTest:
    """Switch to the st.navigation page with this title and run.

    AppTest.switch_page() only finds pages that are script files; the dashboard's pages are callables
    (st.Page(functools.partial(...), title=..., url_path=...)), so the page hash is looked up in the page
    registry of the previous run and requested for the next one.
    """
    registry: dict[str, dict[str, str]] = at._registered_pages  # type: ignore[attr-defined]
    hashes = [h for h, info in registry.items() if info.get("page_name") == title]
    assert len(hashes) == 1, f"no page titled {title!r} in {registry}"
    at._page_hash = hashes[0]  # type: ignore[attr-defined]
    return at.run()


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


# -- live page -----------------------------------------------------------------------------------------
def test_live_page_shows_a_tile_per_tag_with_value_and_unit(filled_app: AppTest, tmp_path: Path) -> None:
    at = filled_app.run()
    _no_exception(at)
    assert _titles(at) == ["Live"]
    tiles = tiles_of(at)
    config = load_config(DEMO_CONFIG)
    expected_tags = {t.name for t in config.tags if t.role.value != "batch_id"}
    assert set(tiles) == expected_tags and len(tiles) == TILE_COUNT

    for name, (_, text, unit) in LAST_VALUES.items():
        tile = tiles[name]
        assert (tile.value, tile.unit) == (text, unit), name
        if name not in (BAD_TAG, UNCERTAIN_TAG):
            assert tile.quality == "good", name
            assert re.fullmatch(r"\d s ago", tile.age), (name, tile.age)  # received just now: not stale
    assert tiles["F-101.temperature"].label == "Temperature"
    assert tiles["F-101.agitator_power"].label == "Agitator motor"  # the tag's description

    bad = tiles[BAD_TAG]
    assert bad.value == "—" and bad.quality == "bad"
    assert "bad" in bad.age
    uncertain = tiles[UNCERTAIN_TAG]
    assert uncertain.value == "12.34" and uncertain.quality == "uncertain"
    assert "uncertain" in uncertain.age

    missing = tiles[NO_DATA_TAG]
    assert missing.value == "—" and missing.unit == "" and missing.quality == "none"
    assert missing.age == "no value yet"

    assert tiles["F-101.phase"].value == F101_PHASE and tiles["F-101.phase"].unit == ""
    assert tiles["R-201.phase"].value == R201_PHASE

    markdown = [m.value for m in at.markdown]
    assert f"batch **{F101_BATCH}** · phase **{F101_PHASE}**" in markdown
    assert f"batch **{R201_BATCH}** · phase **{R201_PHASE}**" in markdown
    subheaders = [s.value for s in at.subheader]
    assert subheaders == ["F-101 · Pilot fermenter, 1 m³", "R-201 · Disc-stack centrifuge"]

    captions = [c.value for c in at.caption if c.value.startswith("Plant time (simulated) ")]
    assert len(captions) == 1, [c.value for c in at.caption]
    m = re.match(r"Plant time \(simulated\) (\S+ \S+) Europe/Copenhagen · refreshes every 2 s$", captions[0])
    assert m, captions[0]
    plant_time = datetime.fromisoformat(m.group(1))
    sidebar = [c.value for c in at.sidebar.caption]
    assert any("Pilot Hall (simulated)" in c and str(tmp_path / "biopilot.db") in c for c in sidebar), sidebar
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    # plotly.js shows the wall time written in an x value and ignores its UTC offset: the trend's time axis
    # must read in the same zone as the plant time above it (the last bucket is at most 6 min wide here)
    last_x = json.loads(charts[0].proto.spec)["data"][0]["x"][-1]
    shown = datetime.fromisoformat(last_x).replace(tzinfo=None)
    assert abs(shown - plant_time) <= timedelta(minutes=6), (last_x, captions[0])
    assert not at.info


def test_live_page_renders_again_on_rerun(filled_app: AppTest) -> None:
    """A second script run (every widget change is one) renders the page again: nothing beside app.py
    may switch Streamlit into its legacy pages/ mode."""
    at = filled_app.run()
    first = {t: (v.value, v.unit) for t, v in tiles_of(at).items()}
    at.run()
    _no_exception(at)
    assert _titles(at) == ["Live"]
    assert {t: (v.value, v.unit) for t, v in tiles_of(at).items()} == first


def test_live_page_trend_follows_the_chosen_tags(filled_app: AppTest) -> None:
    at = filled_app.run()
    at.multiselect(key="trend_tags").set_value(["F-101.temperature"]).run()
    _no_exception(at)
    assert len(at.get("plotly_chart")) == 1
    at.multiselect(key="trend_tags").set_value([]).run()
    _no_exception(at)
    assert len(at.get("plotly_chart")) == 0
    assert len(tiles_of(at)) == TILE_COUNT


# -- runs page -----------------------------------------------------------------------------------------
def _rows(df: pd.DataFrame, key: str) -> dict[str, dict[str, object]]:
    return {str(r[key]): r for r in df.to_dict("records")}


def test_runs_page_lists_runs_with_energy_coverage_and_flags(filled_app: AppTest) -> None:
    at = open_page(filled_app.run(), "Runs")
    _no_exception(at)
    assert _titles(at) == ["Runs"]
    assert not at.info
    runs = at.dataframe[0].value
    assert "energy [kWh]" in runs.columns  # the unit of the energy column
    rows = _rows(runs, "run")
    assert list(rows) == [OPEN_RUN, NO_KPI_RUN, CLOSED_RUN]  # newest start first

    # the run id names equipment and batch; every run is of kind "other" and in no trial: no such columns
    assert not {"trial", "kind", "equipment", "batch"} & set(runs.columns)
    for title in ("titer [g/L]", "product [kg]", "Y P/S [g/g]", "step yield", "overall yield"):
        assert title in runs.columns
    closed = rows[CLOSED_RUN]
    assert closed["energy [kWh]"] == "123.5"  # written to 0.1 kWh
    assert closed["flags"] == "incomplete"  # the energy's (93 % coverage)
    assert closed["hours"] == "48.0"
    assert closed["titer [g/L]"] == ""  # no such KPI: an empty cell, not "None"

    live = rows[OPEN_RUN]
    assert live["end"] == "live"
    assert live["energy [kWh]"] == "3.2"
    assert live["flags"] == ""  # provisional: what "live" says

    none = rows[NO_KPI_RUN]
    assert none["energy [kWh]"] == "" and none["flags"] == ""

    # the KPIs of the chosen run (the newest by default)
    assert at.selectbox(key="run_choice").value == OPEN_RUN
    kpis = _rows(at.dataframe[1].value, "KPI")
    assert list(kpis) == ["energy.total"]
    assert kpis["energy.total"]["value"] == pytest.approx(3.2109)
    assert kpis["energy.total"]["unit"] == "kWh"
    assert kpis["energy.total"]["coverage"] == "100.0%"
    assert kpis["energy.total"]["flags"] == "provisional"
    assert not kpis["energy.total"]["final"]

    at.selectbox(key="run_choice").set_value(CLOSED_RUN).run()
    _no_exception(at)
    assert _titles(at) == ["Runs"]
    kpis = _rows(at.dataframe[1].value, "KPI")
    assert sorted(kpis) == ["energy.F-101.agitator_power", "energy.total"]
    total = kpis["energy.total"]
    assert total["value"] == pytest.approx(123.4567)
    assert (total["unit"], total["coverage"], total["flags"], bool(total["final"])) == (
        "kWh",
        "93.0%",
        "incomplete",
        True,
    )

    at.selectbox(key="run_choice").set_value(NO_KPI_RUN).run()
    _no_exception(at)
    assert len(at.dataframe) == 1
    assert "No KPIs computed for this run yet." in [c.value for c in at.caption]


def test_switching_back_to_live(filled_app: AppTest) -> None:
    at = open_page(filled_app.run(), "Runs")
    assert _titles(at) == ["Runs"]
    at = open_page(at, "Live")
    _no_exception(at)
    assert _titles(at) == ["Live"]
    assert tiles_of(at)["F-101.temperature"].value == "30.04"


# -- empty store ---------------------------------------------------------------------------------------
def test_empty_store_says_no_data_and_no_runs(empty_app: AppTest) -> None:
    at = empty_app.run()
    _no_exception(at)
    assert _titles(at) == ["Live"]
    info = [i.value for i in at.info]
    assert len(info) == 1 and info[0].startswith("No data yet"), info
    tiles = tiles_of(at)
    assert len(tiles) == TILE_COUNT
    assert all(t.value == "—" and t.age == "no value yet" for t in tiles.values())
    assert [m.value for m in at.markdown if not m.value.startswith("<style>")] == ["no batch", "no batch"]
    assert len(at.get("plotly_chart")) == 0

    at = open_page(at, "Runs")
    _no_exception(at)
    assert _titles(at) == ["Runs"]
    info = [i.value for i in at.info]
    assert len(info) == 1 and info[0].startswith("No runs yet"), info
    assert len(at.dataframe) == 0


def test_tiles_say_source_down_when_the_collector_reports_a_dead_connection(
    filled_app: AppTest, tmp_path: Path
) -> None:
    """With health from the collectors, staleness follows the sources, not the age of the values: an OPC UA
    server whose heartbeat stopped makes its tags 'source down'; the MQTT tags stay live."""
    now = utcnow()
    health = HealthStore(tmp_path / "biopilot.db")
    opcua = {
        "kind": "opcua",
        "state": "connected",
        "last_heartbeat": (now - timedelta(seconds=30)).isoformat(),
    }
    mqtt = {"kind": "mqtt", "state": "connected"}
    health.publish(now, {"opcua:pilot": opcua, "mqtt:plant": mqtt}, [], [])
    health.close()
    at = filled_app.run()
    _no_exception(at)
    tiles = tiles_of(at)
    assert "source down" in tiles["F-101.temperature"].age  # OPC UA: heartbeat 30 s old at the last report
    collection = next(md.value for md in at.markdown if md.value.startswith("Collection:"))
    assert ":red[●] opcua:pilot down" in collection and ":green[●] mqtt:plant connected" in collection
    assert "source down" not in tiles["F-101.offgas_o2"].age and "stale" not in tiles["F-101.offgas_o2"].age
