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
2. per notice, inside a savepoint: claims the episode step (insert, or update guarded by
   the notice count, so two daemons cannot both take it), queues the notice through the
   pipeline, writes the provider columns; an error affects only that client;
3. closes all recovered episodes with two set-based statements and resets the provider
   columns.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from .. import clock, db, migrations, pipeline
from ..config import Settings
from ..mail.message import split_addresses, valid_address
from ..notice import Notice
from . import SweepResult

log = logging.getLogger(__name__)

EPISODE_TABLE = "balance_episode"


@dataclass(frozen=True)
class BalanceRule:
    """What distinguishes one balance alert from the other.

    enabled        SQL boolean over `cl` (client): the alert's notice flag
    threshold      SQL numeric over `cl` and `cfg` (client_low_balance_config): the balance
                   at or below which the condition holds; NULL when it cannot be known
    provider_open  SQL boolean: the provider columns show an open episode (reset on close)
    threshold_problem  row -> text for the log when `threshold` came back NULL
    record         (cur, row, now, n) -> None: provider writes when notice n is queued
    reset          (cur, client_ids) -> rows written: provider writes when episodes close
    """

    kind: str
    template: str
    title: str
    enabled: sql.Composable
    threshold: sql.Composable
    provider_open: sql.Composable
    threshold_problem: Callable[[Mapping[str, Any]], str]
    record: Callable[[db.Cursor, Mapping[str, Any], dt.datetime, int], None]
    reset: Callable[[db.Cursor, list[int]], int]

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
        self._seen: set[tuple[str, str, int, str]] = set()
        self._lock = threading.Lock()

    def warn(self, scope: str, kind: str, client_id: int, problem: str, message: str,
             *args: Any) -> bool:
        key = (scope, kind, client_id, problem)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        log.warning(message, *args)
        return True

    def forget(self, scope: str, kind: str, client_id: int) -> None:
        with self._lock:
            self._seen = {k for k in self._seen if k[:3] != (scope, kind, client_id)}


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
    """The one query: every client for which something must happen, and nothing else."""
    return sql.SQL("""
WITH c AS (
    SELECT cl.client_id, cl.name, cl.company, cl.mode,
           coalesce(cl.allowed_credit, 0)::numeric AS allowed_credit, cl.billing_email,
           cl.auto_send_zone, cl.daily_balance_send_time_zone,
           pt.name AS payment_term,
           (cfg.client_id IS NOT NULL) AS has_config, cfg.value_type,
           (b.client_id IS NOT NULL) AS has_balance_row,
           b.balance::numeric AS balance,
           ({threshold})::numeric AS threshold,
           NULLIF(cfg.duplicate_days, 0) AS duplicate_days,
           (cl.status AND {enabled} AND NOT cl.unlimited_credit) AS eligible,
           cl.status, {enabled} AS enabled, cl.unlimited_credit,
           ({provider_open}) AS provider_open,
           e.started_at, e.notices, e.next_due_at,
           (SELECT sp.sys_timezone FROM system_parameter sp ORDER BY sp.id LIMIT 1)
               AS sys_timezone
    FROM client cl
    LEFT JOIN c4_client_balance b ON b.client_id = cl.client_id::text
    LEFT JOIN client_low_balance_config cfg ON cfg.client_id = cl.client_id
    LEFT JOIN payment_term pt ON pt.payment_term_id = cl.payment_term_id
    LEFT JOIN {episode} e ON e.kind = %(kind)s AND e.client_id = cl.client_id
    WHERE (cl.status AND {enabled} AND NOT cl.unlimited_credit)
       OR e.client_id IS NOT NULL
       OR ({provider_open})
), d AS (
    SELECT c.*,
           CASE
             WHEN eligible AND (balance IS NULL OR threshold IS NULL) THEN 'bad'
             WHEN eligible AND balance <= threshold THEN
               CASE
                 WHEN started_at IS NULL THEN 'open'
                 WHEN next_due_at <= %(now)s
                      AND (duplicate_days IS NULL OR notices < duplicate_days) THEN 'repeat'
               END
             WHEN started_at IS NOT NULL OR provider_open THEN 'close'
           END AS action
    FROM c
)
SELECT * FROM d WHERE action IS NOT NULL ORDER BY client_id
""").format(threshold=rule.threshold, enabled=rule.enabled, provider_open=rule.provider_open,
            episode=migrations.own(schema, EPISODE_TABLE))


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
    }


def _claim(cur: db.Cursor, schema: str, kind: str, row: Mapping[str, Any], now: dt.datetime,
           next_due: dt.datetime) -> tuple[dt.datetime, int] | None:
    """Take the next step of the client's episode: (episode start, notice number), or
    None when another sweep (a second daemon) took it first."""
    table = migrations.own(schema, EPISODE_TABLE)
    if row["action"] == "open":
        cur.execute(sql.SQL(
            "INSERT INTO {} (kind, client_id, started_at, notices, last_sent_at, next_due_at) "
            "VALUES (%s, %s, %s, 1, %s, %s) ON CONFLICT (kind, client_id) DO NOTHING "
            "RETURNING started_at, notices").format(table),
            (kind, row["client_id"], now, now, next_due))
    else:
        cur.execute(sql.SQL(
            "UPDATE {} SET notices = notices + 1, last_sent_at = %s, next_due_at = %s "
            "WHERE kind = %s AND client_id = %s AND started_at = %s AND notices = %s "
            "RETURNING started_at, notices").format(table),
            (now, next_due, kind, row["client_id"], row["started_at"], row["notices"]))
    got = cur.fetchone()
    return (got["started_at"], got["notices"]) if got else None


def _close_reason(row: Mapping[str, Any]) -> str:
    if not row["status"]:
        return "client is inactive"
    if not row["enabled"]:
        return "notice flag turned off"
    if row["unlimited_credit"]:
        return "client has unlimited credit"
    return f"balance {row['balance']} is above the threshold {row['threshold']}"


class BalanceSweep:
    """One sweep of one balance alert at one `now`."""

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

    def run(self) -> SweepResult:
        with db.unit_of_work(self.database, dry_run=self.settings.dry_run) as cur:
            cur.execute(sweep_query(self.rule, self.settings.own_schema),
                        {"kind": self.rule.kind, "now": self.now})
            rows = cur.fetchall()
            due = [r for r in rows if r["action"] in ("open", "repeat")]
            for row in rows:
                if row["action"] == "bad":
                    self._report_bad(row)
            if due:  # an idle sweep costs the one query and nothing else
                pipe = pipeline.Pipeline.open(cur, self.settings)
                for row in due:
                    self._serve(cur, pipe, row)
                self.result.mails = list(pipe.mails)
            self._close(cur, [r for r in rows if r["action"] == "close"])
        return self.result

    # --- the three kinds of row
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
        else:
            self._complain(row, "threshold", self.rule.threshold_problem(row))

    def _serve(self, cur: db.Cursor, pipe: pipeline.Pipeline, row: Mapping[str, Any]) -> None:
        kind, client_id = self.rule.kind, row["client_id"]
        valid, invalid = split_recipients(row["billing_email"])
        if not valid:
            what = ("billing_email is empty" if not invalid
                    else f"billing_email {row['billing_email']!r} holds no valid address")
            self._complain(row, f"email:{row['billing_email']}", what)
            return
        if invalid:
            self.complaints.warn(self.scope, kind, client_id, f"email:{row['billing_email']}",
                                 "%s: client %s (%s): invalid address(es) %s in billing_email "
                                 "ignored; sending to %s", kind, client_id, row["name"],
                                 ", ".join(invalid), ", ".join(valid))
        zone = clock.client_zone(client_id, row["auto_send_zone"],
                                 row["daily_balance_send_time_zone"], row["sys_timezone"],
                                 self.resolver)
        next_due = clock.local_instant(clock.local_date(self.now, zone) + dt.timedelta(days=1),
                                       zone)
        try:
            with db.savepoint(cur):
                claimed = _claim(cur, self.settings.own_schema, kind, row, self.now, next_due)
                if claimed is None:
                    log.info("%s: client %s: episode step already taken by another sweep",
                             kind, client_id)
                    self.result.duplicates += 1
                    return
                started, n = claimed
                # provider writes first: queue() logs "queued", so it comes last
                self.rule.record(cur, row, self.now, n)
                new = pipe.queue(cur, self._notice(row, zone, started, n, valid))
        except Exception:
            log.exception("%s: client %s (%s): could not queue the notice; other clients "
                          "go on", kind, client_id, row["name"])
            self.result.skipped += 1
            return
        self.result.state_changes += 1
        if new:
            self.result.queued += 1
        else:
            self.result.duplicates += 1
        if not invalid:
            self.complaints.forget(self.scope, kind, client_id)

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

    def _close(self, cur: db.Cursor, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        ids = [r["client_id"] for r in rows]
        try:
            with db.savepoint(cur):
                cur.execute(sql.SQL("DELETE FROM {} WHERE kind = %s AND client_id = ANY(%s)")
                            .format(migrations.own(self.settings.own_schema, EPISODE_TABLE)),
                            (self.rule.kind, ids))
                self.rule.reset(cur, ids)
        except Exception:
            log.exception("%s: could not close the episodes of clients %s", self.rule.kind, ids)
            return
        self.result.state_changes += len(ids)
        for r in rows:
            log.info("%s: client %s (%s): episode closed (%s)", self.rule.kind, r["client_id"],
                     r["name"], _close_reason(r))


def sweep(rule: BalanceRule, database: db.Database, now: dt.datetime, settings: Settings, *,
          resolver: clock.ZoneResolver | None = None,
          complaints: Complaints | None = None) -> SweepResult:
    """Run one sweep of `rule` at `now` (see the module docstring for the steps)."""
    return BalanceSweep(rule, database, now, settings, resolver, complaints).run()
