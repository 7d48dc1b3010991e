"""One active daemon per database: a PostgreSQL session advisory lock.

Two daemons on one database (two hosts, or two pidfiles on one host) would race for
every notice; the outbox's dedupe keys keep a notice from being queued twice, but both
would claim, lease and send. So the daemon holds a session-level advisory lock on its
own dedicated connection for as long as it is active:

- the key is a stable 64-bit hash of the database name and the word dnl_ad, so every
  daemon (any host, any version) pointed at one database agrees on it;
- `acquire()` uses pg_try_advisory_lock (never waits) and never asks again for a lock
  it holds: session advisory locks stack, and a lock taken twice would need two unlocks;
- `still_held()` asks the server whether our backend still holds it: a backend killed by
  the server (pg_terminate_backend, a restart) loses the lock with the connection, and
  the daemon must notice rather than go on as a second "leader";
- `holder()` names whoever holds it (pg_locks joined to pg_stat_activity).

A transaction-pooling PgBouncer hands each transaction a different server session and
breaks session locks: connect directly or through session pooling.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import db

log = logging.getLogger(__name__)

LOCK_WORD = "dnl_ad"
_MASK32 = 0xFFFFFFFF


def lock_key(database_name: str) -> int:
    """The advisory lock key for one database: a signed 64-bit integer, stable forever."""
    digest = hashlib.sha256(f"{LOCK_WORD}:{database_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _key_parts(key: int) -> tuple[int, int]:
    """How pg_locks shows a bigint advisory key: classid = high 32 bits, objid = low."""
    return (key >> 32) & _MASK32, key & _MASK32


def application_name() -> str:
    """The lock connection's application_name: names our host and pid to other daemons."""
    return f"{LOCK_WORD} {socket.gethostname()} pid {os.getpid()}"[:63]


@dataclass(frozen=True)
class Holder:
    """The session holding the lock, as pg_stat_activity shows it."""

    backend_pid: int
    application_name: str
    client: str
    since: dt.datetime | None

    def describe(self) -> str:
        who = self.application_name or "an unnamed session"
        since = f", since {self.since:%Y-%m-%d %H:%M:%S %Z}" if self.since else ""
        return f"{who} (backend pid {self.backend_pid}, from {self.client}{since})"


_HOLDER_SQL = """
SELECT l.pid, a.application_name, coalesce(a.client_hostname, host(a.client_addr),
       'local socket') AS client, a.backend_start
  FROM pg_locks l
  LEFT JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid::bigint = %s AND l.objid::bigint = %s
"""

_HELD_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND granted AND objsubid = 1
                  AND pid = pg_backend_pid()
                  AND classid::bigint = %s AND objid::bigint = %s) AS held
"""


class LeaderLock:
    """The active-daemon lock on its own autocommit connection (opened by db.connect)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.key: int | None = None
        self._conn: db.Connection | None = None

    @property
    def held(self) -> bool:
        """What we believe without asking the server (see still_held)."""
        return self._conn is not None and not self._conn.closed

    def _open(self) -> db.Connection:
        conn = db.connect(self.dsn, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('application_name', %s, false), "
                            "current_database() AS name", (application_name(),))
                self.key = lock_key(cur.fetchone()["name"])
        except BaseException:
            conn.close()
            raise
        return conn

    def acquire(self) -> bool:
        """Take the lock if free; True when we hold it (already held: nothing asked).

        Raises a db.CONNECTION_ERRORS exception when the database cannot be reached.
        """
        if self.held and self.still_held():
            return True
        self._forget()
        conn = self._open()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s) AS ok", (self.key,))
                ok = bool(cur.fetchone()["ok"])
        except BaseException:
            conn.close()
            raise
        if not ok:
            conn.close()
            return False
        self._conn = conn
        return True

    def still_held(self) -> bool:
        """Ask the server: does our live backend hold the lock? False on any error."""
        if not self.held or self.key is None:
            return False
        assert self._conn is not None
        try:
            with self._conn.cursor() as cur:
                cur.execute(_HELD_SQL, _key_parts(self.key))
                held = bool(cur.fetchone()["held"])
        except Exception as exc:
            log.debug("active-daemon lock check failed: %s", db.scrub(str(exc)).strip())
            held = False
        if not held:
            self._forget()
        return held

    def holder(self) -> Holder | None:
        """Who holds the lock now (None: nobody). Opens a short connection of its own."""
        conn = db.connect(self.dsn, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_database() AS name")
                key = lock_key(cur.fetchone()["name"])
                cur.execute(_HOLDER_SQL, _key_parts(key))
                row = cur.fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        return Holder(backend_pid=row["pid"], application_name=row["application_name"] or "",
                      client=row["client"] or "unknown", since=row["backend_start"])

    def release(self) -> None:
        """Unlock and close the connection (closing alone would also free the lock)."""
        if self.held and self.key is not None:
            assert self._conn is not None
            try:
                with self._conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except Exception:  # the connection is gone: so is the lock
                pass
        self._forget()

    def _forget(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None


def describe_holder(lock: LeaderLock) -> str:
    """One line naming the active daemon, or saying that none is found."""
    try:
        holder = lock.holder()
    except db.CONNECTION_ERRORS as exc:
        return f"(its holder could not be read: {db.scrub(str(exc)).strip().splitlines()[0]})"
    return holder.describe() if holder else "(it was released meanwhile)"


class ActiveGuard:
    """The loop asks it before every tick: may this daemon run its jobs now?

    Yes while the server confirms the lock. When the lock is lost (the connection went
    away or the server killed our backend) the jobs pause, which is said once, and the
    guard tries to take the lock again each tick: when it gets it back that is said once
    too; when another daemon took it meanwhile, `on_lost` is called with a line naming
    that daemon (the daemon stops: a second active daemon must never go on sending).
    """

    def __init__(self, lock: LeaderLock, on_lost: Callable[[str], None]) -> None:
        self.lock = lock
        self.on_lost = on_lost
        self.paused_since: float | None = None

    def __call__(self) -> bool:
        if self.lock.still_held():
            return True
        if self.paused_since is None:
            self.paused_since = time.monotonic()
            log.warning("lost the active-daemon lock on the database (connection lost or "
                        "backend terminated); jobs paused until it is held again")
        try:
            taken = self.lock.acquire()
        except db.CONNECTION_ERRORS:
            return False  # the database is away: Database logs the outage itself
        if taken:
            log.warning("active-daemon lock held again after %.1f s; jobs resume",
                        time.monotonic() - self.paused_since)
            self.paused_since = None
            return True
        self.on_lost(f"another dnl_ad daemon took over the database: "
                     f"{describe_holder(self.lock)}")
        return False
