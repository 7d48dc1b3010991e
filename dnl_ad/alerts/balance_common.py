"""Episode machinery shared by the low-balance and zero-balance alerts.

Both alerts follow one rule (PROVIDER_DB.md, alerts 1 and 2): while a client's balance
condition holds an *episode* is open; its first notice goes out at once, then at most
one per client-local day (at or after local 00:00), up to `duplicate_days` notices when
that is set; when the condition stops holding the episode closes and a later drop opens
a new one. The two alerts differ only in their threshold, their notice flag and the
provider columns they keep for the UI, which a `BalanceRule` describes.

Episode state lives in dnl_ad's own table `balance_episode` (own_003): the episode start
names the dedupe keys (`<kind>:<client>:<start>:<n>`), and `next_due_at`, the next local
midnight computed in Python when a notice is queued, lets the one sweep query skip every
client already told today without zone arithmetic in SQL. Clients that are fine and
have no open episode never leave the database.

A sweep:
1. runs ONE query returning only rows that need something: a notice (`open`/`repeat`),
   an episode to close (`close`), or a misconfigured client to report (`bad`);
2. per notice, in bounded batches (dnl_ad.batches; client rows locked SKIP LOCKED, so a
   row the UI holds is skipped, not waited on): claims the episode step (insert, or
   update guarded by the notice count, so two daemons cannot both take it), queues the
   notice through the pipeline, writes the provider columns; an error affects only that
   client;
3. closes the recovered episodes the same way and resets the provider columns.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from .. import batches, clock, db, migrations, pipeline
from ..config import Settings
from ..mail.message import split_addresses, valid_address
from ..notice import Notice
from . import SweepResult, balance_restored, recipients

log = logging.getLogger(__name__)

EPISODE_TABLE = "balance_episode"


@dataclass(frozen=True)
class BalanceRule:
    """What distinguishes one balance alert from the other.

    enabled        SQL boolean over `cl` (client): the alert's notice flag
    threshold      SQL numeric over `cl` and `cfg` (client_low_balance_config): the balance
                   at or below which the condition holds; NULL when it cannot be known
    provider_open  SQL boolean: the provider columns show an open episode (reset on close)
    provider_last  SQL timestamptz: when the provider columns say the last notice went
                   (the original daemon's state, adopted at take-over)
    provider_count SQL integer: notices (days) the provider columns say the episode had
    threshold_problem  row -> text for the log when `threshold` came back NULL
    record         (cur, row, now, n, days) -> None: provider writes when notice n is queued
    reset          (cur, client_ids) -> rows written: provider writes when episodes close
    audience       row -> recipients.PARTNER / OWNER / BOTH
    next_due       (row, instant, zone) -> the first instant after `instant` at which the
                   next notice of the episode may go
    superseded_by  SQL boolean: another alert's condition that holds now and says more
                   (zero balance supersedes low balance): no notice of this one meanwhile,
                   the episode stays open
    """

    kind: str
    template: str
    title: str
    enabled: sql.Composable
    threshold: sql.Composable
    provider_open: sql.Composable
    provider_last: sql.Composable
    provider_count: sql.Composable
    threshold_problem: Callable[[Mapping[str, Any]], str]
    record: Callable[[db.Cursor, Mapping[str, Any], dt.datetime, int, int], None]
    reset: Callable[[db.Cursor, list[int]], int]
    audience: Callable[[Mapping[str, Any]], str]
    next_due: Callable[[Mapping[str, Any], dt.datetime, dt.tzinfo], dt.datetime]
    superseded_by: sql.Composable = field(default_factory=lambda: sql.SQL("false"))

    def sweep(self, database: db.Database, now: dt.datetime, settings: Settings, *,
              resolver: clock.ZoneResolver | None = None,
              complaints: Complaints | None = None) -> SweepResult:
        """Queue every due notice of this alert and close every recovered episode."""
        return sweep(self, database, now, settings, resolver=resolver, complaints=complaints)


class Complaints:
    """Logs a bad-data warning once per (database, alert, client, problem).

    The sweep runs every minute; a misconfigured client must be reported, not repeated
    for months. A client that is served again is forgotten, so a later fault is new.
    """

    def __init__(self) -> None:
        # (scope, kind, client) -> problems said: forgetting a client is one lookup
        self._seen: dict[tuple[str, str, int], set[str]] = {}
        # (scope, kind) -> {client: digest of its `bad` row}: rows already reported, which
        # the sweep query then leaves out while they stay exactly the same
        self._bad: dict[tuple[str, str], dict[int, str]] = {}
        self._lock = threading.Lock()

    def reported_bad(self, scope: str, kind: str) -> dict[int, str]:
        """client -> digest of the `bad` rows reported (a copy, for the sweep query)."""
        with self._lock:
            return dict(self._bad.get((scope, kind), {}))

    def remember_bad(self, scope: str, kind: str, digests: Mapping[int, str]) -> None:
        with self._lock:
            self._bad.setdefault((scope, kind), {}).update(digests)

    def warn(self, scope: str, kind: str, client_id: int, problem: str, message: str,
             *args: Any) -> bool:
        with self._lock:
            said = self._seen.setdefault((scope, kind, client_id), set())
            if problem in said:
                return False
            said.add(problem)
        log.warning(message, *args)
        return True

    def forget_problem(self, scope: str, kind: str, client_id: int, problem: str) -> None:
        """Forget one problem of a client (it is served again): a later one is new."""
        with self._lock:
            said = self._seen.get((scope, kind, client_id))
            if said is not None and problem in said:
                said.discard(problem)
                log.info("%s: client %s: %s is resolved", kind, client_id, problem)

    def forget(self, scope: str, kind: str, client_id: int) -> None:
        with self._lock:
            self._seen.pop((scope, kind, client_id), None)
            self._bad.get((scope, kind), {}).pop(client_id, None)


COMPLAINTS = Complaints()


def split_recipients(text: str | None) -> tuple[list[str], list[str]]:
    """(valid, invalid) addresses of a billing_email value, by the mail layer's rules."""
    valid: list[str] = []
    invalid: list[str] = []
    for part in split_addresses(text):
        addr = valid_address(part)
        if addr:
            valid.append(addr)
        else:
            invalid.append(part)
    return valid, invalid


def sweep_query(rule: BalanceRule, schema: str) -> sql.Composed:
    """The one query: every client for which something must happen, and nothing else.

    Actions: `open` (first notice), `repeat` (next notice due), `adopt` (the original
    daemon's open episode, taken over without a notice), `close`, `bad` (misconfigured).
    """
    return sql.SQL("""
WITH sp AS (
    SELECT s.sys_timezone, s.finance_email FROM system_parameter s ORDER BY s.sys_id LIMIT 1
), c AS (
    SELECT cl.client_id, cl.name, cl.company, cl.mode,
           coalesce(cl.allowed_credit, 0)::numeric AS allowed_credit, cl.billing_email,
           cl.email, cl.auto_send_zone, cl.daily_balance_send_time_zone,
           pt.name AS payment_term, cur.code AS currency,
           (cfg.client_id IS NOT NULL) AS has_config, cfg.value_type, cfg.send_to,
           cfg.send_time_type, cfg.daily_send_time,
           (b.client_id IS NOT NULL) AS has_balance_row,
           b.balance::numeric AS balance,
           (b.balance IS NOT NULL AND b.balance <> 'NaN'::numeric
            AND abs(b.balance) < 1e15) AS balance_usable,
           ({threshold})::numeric AS threshold,
           ({superseded}) AS superseded,
           NULLIF(cfg.duplicate_days, 0) AS duplicate_days,
           (cl.status AND {enabled} AND NOT coalesce(cl.unlimited_credit, false)) AS eligible,
           cl.status, {enabled} AS enabled, coalesce(cl.unlimited_credit, false)
               AS unlimited_credit,
           ({provider_open}) AS provider_open, ({provider_last}) AS provider_last,
           ({provider_count}) AS provider_count,
           e.started_at, e.notices, e.days, e.last_day, e.next_due_at,
           sp.sys_timezone, sp.finance_email
    FROM client cl
    LEFT JOIN sp ON true
    LEFT JOIN c4_client_balance b ON b.client_id = cl.client_id::text
    LEFT JOIN client_low_balance_config cfg ON cfg.client_id = cl.client_id
    LEFT JOIN payment_term pt ON pt.payment_term_id = cl.payment_term_id
    LEFT JOIN currency cur ON cur.currency_id = cl.currency_id
    LEFT JOIN {episode} e ON e.kind = %(kind)s AND e.client_id = cl.client_id
    WHERE (cl.status AND {enabled} AND NOT coalesce(cl.unlimited_credit, false))
       OR e.client_id IS NOT NULL
       OR ({provider_open})
), d AS (
    SELECT c.*,
           CASE
             WHEN eligible AND (NOT balance_usable OR threshold IS NULL) THEN 'bad'
             WHEN eligible AND balance <= threshold AND superseded THEN NULL
             WHEN eligible AND balance <= threshold THEN
               CASE
                 WHEN started_at IS NULL AND provider_open AND provider_last IS NOT NULL
                     THEN 'adopt'
                 WHEN started_at IS NULL THEN 'open'
                 WHEN next_due_at <= %(now)s
                      AND (duplicate_days IS NULL OR days < duplicate_days
                           OR last_day = %(today)s) THEN 'repeat'
               END
             WHEN started_at IS NOT NULL OR provider_open THEN 'close'
           END AS action
    FROM c
)
SELECT d.*, pay.amount AS paid_amount, pay.payment_time AS paid_at
FROM d
-- the latest payment received since the episode began, for a closing episode only (the
-- "balance restored" notice: dnl_ad.alerts.balance_restored)
LEFT JOIN LATERAL (
    SELECT p.amount::numeric AS amount, p.payment_time FROM client_payment p
    WHERE d.action = 'close' AND d.started_at IS NOT NULL AND p.client_id = d.client_id
      AND p.payment_time >= d.started_at AND p.payment_time <= %(now)s
      AND p.result AND p.approved IS NOT FALSE AND p.amount > 0
      AND p.payment_type IN ({payment_types})
    ORDER BY p.payment_time DESC LIMIT 1
) pay ON true
WHERE d.action IS NOT NULL ORDER BY d.client_id
""").format(threshold=rule.threshold, enabled=rule.enabled, provider_open=rule.provider_open,
            provider_last=rule.provider_last, provider_count=rule.provider_count,
            superseded=rule.superseded_by,
            payment_types=sql.SQL(", ").join(map(sql.Literal, balance_restored.PAYMENT_TYPES)),
            episode=migrations.own(schema, EPISODE_TABLE))


def new_problems_query(rule: BalanceRule, schema: str) -> sql.Composed:
    """`sweep_query`, but a `bad` row already reported and unchanged since (its digest,
    md5 of the whole row, among `%(bad_ids)s`/`%(bad_digests)s`) is only counted: a
    switch with 2,000 misconfigured clients does not ship 2,000 rows to Python every
    sweep to say nothing new. Each row carries its `digest` and `known_bad`, the number
    of rows left out; when every row is left out, one row of NULLs carries the count.
    """
    return sql.SQL("""
WITH s AS ({query}),
m AS (SELECT s.*, md5(s::text) AS digest FROM s),
k AS (SELECT * FROM unnest(%(bad_ids)s::int[], %(bad_digests)s::text[]) AS k(id, digest)),
r AS (SELECT m.* FROM m LEFT JOIN k ON m.action = 'bad' AND k.id = m.client_id
                                     AND k.digest = m.digest
      WHERE k.id IS NULL),
n AS (SELECT (SELECT count(*) FROM m) - (SELECT count(*) FROM r) AS known_bad)
SELECT r.*, n.known_bad FROM n LEFT JOIN r ON true ORDER BY r.client_id
""").format(query=sweep_query(rule, schema))


def new_problems_params(rule: BalanceRule, now: dt.datetime, reported: Mapping[int, str]
                        ) -> dict[str, Any]:
    """The bound parameters of `new_problems_query` at `now`."""
    return {"kind": rule.kind, "now": now, "today": now.astimezone(dt.UTC).date(),
            "bad_ids": list(reported), "bad_digests": list(reported.values())}


def episode_key(kind: str, client_id: int, started_at: dt.datetime, n: int) -> str:
    """`<kind>:<client>:<episode start, UTC, compact>:<n>` (DESIGN.md dedupe keys)."""
    start = started_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{kind}:{client_id}:{start}:{n}"


def context(row: Mapping[str, Any], now: dt.datetime, zone: dt.tzinfo) -> dict[str, Any]:
    """Every tag of the low/zero-balance templates. Money is Decimal (the renderer formats
    it: two decimals, negatives in parentheses); times are text in the client's zone."""
    local = clock.require_aware(now).astimezone(zone)
    allowed: Decimal = row["allowed_credit"]
    balance: Decimal = row["balance"]
    limit = -allowed if allowed else Decimal(0)
    day = local.strftime("%Y-%m-%d")
    return {
        "company_name": row["company"] or row["name"] or "",
        "client_name": row["name"] or "",
        "current_date": day,
        "date": day,
        "time": local.strftime("%H:%M:%S"),
        "now": local.strftime("%Y-%m-%d %H:%M:%S"),
        "balance": balance,
        "notify_balance": row["threshold"],
        "credit_limit": limit,
        "allow_credit": limit,
        "remaining_credit": balance - allowed,
        "payment_terms": row["payment_term"] or "",
        "payment_term": row["payment_term"] or "",
        "currency": row.get("currency") or "",
    }


Step = tuple[dt.datetime, int, int]  # an episode step: (start, notice number, days)


def _claim_many(cur: db.Cursor, schema: str, kind: str, rows: Sequence[Mapping[str, Any]],
                now: dt.datetime, next_due: Mapping[int, dt.datetime]
                ) -> dict[int, Step | None]:
    """Take the next step of each client's episode, for a whole batch in at most two
    statements (episodes opening, episodes repeating): client -> (episode start, notice
    number, days with a notice), or None when another sweep (a second daemon) took that
    step first. Runs in the batch's transaction: a failed batch takes its steps back."""
    table = migrations.own(schema, EPISODE_TABLE)
    today = now.astimezone(dt.UTC).date()
    steps: dict[int, Step | None] = {r["client_id"]: None for r in rows}
    opening = [r["client_id"] for r in rows if r["action"] == "open"]
    repeating = [r for r in rows if r["action"] != "open"]
    if opening:
        cur.execute(sql.SQL(
            "INSERT INTO {} (kind, client_id, started_at, notices, days, last_day, "
            "last_sent_at, next_due_at) SELECT %s, u.c, %s, 1, 1, %s, %s, u.due "
            "FROM unnest(%s::int[], %s::timestamptz[]) AS u(c, due) "
            "ON CONFLICT (kind, client_id) DO NOTHING "
            "RETURNING client_id, started_at, notices, days").format(table),
            (kind, now, today, now, opening, [next_due[c] for c in opening]))
        steps.update({g["client_id"]: (g["started_at"], g["notices"], g["days"])
                      for g in cur.fetchall()})
    if repeating:
        cur.execute(sql.SQL(
            "UPDATE {} AS e SET notices = e.notices + 1, "
            "days = e.days + CASE WHEN e.last_day IS DISTINCT FROM %s THEN 1 ELSE 0 END, "
            "last_day = %s, last_sent_at = %s, next_due_at = u.due "
            "FROM unnest(%s::int[], %s::timestamptz[], %s::int[], %s::timestamptz[]) "
            "AS u(c, started, n, due) WHERE e.kind = %s AND e.client_id = u.c "
            "AND e.started_at = u.started AND e.notices = u.n "
            "RETURNING e.client_id, e.started_at, e.notices, e.days").format(table),
            (today, today, now, [r["client_id"] for r in repeating],
             [r["started_at"] for r in repeating], [r["notices"] for r in repeating],
             [next_due[r["client_id"]] for r in repeating], kind))
        steps.update({g["client_id"]: (g["started_at"], g["notices"], g["days"])
                      for g in cur.fetchall()})
    return steps


def _adopt(cur: db.Cursor, schema: str, kind: str, row: Mapping[str, Any],
           next_due: dt.datetime) -> bool:
    """Record the original daemon's open episode as ours, without a notice: it already
    told the client (take-over). False when another sweep adopted it first."""
    last: dt.datetime = row["provider_last"]
    count = max(int(row["provider_count"] or 0), 0)
    cur.execute(sql.SQL(
        "INSERT INTO {} (kind, client_id, started_at, notices, days, last_day, last_sent_at, "
        "next_due_at, adopted) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true) "
        "ON CONFLICT (kind, client_id) DO NOTHING RETURNING client_id").format(
            migrations.own(schema, EPISODE_TABLE)),
        (kind, row["client_id"], last, count, max(count, 1), last.astimezone(dt.UTC).date(),
         last, next_due))
    return cur.fetchone() is not None


def _close_reason(row: Mapping[str, Any]) -> str:
    if not row["status"]:
        return "client is inactive"
    if not row["enabled"]:
        return "notice flag turned off"
    if row["unlimited_credit"]:
        return "client has unlimited credit"
    return f"balance {row['balance']} is above the threshold {row['threshold']}"


class BalanceSweep:
    """One sweep of one balance alert at one `now`.

    1. One read transaction: the sweep query; misconfigured clients are reported.
    2. Episodes the original daemon left open are taken over, notices queued and recovered
       episodes closed, each in bounded batches (dnl_ad.batches): a batch is one
       transaction that locks its clients' rows with SKIP LOCKED, so a client the web UI
       holds locked is skipped this sweep (said once) and nobody else waits for it.
    """

    def __init__(self, rule: BalanceRule, database: db.Database, now: dt.datetime,
                 settings: Settings, resolver: clock.ZoneResolver | None,
                 complaints: Complaints | None) -> None:
        self.rule = rule
        self.database = database
        self.now = clock.require_aware(now)
        self.settings = settings
        self.resolver = resolver or clock.RESOLVER
        self.complaints = complaints or COMPLAINTS
        self.scope = database.safe_name
        self.result = SweepResult(kind=rule.kind)
        self._new: dict[int, bool] = {}   # client -> newly queued (else a duplicate key)
        self._restored: dict[int, bool] = {}  # client -> "balance restored" newly queued
        self._pipe: pipeline.Pipeline | None = None
        self._keys: dict[int, str] = {}   # client -> dedupe key of its staged notice
        self._deferred = _Deferred()       # the batch's provider writes
        self._steps: dict[int, Step | None] = {}  # the batch's episode steps, by client

    def run(self) -> SweepResult:
        reported = self.complaints.reported_bad(self.scope, self.rule.kind)
        with self.database.transaction() as cur:
            cur.execute(new_problems_query(self.rule, self.settings.own_schema),
                        new_problems_params(self.rule, self.now, reported))
            got = cur.fetchall()
            rows = [r for r in got if r["action"] is not None]
            due = [r for r in rows if r["action"] in ("open", "repeat")]
            restorable = any(r["action"] == "close" and self._restorable(r) for r in rows)
            pipe = (pipeline.Pipeline.open(cur, self.settings) if due or restorable
                    else None)
        self._pipe = pipe
        # bad rows reported at an earlier sweep and unchanged: still skipped, said once
        self.result.skipped += got[0]["known_bad"] if got else 0
        for row in rows:
            if row["action"] == "bad":
                self._report_bad(row)
        self.complaints.remember_bad(self.scope, self.rule.kind,
                                     {r["client_id"]: r["digest"] for r in rows
                                      if r["action"] == "bad"})
        adopt = [r for r in rows if r["action"] == "adopt"]
        close = [r for r in rows if r["action"] == "close"]
        if adopt:
            self._in_batches(adopt, self._adopt, "take over the open episode")
        if due and pipe is not None:  # an idle sweep costs the one query and nothing else
            served = [r for r in due if self._addressable(r)]
            done = self._in_batches(served, lambda cur, row: self._queue(cur, pipe, row),
                                    "queue the notice",
                                    finish=_Finish(self._deferred, pipe),
                                    lock=self._lock_and_claim)
            for client_id, key in self._keys.items():  # staged: inserted at the batch's end
                self._new[client_id] = pipe.outcomes.get(key) in ("queued", "failed")
            for row in done:
                _, _, invalid = self._recipients(row)
                if not invalid:  # served cleanly: a later fault of this client is new
                    self.complaints.forget(self.scope, self.rule.kind, row["client_id"])
                self.result.state_changes += 1
                if self._new.get(row["client_id"]):
                    self.result.queued += 1
                else:
                    self.result.duplicates += 1
        if close:
            for row in self._in_batches(close, self._close_one, "close the episode"):
                self.result.state_changes += 1
                log.info("%s: client %s (%s): episode closed (%s)", self.rule.kind,
                         row["client_id"], row["name"], _close_reason(row))
                if self._restored.get(row["client_id"]):
                    self.result.queued += 1
        if pipe is not None:
            self.result.mails = list(pipe.mails)
        return self.result

    def _restorable(self, row: Mapping[str, Any]) -> bool:
        """A closing episode that may earn a "balance restored" notice: closed because
        the client paid (never by a setting change)."""
        return (self.settings.balance_restored_notice
                and balance_restored.closed_by_payment(row))

    def _in_batches(self, rows: list[Mapping[str, Any]],
                    work: Callable[[db.Cursor, Mapping[str, Any]], None],
                    what: str, finish: batches.Finish | None = None,
                    lock: Callable[[db.Cursor, Sequence[Mapping[str, Any]]],
                                   list[Mapping[str, Any]]] = lambda cur, chunk:
                    _lockable(cur, chunk)) -> list[Mapping[str, Any]]:
        kind = self.rule.kind
        outcome = batches.run(
            self.database, rows, work, dry_run=self.settings.dry_run,
            size=self.settings.sweep_batch, finish=finish,
            describe=lambda r: f"{kind}: client {r['client_id']} ({r['name']}): {what}",
            lock=lock)
        for row in outcome.locked:
            self.result.skipped += 1
            self.complaints.warn(self.scope, kind, row["client_id"], "locked",
                                 "%s: client %s (%s): its client row is locked by another "
                                 "session (the web UI?); skipped this sweep, served when it "
                                 "is free", kind, row["client_id"], row["name"])
        self.result.skipped += len(outcome.failed)
        for row in outcome.done:
            self.complaints.forget_problem(self.scope, kind, row["client_id"], "locked")
        return outcome.done

    def _zone(self, row: Mapping[str, Any]) -> dt.tzinfo:
        return clock.client_zone(row["client_id"], row["auto_send_zone"],
                                 row["daily_balance_send_time_zone"], row["sys_timezone"],
                                 self.resolver)

    def _adopt(self, cur: db.Cursor, row: Mapping[str, Any]) -> None:
        next_due = self.rule.next_due(row, row["provider_last"], self._zone(row))
        if _adopt(cur, self.settings.own_schema, self.rule.kind, row, next_due):
            self.result.state_changes += 1
            log.info("%s: client %s (%s): took over the open episode the provider columns "
                     "show (last notice %s, %s so far); next notice not before %s",
                     self.rule.kind, row["client_id"], row["name"],
                     row["provider_last"].isoformat(), row["provider_count"] or 0,
                     next_due.isoformat())

    # --- the kinds of row
    def _complain(self, row: Mapping[str, Any], problem: str, detail: str) -> None:
        self.result.skipped += 1
        self.complaints.warn(self.scope, self.rule.kind, row["client_id"], problem,
                             "%s: client %s (%s) skipped: %s", self.rule.kind,
                             row["client_id"], row["name"], detail)

    def _report_bad(self, row: Mapping[str, Any]) -> None:
        if row["balance"] is None:
            what = ("balance is NULL in c4_client_balance" if row["has_balance_row"]
                    else "no c4_client_balance row")
            self._complain(row, "balance", what)
        elif not row["balance_usable"]:
            self._complain(row, f"amount:{row['balance']}",
                           f"c4_client_balance.balance {row['balance']} is not a usable "
                           "amount (NaN or beyond 1e15): bad data")
        else:
            self._complain(row, "threshold", self.rule.threshold_problem(row))

    def _recipients(self, row: Mapping[str, Any]) -> tuple[str, list[str], list[str]]:
        to_text, extra = recipients.addresses(self.rule.audience(row), row,
                                              {"finance_email": row["finance_email"]},
                                              self.settings)
        valid, invalid = split_recipients("; ".join([to_text, *extra]))
        return to_text, valid, invalid

    def _addressable(self, row: Mapping[str, Any]) -> bool:
        """False (said once) when the client has no valid address to write to."""
        kind, client_id = self.rule.kind, row["client_id"]
        to_text, valid, invalid = self._recipients(row)
        if not valid:
            what = ("no recipient address (billing_email, email, finance_email are empty)"
                    if not invalid else f"{to_text!r} holds no valid address")
            self._complain(row, f"email:{to_text}", what)
            return False
        if invalid:
            self.complaints.warn(self.scope, kind, client_id, f"email:{to_text}",
                                 "%s: client %s (%s): invalid address(es) %s ignored; "
                                 "sending to %s", kind, client_id, row["name"],
                                 ", ".join(invalid), ", ".join(valid))
        return True

    def _lock_and_claim(self, cur: db.Cursor, chunk: Sequence[Mapping[str, Any]]
                        ) -> list[Mapping[str, Any]]:
        """A queue batch's start: lock its clients, then take their episode steps in one
        go (_claim_many), for _queue to use."""
        rows = _lockable(cur, chunk)
        next_due = {r["client_id"]: self.rule.next_due(r, self.now, self._zone(r))
                    for r in rows}
        self._steps = _claim_many(cur, self.settings.own_schema, self.rule.kind, rows,
                                  self.now, next_due)
        return rows

    def _queue(self, cur: db.Cursor, pipe: pipeline.Pipeline, row: Mapping[str, Any]) -> None:
        """Write the provider columns and queue the notice for the episode step its batch
        took (_lock_and_claim)."""
        kind, client_id = self.rule.kind, row["client_id"]
        _, valid, _ = self._recipients(row)
        zone = self._zone(row)
        claimed = self._steps.get(client_id)
        if claimed is None:
            log.info("%s: client %s: episode step already taken by another sweep", kind,
                     client_id)
            self._new[client_id] = False
            return
        started, n, days = claimed
        # provider writes first (sent with the batch's others before its notices are
        # inserted): the "queued" line comes last
        self.rule.record(self._deferred.bind(cur), row, self.now, n, days)  # type: ignore[arg-type]
        notice = self._notice(row, zone, started, n, valid)
        self._keys[client_id] = notice.dedupe_key
        self._new.pop(client_id, None)
        pipe.stage(cur, notice)  # inserted with the batch's others (pipeline.flush)

    def _notice(self, row: Mapping[str, Any], zone: dt.tzinfo, started: dt.datetime, n: int,
                recipients: list[str]) -> Notice:
        kind = self.rule.kind
        return Notice(
            kind=kind,
            dedupe_key=episode_key(kind, row["client_id"], started, n),
            template=self.rule.template,
            client_id=row["client_id"],
            recipients="; ".join(recipients),
            context=context(row, self.now, zone),
            decided_at=self.now,
            alert_rule=(f"{self.rule.title}: balance {row['balance']:.2f} <= "
                        f"{row['threshold']:.2f} (notice {n}"
                        + (f" of {row['duplicate_days']}" if row["duplicate_days"] else "")
                        + ")"),
            meta={"episode_start": started, "notice_number": n},
        )

    def _close_one(self, cur: db.Cursor, row: Mapping[str, Any]) -> None:
        """Close the episode and, in the same transaction, decide its "balance restored"
        notice (dnl_ad.alerts.balance_restored)."""
        ids = [row["client_id"]]
        cur.execute(sql.SQL("DELETE FROM {} WHERE kind = %s AND client_id = ANY(%s) "
                            "RETURNING started_at, notices, adopted")
                    .format(migrations.own(self.settings.own_schema, EPISODE_TABLE)),
                    (self.rule.kind, ids))
        closed = cur.fetchone()
        self.rule.reset(cur, ids)
        self._restored[row["client_id"]] = False
        if closed is None or self._pipe is None or not self._restorable(row):
            return
        _, valid, _ = self._recipients(row)
        self._restored[row["client_id"]] = balance_restored.decide(
            cur, self._pipe, self.settings, self.rule, row, closed, self.now,
            self._zone(row), valid)


class _Deferred:
    """The provider writes of a batch (BalanceRule.record), sent together before the batch
    commits: one round trip for the batch instead of one per client. Stands in for the
    cursor `record` writes through (it only executes statements that return nothing);
    each statement is bound by the real cursor (mogrify), never formatted by hand."""

    def __init__(self) -> None:
        self._statements: list[bytes] = []
        self._cur: db.Cursor | None = None

    def bind(self, cur: db.Cursor) -> _Deferred:
        self._cur = cur
        return self

    def execute(self, query: Any, params: Any = None) -> None:
        assert self._cur is not None
        self._statements.append(self._cur.mogrify(query, params))

    def flush(self, cur: db.Cursor) -> None:
        statements, self._statements = self._statements, []
        if statements:
            cur.execute(b";\n".join(statements))

    def discard(self) -> None:
        self._statements = []


class _Finish:
    """A queue batch's end: the deferred provider writes, then the staged notices."""

    def __init__(self, deferred: _Deferred, pipe: pipeline.Pipeline) -> None:
        self.deferred, self.pipe = deferred, pipe

    def flush(self, cur: db.Cursor) -> None:
        self.deferred.flush(cur)
        self.pipe.flush(cur)

    def discard(self) -> None:
        self.deferred.discard()
        self.pipe.discard()


def _lockable(cur: db.Cursor, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows whose client row this batch could lock (the others are held elsewhere)."""
    locked = batches.lock_clients(cur, [r["client_id"] for r in rows])
    return [r for r in rows if r["client_id"] in locked]


def sweep(rule: BalanceRule, database: db.Database, now: dt.datetime, settings: Settings, *,
          resolver: clock.ZoneResolver | None = None,
          complaints: Complaints | None = None) -> SweepResult:
    """Run one sweep of `rule` at `now` (see the module docstring for the steps)."""
    return BalanceSweep(rule, database, now, settings, resolver, complaints).run()
