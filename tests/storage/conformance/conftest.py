"""The conformance suite: every catalog backend (and, as they come, every TimeSeriesStore backend) runs the
same tests.

Catalog backends: the embedded SQLite file, and PostgreSQL — the server at 127.0.0.1:5432 that these machines
run (trust auth), or the one BIOPILOT_TEST_POSTGRES names (a postgresql:// URL). Each PostgreSQL test gets a
schema of its own, dropped afterwards. Without a reachable server the PostgreSQL cases say SKIPPED with the
reason; in CI (BIOPILOT_CI=1) they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from storage.catalog import Catalog

IN_CI = os.environ.get("BIOPILOT_CI") == "1"
POSTGRES = os.environ.get("BIOPILOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
CATALOG_BACKENDS = ["sqlite", "postgresql"]


def _postgres_or_skip() -> None:
    import psycopg

    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = f"PostgreSQL at {POSTGRES} is not reachable ({str(exc).strip().splitlines()[0]})"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A postgresql:// URL whose search_path is a fresh schema of this test's own."""
    import psycopg

    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES else "?"
    yield f"{POSTGRES}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=CATALOG_BACKENDS)
def catalog_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a catalog lives: an SQLite file, or a PostgreSQL URL with a schema of the test's own."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.db")
    return str(request.getfixturevalue("postgres_schema"))


@pytest.fixture
def catalog(catalog_target: str) -> Iterator[Catalog]:
    c = Catalog(catalog_target)
    yield c
    c.close()
