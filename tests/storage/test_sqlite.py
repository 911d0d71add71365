"""storage/sqlite.py: what is particular to SQLite (WAL between processes). What every TimeSeriesStore must
do is in tests/storage/conformance/test_store_conformance.py, which runs on SqliteStore too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from biopilot.samples import Sample, to_us
from storage.sqlite import SqliteStore, connect

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# -- WAL: another process reads while this one writes -------------------------------------------------

READER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from storage.sqlite import SqliteStore
    store = SqliteStore(sys.argv[1], read_only=True)
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    print("ready", mode, flush=True)
    for line in sys.stdin:
        start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
        data = store.read("T", start, end)
        print(len(data), data.values.sum() if len(data) else 0.0, flush=True)
    store.close()
    """
)


def test_another_process_reads_while_this_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "ts.db"
    store = SqliteStore(path)
    store.write([Sample("T", at(0), 1.0)])
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdin is not None and reader.stdout is not None

    def ask() -> str:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write("read\n")
        reader.stdin.flush()
        return reader.stdout.readline().strip()

    try:
        assert reader.stdout.readline().split() == ["ready", "wal"]
        expected_n, expected_sum = 1, 1.0
        for k in range(1, 6):  # interleave writes here with reads there
            store.write([Sample("T", at(k), float(k))])
            expected_n, expected_sum = expected_n + 1, expected_sum + k
            assert ask() == f"{expected_n} {expected_sum}"

        # A writer in the middle of a transaction (holding the write lock, with uncommitted rows): the
        # reader is not blocked and sees the last committed state. A rollback journal would block it here.
        writer = connect(path)
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute(
            "INSERT INTO samples (series_id, ts_us, value, status) "
            "SELECT id, ?, 100.0, 0 FROM series WHERE name = 'T'",
            (to_us(at(100)),),
        )
        assert ask() == f"{expected_n} {expected_sum}"
        writer.execute("COMMIT")
        writer.close()
        assert ask() == f"{expected_n + 1} {expected_sum + 100.0}"
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
        store.close()
    assert reader.returncode == 0, reader.stderr.read() if reader.stderr else ""
