"""An import is atomic and shares the database (storage/importers.py): `biopilot import` killed with
SIGKILL while it stages its file, or while it publishes its samples into the store, leaves no sample
without its run — the next command that opens the catalog rolls the first back and finishes the second —
and while a large import runs, other writers (a collector's store writes, a KPI write, `biopilot kpis
--recompute`) get the database within their busy timeout.

The import runs as a real process on a real SQLite file; the test waits on what it can observe in the
files (staged rows, samples in the store, the journal's phase), never on a sleep.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from biopilot.records import KpiRecord
from biopilot.samples import Sample
from storage.catalog import Catalog
from storage.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]
COLUMNS = 10
ROWS = 60_000  # 600,000 samples: seconds to stage and to publish on a loaded 2-core machine
T0 = datetime(2024, 5, 1, tzinfo=UTC)

CONFIG = """
[site]
name = "atomic imports"

[[equipment]]
id = "F-1"
kind = "fermenter"

[[tags]]
name = "F-1.power"
equipment = "F-1"
role = "power"
unit = "kW"
"""


@dataclass
class Plant:
    root: Path
    config: Path
    data: Path
    csv: Path

    @property
    def db(self) -> Path:
        return self.data / "biopilot.db"

    def biopilot(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "biopilot",
                *argv,
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    def start_import(self) -> subprocess.Popen[str]:
        argv = ["import", str(self.csv), "--equipment", "F-1", "--no-kpis"]
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "biopilot",
                *argv,
                "--config",
                str(self.config),
                "--data-dir",
                str(self.data),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """A query in its own short connection (as another process would), [] while the file is busy."""
        if not self.db.exists():
            return []
        try:
            with sqlite3.connect(self.db, timeout=0.2) as conn:
                return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # no such table yet, or locked this instant
            return []

    def staged_rows(self) -> int:
        for stage in (self.data / "imports").glob("*.stage.sqlite"):
            try:
                with sqlite3.connect(f"file:{stage}?mode=ro", uri=True, timeout=0.2) as conn:
                    return int(conn.execute("SELECT COUNT(*) FROM staged").fetchone()[0])
            except sqlite3.OperationalError:
                return 0
        return 0

    def phase(self) -> str | None:
        rows = self.query("SELECT phase FROM pending_imports")
        return str(rows[0][0]) if rows else None

    def orphans(self) -> int:
        """Samples of F-1's tags outside every run of F-1 in the runs table (whatever its state)."""
        rows = self.query(
            "SELECT COUNT(*) FROM samples s JOIN series n ON n.id = s.series_id WHERE n.name LIKE 'F-1.%'"
            " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.equipment = 'F-1'"
            " AND s.ts_us BETWEEN r.start_us AND COALESCE(r.end_us, 9223372036854775807))"
        )
        assert rows, "the database could not be read"
        return int(rows[0][0])

    def samples(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM samples")[0][0])

    def leftovers(self) -> list[str]:
        folder = self.data / "imports"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def wide_csv(path: Path, rows: int, columns: int) -> None:
    """A wide export: a UTC time column and `columns` power columns, one row every 10 s."""
    rng = np.random.default_rng(7)
    start = np.datetime64(T0.replace(tzinfo=None), "s")
    with path.open("w") as f:
        f.write("time," + ",".join(f"F-1.p{i}" for i in range(columns)) + "\n")
        for lo in range(0, rows, 20_000):
            n = min(20_000, rows - lo)
            stamps = (start + (lo + np.arange(n)) * np.timedelta64(10, "s")).astype(str)
            values = np.round(rng.uniform(0, 5, (n, columns)), 3).astype(str)
            f.writelines(f"{t}Z,{','.join(v)}\n" for t, v in zip(stamps, values, strict=True))


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "BIG-1.csv"
    wide_csv(path, ROWS, COLUMNS)
    return path


@pytest.fixture
def plant(tmp_path: Path, big_csv: Path) -> Iterator[Plant]:
    tags = "".join(
        f'\n[[tags]]\nname = "F-1.p{i}"\nequipment = "F-1"\nrole = "power"\nunit = "kW"\n'
        for i in range(COLUMNS)
    )
    config = tmp_path / "site.toml"
    config.write_text(CONFIG + tags, encoding="utf-8")
    yield Plant(tmp_path, config, tmp_path / "data", big_csv)


def wait_for(
    what: str, condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 240
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the import ended (rc {proc.returncode}) before {what}: {out} {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.02)


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_killed_while_staging_nothing_is_stored_and_the_next_command_rolls_it_back(plant: Plant) -> None:
    proc = plant.start_import()
    wait_for("staged rows", lambda: plant.staged_rows() > 0, proc)
    kill9(proc)
    # The kill left the journal entry and the stage file, and not one sample in the store.
    assert plant.phase() == "staging"
    assert plant.samples() == 0 and plant.orphans() == 0
    assert plant.query("SELECT COUNT(*) FROM runs") == [(0,)]

    result = plant.biopilot("runs", "list")
    assert result.returncode == 0, result.stderr
    assert (
        "rolled back an interrupted import of BIG-1.csv into F-1:BIG-1 (nothing was stored)" in result.stderr
    )
    assert result.stdout.strip() == "no runs yet"
    assert plant.phase() is None and plant.samples() == 0
    assert plant.leftovers() == []


def test_killed_while_publishing_no_sample_is_without_its_run_and_the_next_command_finishes_it(
    plant: Plant,
) -> None:
    proc = plant.start_import()
    wait_for("samples in the store", lambda: bool(plant.query("SELECT 1 FROM samples LIMIT 1")), proc)
    kill9(proc)
    assert plant.phase() == "publishing", "the import finished before it was killed: make the file larger"
    stored = plant.samples()
    assert 0 < stored <= ROWS * COLUMNS
    # Every sample already in the store lies in a run: the import's, written (hidden) before any sample.
    assert plant.orphans() == 0
    assert plant.query("SELECT id, state FROM runs") == [("F-1:BIG-1", "importing")]

    result = plant.biopilot("runs", "list")
    assert result.returncode == 0, result.stderr
    assert "finished an interrupted import of BIG-1.csv into run F-1:BIG-1" in result.stderr
    assert "F-1:BIG-1" in result.stdout
    assert plant.phase() is None
    assert plant.samples() == ROWS * COLUMNS and plant.orphans() == 0
    assert plant.query("SELECT state FROM runs") == [("ready",)]
    assert plant.query("SELECT rows, samples FROM imports") == [(ROWS, ROWS * COLUMNS)]
    assert plant.leftovers() == []


def test_other_writers_get_the_database_during_a_large_import(plant: Plant) -> None:
    # A small run of its own first, to recompute while the big file is imported.
    small = plant.root / "SMALL-1.csv"
    small.write_text("time,F-1.p0\n2024-04-01T00:00:00Z,1.0\n2024-04-01T01:00:00Z,1.0\n")
    result = plant.biopilot("import", str(small), "--equipment", "F-1")
    assert result.returncode == 0, result.stderr

    proc = plant.start_import()
    wait_for("staged rows", lambda: plant.staged_rows() > 0, proc)
    argv = [
        "kpis",
        "--recompute",
        "F-1:SMALL-1",
        "--json",
        "--config",
        str(plant.config),
        "--data-dir",
        str(plant.data),
    ]
    recompute = subprocess.Popen(
        [sys.executable, "-m", "biopilot", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    store = SqliteStore(plant.db)
    catalog = Catalog(plant.db)
    writes: dict[str, list[float]] = {"staging": [], "publishing": []}
    try:
        i = 0
        while proc.poll() is None:
            phase = plant.phase()
            t = time.monotonic()
            # what a collector does (a sample of a live tag) and what processing does (a KPI write)
            store.write([Sample("F-1.p0", T0 - timedelta(days=1, seconds=i), 1.0, 0)])
            catalog.set_kpis("F-1:SMALL-1", [KpiRecord("batch_duration", 1.0, "h", 1.0, (), True, "t")])
            if phase in writes and plant.phase() == phase:  # the whole write fell in that phase
                writes[phase].append(time.monotonic() - t)
            i += 1
    finally:
        catalog.close()
        store.close()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"{ROWS * COLUMNS:,} samples of {COLUMNS} tags stored" in out
    r_out, r_err = recompute.communicate(timeout=120)
    assert recompute.returncode == 0 and "database is locked" not in r_err, r_err
    assert '"run": "F-1:SMALL-1"' in r_out
    assert len(writes["publishing"]) >= 3, (
        f"only {len(writes['publishing'])} writes while the import published"
    )
    assert len(writes["staging"]) >= 3
    latencies = writes["staging"] + writes["publishing"]
    assert max(latencies) < 5.0, latencies  # well inside SQLite's 10 s busy timeout
