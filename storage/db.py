"""The catalog's relational database: the embedded SQLite file, or PostgreSQL in a deployment.

Catalog code (storage/catalog.py and the other tables' modules) writes one SQL text for both backends:

- placeholders are `?` (the PostgreSQL backend turns them into psycopg's `%s`);
- portable types: TEXT, BIGINT (µs timestamps, counts), DOUBLE PRECISION (values), INTEGER for flags;
- upserts as `INSERT … ON CONFLICT (…) DO UPDATE SET x = excluded.x` or `ON CONFLICT DO NOTHING`, which
  SQLite (≥ 3.24) and PostgreSQL (≥ 9.5) both understand;
- no AUTOINCREMENT/SERIAL: rows that need a sequence number take it in the same transaction.

Schema changes are one ordered list of migrations (storage/migrations.py), applied by `migrate` in one
transaction that holds the database's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock),
so any number of processes may open an old database at once and the newest schema results. Each applied
version is recorded in catalog_migrations, so a migration is applied exactly once whatever order parallel
work merged them in.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from biopilot.errors import StoreError
from biopilot.samples import to_us, utcnow
from biopilot.secrets import read_secret
from storage.sqlite import connect

Params = Sequence[object]
_MIGRATION_LOCK_KEY = 0x42696F50  # "BioP": PostgreSQL advisory lock held while migrating


class Cursor(Protocol):
    """What a transaction hands its statements to."""

    def execute(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]: ...

    def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...


@dataclass(frozen=True)
class Migration:
    """One schema step. `sql`: portable statements separated by `;` (or a callable for a step that
    differs per backend, given the transaction's cursor and the dialect name)."""

    version: int
    description: str
    sql: str | Callable[[Cursor, str], None]


class Database(Protocol):
    dialect: str  # "sqlite" or "postgresql"
    where: str  # for messages: the file, or the server and database (never a password)

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]: ...

    def transaction(self, what: str) -> Any:  # a context manager yielding a Cursor
        ...

    def table_columns(self, table: str) -> set[str]: ...

    def close(self) -> None: ...


# -- SQLite ------------------------------------------------------------------------------------------------
class _SqliteCursor:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self._conn.executemany(sql, [tuple(r) for r in rows])


class SqliteDatabase:
    """The embedded catalog: tables in the SQLite file beside the time series. Thread-safe (one connection,
    one lock); other processes share the file through WAL."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.where}: catalog query failed ({exc})") from None

    @contextmanager
    def transaction(self, what: str) -> Iterator[Cursor]:
        """A write transaction (BEGIN IMMEDIATE: the write lock from the start, so no upgrade deadlock)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.where}: cannot {what} ({exc})") from None
            try:
                yield _SqliteCursor(self._conn)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"{self.where}: cannot {what} ({exc})") from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def table_columns(self, table: str) -> set[str]:
        return {str(r[1]) for r in self.query(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# -- PostgreSQL --------------------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\?")


def _pg_sql(sql: str) -> str:
    """`?` placeholders to psycopg's `%s` (and a literal % doubled). Catalog SQL has no `?` in literals."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


class _PgCursor:
    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(_pg_sql(sql), tuple(params))
        return self._cur.fetchall() if self._cur.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            self._cur.executemany(_pg_sql(sql), [tuple(r) for r in rows])


def redact_dsn(dsn: str) -> str:
    """A connection URL without its password, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class PostgresDatabase:
    """The catalog on a PostgreSQL server (psycopg 3). `dsn`: a postgresql:// URL without a password; the
    password comes from the environment variable `password_env` (or libpq's own PGPASSWORD/.pgpass)."""

    dialect = "postgresql"

    def __init__(self, dsn: str, *, password_env: str | None = None) -> None:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is a declared dependency
            raise StoreError("the PostgreSQL catalog needs psycopg (pip install 'psycopg[binary]')") from None
        self.where = redact_dsn(dsn)
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 10}
        if password_env is not None:
            password = read_secret(password_env, what="storage.catalog_password_env")
            if password is None:
                raise StoreError(
                    f"{self.where}: the catalog's password variable ${password_env} (or ${password_env}_FILE)"
                    " is not set"
                )
            kwargs["password"] = password
        try:
            self._conn = psycopg.connect(dsn, **kwargs)
        except psycopg.Error as exc:
            raise StoreError(
                f"{self.where}: cannot connect to the PostgreSQL catalog ({_pg_reason(exc)})"
            ) from None
        self._errors = psycopg.Error
        self._lock = threading.Lock()

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                with self._conn.cursor() as cur:
                    return _PgCursor(cur).execute(sql, params)
            except self._errors as exc:
                raise StoreError(f"{self.where}: catalog query failed ({_pg_reason(exc)})") from None

    @contextmanager
    def transaction(self, what: str) -> Iterator[Cursor]:
        with self._lock:
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield _PgCursor(cur)
            except self._errors as exc:
                raise StoreError(f"{self.where}: cannot {what} ({_pg_reason(exc)})") from None

    def table_columns(self, table: str) -> set[str]:
        rows = self.query(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {str(r[0]) for r in rows}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _pg_reason(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# -- opening and migrating ---------------------------------------------------------------------------------
def open_database(target: str | Path, *, password_env: str | None = None) -> Database:
    """A file path (SQLite) or a postgresql:// URL."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(text, password_env=password_env)
    return SqliteDatabase(Path(text))


def applied_migrations(db: Database) -> set[int]:
    """The versions applied to this database. Files from before the migrations table record one schema
    version in catalog_meta (every version up to it counts as applied); a first-release file has the runs
    table and no version at all (version 1)."""
    if "version" in db.table_columns("catalog_migrations"):
        return {int(r[0]) for r in db.query("SELECT version FROM catalog_migrations")}
    return set(range(1, _legacy_version(db) + 1))


def schema_version(db: Database) -> int:
    """The newest migration applied (0 for an empty database)."""
    return max(applied_migrations(db), default=0)


def migrate(db: Database, migrations: Sequence[Migration]) -> int:
    """Apply the migrations this database lacks, in version order, in one write transaction that re-reads
    what is applied under the lock (another process may have migrated meanwhile). Each applied version is
    recorded, so migrations merged from parallel work in any order are all applied. Returns the newest."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError("migrations must have increasing, distinct versions")
    if set(versions) <= applied_migrations(db):
        return schema_version(db)
    with db.transaction("create or migrate the catalog schema") as cur:
        if db.dialect == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
        cur.execute("CREATE TABLE IF NOT EXISTS catalog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        if "version" in _cursor_columns(cur, db.dialect, "catalog_migrations"):
            applied = {int(r[0]) for r in cur.execute("SELECT version FROM catalog_migrations")}
        else:
            rows = cur.execute("SELECT value FROM catalog_meta WHERE key = 'schema_version'")
            legacy = int(rows[0][0]) if rows else (1 if _has_runs(cur, db.dialect) else 0)
            applied = set(range(1, legacy + 1))
            cur.execute(_MIGRATIONS_TABLE)
            cur.executemany(_RECORD, [(v, "before the migrations table", 0) for v in sorted(applied)])
        now = to_us(utcnow())
        for m in migrations:
            if m.version in applied:
                continue
            if callable(m.sql):
                m.sql(cur, db.dialect)
            else:
                for statement in _statements(m.sql):
                    cur.execute(statement)
            cur.execute(_RECORD, (m.version, m.description, now))
            applied.add(m.version)
    return max(applied, default=0)


_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS catalog_migrations ("
    "version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_us BIGINT NOT NULL)"
)
_RECORD = "INSERT INTO catalog_migrations (version, description, applied_us) VALUES (?, ?, ?)"


def _legacy_version(db: Database) -> int:
    if "value" in db.table_columns("catalog_meta"):
        rows = db.query("SELECT value FROM catalog_meta WHERE key = 'schema_version'")
        if rows:
            return int(rows[0][0])
    return 1 if "id" in db.table_columns("runs") else 0


def add_columns(cur: Cursor, dialect: str, table: str, columns: Sequence[tuple[str, str]]) -> None:
    """ALTER TABLE … ADD COLUMN for the columns the table lacks (a migration step for both backends)."""
    have = _cursor_columns(cur, dialect, table)
    for name, decl in columns:
        if name not in have:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def _cursor_columns(cur: Cursor, dialect: str, table: str) -> set[str]:
    if dialect == "sqlite":
        return {str(r[1]) for r in cur.execute(f"PRAGMA table_info({table})")}
    rows = cur.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ?",
        (table,),
    )
    return {str(r[0]) for r in rows}


def _has_runs(cur: Cursor, dialect: str) -> bool:
    return "id" in _cursor_columns(cur, dialect, "runs")
