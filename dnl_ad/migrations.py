"""Migrations of dnl_ad's own schema (OWN_SCHEMA, default `dnl_ad`) in the provider database.

Each migration is a SQL file in dnl_ad/sql named own_NNN_*.sql, run once, in order,
with search_path set to the own schema, so the files name tables unqualified and the
schema name (configurable) is never formatted into SQL text. A transaction-level
advisory lock makes two daemons starting at once migrate one after the other.

Dry runs, `preview` and the harness work before `migrate` too: open_database() gives them
a database whose every transaction first creates what the schema lacks, inside itself,
and is always rolled back, so they see the tables and nothing remains.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from psycopg2 import sql

from . import db
from .config import Settings
from .db import SQL_DIR, Cursor

log = logging.getLogger(__name__)

_MIGRATION_FILE = re.compile(r"^own_(\d{3})_[a-z0-9_]+\.sql$")
# Arbitrary constant: the advisory lock key dnl_ad migrations serialise on.
_LOCK_KEY = 0x646E6C5F6164


def available() -> list[tuple[int, str]]:
    """(version, file name) of every shipped migration, in order."""
    found = []
    for path in SQL_DIR.iterdir():
        m = _MIGRATION_FILE.match(path.name)
        if m:
            found.append((int(m.group(1)), path.name))
    found.sort()
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return found


def applied(cur: Cursor, schema: str) -> set[int]:
    """Versions already applied; empty when the schema or its version table is missing."""
    cur.execute("SELECT to_regclass(%s) AS t", (f"{schema}.schema_version",))
    if cur.fetchone()["t"] is None:
        return set()
    cur.execute(sql.SQL("SELECT version FROM {}.schema_version").format(sql.Identifier(schema)))
    return {row["version"] for row in cur.fetchall()}


def pending(cur: Cursor, schema: str) -> list[tuple[int, str]]:
    done = applied(cur, schema)
    return [(v, name) for v, name in available() if v not in done]


def migrate(cur: Cursor, schema: str) -> list[str]:
    """Create the schema and apply what is missing, inside the caller's transaction.

    Returns the names of the files applied (empty when already up to date).
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    ident = sql.Identifier(schema)
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_version ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(ident)
    )
    todo = pending(cur, schema)
    names = []
    for version, name in todo:
        cur.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(ident))
        cur.execute((SQL_DIR / name).read_text(encoding="utf-8"))
        cur.execute(
            sql.SQL("INSERT INTO {}.schema_version (version, name) VALUES (%s, %s)").format(ident),
            (version, name),
        )
        log.info("migration %s applied to schema %s", name, schema)
        names.append(name)
    cur.execute("SET LOCAL search_path TO DEFAULT")
    return names


def own(schema: str, table: str) -> sql.Composed:
    """A qualified, quoted reference to one of dnl_ad's own tables for psycopg2.sql."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


class _Discard(Exception):
    """Raised at the end of a SchemaInTransaction unit of work: roll everything back."""


class SchemaInTransaction(db.Database):
    """A Database for dry runs: each transaction creates the missing parts of the own
    schema inside itself and is rolled back whatever happens, so a dry run before
    `migrate` sees dnl_ad's tables (empty) and writes nothing.

    While such a transaction is open, a concurrent `migrate` (or another such dry run)
    waits for it: dry-run transactions are one sweep long.
    """

    def __init__(self, dsn: str, schema: str, **kwargs: object) -> None:
        super().__init__(dsn, **kwargs)  # type: ignore[arg-type]
        self.schema = schema

    @contextmanager
    def transaction(self, *, attempts: int = 3) -> Iterator[Cursor]:
        try:
            with super().transaction(attempts=attempts) as cur:
                if pending(cur, self.schema):
                    migrate(cur, self.schema)
                yield cur
                raise _Discard
        except _Discard:
            pass


def open_database(settings: Settings, *,
                  sleep: Callable[[float], None] = time.sleep) -> db.Database:
    """The daemon's database: in dry run one that never commits and lacks nothing."""
    timeouts = db.SessionTimeouts.from_settings(settings)
    if settings.dry_run:
        return SchemaInTransaction(settings.connection_string, settings.own_schema, sleep=sleep,
                                   timeouts=timeouts)
    return db.Database(settings.connection_string, sleep=sleep, timeouts=timeouts)


def missing_line(cur: Cursor, schema: str) -> str:
    """'' when the schema is up to date, else one line saying what to run."""
    todo = pending(cur, schema)
    if not todo:
        return ""
    return (f"schema {schema} lacks {', '.join(n for _, n in todo)}: run `dnl-ad migrate` "
            "(start does it too)")


def run_command(settings: Settings, work: Callable[[Cursor, str], int],
                refused: tuple[type[Exception], ...]) -> int:
    """The commands that edit dnl_ad's own tables (`dnl-ad rule`, `dnl-ad watch`): `work`
    runs in one transaction on an up-to-date own schema and returns the exit status; an
    error of a `refused` type (a bad argument) is one line on stderr and exit status 2."""
    database = db.Database(settings.connection_string)
    try:
        with database.transaction() as cur:
            migrate(cur, settings.own_schema)
            return work(cur, settings.own_schema)
    except refused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        database.close()
