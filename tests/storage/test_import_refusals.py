"""Imports that refuse to corrupt (storage/importers.py, storage/exports.py, `biopilot import` and
`biopilot lab`): files written the way other historians write them — quoted headers, CRLF, zone offsets,
tag names of their own mapped in [historian.columns] — with a missing mapped column, duplicate rows, an
overlapping window, a line of a million columns, a 50 MB line, NaN and inf, and ids that are no ids. Each
gives its documented refusal (nothing stored) or its count, and every count printed is checked against
the rows in the store.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biopilot.app.cli import main
from biopilot.config import parse_config
from biopilot.errors import BioPilotError, IdError, StoreError
from biopilot.records import LabResult, Phase
from biopilot.samples import Sample
from processing.service import Processing
from storage.catalog import Catalog
from storage.importers import HistorianImportError, import_historian, import_lab
from storage.sqlite import SqliteStore

CONFIG = """
[site]
name = "Foreign exports"
timezone = "Europe/Copenhagen"

[opcua.servers.dcs]
endpoint = "opc.tcp://127.0.0.1:4840/"

[[equipment]]
id = "F-1"
kind = "fermenter"

[[tags]]
name = "F-1.power"
equipment = "F-1"
role = "power"
unit = "kW"
source = { protocol = "opcua", server = "dcs", node_id = "ns=2;s=JI-101" }

# import-only tags: no source
[[tags]]
name = "F-1.volume"
equipment = "F-1"
role = "volume"
unit = "L"

[[tags]]
name = "F-1.sugar_feed"
equipment = "F-1"
role = "feed_rate"
unit = "L/h"
feed = { concentration = 500.0 }

[[tags]]
name = "F-1.phase"
equipment = "F-1"
role = "phase"

[historian.columns]
"JI-101" = "F-1.power"
"FIC-101.PV" = "F-1.volume"
"FIC-102 SUGAR" = "F-1.sugar_feed"
"""

T0 = datetime(2024, 3, 1, 7, tzinfo=UTC)  # 08:00 in Copenhagen (UTC+1)


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_path = root / "site.toml"
        self.config_path.write_text(CONFIG, encoding="utf-8")
        self.config = parse_config(CONFIG, "site.toml")
        self.data = root / "data"
        self.db = self.data / "biopilot.db"
        self.store = SqliteStore(self.db)
        self.catalog = Catalog(self.db)

    def run(self, file: Path, **kw: object):  # type: ignore[no-untyped-def]
        return import_historian(file, self.config, self.store, self.catalog, equipment="F-1", **kw)  # type: ignore[arg-type]

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        rc = main([*argv, "--config", str(self.config_path), "--data-dir", str(self.data)])
        out, err = capsys.readouterr()
        return rc, out, err

    def stored(self) -> int:
        """Samples in the store, counted in the database itself."""
        with sqlite3.connect(self.db) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def nothing_left_behind(self) -> None:
        """No journal entry, no stage file, no hidden run: a refused import left no trace."""
        assert self.catalog.pending_imports() == []
        with sqlite3.connect(self.db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM runs WHERE state != 'ready'").fetchone()[0] == 0
        imports = self.data / "imports"
        assert not imports.exists() or list(imports.iterdir()) == []


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.catalog.close()
    s.store.close()


def pi_export(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A CSV the way PI-style historians write it: every cell quoted, CRLF line ends."""
    lines = [",".join(f'"{c}"' for c in header)] + [",".join(f'"{c}"' for c in r) for r in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def local(minutes: float) -> str:
    """Copenhagen local time with its offset, minutes after T0."""
    t = T0 + timedelta(minutes=minutes) + timedelta(hours=1)
    return t.strftime("%Y-%m-%dT%H:%M:%S+01:00")


# -- a mapped column missing from the file --------------------------------------------------------------
def test_a_missing_mapped_column_is_named_and_the_rest_is_imported(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The sugar feed's column is not in this export; the mapping names it. The other values are good and
    # are imported; the missing one is named, and nothing is invented for it (no sample at all).
    f = pi_export(
        tmp_path / "B-1.csv",
        ["Timestamp", "JI-101", "FIC-101.PV"],
        [[local(10 * i), "2.0", str(500 + i)] for i in range(7)],
    )
    rc, out, err = site.cli(capsys, "import", str(f), "--equipment", "F-1", "--no-kpis")
    assert rc == 0, err
    assert "7 rows, 14 samples of 2 tags stored in run F-1:B-1" in out
    assert (
        "missing from the file (mapped, not imported; the KPIs that need them say missing_input):"
        " FIC-102 SUGAR → F-1.sugar_feed"
    ) in out
    assert site.stored() == 14
    assert site.store.count("F-1.sugar_feed") == 0
    r = site.run(f, run_id="B-1")
    assert r.missing_columns == ["FIC-102 SUGAR → F-1.sugar_feed"]


# -- duplicates ---------------------------------------------------------------------------------------------
def test_conflicting_duplicate_timestamps_are_refused_with_their_rows(site: Site, tmp_path: Path) -> None:
    rows = [[local(10 * i), "2.0", "500"] for i in range(6)]
    rows.insert(4, [local(20), "2.5", "500"])  # file row 6: 08:20 again, another power
    f = pi_export(tmp_path / "dup.csv", ["Timestamp", "JI-101", "FIC-101.PV"], rows)
    with pytest.raises(HistorianImportError) as err:
        site.run(f)
    msg = str(err.value)
    assert "1 conflicting duplicate (one tag, one time, two values), nothing imported" in msg
    assert (
        "rows 4 and 6 give F-1.power at 2024-03-01T07:20:00+00:00 different values ('2.0' and '2.5')" in msg
    )
    assert site.stored() == 0 and site.catalog.runs() == []
    site.nothing_left_behind()


def test_identical_duplicates_are_collapsed_counted_and_said(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[local(10 * i), "2.0", str(500 + i)] for i in range(6)]
    rows += [rows[2], rows[3]]  # an export that repeats two rows (an overlap of two pages)
    f = pi_export(tmp_path / "B-2.csv", ["Timestamp", "JI-101", "FIC-101.PV"], rows)
    rc, out, err = site.cli(capsys, "import", str(f), "--equipment", "F-1", "--no-kpis")
    assert rc == 0, err
    assert "8 rows, 12 samples of 2 tags stored in run F-1:B-2" in out
    assert "collapsed 4 identical duplicate samples (same tag, time and value)" in out
    assert site.stored() == 12


def test_a_long_export_with_duplicates_counts_what_is_stored(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Long layout (PI DataLink style "Tag,Timestamp,Value,Status"): one sample repeated, one unknown tag.
    lines = ["Tag,Timestamp,Value,Status"]
    lines += [f"JI-101,{local(10 * i)},{2 + i / 10},Good" for i in range(5)]
    lines += [
        f"JI-101,{local(10)},2.1,Good",
        f"TI-999,{local(0)},37.0,Good",
        f"FIC-101.PV,{local(0)},500,Bad",
    ]
    f = tmp_path / "B-3.csv"
    f.write_text("\n".join(lines) + "\n")
    rc, out, err = site.cli(capsys, "import", str(f), "--equipment", "F-1", "--no-kpis")
    assert rc == 0, err
    assert "8 rows, 6 samples of 2 tags stored in run F-1:B-3" in out
    assert "collapsed 1 identical duplicate sample (same tag, time and value)" in out
    assert "not imported (no configured tag of this equipment): TI-999" in out
    assert site.stored() == 6
    vol = site.store.read("F-1.volume", T0, T0 + timedelta(hours=1))
    assert vol.status.tolist() == [0x80000000]


# -- overlapping windows --------------------------------------------------------------------------------
def power_file(path: Path, start_min: int, end_min: int, kw: float) -> Path:
    return pi_export(
        path,
        ["Timestamp", "JI-101"],
        [[local(m), str(kw)] for m in range(start_min, end_min + 1, 10)],
    )


def test_an_overlapping_window_is_refused_naming_the_run_and_replace_recomputes_its_kpis(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = power_file(tmp_path / "A.csv", 0, 120, 2.0)  # 08:00–10:00 at 2 kW
    rc, out, err = site.cli(capsys, "import", str(a), "--equipment", "F-1")
    assert rc == 0, err
    rc, out, _ = site.cli(capsys, "kpis", "F-1:A", "--json")
    before = {k["name"]: k for k in json.loads(out)["kpis"]}
    assert before["energy.F-1.power"]["value"] == pytest.approx(4.0)  # 2 kW × 2 h

    b = power_file(tmp_path / "B.csv", 60, 180, 4.0)  # 09:00–11:00 at 4 kW: overlaps A's last hour
    rc, out, err = site.cli(capsys, "import", str(b), "--equipment", "F-1")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1, err
    assert (
        "overlap run F-1:A (2024-03-01 07:00 → 2024-03-01 09:00 UTC, 7 of its samples in the overlap)" in err
    )
    assert "nothing imported" in err and "--replace" in err
    assert site.stored() == 13
    site.nothing_left_behind()

    rc, out, err = site.cli(capsys, "import", str(b), "--equipment", "F-1", "--replace")
    assert rc == 0, err
    assert "13 rows, 13 samples of 1 tag stored in run F-1:B" in out
    assert "replaced (--replace) samples of: F-1:A" in out
    assert "recomputed the KPIs of F-1:A: this file replaced its samples in the overlap" in out
    assert site.stored() == 13 + 13 - 7
    rc, out, _ = site.cli(capsys, "kpis", "F-1:A", "--json")
    after = {k["name"]: k for k in json.loads(out)["kpis"]}
    # A now holds 2 kW from 08:00 to 08:50 and 4 kW from 09:00 to 10:00; by the trapezoid rule
    # 2·(50/60) + (2+4)/2·(10/60) + 4·1 = 1.6667 + 0.5 + 4 = 6.1667 kWh
    assert after["energy.F-1.power"]["value"] == pytest.approx(2 * 50 / 60 + 3 * 10 / 60 + 4.0)
    assert "stale" not in after["energy.F-1.power"]["flags"]
    assert after["energy.F-1.power"]["computed"] > before["energy.F-1.power"]["computed"]


def test_replace_without_kpis_flags_the_overlapped_runs_kpis_stale(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = site.cli(
        capsys, "import", str(power_file(tmp_path / "A.csv", 0, 60, 2.0)), "--equipment", "F-1"
    )
    assert rc == 0, err
    b = power_file(tmp_path / "B.csv", 30, 90, 3.0)
    rc, out, err = site.cli(capsys, "import", str(b), "--equipment", "F-1", "--replace", "--no-kpis")
    assert rc == 0, err
    assert "the KPIs of F-1:A are flagged stale" in out
    kpis = site.catalog.kpis("F-1:A")
    assert kpis and all("stale" in k.flags for k in kpis)


def test_importing_the_same_file_again_is_not_an_overlap(site: Site, tmp_path: Path) -> None:
    f = power_file(tmp_path / "A.csv", 0, 60, 2.0)
    first = site.run(f)
    again = site.run(f)
    assert not first.reimport and again.reimport
    assert (again.samples, site.stored()) == (7, 7)


# -- files no historian writes --------------------------------------------------------------------------
def test_a_line_of_a_million_columns_is_refused_quickly(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "wide.csv"
    f.write_text("time," + ",".join(f"c{i}" for i in range(1_000_000)) + "\n2024-03-01T08:00:00Z,1\n")
    t = time.monotonic()
    rc, out, err = site.cli(capsys, "import", str(f), "--equipment", "F-1")
    took = time.monotonic() - t
    assert rc == 2 and out == ""
    assert "line 1 (the header) is longer than 1 MiB" in err
    assert len(err) < 300, err
    assert took < 10, took  # 39 s before; here it is the time to read 1 MiB
    assert site.stored() == 0
    # A header under 1 MiB with more columns than any export has: refused by its column count.
    f.write_text("time," + ",".join(f"c{i}" for i in range(20_000)) + "\n")
    rc, _, err = site.cli(capsys, "import", str(f), "--equipment", "F-1")
    assert rc == 2 and "20,001 columns; an export has at most 10,000" in err


def test_a_50_mb_line_is_refused_quickly_quoting_nothing_of_it(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "long-line.csv"
    with f.open("w") as fh:
        fh.write("time,JI-101\n2024-03-01T08:00:00Z,1\n2024-03-01T08:10:00Z,")
        fh.write("9" * 50_000_000)
        fh.write("\n")
    t = time.monotonic()
    rc, out, err = site.cli(capsys, "import", str(f), "--equipment", "F-1")
    assert rc == 2 and out == ""
    assert "line 3 is longer than 1 MiB" in err
    assert len(err) < 300, err
    assert time.monotonic() - t < 10
    assert site.stored() == 0
    site.nothing_left_behind()


def test_a_bad_cell_is_quoted_short(site: Site, tmp_path: Path) -> None:
    f = tmp_path / "junk.csv"
    f.write_text("time,JI-101\n2024-03-01T08:00:00Z," + "x" * 5000 + "\n")
    with pytest.raises(HistorianImportError) as err:
        site.run(f)
    line = str(err.value)
    assert "row 2, column 'JI-101': '" + "x" * 40 + "'… is not a number" in line
    assert len(line) < 400, line


def test_a_header_naming_a_column_twice_is_refused(site: Site, tmp_path: Path) -> None:
    f = tmp_path / "twice.csv"
    f.write_text("time,JI-101,JI-101\n2024-03-01T08:00:00Z,1,2\n")
    with pytest.raises(HistorianImportError, match="column 'JI-101' appears twice in the header"):
        site.run(f)


# -- values no sensor produces --------------------------------------------------------------------------
def test_nan_inf_and_absurd_values_are_refused_naming_row_and_column(site: Site, tmp_path: Path) -> None:
    rows = ["time,JI-101,FIC-101.PV"]
    rows += ["2024-03-01T08:00:00Z,2.0,500", "2024-03-01T08:10:00Z,NaN,501", "2024-03-01T08:20:00Z,inf,502"]
    rows += ["2024-03-01T08:30:00Z,1e309,503", "2024-03-01T08:40:00Z,2.0,-2e13", "2024-03-01T08:50:00Z,2.0,"]
    f = tmp_path / "B-9.csv"
    f.write_text("\n".join(rows) + "\n")
    with pytest.raises(HistorianImportError) as err:
        site.run(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: 4 bad values, nothing imported: ")
    assert "row 3, column 'JI-101': 'NaN' is NaN, which no sensor or assay produces" in msg
    assert "row 4, column 'JI-101': 'inf' is infinite" in msg
    assert "row 5, column 'JI-101': '1e309' is infinite" in msg
    assert "row 6, column 'FIC-101.PV': '-2e+13' is beyond ±1e+12" in msg
    assert site.stored() == 0
    site.nothing_left_behind()
    r = site.run(f, skip_bad_rows=True)
    assert (r.bad_count, r.samples, site.stored()) == (4, 7, 7)  # the empty cell is no sample


def test_parquet_null_is_no_sample_but_nan_is_refused(site: Site, tmp_path: Path) -> None:
    times = pa.array([T0 + timedelta(minutes=10 * i) for i in range(3)], pa.timestamp("us", tz="UTC"))
    ok = pa.table({"time": times, "JI-101": pa.array([1.0, None, 2.0])})
    pq.write_table(ok, tmp_path / "P-1.parquet")
    assert site.run(tmp_path / "P-1.parquet").samples == 2
    bad = pa.table({"time": times, "JI-101": pa.array([1.0, math.nan, 2.0])})
    pq.write_table(bad, tmp_path / "P-2.parquet")
    with pytest.raises(HistorianImportError, match=r"row 2, column 'JI-101': 'nan' is NaN"):
        site.run(tmp_path / "P-2.parquet")


def test_lab_values_no_assay_produces_are_refused(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site.run(power_file(tmp_path / "L-1.csv", 0, 60, 2.0))
    for value, words in (("1e309", "is infinite"), ("nan", "NaN is not a value"), ("2e12", "beyond ±1e+12")):
        rc, out, err = site.cli(
            capsys,
            "lab",
            "add",
            "F-1:L-1",
            "--time",
            "2024-03-01T08:30",
            "--analyte",
            "titer",
            "--value",
            value,
        )
        assert rc == 2 and out == "" and words in err and "Traceback" not in err, err
    lab = tmp_path / "lab.csv"
    lab.write_text(
        "time,analyte,value,unit\n2024-03-01T07:30:00Z,titer,4.2,g/L\n2024-03-01T08:00:00Z,titer,NaN,g/L\n"
    )
    with pytest.raises(HistorianImportError, match="row 3, column 'value': 'NaN' is NaN"):
        import_lab(lab, site.config, site.catalog, equipment="F-1")
    assert site.catalog.lab_results("F-1") == []
    with pytest.raises(StoreError, match="value nan NaN is not a value"):
        site.catalog.add_lab_results([LabResult("F-1", T0, "titer", math.nan, "g/L")])


# -- ids --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("run_id", "trial", "message"),
    [
        ("../../etc/B-1", None, "batch id '../../etc/B-1' contains a path separator"),
        ("B-1\x1b[2J", None, "batch id 'B-1\\x1b[2J' contains the control or invisible character U+001B"),
        ("F-1:", None, "batch id '' is empty"),
        ("F-2:B-1", None, "run id 'F-2:B-1' is a run of 'F-2', not of F-1"),
        ("B" * 200, None, "is 200 characters long (at most 128)"),
        ("B-1", "T-1\nT-2", "trial id 'T-1\\nT-2' contains the control"),
    ],
)
def test_bad_ids_are_refused_before_anything_is_read(
    site: Site, tmp_path: Path, run_id: str, trial: str | None, message: str
) -> None:
    f = power_file(tmp_path / "ok.csv", 0, 30, 1.0)
    with pytest.raises(BioPilotError) as err:
        site.run(f, run_id=run_id, trial_id=trial)
    assert message in str(err.value)
    assert "\x1b" not in str(err.value) and "\n" not in str(err.value)
    assert site.stored() == 0 and site.catalog.runs() == []


def test_a_file_name_that_is_no_batch_id_asks_for_run_id(site: Site, tmp_path: Path) -> None:
    f = power_file(tmp_path / "B 1\t.csv", 0, 30, 1.0)
    with pytest.raises(
        HistorianImportError, match=r"contains the control .* \(the file's name; give --run-id\)"
    ):
        site.run(f)
    assert site.run(f, run_id="B-1").run.id == "F-1:B-1"


def test_the_catalog_refuses_bad_ids_self_upstream_and_phases_that_end_before_they_start(site: Site) -> None:
    c = site.catalog
    with pytest.raises(IdError, match="batch id '' is empty"):
        c.create_run("F-1", "", T0)
    with pytest.raises(IdError, match="equipment id 'F/1' contains a path separator"):
        c.open_run("F/1", "B-1", T0)
    with pytest.raises(StoreError, match="cannot be its own upstream"):
        c.create_run("F-1", "U-1", T0, upstream_id="F-1:U-1")
    a = c.create_run("F-1", "U-1", T0)
    b = c.create_run("F-1", "U-2", T0, upstream_id=a.id)
    with pytest.raises(StoreError, match="cannot be its own upstream"):
        c.update_run(a.id, upstream_id=a.id)
    with pytest.raises(
        StoreError, match=r"cannot be upstream of F-1:U-2 \(its upstream chain: F-1:U-2 → F-1:U-1\)"
    ):
        c.update_run(a.id, upstream_id=b.id)
    with pytest.raises(StoreError, match=r"phase 'batch' ends .* before it starts"):
        c.add_phase(a.id, Phase("batch", T0 + timedelta(hours=2), T0 + timedelta(hours=1)))
    with pytest.raises(StoreError, match="before it starts"):
        c.set_phases(a.id, [Phase("batch", T0, T0 - timedelta(seconds=1))])
    assert c.phases(a.id) == []


def test_a_bad_live_batch_id_starts_no_run_and_processing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = CONFIG.replace(
        "# import-only tags: no source",
        '[[tags]]\nname = "F-1.batch_id"\nequipment = "F-1"\nrole = "batch_id"\n'
        'source = { protocol = "opcua", server = "dcs", node_id = "ns=2;s=B" }\n',
    )
    config = parse_config(text, "site.toml")
    store = SqliteStore(tmp_path / "b.db")
    catalog = Catalog(tmp_path / "b.db")
    try:
        ids = ["B-1", "B-1", "\x1b]0;pwned\x07", "\x1b]0;pwned\x07", "B-2", "B-2"]
        store.write([Sample("F-1.batch_id", T0 + timedelta(minutes=i), b, 0) for i, b in enumerate(ids)])
        processing = Processing(config, store, catalog, provisional_interval_s=0)
        with caplog.at_level(logging.WARNING, logger="processing.service"):
            processing.process_once()
            processing.process_once()
        runs = {r.id: r for r in catalog.runs()}
        assert set(runs) == {"F-1:B-1", "F-1:B-2"}
        assert runs["F-1:B-1"].end == T0 + timedelta(minutes=2)  # it ended where the bad id appeared
        assert list(processing.refused_batches) == [("F-1.batch_id", "\x1b]0;pwned\x07")]
        warnings = [r.getMessage() for r in caplog.records if "no run is started" in r.getMessage()]
        assert len(warnings) == 1 and "\x1b" not in warnings[0] and "'\\x1b]0;pwned\\x07'" in warnings[0]
    finally:
        catalog.close()
        store.close()


def test_simulate_out_cannot_write_outside_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = (Path(__file__).resolve().parents[2] / "config" / "demo.toml").read_text(encoding="utf-8")
    bad = tmp_path / "cfg" / "site.toml"
    bad.parent.mkdir()
    bad.write_text(demo.replace('"F-101"', '"../../F"'), encoding="utf-8")
    out = tmp_path / "a" / "b" / "out"
    rc = main(["simulate", "--config", str(bad), "--historical", "--runs", "1", "--out", str(out)])
    _, err = capsys.readouterr()
    assert rc == 2 and "equipment id '../../F' contains a path separator" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cfg", "site.toml"]


def test_a_semicolon_separated_export_says_so(site: Site, tmp_path: Path) -> None:
    f = tmp_path / "excel.csv"
    f.write_text("time;JI-101\n2024-03-01T08:00:00Z;1,5\n")
    with pytest.raises(HistorianImportError, match="one column with ';' in it: BioPilot reads comma"):
        site.run(f)
