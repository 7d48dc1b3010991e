"""PostgreSQL access: the only place that opens connections.

Rows come back as plain dicts (MappingCursor). Every connection says
application_name=dnl_ad so a DBA can see us in pg_stat_activity. When the server goes
away the broken connection is dropped and the next use reconnects, waiting with a
growing, capped backoff between attempts; the outage is logged once when it starts and
once when it ends, never once per retry.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

log = logging.getLogger(__name__)

APPLICATION_NAME = "dnl_ad"
SQL_DIR = Path(__file__).resolve().parent / "sql"
# Errors that may mean "the server or the network went away". OperationalError also
# covers a cancelled statement or a deadlock on a healthy connection: is_connection_error
# tells the two apart.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
# SQLSTATEs of a server that is going away: admin shutdown, crash shutdown, cannot connect.
_SHUTDOWN_STATES = {"57P01", "57P02", "57P03"}


def is_connection_error(exc: BaseException) -> bool:
    """True when `exc` means the connection is lost (reconnect), False for an error the
    server reported on a live connection (statement timeout, deadlock, ...)."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if not isinstance(exc, psycopg2.OperationalError):
        return False
    code = getattr(exc, "pgcode", None)
    if code is None:  # raised by libpq itself: no answer from a server
        return True
    return code.startswith("08") or code in _SHUTDOWN_STATES

class MappingCursor(psycopg2.extensions.cursor):
    """Rows as plain dicts (column name -> value). Why not RealDictCursor: it builds each
    row in Python, one `__setitem__` per column into an OrderedDict; here libpq's tuples
    become dicts with `dict(zip(...))` in C, several times faster on a sweep's wide rows,
    and the same mapping for every caller."""

    def _names(self) -> list[str]:
        return [column[0] for column in self.description or ()]

    def fetchone(self) -> dict[str, Any] | None:  # type: ignore[override]
        row = super().fetchone()
        return None if row is None else dict(zip(self._names(), row, strict=True))

    def fetchmany(  # type: ignore[override]
            self, size: int | None = None) -> list[dict[str, Any]]:
        rows = super().fetchmany() if size is None else super().fetchmany(size)
        names = self._names()
        return [dict(zip(names, row, strict=True)) for row in rows]

    def fetchall(self) -> list[dict[str, Any]]:  # type: ignore[override]
        rows = super().fetchall()
        names = self._names()
        return [dict(zip(names, row, strict=True)) for row in rows]

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        names: list[str] | None = None
        for row in super().__iter__():
            if names is None:
                names = self._names()
            yield dict(zip(names, row, strict=True))


Cursor = MappingCursor
Connection = psycopg2.extensions.connection


def mask_dsn(dsn: str) -> str:
    """The DSN with its password hidden, and only host/port/dbname/user kept: safe to log."""
    try:
        parts = psycopg2.extensions.parse_dsn(dsn)
    except Exception:
        return "<unparseable DSN>"
    keep = [f"{k}={parts[k]}" for k in ("host", "port", "dbname", "user") if parts.get(k)]
    return " ".join(keep) or "<default DSN>"


_PASSWORD_IN_TEXT = re.compile(r"(password\s*=\s*)(\S+)|(://[^:/@\s]*:)([^@\s]+)(@)", re.I)


def scrub(text: str) -> str:
    """Remove passwords from an error text (libpq sometimes echoes the connection string)."""
    return _PASSWORD_IN_TEXT.sub(
        lambda m: (m.group(1) + "***") if m.group(1) else (m.group(3) + "***" + m.group(5)),
        text,
    )


@dataclass(frozen=True)
class SessionTimeouts:
    """Server-side limits of every dnl_ad session, in seconds (0: off).

    lock_timeout: a row the web UI holds locked makes a statement fail after this, instead
    of stalling the daemon (sweeps skip locked rows anyway; this is the safety net).
    statement_timeout: a runaway query ends. idle_in_transaction: a hung daemon never holds
    locks on the switch's tables for long.
    """

    lock: float = 5
    statement: float = 300
    idle_in_transaction: float = 600

    @classmethod
    def from_settings(cls, settings: Any) -> SessionTimeouts:
        return cls(settings.db_lock_timeout_seconds, settings.db_statement_timeout_seconds,
                   settings.db_idle_in_transaction_seconds)

    def statements(self) -> list[tuple[str, str]]:
        """(SET statement, value in ms) pairs; values are bound, never formatted in."""
        return [("SELECT set_config('lock_timeout', %s, false)", _ms(self.lock)),
                ("SELECT set_config('statement_timeout', %s, false)", _ms(self.statement)),
                ("SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                 _ms(self.idle_in_transaction))]


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


DEFAULT_TIMEOUTS = SessionTimeouts()


def connect(dsn: str, *, autocommit: bool = False, connect_timeout: int = 10,
            timeouts: SessionTimeouts | None = None) -> Connection:
    """Open one connection with dnl_ad's session settings (UTC, mapping rows, and the
    server-side timeouts when given)."""
    conn = psycopg2.connect(
        dsn,
        application_name=APPLICATION_NAME,
        connect_timeout=connect_timeout,
        cursor_factory=MappingCursor,
    )
    conn.autocommit = autocommit
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        for statement, value in (timeouts.statements() if timeouts else []):
            cur.execute(statement, (value,))
    if not autocommit:
        conn.commit()
    return conn


class Database:
    """A lazily (re)opened connection with outage bookkeeping.

    `transaction()` is the unit of work: it yields a cursor, commits on success, rolls
    back on any exception, and forgets the connection when the exception says the server
    is gone, so the next call reconnects.
    """

    def __init__(self, dsn: str, *, min_backoff: float = 0.5, max_backoff: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep,
                 timeouts: SessionTimeouts = DEFAULT_TIMEOUTS) -> None:
        self._dsn = dsn
        self.timeouts = timeouts
        self._conn: Connection | None = None
        self._min_backoff, self._max_backoff = min_backoff, max_backoff
        self._sleep = sleep
        self.down_since: float | None = None

    @property
    def safe_name(self) -> str:
        return mask_dsn(self._dsn)

    def connection(self, *, attempts: int = 1) -> Connection:
        """A live connection, reconnecting up to `attempts` times with backoff."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        delay = self._min_backoff
        for attempt in range(1, attempts + 1):
            try:
                self._conn = connect(self._dsn, timeouts=self.timeouts)
            except CONNECTION_ERRORS as exc:
                self._mark_down(exc)
                if attempt == attempts:
                    raise
                self._sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            self._mark_up()
            return self._conn
        raise AssertionError("unreachable")

    def _mark_down(self, exc: BaseException) -> None:
        # "cursor already closed" only says a cursor was used after the loss: name the
        # error that reported the loss itself when there is one
        while isinstance(exc, psycopg2.InterfaceError) and \
                isinstance(exc.__context__, CONNECTION_ERRORS):
            exc = exc.__context__
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("database %s is unreachable: %s", self.safe_name,
                      scrub(str(exc)).strip().splitlines()[0] if str(exc).strip() else exc)

    def _mark_up(self) -> None:
        if self.down_since is not None:
            seconds = time.monotonic() - self.down_since
            log.warning("database %s is back after %.1f s", self.safe_name, seconds)
            self.down_since = None

    def drop(self) -> None:
        """Forget the connection (closing it if possible); the next use reconnects."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken: nothing to close cleanly
                pass
        self._conn = None

    @contextmanager
    def transaction(self, *, attempts: int = 3) -> Iterator[Cursor]:
        """One transaction on a live connection; commit on success, roll back otherwise."""
        conn = self.connection(attempts=attempts)
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException as exc:
            if self._lost(conn, exc):
                raise
            try:
                conn.rollback()
            except CONNECTION_ERRORS as lost:
                self._mark_down(lost)
                self.drop()
            raise

    @contextmanager
    def single_statement(self, *, attempts: int = 3) -> Iterator[Cursor]:
        """A cursor in autocommit mode for one query string that is its own transaction:
        one round trip instead of BEGIN, the statement and COMMIT (delivery records each
        outcome this way). A string of several statements runs as one implicit
        transaction, so `SET LOCAL` at its head applies to the rest."""
        conn = self.connection(attempts=attempts)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                yield cur
        except BaseException as exc:
            self._lost(conn, exc)
            raise
        finally:
            if not conn.closed:
                conn.autocommit = False

    def _lost(self, conn: Connection, exc: BaseException) -> bool:
        """After `exc` on `conn`: when it says the server is gone, note the outage and
        forget the connection (the next use reconnects). True when so."""
        if is_connection_error(exc) or conn.closed:
            self._mark_down(exc)
            self.drop()
            return True
        return False

    def run(self, work: Callable[[Cursor], Any], *, retries: int = 2) -> Any:
        """Run `work(cursor)` in a transaction, retrying it whole when the server went away.

        Safe only for work that is idempotent or fully transactional, which is every
        sweep here: a transaction cut by a disconnect committed nothing.
        """
        delay = self._min_backoff
        for attempt in range(retries + 1):
            try:
                with self.transaction() as cur:
                    return work(cur)
            except CONNECTION_ERRORS as exc:
                if attempt == retries or not is_connection_error(exc):
                    raise
                self._sleep(delay)
                delay = min(delay * 2, self._max_backoff)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.drop()


class DryRunRollback(Exception):
    """Raised inside a dry-run unit of work so that everything it wrote is rolled back."""


@contextmanager
def unit_of_work(database: Database, *, dry_run: bool) -> Iterator[Cursor]:
    """A transaction that commits normally, or always rolls back in dry run.

    Alerts do the same work either way (same queries, same row locks, same state
    writes), so a dry run shows exactly what a real run would do and writes nothing.

    It commits without waiting for the disk (synchronous_commit off: a sweep of 20,000
    notices is a hundred batches, each an fsync otherwise). Nothing is sent on the
    strength of such a commit alone: delivery's claim commits synchronously, which
    flushes every earlier commit it saw, so a notice is durable before it goes out. A
    crash of the database server itself may lose the last fraction of a second of
    sweeps, notices and provider writes together, never some without the others; the
    next sweep decides them again.
    """
    try:
        with database.transaction() as cur:
            cur.execute("SET LOCAL synchronous_commit TO off")
            yield cur
            if dry_run:
                raise DryRunRollback
    except DryRunRollback:
        pass


@contextmanager
def savepoint(cur: Cursor, name: str = "dnl_ad_item") -> Iterator[None]:
    """Isolate one client's writes: an error rolls back only to the savepoint.

    The caller logs the error and goes on with the next client; the enclosing
    transaction stays usable.
    """
    ident = sql.Identifier(name)
    cur.execute(sql.SQL("SAVEPOINT {}").format(ident))
    try:
        yield
    except BaseException as exc:
        if cur.connection.closed or is_connection_error(exc):
            raise  # nothing to roll back on a lost connection; keep the real cause
        cur.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(ident))
        raise
    cur.execute(sql.SQL("RELEASE SAVEPOINT {}").format(ident))


def run_sql_file(cur: Cursor, name: str) -> None:
    """Execute one of the package's own SQL files (no data is ever formatted into it)."""
    cur.execute((SQL_DIR / name).read_text(encoding="utf-8"))


def table_columns(cur: Cursor, schema: str = "public") -> dict[str, set[str]]:
    """table -> set of column names in `schema` (used by check and the schema tests)."""
    cur.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
        (schema,),
    )
    found: dict[str, set[str]] = {}
    for row in cur.fetchall():
        found.setdefault(row["table_name"], set()).add(row["column_name"])
    return found


def ensure_cdr_partition(cur: Cursor, day: Any) -> str:
    """Create the cdr_report_detailYYYYMMDD child for one UTC day if it is missing.

    The switch creates these itself; tests and the demo need them too.
    """
    import datetime as dt

    name = f"cdr_report_detail{day:%Y%m%d}"
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF cdr_report_detail "
            "FOR VALUES FROM (%s) TO (%s)"
        ).format(sql.Identifier(name)),
        (start, start + dt.timedelta(days=1)),
    )
    return name
