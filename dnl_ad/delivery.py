"""Deliver: drain due outbox rows over SMTP and record every outcome.

One run (the daemon calls it every DELIVERY_SECONDS while mail is waiting, at once when
a sweep has queued some, and otherwise when the next waiting notice is due, at least
once a minute: scheduler._delivery_reschedule):

1. expire, by age only, notices older than DELIVERY_MAX_AGE_HOURS (failed, with a final
   email_log row saying so); then claim up to DELIVERY_BATCH due rows (FOR UPDATE SKIP
   LOCKED, leased under a claim token), skipping servers that are backed off (3), and
   commit, so no transaction stays open while we talk SMTP;
2. group them by server (the default one, or a mail_sender's own: see _Servers) and
   send each group over up to SMTP_SESSIONS parallel sessions, only to recipients that
   have not accepted yet; per recipient, for answers about this notice (its RCPT or
   DATA): 2xx sent, 4xx or a drop while its data was in hand retried later (backoff
   RETRY_BASE_SECONDS * 2^(attempts-1), capped at RETRY_MAX_SECONDS, at most
   MAX_ATTEMPTS), 5xx failed;
3. server-wide trouble is nobody's attempt: when no session can be made (refused,
   timeout, TLS, AUTH, a 421 greeting), or the server speaks for itself mid-session (421
   to any command including RSET, a rate limit: a 4xx to MAIL FROM or an enhanced
   status 4.7.x / 4.5.3, a dropped connection), the session stops at once, the messages
   not yet answered go back unchanged (no attempt charged), and the whole delivery
   through that server backs off (RETRY_BASE_SECONDS * 2^(n-1), capped at
   SMTP_BACKOFF_MAX_SECONDS, kept in the own schema's smtp_backoff; a session that
   delivered before its trouble starts the count again). An outage is logged once when
   it starts and once when it ends;
4. record each outcome as soon as the server has answered (outbox row + email_log row for
   final outcomes), only on rows still under this claim's token, so a crash after a send
   re-sends at most the message in hand (one per session);
5. between messages, `should_stop()` (SIGTERM): finish the messages in hand, release
   the rest untouched;
6. never start a message once the claim's lease is about to run out (a slow relay): by
   then another deliverer may claim the same rows, so the rest is released (only rows
   still under this claim) for the next claim.

Dry run does nothing here: nothing was queued.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import db, outbox
from .config import Settings
from .mail import smtp

log = logging.getLogger(__name__)

# Outcomes recorded per transaction. One: a process killed right after a send re-sends at
# most that one message. Each record commits with synchronous_commit off (the server
# flushes it within milliseconds; only a crash of the PostgreSQL server itself in that
# instant could lose it), which keeps per-message bookkeeping cheap (bench_delivery.py).
FLUSH_EVERY = 1
# A server's rows are spread over more sessions only when each gets at least this many:
# a small batch stays on one connection.
MIN_PER_SESSION = 50


@dataclass
class DeliveryResult:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    connections: int = 0
    released: int = 0
    deferred: int = 0  # given back uncharged: the server as a whole was in trouble
    expired: int = 0
    # nothing was due: the loop may sleep until next_due (None: nothing is pending)
    idle: bool = False
    next_due: dt.datetime | None = None

    @property
    def total(self) -> int:
        return self.sent + self.retry + self.failed


def backoff(settings: Settings, attempts: int) -> dt.timedelta:
    """Wait before attempt number attempts + 1."""
    seconds = settings.retry_base_seconds * 2 ** max(attempts - 1, 0)
    return dt.timedelta(seconds=min(seconds, settings.retry_max_seconds))


def lease_for(settings: Settings) -> dt.timedelta:
    """How long a claim holds its rows: enough for a slow batch, short enough that a
    crashed run's rows go out again soon."""
    return dt.timedelta(seconds=max(300, 4 * settings.smtp_timeout_seconds))


def sending_window(settings: Settings) -> float:
    """Seconds after the claim in which a message may still be started: the lease less
    the time one slow message may take, so it is done before anyone else may claim it."""
    return lease_for(settings).total_seconds() - 2 * settings.smtp_timeout_seconds


class _Recorder:
    """Collects outcomes and writes them (every FLUSH_EVERY outcomes), only on rows this
    claim still holds: a row whose lease ran out and that another deliverer has claimed
    since is not marked twice (`lost` lists it, with one warning per batch)."""

    def __init__(self, database: db.Database, settings: Settings, token: str) -> None:
        self.database, self.settings, self.token = database, settings, token
        self.marks: list[outbox.Mark] = []
        self.logs: list[tuple[int, outbox.LogEntry]] = []
        self.lost: set[int] = set()
        # parallel sessions: the caller flushes once per burst of outcomes that arrived
        # together (at most one message in hand per session), not once per message
        self.group_commit = False

    def add(self, mark: outbox.Mark, entry: outbox.LogEntry | None) -> None:
        self.marks.append(mark)
        if entry is not None:
            self.logs.append((mark.id, entry))
        if len(self.marks) >= FLUSH_EVERY and not self.group_commit:
            self.flush()

    def flush(self) -> None:
        if not self.marks:
            return
        marks, logs = self.marks, self.logs
        with self.database.single_statement() as cur:  # one round trip per flush
            marked = outbox.record(cur, self.settings.own_schema, marks, logs, self.token)
        self.marks, self.logs = [], []
        lost = {m.id for m in marks} - marked
        if lost and not self.lost:
            log.warning("delivery: the lease on outbox row(s) %s ran out and another "
                        "deliverer has claimed them since; their outcome here is not "
                        "recorded (the other deliverer records its own) and this batch "
                        "stops", ", ".join(map(str, sorted(lost))))
        self.lost |= lost


def _outcome(row: outbox.Claimed, result: smtp.SendResult, settings: Settings,
             now: dt.datetime) -> tuple[outbox.Mark, outbox.LogEntry | None, str, str]:
    """Decide one row's new state from the replies. Returns (mark, log entry, outcome, why)."""
    todo = row.todo
    done, failed = list(row.done_addrs), list(row.failed_addrs)
    problems: list[str] = []
    last_reply = ""
    for rcpt in todo:
        code, text = result.replies.get(rcpt, (0, ""))
        if 200 <= code < 300:
            done.append(rcpt)
            last_reply = text
        elif 500 <= code < 600:
            failed.append(rcpt)
            problems.append(f"{rcpt}: {text}")
        elif code:
            problems.append(f"{rcpt}: {text}")
    if result.connection_lost:
        problems.append(result.connection_lost)
    attempts = row.attempts + 1
    left = [a for a in todo if a not in done and a not in failed]
    why = "; ".join(problems)
    if left and attempts < settings.max_attempts:
        wait = backoff(settings, attempts)
        mark = outbox.Mark(row.id, outbox.PENDING, done, failed, attempts, now + wait,
                           why or None, now)
        return mark, None, "retry", f"retry in {int(wait.total_seconds())} s " \
                                    f"(attempt {attempts}/{settings.max_attempts}): {why}"
    if left:
        failed += left
        why = f"gave up after {attempts} attempts: {why}"
    status = outbox.SENT if done else outbox.FAILED
    mark = outbox.Mark(row.id, status, done, failed, attempts, now, why or None, now)
    entry = outbox.LogEntry(now, row.client_id, row.recipients, row.email_type, row.alert_rule,
                            0 if status == outbox.SENT else 1, why, last_reply, row.subject,
                            row.html_body)
    return mark, entry, status, why


def _load_system(cur: db.Cursor) -> dict:
    cur.execute("SELECT * FROM system_parameter ORDER BY sys_id LIMIT 1")
    return dict(cur.fetchone() or {})


def outage_wait(settings: Settings, failures: int) -> dt.timedelta:
    """How long the whole delivery through a server in trouble waits after `failures`
    server-wide failures in a row."""
    seconds = settings.retry_base_seconds * 2 ** min(max(failures - 1, 0), 32)
    return dt.timedelta(seconds=min(seconds, settings.smtp_backoff_max_seconds))


def _expire(cur: db.Cursor, settings: Settings, now: dt.datetime) -> int:
    expired = outbox.expire(cur, settings.own_schema, now,
                            dt.timedelta(hours=settings.delivery_max_age_hours))
    for key, entry in expired:
        log.warning("client %s to %s subject %r: %s (key %s)", entry.client_id,
                    ", ".join(entry.addresses), entry.subject, entry.error, key)
    return len(expired)


# unusable SMTP settings said once when they appear and once when fixed, not every run
_settings_problems: dict[str, str] = {}


def _say_settings_problems(problems: dict[str, str]) -> None:
    for where, why in problems.items():
        if _settings_problems.get(where) != why:
            log.error("delivery: %s; nothing is sent through %s until it is fixed", why, where)
    for where in set(_settings_problems) - set(problems):
        log.warning("delivery: the SMTP settings of %s are usable again", where)
    _settings_problems.clear()
    _settings_problems.update(problems)


@dataclass
class _Servers:
    """Which SMTP server sends which notice.

    The outbox row keeps the mail_sender id its From came from (`sender_id`, set when
    queued); the server is resolved here, at delivery, from the provider's current
    mail_sender and system_parameter rows. So a fixed password or host applies to notices
    already queued, no credentials are copied into dnl_ad's tables, and a sender deleted
    since falls back to the default server (system_parameter + the ini's SMTP_* keys).
    A mail_sender row with its own smtp_host uses its own host, port, secure, username,
    password and loginemail; any other sender uses the default server.
    """

    default: smtp.SmtpConfig | None
    own: dict[str, smtp.SmtpConfig | None]  # sender id -> its own server (None: unusable)

    @classmethod
    def load(cls, cur: db.Cursor, settings: Settings) -> _Servers:
        problems: dict[str, str] = {}
        try:
            default: smtp.SmtpConfig | None = smtp.resolve(settings, _load_system(cur))
        except smtp.SessionError as exc:  # unusable settings: claim nothing for it, say why
            problems["the default server"] = str(exc)
            default = None
        cur.execute("SELECT * FROM mail_sender")
        own: dict[str, smtp.SmtpConfig | None] = {}
        for row in cur.fetchall():
            if not str(row.get("smtp_host") or "").strip():
                continue
            try:
                own[str(row["id"])] = smtp.resolve_sender(settings, row)
            except smtp.SessionError as exc:
                problems[f"mail_sender {row['id']}"] = str(exc)
                own[str(row["id"])] = None
        _say_settings_problems(problems)
        return cls(default, own)

    def config(self, sender_id: str | None) -> smtp.SmtpConfig | None:
        sid = sender_id or ""
        return self.own[sid] if sid in self.own else self.default

    def claimable(self, backed_off: dict[str, dt.datetime]) -> tuple[bool, list[str]]:
        """(may the default server's notices be claimed, own-server sender ids that may)."""
        ok = [sid for sid, c in self.own.items() if c is not None and c.key not in backed_off]
        default_ok = self.default is not None and self.default.key not in backed_off
        return default_ok, ok


def deliver(database: db.Database, settings: Settings, *, now: dt.datetime,
            should_stop: Callable[[], bool] = lambda: False,
            monotonic: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> DeliveryResult:
    """Send what is due at `now`, over up to SMTP_SESSIONS sessions per server; see the
    module docstring.

    `monotonic` measures how long the batch has run against its lease and paces
    SMTP_RATE_LIMIT with `sleep` (tests pass their own).
    """
    result = DeliveryResult()
    if settings.dry_run:
        log.debug("dry run: delivery skipped")
        result.idle = True
        return result
    schema = settings.own_schema
    lease = lease_for(settings)
    with database.single_statement() as cur:  # idle: this one query
        due = outbox.next_due(cur, schema, now=now,
                              max_age=dt.timedelta(hours=settings.delivery_max_age_hours))
    if due is None or due > now:
        result.idle, result.next_due = True, due
        return result
    with database.transaction() as cur:
        result.expired = _expire(cur, settings, now)
        servers = _Servers.load(cur, settings)
        default_ok, own_ok = servers.claimable(outbox.backed_off(cur, schema, now))
        if not default_ok and not own_ok:
            return result
        rows = outbox.claim(cur, schema, now=now, limit=settings.delivery_batch,
                            lease=lease, default_server=default_ok, own_senders=own_ok,
                            all_own_senders=list(servers.own))
    claimed_at = monotonic()
    if not rows:
        return result
    groups: dict[str, tuple[smtp.SmtpConfig, list[outbox.Claimed]]] = {}
    for row in rows:  # claim order within each server; servers in order of first notice
        config = servers.config(row.sender_id)
        assert config is not None  # claim took only rows of usable servers
        groups.setdefault(config.key, (config, []))[1].append(row)
    limiter = _RateLimiter(settings.smtp_rate_limit, monotonic, sleep)
    batch = _Batch(database, settings, now, rows[0].token, should_stop, monotonic,
                   claimed_at, result, limiter)
    todo = list(groups.values())
    try:
        for index, (config, group) in enumerate(todo):
            if not batch.send_server(config, group):
                batch.released += [r.id for _, later in todo[index + 1:] for r in later]
                break
    finally:
        batch.finish()
    if result.total or result.released or result.deferred:
        log.info("delivery via %s: %d sent, %d to retry, %d failed, %d released, "
                 "%d deferred, %d connection(s)",
                 ", ".join(c.where for c, _ in groups.values()), result.sent, result.retry,
                 result.failed, result.released, result.deferred, result.connections)
    return result


def split_for_sessions(rows: list[outbox.Claimed], sessions: int
                       ) -> list[list[outbox.Claimed]]:
    """One server's rows over up to `sessions` parallel sessions, each with at least
    MIN_PER_SESSION rows (a small batch stays on one connection), dealt round-robin so
    the oldest notices start first in every session."""
    k = max(1, min(sessions, len(rows) // MIN_PER_SESSION))
    return [rows[i::k] for i in range(k)]


class _RateLimiter:
    """SMTP_RATE_LIMIT: at most `rate` messages per second over all sessions (0: off)."""

    def __init__(self, rate: float, monotonic: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.monotonic, self.sleep = monotonic, sleep
        self.next_slot = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = self.monotonic()
            slot = max(self.next_slot, now)
            self.next_slot = slot + self.interval
        if slot > now:
            self.sleep(slot - now)


@dataclass
class _Worker:
    """One SMTP session over a share of one server's rows. It only talks SMTP: every
    event goes to `emit`, which the batch handles on the thread that owns the database
    connection (outcomes are recorded there, in the order they arrive)."""

    config: smtp.SmtpConfig
    rows: list[outbox.Claimed]
    batch: _Batch
    emit: Callable[[tuple], None]

    def run(self) -> None:
        b = self.batch
        answered, connections = False, 0
        try:
            with smtp.Session(self.config, b.settings.smtp_max_per_session) as session:
                try:
                    answered = self._send_all(session)
                finally:
                    connections = session.connections
        except BaseException as exc:  # a bug: the rows in hand keep their lease
            self.emit(("error", exc))
        finally:
            self.emit(("done", self.config, answered, connections))

    def _send_all(self, session: smtp.Session) -> bool:
        b = self.batch
        answered = False
        for index, row in enumerate(self.rows):
            stop = b.stop_reason()
            if stop:
                self.emit(("release", [r.id for r in self.rows[index:]], stop))
                return answered
            trouble = b.troubled.get(self.config.key)
            if trouble:  # another session to this server hit trouble: stop here too
                self.emit(("trouble", self.config, trouble,
                           [r.id for r in self.rows[index:]], answered))
                return answered
            if not row.todo:
                continue
            b.limiter.wait()
            try:
                send_result = session.send(row.from_addr, row.todo, row.message)
            except smtp.SessionError as exc:
                self.emit(("trouble", self.config, str(exc),
                           [r.id for r in self.rows[index:]], answered))
                return answered
            answered = True
            recorded = threading.Event()
            self.emit(("outcome", row, send_result, recorded))
            # the next message starts only once this outcome is recorded, so a kill -9
            # finds at most one answered-but-unrecorded message per session
            while not recorded.wait(0.5):
                if b.halted:
                    break
            if send_result.trouble:  # this message's outcome stands; the session ends
                self.emit(("trouble", self.config, send_result.trouble,
                           [r.id for r in self.rows[index + 1:]], True))
                return answered
        return answered


class _Batch:
    """One claimed batch: its recorder, what is left to release, its stop conditions."""

    def __init__(self, database: db.Database, settings: Settings, now: dt.datetime,
                 token: str, should_stop: Callable[[], bool], monotonic: Callable[[], float],
                 claimed_at: float, result: DeliveryResult, limiter: _RateLimiter) -> None:
        self.database, self.settings, self.now, self.token = database, settings, now, token
        self.should_stop, self.monotonic, self.claimed_at = should_stop, monotonic, claimed_at
        self.result, self.limiter = result, limiter
        self.recorder = _Recorder(database, settings, token)
        self.released: list[int] = []
        self.halted = ""  # set once: why every session stops starting messages
        self.said: set[str] = set()
        self.troubled: dict[str, str] = {}  # server key -> its trouble in this batch
        self.errors: list[BaseException] = []

    def stop_reason(self) -> str:
        """Why no further message may start ('' when one may): SIGTERM, the claim's lease
        about to run out (a slow relay), or the claim lost to another deliverer."""
        if self.halted:
            return self.halted
        if self.should_stop():
            self.halted = "stop"
        elif self.monotonic() - self.claimed_at > sending_window(self.settings):
            self.halted = "lease"
        return self.halted

    def send_server(self, config: smtp.SmtpConfig, rows: list[outbox.Claimed]) -> bool:
        """Send one server's rows over up to SMTP_SESSIONS parallel sessions. False: stop
        the whole batch; the rows left are released."""
        shares = split_for_sessions(rows, self.settings.smtp_sessions)
        if len(shares) == 1:  # today's path: one session, events handled as they come
            _Worker(config, shares[0], self, self.handle).run()
        else:
            events: queue.Queue[tuple] = queue.Queue()
            threads = [threading.Thread(target=_Worker(config, share, self, events.put).run,
                                        name=f"dnl_ad-smtp-{i}", daemon=True)
                       for i, share in enumerate(shares)]
            for t in threads:
                t.start()
            done = 0
            self.recorder.group_commit = True
            try:
                while done < len(threads):
                    burst = [events.get()]
                    while True:  # everything the sessions reported meanwhile
                        try:
                            burst.append(events.get_nowait())
                        except queue.Empty:
                            break
                    for event in burst:
                        done += event[0] == "done"
                        self.handle(event)
                    self.recorder.flush()
                    for event in burst:  # recorded: their sessions may go on
                        if event[0] == "outcome":
                            event[3].set()
                    if self.recorder.lost:
                        self.halted = "lost"
            except BaseException:  # cannot record (database gone): start nothing more
                self.halted = self.halted or "error"
                while done < len(threads):
                    done += events.get()[0] == "done"
                raise
            finally:
                self.recorder.group_commit = False
            for t in threads:
                t.join()
        if self.errors:
            raise self.errors[0]
        return not self.halted

    def handle(self, event: tuple) -> None:
        """Record one worker event (on the thread that owns the database connection)."""
        kind = event[0]
        if kind == "outcome":
            _, row, send_result, recorded = event
            mark, entry, outcome, why = _outcome(row, send_result, self.settings, self.now)
            setattr(self.result, outcome, getattr(self.result, outcome) + 1)
            _log_outcome(row, outcome, why)
            self.recorder.add(mark, entry)
            if not self.recorder.group_commit:  # recorded now (one session): go on
                recorded.set()
            if self.recorder.lost:  # our claim is gone: the rest belongs to another run
                self.halted = "lost"
        elif kind == "trouble":
            _, config, why, ids, progressed = event
            self.recorder.flush()
            if config.key in self.troubled:  # counted once per batch and server
                with self.database.transaction() as cur:
                    self.result.deferred += outbox.defer(cur, self.settings.own_schema, ids,
                                                         self.token, self.troubled[config.key])
            else:
                self.troubled[config.key] = why
                _server_trouble(self.database, self.settings, config, self.now, why, ids,
                                self.token, self.result, progressed)
        elif kind == "release":
            _, ids, reason = event
            if reason != "lost":
                self.released += ids
            if reason not in self.said:
                self.said.add(reason)
                if reason == "stop":
                    log.info("delivery: stopping; claimed notices are released for the "
                             "next run")
                elif reason == "lease":
                    log.warning("delivery: this batch has run %.0f s, close to its %.0f s "
                                "lease; the notices left are released for the next run",
                                self.monotonic() - self.claimed_at,
                                lease_for(self.settings).total_seconds())
        elif kind == "error":
            self.errors.append(event[1])
        elif kind == "done":
            _, config, answered, connections = event
            self.result.connections += connections
            if answered and config.key not in self.troubled:
                self.recorder.flush()
                _server_ok(self.database, self.settings, config, self.now)

    def finish(self) -> None:
        self.recorder.flush()
        if self.released:
            with self.database.transaction() as cur:
                outbox.release(cur, self.settings.own_schema, self.released, self.token)
            self.result.released = len(self.released)


def release_dead_leases(database: db.Database, settings: Settings) -> int:
    """At daemon start: rows claimed by a deliverer that died (kill -9, power loss) are
    deliverable at once instead of after their lease (item 12). Only the active daemon,
    the holder of the advisory lock, may call this: it knows no other deliverer lives."""
    if settings.dry_run:
        return 0
    with database.transaction() as cur:
        freed = outbox.release_dead_leases(cur, settings.own_schema)
    if freed:
        log.warning("startup: %d notices were claimed by a deliverer that is gone (a crash "
                    "or kill); they are deliverable again now (the one in hand at the "
                    "crash may be sent a second time)", freed)
    return freed


def _server_trouble(database: db.Database, settings: Settings, config: smtp.SmtpConfig,
                    now: dt.datetime, why: str, ids: list[int], token: str,
                    result: DeliveryResult, progressed: bool) -> None:
    """The server as a whole failed: back off, give the rows back uncharged, say it once
    (when the trouble starts; its end is logged by _server_ok)."""
    with database.transaction() as cur:
        result.deferred += outbox.defer(cur, settings.own_schema, ids, token, why)
        failures, next_try, new = outbox.server_trouble(
            cur, settings.own_schema, config.key, now, why,
            lambda n: outage_wait(settings, n), progressed=progressed)
    if new:
        log.error("delivery paused: %s; %d notices wait, no attempt is charged to them; "
                  "next try at %s", why, len(ids), next_try.isoformat(timespec="seconds"))
    else:
        log.debug("delivery still paused (%d failures in a row): %s; next try at %s",
                  failures, why, next_try.isoformat(timespec="seconds"))


def _server_ok(database: db.Database, settings: Settings, config: smtp.SmtpConfig,
               now: dt.datetime) -> None:
    with database.transaction() as cur:
        ended = outbox.server_ok(cur, settings.own_schema, config.key)
    if ended:
        since, failures = ended
        log.warning("SMTP %s answers again after %s (%d failed tries); delivery resumes",
                    config.where, str(now - since).split(".")[0], failures)


def _log_outcome(row: outbox.Claimed, outcome: str, why: str) -> None:
    level = logging.INFO if outcome == outbox.SENT else logging.WARNING
    detail = f": {why}" if why else ""
    log.log(level, "%s client %s to %s subject %r: %s%s (key %s)", row.kind, row.client_id,
            ", ".join(row.recipients), row.subject, outcome, detail, row.dedupe_key)
