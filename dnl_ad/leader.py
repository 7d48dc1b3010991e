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

High availability (HA_STANDBY=true): a daemon that finds the lock taken stands by and
takes over within HA_TAKEOVER_SECONDS (Timing) when the active one
- dies: its backend ends with its socket, the lock is free at once;
- hangs (SIGSTOP, a frozen VM): a Heartbeat thread confirms the lock every
  takeover/10 s, and the lock connection sets idle_session_timeout (PostgreSQL 14+) to
  takeover/2, so the server ends the session of a daemon that stopped confirming;
- loses its connection (or the server terminates its backend): the heartbeat notices.
The active one runs jobs, and delivery sends each next message, only while the lock was
confirmed within 3 heartbeats (shorter than the idle timeout), or confirmed by asking
the server when that is stale, so a daemon resumed
after a long stop sends nothing before it knows it is still active. A daemon that lost
the lock waits two standby polls before competing again, so a standby takes over.

A transaction-pooling PgBouncer hands each transaction a different server session and
breaks session locks: connect directly or through session pooling.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import socket
import threading
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


@dataclass(frozen=True)
class Timing:
    """Every HA interval derives from HA_TAKEOVER_SECONDS."""

    takeover: float = 30.0

    @property
    def heartbeat(self) -> float:
        """Five confirmations per idle timeout (only with HA: 20 wake-ups a minute at the
        default 30 s)."""
        return max(0.5, self.takeover / 10)

    @property
    def fresh(self) -> float:
        """How recent a confirmation must be to go on without asking (< idle_timeout)."""
        return 3 * self.heartbeat

    @property
    def idle_timeout(self) -> float:
        """The server ends a lock session silent for this long (a hung daemon)."""
        return self.takeover / 2

    @property
    def poll(self) -> float:
        """How often a standby tries the lock."""
        return max(1.0, self.takeover / 6)


class LeaderLock:
    """The active-daemon lock on its own autocommit connection (opened by db.connect).

    The connection stays open while standing by too (each try is one statement, not a
    new connection). Thread-safe: the heartbeat thread and the loop share it.
    """

    def __init__(self, dsn: str, timing: Timing | None = None, *, ha: bool = True) -> None:
        self.dsn = dsn
        self.timing = timing or Timing()
        # HA (a Heartbeat runs): the server ends the session of a daemon that stopped
        # confirming; without HA nobody would take over, so a stopped daemon keeps it
        self.ha = ha
        self.key: int | None = None
        self.confirmed_at: float | None = None  # monotonic time of the last confirmation
        self._conn: db.Connection | None = None
        self._holding = False
        self._mutex = threading.RLock()

    @property
    def held(self) -> bool:
        """What we believe without asking the server (see still_held)."""
        return self._holding and self._conn is not None and not self._conn.closed

    def confirmed_within(self, seconds: float) -> bool:
        return self.held and self.confirmed_at is not None \
            and time.monotonic() - self.confirmed_at <= seconds

    def _connection(self) -> db.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = db.connect(self.dsn, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('application_name', %s, false), "
                            "current_database() AS name, "
                            "current_setting('server_version_num')::int AS version",
                            (application_name(),))
                row = cur.fetchone()
                self.key = lock_key(row["name"])
                if self.ha and row["version"] >= 140000:  # idle_session_timeout: 14+
                    cur.execute("SELECT set_config('idle_session_timeout', %s, false)",
                                (str(int(self.timing.idle_timeout * 1000)),))
                for name, value in (("tcp_keepalives_idle", self.timing.idle_timeout),
                                    ("tcp_keepalives_interval", self.timing.heartbeat),
                                    ("tcp_keepalives_count", 3)):
                    cur.execute("SELECT set_config(%s, %s, false)",
                                (name, str(max(1, int(value)))))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def acquire(self) -> bool:
        """Take the lock if free; True when we hold it (already held: nothing asked).

        Raises a db.CONNECTION_ERRORS exception when the database cannot be reached.
        """
        with self._mutex:
            if self.held and self.still_held():
                return True
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_try_advisory_lock(%s) AS ok", (self.key,))
                    self._holding = bool(cur.fetchone()["ok"])
            except BaseException:
                self._forget()
                raise
            if self._holding:
                self.confirmed_at = time.monotonic()
            return self._holding

    def still_held(self) -> bool:
        """Ask the server: does our live backend hold the lock? False on any error."""
        with self._mutex:
            if not self.held or self.key is None:
                return False
            assert self._conn is not None
            try:
                with self._conn.cursor() as cur:
                    cur.execute(_HELD_SQL, _key_parts(self.key))
                    held = bool(cur.fetchone()["held"])
            except Exception as exc:
                log.debug("active-daemon lock check failed: %s", db.scrub(str(exc)).strip())
                self._forget()
                return False
            if held:
                self.confirmed_at = time.monotonic()
            else:  # our session lives but the lock is gone: never go on as if held
                self._forget()
            return held

    def holder(self) -> Holder | None:
        """Who holds the lock now (None: nobody). Opens a short connection of its own."""
        conn = db.connect(self.dsn, autocommit=True, connect_timeout=5)
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
        with self._mutex:
            if self.held and self.key is not None:
                assert self._conn is not None
                try:
                    with self._conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                except Exception:  # the connection is gone: so is the lock
                    pass
            self._forget()

    def _forget(self) -> None:
        self._holding = False
        self.confirmed_at = None
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


class Heartbeat:
    """A thread that confirms the lock every Timing.heartbeat seconds while it is held,
    so a long job in the loop never leaves the lock session idle long enough for the
    server to end it, and a lost lock is noticed within one heartbeat."""

    def __init__(self, lock: LeaderLock, on_lost: Callable[[], None] = lambda: None) -> None:
        self.lock = lock
        self.on_lost = on_lost  # wakes the loop, which may sleep a minute when idle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dnl_ad-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lock.timing.heartbeat):
            if self.lock.held and not self.lock.still_held():
                self.on_lost()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


ACTIVE, STANDBY = "active", "standby"


class ActiveGuard:
    """The loop asks it before every tick: may this daemon run its jobs now?

    Yes while the lock was confirmed within Timing.fresh (the heartbeat keeps that
    true). When the lock is lost (the connection went away, the server ended our
    backend) the jobs pause, which is said once. Then:
    - with standby=False the guard takes the lock again as soon as it can; when another
      daemon took it meanwhile, `on_lost` gets a line naming that daemon (the daemon
      stops: a second active daemon must never go on sending);
    - with standby=True the daemon stands by: it tries the lock every Timing.poll
      seconds (after a lost lock, first waiting two polls so a standby takes over), and
      calls `on_active` (startup) each time it becomes the active one.
    """

    def __init__(self, lock: LeaderLock, *, standby: bool = False,
                 on_lost: Callable[[str], None] = lambda reason: None,
                 on_active: Callable[[], None] = lambda: None,
                 active: bool = True) -> None:
        self.lock = lock
        self.standby = standby
        self.on_lost, self.on_active = on_lost, on_active
        self.role = ACTIVE if active else STANDBY
        self.paused_since: float | None = None
        self._next_try = 0.0

    def current(self) -> bool:
        """Without asking the server: was the lock confirmed recently enough to go on?"""
        return self.lock.confirmed_within(self.lock.timing.fresh)

    def confirmed(self) -> bool:
        """May work go on (delivery asks before each message)? Confirmed lately, or
        confirmed now by asking the server: without HA no heartbeat keeps it fresh, and
        with HA a late beat must not stop a delivery burst."""
        return self.current() or (self.lock.held and self.lock.still_held())

    @property
    def working(self) -> bool:
        """The active daemon, not paused by a lost lock (the loop may sleep long)."""
        return self.role == ACTIVE and self.paused_since is None

    def __call__(self) -> bool:
        if self.confirmed():
            return True
        now = time.monotonic()
        if self.role == ACTIVE and self.paused_since is None:
            self.paused_since = now
            log.warning("lost the active-daemon lock on the database (connection lost, "
                        "backend terminated or this process was stopped); jobs paused")
            if self.standby:  # let a standby take over: it is likely healthier than us
                self.role = STANDBY
                self._next_try = now + 2 * self.lock.timing.poll
        if now < self._next_try:
            return False
        self._next_try = now + (self.lock.timing.poll if self.standby else 0.0)
        try:
            taken = self.lock.acquire()
        except db.CONNECTION_ERRORS:
            return False  # the database is away: Database logs the outage itself
        if not taken:
            if not self.standby:
                self.on_lost(f"another dnl_ad daemon took over the database: "
                             f"{describe_holder(self.lock)}")
            elif self.paused_since is not None:
                log.warning("standing by: %s is the active daemon",
                            describe_holder(self.lock))
                self.paused_since = None
            return False
        try:
            self.on_active()
        except Exception as exc:
            log.error("took the active-daemon lock but could not start up (%s); standing "
                      "by", db.scrub(str(exc)).strip().splitlines()[0] if str(exc).strip()
                      else type(exc).__name__)
            self.lock.release()
            self.role = STANDBY
            return False
        waited = f" after {now - self.paused_since:.1f} s" if self.paused_since else ""
        log.warning("this daemon is now the active one%s; jobs run", waited)
        self.role, self.paused_since = ACTIVE, None
        return True
