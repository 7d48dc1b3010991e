"""The outbox: enqueue (in the alert's transaction), claim (with a lease), mark outcomes.

Life of a row:

1. `enqueue` inserts it in the caller's transaction, ON CONFLICT (dedupe_key) DO NOTHING:
   "queued once" is a database property. A notice that cannot be sent at all (no valid
   recipient) is inserted as failed, with its email_log row, in the same transaction.
   It keeps the mail_sender id of its From (`sender_id`), so delivery knows the server.
2. `claim` takes due pending rows with FOR UPDATE SKIP LOCKED and sets a lease and a new
   claim token in a short transaction; SMTP then runs with no transaction open. Two
   deliverers never take the same row; a deliverer that dies mid-batch leaves leases
   that expire (or that the next active daemon frees at start: `release_dead_leases`),
   and the rows are claimed again.
3. `record` writes each outcome (sent / retry at a later time / failed) and clears the
   lease, only on rows still under the caller's claim token (a deliverer whose lease ran
   out and whose rows were claimed since marks nothing), with the provider's email_log
   row for a final outcome, in one statement.
4. `defer` gives rows back untouched but for the server's trouble in `last_error` (the
   server was unreachable, closing or rate-limiting: no attempt is charged), and
   `server_trouble` / `server_ok` keep the server-wide backoff (table smtp_backoff).
5. `expire` ends, by age only, a notice that could not be delivered in time.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import execute_values

from .contract import EMAIL_TYPE
from .db import Cursor
from .mail.message import Mail
from .notice import Notice

PENDING, SENT, FAILED = "pending", "sent", "failed"


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.outbox").format(sql.Identifier(schema))


def _backoff_table(schema: str) -> sql.Composed:
    return sql.SQL("{}.smtp_backoff").format(sql.Identifier(schema))


@dataclass(frozen=True)
class LogEntry:
    """One provider email_log row (a notice's final outcome)."""

    send_time: dt.datetime
    client_id: int | None
    addresses: Sequence[str]
    email_type: int
    alert_rule: str
    status: int           # 0 sent, 1 failed
    error: str
    reply: str
    subject: str
    content: str


def enqueue(cur: Cursor, schema: str, notice: Notice, mail: Mail) -> bool:
    """Insert in the caller's transaction; False (no-op) when the dedupe key exists.

    A mail with an `error` (no valid recipient or sender) is stored as failed and its
    email_log failure row written, so the operator sees it; it is never sent.
    """
    failed = bool(mail.error)
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (dedupe_key, kind, client_id, resource_id, email_type, alert_rule,"
            " from_addr, to_addrs, cc_addrs, rejected_addrs, subject, text_body, html_body,"
            " message, message_id, status, last_error, next_attempt_at, created_at,"
            " finished_at, sender_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::text[], %s::text[], %s::text[], %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
        ).format(_table(schema)),
        (notice.dedupe_key, notice.kind, notice.client_id, notice.resource_id,
         EMAIL_TYPE[notice.kind], notice.alert_rule, mail.from_addr, mail.to, mail.cc,
         list(mail.rejected), mail.subject, mail.text, mail.html, mail.raw, mail.message_id,
         FAILED if failed else PENDING, mail.error or None, notice.decided_at,
         notice.decided_at, notice.decided_at if failed else None, mail.sender_id or None),
    )
    new = cur.fetchone() is not None
    if new and failed:
        log_outcomes(cur, [LogEntry(
            notice.decided_at, notice.client_id,
            mail.recipients or list(mail.rejected) or [notice.recipients or ""],
            EMAIL_TYPE[notice.kind], notice.alert_rule, 1, mail.error, "", mail.subject,
            mail.html)])
    return new


def enqueue_many(cur: Cursor, schema: str, items: Sequence[tuple[Notice, Mail]]) -> set[str]:
    """`enqueue` for a batch in one statement (one round trip instead of one per notice):
    the dedupe keys newly inserted; the failed ones get their email_log rows, as there."""
    if not items:
        return set()
    values = [
        (notice.dedupe_key, notice.kind, notice.client_id, notice.resource_id,
         EMAIL_TYPE[notice.kind], notice.alert_rule, mail.from_addr, mail.to, mail.cc,
         list(mail.rejected), mail.subject, mail.text, mail.html, *_message_value(mail.raw),
         mail.message_id,
         FAILED if mail.error else PENDING, mail.error or None, notice.decided_at,
         notice.decided_at, notice.decided_at if mail.error else None,
         mail.sender_id or None)
        for notice, mail in items]
    rows = execute_values(
        cur,
        sql.SQL(
            "INSERT INTO {} (dedupe_key, kind, client_id, resource_id, email_type, alert_rule,"
            " from_addr, to_addrs, cc_addrs, rejected_addrs, subject, text_body, html_body,"
            " message, message_id, status, last_error, next_attempt_at, created_at,"
            " finished_at, sender_id) VALUES %s "
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING dedupe_key"
        ).format(_table(schema)).as_string(cur),
        values,
        template="(%s, %s, %s, %s, %s, %s, %s, %s::text[], %s::text[], %s::text[], %s, %s,"
                 " %s, coalesce(convert_to(%s, 'UTF8'), %s::bytea), %s, %s, %s,"
                 " %s::timestamptz, %s::timestamptz, %s::timestamptz, %s)",
        page_size=len(values), fetch=True)
    new = {r["dedupe_key"] for r in rows}
    log_outcomes(cur, [LogEntry(
        notice.decided_at, notice.client_id,
        mail.recipients or list(mail.rejected) or [notice.recipients or ""],
        EMAIL_TYPE[notice.kind], notice.alert_rule, 1, mail.error, "", mail.subject,
        mail.html) for notice, mail in items if mail.error and notice.dedupe_key in new])
    return new


def _message_value(raw: bytes) -> tuple[str | None, bytes | None]:
    """The message for enqueue_many's `coalesce(convert_to(text, 'UTF8'), bytea)`: an ASCII
    message (nearly every one: headers encoded, parts in base64) travels as text, which
    the server stores as the same bytes and reads faster than bytea's hex form (twice the
    size); any other as bytea."""
    return (raw.decode("ascii"), None) if raw.isascii() else (None, raw)


def already_queued(cur: Cursor, schema: str, keys: list[str]) -> set[str]:
    """Which of `keys` are in the outbox already (one query for a whole sweep)."""
    if not keys:
        return set()
    cur.execute(
        sql.SQL("SELECT dedupe_key FROM {} WHERE dedupe_key = ANY(%s)").format(_table(schema)),
        (keys,),
    )
    return {row["dedupe_key"] for row in cur.fetchall()}


@dataclass(frozen=True)
class Claimed:
    """A row taken for delivery, with what is needed to send it and record the result."""

    id: int
    dedupe_key: str
    kind: str
    client_id: int | None
    email_type: int
    alert_rule: str
    from_addr: str
    to_addrs: list[str]
    cc_addrs: list[str]
    done_addrs: list[str]
    failed_addrs: list[str]
    subject: str
    html_body: str
    message: bytes
    attempts: int
    token: str = ""  # the claim's token: marks and releases apply only while it holds
    sender_id: str | None = None  # mail_sender id of the From (None: the default sender)

    @property
    def recipients(self) -> list[str]:
        return self.to_addrs + self.cc_addrs

    @property
    def todo(self) -> list[str]:
        """Recipients still to send to: neither accepted already nor refused for good."""
        skip = {a.lower() for a in self.done_addrs + self.failed_addrs}
        return [a for a in self.recipients if a.lower() not in skip]


def claim(cur: Cursor, schema: str, *, now: dt.datetime, limit: int,
          lease: dt.timedelta, default_server: bool = True,
          own_senders: Sequence[str] = (), all_own_senders: Sequence[str] = ()
          ) -> list[Claimed]:
    """Take up to `limit` due rows (oldest first), leased until now + lease, under a new
    claim token "<backend pid>:<uuid>": the pid says whose session holds the claim, so a
    new active daemon frees only the claims of deliverers whose session is gone
    (release_dead_leases).

    Senders with their own SMTP server (`all_own_senders`, mail_sender ids) are claimed
    only when listed in `own_senders`; every other row goes through the default server
    and is claimed only when `default_server` (a server backed off is skipped)."""
    token = uuid.uuid4().hex
    # The claim commits synchronously even where the server's default is not: that
    # flushes every sweep commit it saw (db.unit_of_work commits without waiting), so no
    # notice is sent that a crash of the database server could still take back.
    cur.execute("SET LOCAL synchronous_commit TO on")
    cur.execute(
        sql.SQL(
            "WITH due AS ("
            " SELECT id FROM {t} WHERE status = 'pending' AND next_attempt_at <= %(now)s"
            " AND (lease_until IS NULL OR lease_until <= %(now)s)"
            " AND (coalesce(sender_id, '') = ANY(%(own_ok)s::text[])"
            "  OR (%(default_ok)s AND coalesce(sender_id, '') <> ALL(%(own_all)s::text[])))"
            " ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
            "UPDATE {t} AS o SET lease_until = %(until)s,"
            " claim_token = pg_backend_pid()::text || ':' || %(token)s"
            " FROM due WHERE o.id = due.id "
            "RETURNING o.claim_token,"
            " o.id, o.dedupe_key, o.kind, o.client_id, o.email_type, o.alert_rule,"
            " o.from_addr, o.to_addrs, o.cc_addrs, o.done_addrs, o.failed_addrs, o.subject,"
            " o.html_body, o.message, o.attempts, o.next_attempt_at, o.sender_id"
        ).format(t=_table(schema)),
        {"now": now, "limit": limit, "until": now + lease, "token": token,
         "own_ok": list(own_senders), "own_all": list(all_own_senders),
         "default_ok": default_server},
    )
    rows = sorted(cur.fetchall(), key=lambda r: (r["next_attempt_at"], r["id"]))
    if rows:
        token = rows[0]["claim_token"]  # "<backend pid>:<uuid>", the same for every row
    return [Claimed(r["id"], r["dedupe_key"], r["kind"], r["client_id"], r["email_type"],
                    r["alert_rule"], r["from_addr"], list(r["to_addrs"]), list(r["cc_addrs"]),
                    list(r["done_addrs"]), list(r["failed_addrs"]), r["subject"],
                    r["html_body"], bytes(r["message"]), r["attempts"], token, r["sender_id"])
            for r in rows]


def next_due(cur: Cursor, schema: str, *, now: dt.datetime,
             max_age: dt.timedelta) -> dt.datetime | None:
    """When delivery next has something to do: `now` when a pending notice is due (its
    next attempt came and no live lease holds it) or old enough to expire; else the
    earliest moment one will be (a retry, a lease running out, an expiry); None when
    nothing is pending. One statement; while anything is due it stops at the first row
    (the outbox_due index), so a delivery run with nothing to do asks only this."""
    cur.execute(sql.SQL(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM {t} WHERE status = 'pending'"
        "   AND (lease_until IS NULL OR lease_until <= %(now)s)"
        "   AND (next_attempt_at <= %(now)s OR created_at <= %(old)s))"
        " THEN %(now)s ELSE (SELECT min(least(greatest(next_attempt_at,"
        "   coalesce(lease_until, next_attempt_at)), created_at + %(age)s))"
        "   FROM {t} WHERE status = 'pending') END AS due").format(t=_table(schema)),
        {"now": now, "old": now - max_age, "age": max_age})
    return cur.fetchone()["due"]


@dataclass(frozen=True)
class Mark:
    """The new state of one claimed row after an attempt."""

    id: int
    status: str
    done_addrs: Sequence[str]
    failed_addrs: Sequence[str]
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    attempted_at: dt.datetime


_MARK_ROW = ("(%s::bigint, %s::text, %s::text[], %s::text[], %s::int, %s::timestamptz,"
             " %s::text, %s::timestamptz, %s::timestamptz, %s::text)")
_LOG_ROW = ("(%s::bigint, %s::timestamptz, %s::int, %s::text, %s::int, %s::text, %s::int,"
            " %s::text, %s::text, %s::text, %s::text)")


def record(cur: Cursor, schema: str, marks: Sequence[Mark],
           entries: Sequence[tuple[int, LogEntry]], token: str) -> set[int]:
    """`mark` and `log_outcomes` in one query string for an autocommit cursor
    (db.Database.single_statement): one round trip and one commit with
    synchronous_commit off. An email_log row is written only for a row actually marked
    (still under claim `token`). Returns the ids marked. One outcome (the usual case)
    goes through a statement prepared once per connection (_record_one)."""
    if not marks:
        return set()
    if len(marks) == 1:  # one message's outcome: the usual case, a prepared statement
        logged = dict(entries).get(marks[0].id)
        found = _record_one(cur, schema, marks[0], logged, token)
        if found is not None:
            return found
    mark_rows = b",".join(cur.mogrify(_MARK_ROW, (
        m.id, m.status, list(m.done_addrs), list(m.failed_addrs), m.attempts,
        m.next_attempt_at, m.last_error, m.attempted_at,
        None if m.status == PENDING else m.attempted_at, token)) for m in marks)
    query = sql.SQL(
        "SET LOCAL synchronous_commit TO off; "
        "WITH v(id, status, done, failed, attempts, next_at, err, tried, fin, token) AS"
        " (VALUES {rows}), "
        "m AS (UPDATE {t} AS o SET status = v.status, done_addrs = v.done,"
        " failed_addrs = v.failed, attempts = v.attempts, next_attempt_at = v.next_at,"
        " last_error = v.err, last_attempt_at = v.tried, finished_at = v.fin,"
        " lease_until = NULL, claim_token = NULL"
        " FROM v WHERE o.id = v.id AND o.claim_token = v.token AND o.status = 'pending'"
        " RETURNING o.id){logs} SELECT id FROM m")
    logs = sql.SQL("")
    if entries:
        log_rows = b",".join(cur.mogrify(_LOG_ROW, (id_, *_log_values(e)))
                             for id_, e in entries)
        logs = sql.SQL(
            ", l AS (INSERT INTO email_log (send_time, client_id, email_addresses, type,"
            " email_res, status, error, subject, content, alert_rule)"
            " SELECT e.send_time, e.client_id, e.addresses, e.type, e.reply, e.status,"
            " e.error, e.subject, e.content, e.rule FROM (VALUES {rows}) AS e(id, send_time,"
            " client_id, addresses, type, reply, status, error, subject, content, rule)"
            " JOIN m ON m.id = e.id)").format(rows=sql.SQL(log_rows.decode()))
    cur.execute(query.format(rows=sql.SQL(mark_rows.decode()), t=_table(schema), logs=logs))
    return {r["id"] for r in cur.fetchall()}


# record() for one outcome: prepared once per connection, as the server would otherwise
# plan it anew for every message (bench_usage.py: planning was half its server time).
_ONE_TYPES = ("bigint, text, text[], text[], int, timestamptz, text, timestamptz,"
              " timestamptz, text, boolean, timestamptz, int, text, int, text, int, text,"
              " text, text, text")
_ONE_BODY = (
    "WITH m AS (UPDATE {t} SET status = $2, done_addrs = $3, failed_addrs = $4,"
    " attempts = $5, next_attempt_at = $6, last_error = $7, last_attempt_at = $8,"
    " finished_at = $9, lease_until = NULL, claim_token = NULL"
    " WHERE id = $1 AND claim_token = $10 AND status = 'pending' RETURNING id), "
    "l AS (INSERT INTO email_log (send_time, client_id, email_addresses, type, email_res,"
    " status, error, subject, content, alert_rule)"
    " SELECT $12, $13, $14, $15, $16, $17, $18, $19, $20, $21 FROM m WHERE $11) "
    "SELECT id FROM m")
# connections (object id, backend pid, schema) on which it is prepared
_prepared: set[tuple[int, int, str]] = set()


def _record_one(cur: Cursor, schema: str, m: Mark, entry: LogEntry | None,
                token: str) -> set[int] | None:
    """The prepared form of record() for one outcome; None when the server session
    cannot keep a prepared statement (a pooler handing each transaction another
    session, or one that dropped it): the caller then runs the general statement."""
    name = sql.Identifier(f"dnl_ad_record_one:{schema}")
    key = (id(cur.connection), cur.connection.get_backend_pid(), schema)
    params = [m.id, m.status, list(m.done_addrs), list(m.failed_addrs), m.attempts,
              m.next_attempt_at, m.last_error, m.attempted_at,
              None if m.status == PENDING else m.attempted_at, token, entry is not None,
              *(_log_values(entry) if entry is not None else [None] * 10)]
    try:
        if key not in _prepared:
            cur.execute(sql.SQL("PREPARE {} (" + _ONE_TYPES + ") AS ").format(name)
                        + sql.SQL(_ONE_BODY).format(t=_table(schema)))
            _prepared.add(key)
        cur.execute(sql.SQL("SET LOCAL synchronous_commit TO off; EXECUTE {} ({})").format(
            name, sql.SQL(", ").join(sql.Placeholder() * len(params))), params)
    except (psycopg2.errors.InvalidSqlStatementName,
            psycopg2.errors.DuplicatePreparedStatement):
        _prepared.discard(key)
        return None
    return {r["id"] for r in cur.fetchall()}


def release(cur: Cursor, schema: str, ids: Sequence[int], token: str | None = None) -> None:
    """Give claimed rows back untouched (shutdown): the next run takes them at once.

    With `token` (the claim's), only rows still under that very claim are freed: a row
    another deliverer has claimed since keeps its new lease.
    """
    if not ids:
        return
    if token is None:
        cur.execute(sql.SQL("UPDATE {} SET lease_until = NULL, claim_token = NULL"
                            " WHERE id = ANY(%s)").format(_table(schema)), (list(ids),))
    else:
        cur.execute(sql.SQL("UPDATE {} SET lease_until = NULL, claim_token = NULL"
                            " WHERE id = ANY(%s) AND claim_token = %s").format(_table(schema)),
                    (list(ids), token))


def release_dead_leases(cur: Cursor, schema: str) -> int:
    """Free at once every claimed-but-unfinished row whose deliverer's database session is
    gone (kill -9, a crash, a terminated backend): due again now instead of after the
    lease. A deliverer that is only paused (SIGSTOP, a frozen VM) keeps its session, so
    its claims stay: resumed, it finishes the message in hand and hands the rest back,
    and nothing is sent twice. Only the active daemon may call this. Returns how many."""
    cur.execute(sql.SQL(
        "UPDATE {} SET lease_until = NULL, claim_token = NULL"
        " WHERE status = 'pending' AND lease_until IS NOT NULL"
        " AND (coalesce(claim_token, '') !~ '^[0-9]+:'"
        "      OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a"
        "                     WHERE a.pid = split_part(claim_token, ':', 1)::int))").format(
        _table(schema)))
    return cur.rowcount


def _log_values(e: LogEntry) -> tuple:
    """One email_log row's values, in log_outcomes' column order (field sizes as the UI's)."""
    return (e.send_time, e.client_id, ", ".join(e.addresses)[:500], e.email_type,
            e.reply or None, e.status, e.error or None, e.subject[:100], e.content,
            (e.alert_rule or "")[:500])


def log_outcomes(cur: Cursor, entries: Iterable[LogEntry]) -> None:
    """The provider's email_log rows, one per final outcome (field sizes as the UI's)."""
    values = [_log_values(e) for e in entries]
    if values:
        execute_values(
            cur,
            "INSERT INTO email_log (send_time, client_id, email_addresses, type, email_res,"
            " status, error, subject, content, alert_rule) VALUES %s",
            values,
        )


def defer(cur: Cursor, schema: str, ids: Sequence[int], token: str, why: str) -> int:
    """Give claimed rows back without charging an attempt (server-wide trouble): they
    stay due, their lease is cleared and `why` is kept as last_error. Only rows still
    under this claim's lease are touched. Returns how many."""
    if not ids:
        return 0
    cur.execute(sql.SQL("UPDATE {} SET lease_until = NULL, claim_token = NULL,"
                        " last_error = %s WHERE id = ANY(%s) AND claim_token = %s"
                        " AND status = 'pending'").format(_table(schema)),
                (why, list(ids), token))
    return cur.rowcount


def backed_off(cur: Cursor, schema: str, now: dt.datetime) -> dict[str, dt.datetime]:
    """Servers in trouble whose next try is still ahead: server key -> next_try_at."""
    cur.execute(sql.SQL("SELECT server, next_try_at FROM {} WHERE next_try_at > %s").format(
        _backoff_table(schema)), (now,))
    return {r["server"]: r["next_try_at"] for r in cur.fetchall()}


def server_trouble(cur: Cursor, schema: str, server: str, now: dt.datetime, why: str,
                   wait: Callable[[int], dt.timedelta], *, progressed: bool = False
                   ) -> tuple[int, dt.datetime, bool]:
    """Count one more server-wide failure; the next try waits `wait(failures)`. A session
    that delivered something before the trouble (a rate limit after N messages) starts
    the count again at 1. Returns (failures in a row, next try, trouble is new)."""
    cur.execute(sql.SQL("SELECT failures FROM {} WHERE server = %s FOR UPDATE").format(
        _backoff_table(schema)), (server,))
    row = cur.fetchone()
    failures = 1 if progressed or not row else row["failures"] + 1
    next_try = now + wait(failures)
    cur.execute(sql.SQL(
        "INSERT INTO {} (server, failures, since, next_try_at, last_error)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (server) DO UPDATE SET"
        " failures = EXCLUDED.failures, next_try_at = EXCLUDED.next_try_at,"
        " last_error = EXCLUDED.last_error").format(_backoff_table(schema)),
        (server, failures, now, next_try, why))
    return failures, next_try, row is None


def server_ok(cur: Cursor, schema: str, server: str) -> tuple[dt.datetime, int] | None:
    """The server answered: end its trouble. Returns (since, failures) when it had some."""
    cur.execute(sql.SQL("DELETE FROM {} WHERE server = %s RETURNING since, failures").format(
        _backoff_table(schema)), (server,))
    row = cur.fetchone()
    return (row["since"], row["failures"]) if row else None


def expire(cur: Cursor, schema: str, now: dt.datetime, max_age: dt.timedelta
           ) -> list[tuple[str, LogEntry]]:
    """End every pending, unclaimed notice queued more than `max_age` before `now`:
    status failed, with its final email_log row. Returns (dedupe key, log entry) each."""
    cur.execute(sql.SQL(
        "UPDATE {} SET status = 'failed', finished_at = %(now)s, lease_until = NULL,"
        " claim_token = NULL,"
        " last_error = 'expired: not delivered within ' || %(hours)s || ' h'"
        " || coalesce(' (last error: ' || last_error || ')', '')"
        " WHERE status = 'pending' AND created_at <= %(limit)s"
        " AND (lease_until IS NULL OR lease_until <= %(now)s)"
        " RETURNING dedupe_key, client_id, to_addrs, cc_addrs, email_type, alert_rule,"
        " subject, html_body, last_error").format(_table(schema)),
        {"now": now, "limit": now - max_age,
         "hours": f"{max_age.total_seconds() / 3600:g}"})
    found = [(r["dedupe_key"], LogEntry(now, r["client_id"],
                                        list(r["to_addrs"]) + list(r["cc_addrs"]),
                                        r["email_type"], r["alert_rule"], 1, r["last_error"],
                                        "", r["subject"], r["html_body"]))
             for r in cur.fetchall()]
    log_outcomes(cur, [entry for _, entry in found])
    return found


def purge(cur: Cursor, schema: str, before: dt.datetime, limit: int) -> int:
    """Delete up to `limit` finished notices (sent or failed) that finished before
    `before`, and the quiet-report records decided before it; how many outbox rows went.

    Pending rows are never touched. The caller keeps `before` older than CATCHUP_HOURS:
    a dedupe key that a sweep could still produce must stay (OUTBOX_RETENTION_DAYS is
    validated against it).
    """
    cur.execute(sql.SQL(
        "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE status <> %s "
        "AND finished_at < %s ORDER BY id LIMIT %s)").format(t=_table(schema)),
        (PENDING, before, limit))
    removed = cur.rowcount
    cur.execute(sql.SQL(
        "DELETE FROM {t} WHERE dedupe_key IN (SELECT dedupe_key FROM {t} "
        "WHERE decided_at < %s LIMIT %s)").format(
            t=sql.SQL("{}.report_quiet").format(sql.Identifier(schema))),
        (before, limit))
    return removed
