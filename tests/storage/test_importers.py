"""storage/importers.py: historian exports (wide, long, Parquet; ISO with and without zone, elapsed hours)
and lab results into a real SQLite store and catalog in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from biopilot.config import HistorianMapping, parse_config
from storage.catalog import Catalog
from storage.importers import HistorianImportError, import_historian, import_lab, load_mapping
from storage.sqlite import SqliteStore

CONFIG = """
[site]
name = "Import hall"
timezone = "Europe/Copenhagen"

[opcua.servers.plc]
endpoint = "opc.tcp://127.0.0.1:4840/"

[[equipment]]
id = "F-1"
kind = "fermenter"

[[tags]]
name = "F-1.volume"
equipment = "F-1"
role = "volume"
unit = "L"
source = { protocol = "opcua", server = "plc", node_id = "ns=2;s=v" }

[[tags]]
name = "F-1.power"
equipment = "F-1"
role = "power"
unit = "kW"
source = { protocol = "opcua", server = "plc", node_id = "ns=2;s=p" }

[[tags]]
name = "F-1.phase"
equipment = "F-1"
role = "phase"
source = { protocol = "opcua", server = "plc", node_id = "ns=2;s=ph" }

[historian.columns]
"FIC-101 PV" = "F-1.volume"
"""


class Site:
    def __init__(self, path: Path) -> None:
        self.config = parse_config(CONFIG, "import.toml")
        self.store = SqliteStore(path / "biopilot.db")
        self.catalog = Catalog(path / "biopilot.db")

    def run(self, file: Path, **kw: object):  # type: ignore[no-untyped-def]
        return import_historian(file, self.config, self.store, self.catalog, equipment="F-1", **kw)  # type: ignore[arg-type]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.catalog.close()
    s.store.close()


def write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_wide_csv_with_naive_local_times_and_a_mapped_column(site: Site, tmp_path: Path) -> None:
    # naive times are Copenhagen local time: 2024-01-15 10:00 CET = 09:00 UTC
    f = write(
        tmp_path / "B-7.csv",
        """
Timestamp,FIC-101 PV,F-1.power,F-1.phase,Unrelated
2024-01-15 10:00:00,500,2.0,batch,1
2024-01-15 11:00:00,510,2.0,batch,1
2024-01-15 12:00:00,,4.0,fed_batch,1
""",
    )
    r = site.run(f)
    assert r.run.id == "F-1:B-7" and r.run.kind == "baseline" and r.run.origin == "import"
    assert r.run.start == datetime(2024, 1, 15, 9, tzinfo=UTC)
    assert r.run.end == datetime(2024, 1, 15, 11, tzinfo=UTC)
    assert (r.rows, r.samples) == (3, 8)  # the empty volume cell is no sample
    assert r.ignored_columns == ["Unrelated"]
    vol = site.store.read("F-1.volume", r.run.start, datetime(2030, 1, 1, tzinfo=UTC))
    assert vol.values.tolist() == [500.0, 510.0]
    phase = site.store.read("F-1.phase", r.run.start, datetime(2030, 1, 1, tzinfo=UTC))
    assert phase.values.tolist() == ["batch", "batch", "fed_batch"]


def test_reimport_does_not_duplicate(site: Site, tmp_path: Path) -> None:
    f = write(tmp_path / "B-1.csv", "time,F-1.power\n2024-01-15T10:00:00Z,1\n2024-01-15T11:00:00Z,2\n")
    first = site.run(f)
    again = site.run(f)
    assert not first.reimport and again.reimport
    assert site.store.count("F-1.power") == 2
    assert len(site.catalog.runs()) == 1
    assert len(site.catalog.imports(run_id="F-1:B-1")) == 1


def test_bad_rows_are_named_and_nothing_is_written(site: Site, tmp_path: Path) -> None:
    f = write(
        tmp_path / "bad.csv",
        "time,F-1.power\n2024-01-15T10:00:00Z,1\n2024-01-15T10:01:00Z,oops\nyesterday,3\n2024-01-15T10:03:00Z,4\n",
    )
    with pytest.raises(HistorianImportError) as err:
        site.run(f)
    msg = str(err.value)
    assert "2 bad values, nothing imported" in msg
    assert "row 3, column 'F-1.power': 'oops' is not a number" in msg
    assert "row 4, column 'time': 'yesterday' is not a time" in msg
    assert "--skip-bad-rows" in msg
    assert site.store.count("F-1.power") == 0 and site.catalog.runs() == []
    r = site.run(f, skip_bad_rows=True)
    assert r.samples == 2 and len(r.bad_rows) == 2
    assert site.store.read("F-1.power", r.run.start, datetime(2030, 1, 1, tzinfo=UTC)).values.tolist() == [
        1.0,
        4.0,
    ]


def test_long_csv_with_status_and_zone_offsets(site: Site, tmp_path: Path) -> None:
    f = write(
        tmp_path / "long.csv",
        """
timestamp,tag,value,status
2024-06-01T10:00:00+02:00,F-1.power,3.5,good
2024-06-01T10:00:00+02:00,FIC-101 PV,700,0
2024-06-01T11:00:00+02:00,F-1.power,3.6,0x40900000
2024-06-01T12:00:00+02:00,F-1.power,99,bad
""",
    )
    r = site.run(f, run_id="F-1:H-2", kind="trial", trial_id="T-1")
    assert (r.run.id, r.run.kind, r.run.trial_id) == ("F-1:H-2", "trial", "T-1")
    assert r.run.start == datetime(2024, 6, 1, 8, tzinfo=UTC)
    p = site.store.read("F-1.power", r.run.start, datetime(2030, 1, 1, tzinfo=UTC))
    assert p.status.tolist() == [0, 0x40900000, 0x80000000]
    assert site.store.count("F-1.volume") == 1


def test_elapsed_hours_need_a_start_and_add_to_a_named_run(site: Site, tmp_path: Path) -> None:
    f = write(tmp_path / "e.csv", "hours,F-1.power\n0,1\n0.5,1\n1.5,2\n")
    mapping = HistorianMapping(time_format="elapsed_h")
    with pytest.raises(HistorianImportError, match="need a start"):
        site.run(f, mapping=mapping)
    start = datetime(2024, 2, 1, 6, tzinfo=UTC)
    site.catalog.create_run(
        "F-1", "M-1", datetime(2024, 2, 1, 7, tzinfo=UTC), datetime(2024, 2, 1, 7, 30, tzinfo=UTC)
    )
    r = site.run(f, mapping=mapping, start=start, run_id="M-1")
    # the named run grows to cover the file: 06:00 → 07:30
    assert r.run.start == start and r.run.end == datetime(2024, 2, 1, 7, 30, tzinfo=UTC)
    assert r.run.origin == "manual"


def test_parquet(site: Site, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "time": pd.to_datetime(["2024-03-01T00:00:00Z", "2024-03-01T00:01:00Z"], utc=True),
            "F-1.power": [1.0, 2.0],
        }
    )
    f = tmp_path / "p.parquet"
    frame.to_parquet(f)
    r = site.run(f)
    assert r.samples == 2 and r.run.start == datetime(2024, 3, 1, tzinfo=UTC)


def test_a_file_without_known_columns_says_how_to_map_them(site: Site, tmp_path: Path) -> None:
    f = write(tmp_path / "x.csv", "time,A,B\n2024-01-01T00:00:00Z,1,2\n")
    with pytest.raises(
        HistorianImportError, match=r"no column maps to a configured tag of F-1 \(its columns: 'A', 'B'\)"
    ):
        site.run(f)
    with pytest.raises(HistorianImportError, match="file not found"):
        site.run(tmp_path / "missing.csv")
    with pytest.raises(HistorianImportError, match="not a configured equipment"):
        import_historian(f, site.config, site.store, site.catalog, equipment="Z-9")


def test_mapping_file(tmp_path: Path) -> None:
    m = write(tmp_path / "m.toml", '[historian]\ntime_column = "Zeit"\ncolumns = { "PV1" = "F-1.volume" }\n')
    mapping = load_mapping(m)
    assert mapping.time_column == "Zeit" and mapping.columns == {"PV1": "F-1.volume"}
    bad = write(tmp_path / "bad.toml", 'time_format = "julian"\n')
    with pytest.raises(HistorianImportError, match="time_format"):
        load_mapping(bad)


def test_lab_results_long_and_wide(site: Site, tmp_path: Path) -> None:
    long = write(
        tmp_path / "lab.csv",
        "time,analyte,value,unit,sample_volume_ml\n2024-01-15T10:00:00Z,titer,1.5,g/L,50\n"
        "2024-01-15T12:00:00Z,glucose,0.4,g/L,\n",
    )
    got = import_lab(long, site.config, site.catalog, equipment="F-1")
    assert [(r.analyte, r.value, r.sample_volume_l) for r in got] == [
        ("titer", 1.5, 0.05),
        ("glucose", 0.4, 0.0),
    ]
    wide = write(tmp_path / "wide.csv", "time,titer [g/L],biomass (g/L)\n2024-01-15 11:00,2.0,30\n")
    got = import_lab(wide, site.config, site.catalog, equipment="F-1")
    assert [(r.analyte, r.unit, r.ts) for r in got] == [
        ("biomass", "g/L", datetime(2024, 1, 15, 10, tzinfo=UTC)),  # naive: Copenhagen time
        ("titer", "g/L", datetime(2024, 1, 15, 10, tzinfo=UTC)),
    ]
    bad = write(tmp_path / "badlab.csv", "time,analyte,value,unit\n2024-01-15T10:00:00Z,titer,x,g/L\n")
    with pytest.raises(HistorianImportError, match="row 2, column 'value': 'x' is not a number"):
        import_lab(bad, site.config, site.catalog, equipment="F-1")
