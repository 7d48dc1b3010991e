"""Alert 9, fraud rules: the v5 UI's `fraud_detection` rules, evaluated every sweep.

A rule (active) watches the ingress trunks in its `ingress_ids` (a comma list; empty: all
active ingress trunks) over two rolling windows of qos_route_report (direction 0, the
client's traffic to us): the last 60 minutes and the last 24 hours. Four checks, each off
when its limit is 0 or NULL (PROVIDER_DB.md section 6, block_type):

    0 hourly_minute   billed minutes (bill_time / 60) in the last hour
    1 hourly_revenue  cost in the last hour
    2 daily_minute    billed minutes in the last 24 hours
    3 daily_revenue   cost in the last 24 hours

A breach is "actual > limit". One breach episode per rule, trunk and window ('hour' for
types 0-1, 'day' for 2-3) lives in dnl_ad.fraud_breach until it clears; while it is open
nothing new is written or sent, however many sweeps see it.

A sweep:
1. ONE query returns only what changed: breaches without an open episode (`open`) and
   open episodes that no longer breach, or whose rule or trunk is gone (`clear`);
2. per rule with new breaches, in a savepoint: one fraud_detection_log row (status 1 over
   limit, create_by 0 auto), and per (trunk, window) the episode row, one
   fraud_detection_log_detail row per breached check, the block where the rule says
   `is_block` (a resource_block row for the trunk, action_type 3, no unblock_at: the UI
   expects a manual unblock; never a second one while a dnl_ad fraud block is on the
   trunk), and, where `is_send_mail`, the mail from the fraud_detection_* template to
   whom `email_to` says (0 the switch's NOC, 1 the partner's NOC, 2 both);
3. cleared episodes are closed: a fraud_detection_log row with status 0 (normal) per
   rule, and a "cleared" line in dnl_ad's log. Blocks stay: the operator unblocks.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from itertools import groupby
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from .. import clock, db, migrations
from ..config import Settings
from ..mail.render import format_money
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult

log = logging.getLogger(__name__)

KIND = "fraud_detection"
TEMPLATE = "fraud_detection"          # mail_tmplate.fraud_detection_from/_subject/_content
BLOCKED_BY = "dnl_ad fraud detection"  # resource_block.create_by / update_by
ACTION_FRAUD = 3
LOG_OVER_LIMIT, LOG_NORMAL, CREATED_AUTO = 1, 0, 0
EPISODES = "fraud_breach"
TYPE_TEXT = {0: "1h minutes", 1: "1h revenue", 2: "24h minutes", 3: "24h revenue"}
WINDOW_TEXT = {"hour": "last 60 minutes", "day": "last 24 hours"}

_DECIDE = """
WITH rules AS (
    SELECT f.* FROM fraud_detection f
    WHERE f.active AND (coalesce(f.hourly_minute, 0) > 0 OR coalesce(f.hourly_revenue, 0) > 0
                        OR coalesce(f.daily_minute, 0) > 0 OR coalesce(f.daily_revenue, 0) > 0)
), rt AS (
    SELECT f.id AS rule_id, r.resource_id
    FROM rules f
    JOIN resource r ON r.ingress AND r.active
     AND (coalesce(btrim(f.ingress_ids), '') = ''
          OR r.resource_id::text = ANY(string_to_array(replace(f.ingress_ids, ' ', ''), ',')))
), u AS (
    SELECT q.resource_id,
           sum(q.bill_time) FILTER (WHERE q.report_time > %(hour_ago)s) AS h_sec,
           sum(q.cost) FILTER (WHERE q.report_time > %(hour_ago)s) AS h_cost,
           sum(q.bill_time) AS d_sec, sum(q.cost) AS d_cost
    FROM qos_route_report q
    WHERE q.report_time > %(day_ago)s AND q.report_time <= %(now)s AND q.direction = 0
      AND q.resource_id IN (SELECT resource_id FROM rt)
    GROUP BY q.resource_id
), checks AS (
    SELECT rt.rule_id, rt.resource_id, c.block_type, c.window_name, c.limit_value, c.actual
    FROM rt
    JOIN rules f ON f.id = rt.rule_id
    LEFT JOIN u ON u.resource_id = rt.resource_id
    CROSS JOIN LATERAL (VALUES
        (0, 'hour', f.hourly_minute, coalesce(u.h_sec, 0) / 60.0),
        (1, 'hour', f.hourly_revenue, coalesce(u.h_cost, 0)),
        (2, 'day', f.daily_minute, coalesce(u.d_sec, 0) / 60.0),
        (3, 'day', f.daily_revenue, coalesce(u.d_cost, 0))
    ) AS c(block_type, window_name, limit_value, actual)
    WHERE coalesce(c.limit_value, 0) > 0 AND c.actual > c.limit_value
), breach AS (
    SELECT rule_id, resource_id, window_name,
           array_agg(block_type ORDER BY block_type) AS types,
           array_agg(limit_value ORDER BY block_type) AS limits,
           array_agg(actual ORDER BY block_type) AS actuals
    FROM checks GROUP BY rule_id, resource_id, window_name
), changed AS (
    SELECT coalesce(b.rule_id, e.rule_id) AS rule_id,
           coalesce(b.resource_id, e.resource_id) AS resource_id,
           coalesce(b.window_name, e.window_name) AS window_name,
           CASE WHEN e.rule_id IS NULL THEN 'open' ELSE 'clear' END AS action,
           b.types, b.limits, b.actuals, e.opened_at
    FROM breach b
    FULL JOIN {episodes} e ON e.rule_id = b.rule_id AND e.resource_id = b.resource_id
                          AND e.window_name = b.window_name
    WHERE e.rule_id IS NULL OR b.rule_id IS NULL
)
SELECT ch.*, f.rule_name, coalesce(f.is_block, false) AS is_block,
       coalesce(f.is_send_mail, false) AS is_send_mail, f.email_to,
       r.alias, r.client_id, c.name, c.company, c.login, c.noc_email AS partner_noc,
       cur.code AS currency,
       (SELECT s.noc_email FROM system_parameter s ORDER BY s.sys_id LIMIT 1) AS switch_noc
FROM changed ch
LEFT JOIN fraud_detection f ON f.id = ch.rule_id
LEFT JOIN resource r ON r.resource_id = ch.resource_id
LEFT JOIN client c ON c.client_id = r.client_id
LEFT JOIN currency cur ON cur.currency_id = c.currency_id
ORDER BY ch.action, ch.rule_id, ch.resource_id, ch.window_name
"""

_BLOCK = """
INSERT INTO resource_block (ingress_res_id, ingress_client_id, action_type, create_by,
                            update_by, create_time, block_at)
SELECT %(trunk)s, %(client)s, %(action)s, %(by)s, %(by)s, %(now)s, %(now_epoch)s
WHERE NOT EXISTS (SELECT 1 FROM resource_block rb WHERE rb.ingress_res_id = %(trunk)s
                  AND rb.update_by = %(by)s)
RETURNING res_block_id
"""


def dedupe_key(resource_id: int, rule_id: int, window: str, opened: dt.datetime) -> str:
    """`fraud_detection:<trunk>:<rule>:<hour|day>:<episode start, UTC compact>`."""
    return f"{KIND}:{resource_id}:{rule_id}:{window}:{opened.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"


def two_decimals(value: Any) -> str:
    """'12.35' for 12.345: half up, as money is shown everywhere else."""
    return str(Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def actual_text(block_type: int, actual: Decimal, currency: str) -> str:
    """Minutes with two decimals, revenue as money with the client's currency."""
    if block_type in (0, 2):
        return f"{two_decimals(actual)} minutes"
    return f"{format_money(Decimal(actual))} {currency}".strip()


def limit_text(block_type: int, limit: int, currency: str) -> str:
    return actual_text(block_type, Decimal(limit), currency)


def nocs(row: Mapping[str, Any]) -> tuple[str, str]:
    """(partner's NOC, switch's NOC) as `email_to` says: 0 the switch's NOC
    (system_parameter.noc_email), 1 the partner's (client.noc_email), 2 or unset both."""
    code = row.get("email_to") if row.get("email_to") in (0, 1, 2) else 2
    partner = str(row.get("partner_noc") or "").strip() if code in (1, 2) else ""
    switch = str(row.get("switch_noc") or "").strip() if code in (0, 2) else ""
    return partner, switch


def context(row: Mapping[str, Any], now: dt.datetime, blocked: bool) -> dict[str, Any]:
    """The UI's fraud tags; several checks breached at once are listed together."""
    currency = row.get("currency") or ""
    types = list(row["types"])
    return {
        "rule_name": row["rule_name"] or "",
        "client_name": row["name"] or "",
        "company_name": row["company"] or row["name"] or "",
        "company": row["company"] or "",
        "username": row["login"] or row["name"] or "",
        "ingress_name": row["alias"] or "",
        "trunk_name": row["alias"] or "",
        "type": ", ".join(TYPE_TEXT[t] for t in types),
        "limit_value": ", ".join(limit_text(t, lim, currency)
                                 for t, lim in zip(types, row["limits"], strict=True)),
        "actual_value": ", ".join(actual_text(t, act, currency)
                                  for t, act in zip(types, row["actuals"], strict=True)),
        "window": WINDOW_TEXT[row["window_name"]],
        "blocked": "yes" if blocked else "",
        "current_time": f"{now:%Y-%m-%d %H:%M:%S} GMT",
        "currency": currency,
    }


class FraudSweep:
    """One sweep at one `now` (see the module docstring for the steps)."""

    def __init__(self, database: db.Database, now: dt.datetime, settings: Settings) -> None:
        self.database = database
        self.now = clock.require_aware(now)
        self.settings = settings
        self.episodes = migrations.own(settings.own_schema, EPISODES)
        self.result = SweepResult(KIND)

    def run(self) -> SweepResult:
        with db.unit_of_work(self.database, dry_run=self.settings.dry_run) as cur:
            cur.execute(sql.SQL(_DECIDE).format(episodes=self.episodes), {
                "now": self.now, "hour_ago": self.now - dt.timedelta(hours=1),
                "day_ago": self.now - dt.timedelta(hours=24)})
            rows = cur.fetchall()
            opens = [r for r in rows if r["action"] == "open"]
            if opens:
                pipe = Pipeline.open(cur, self.settings)
                for rule_id, group in groupby(opens, key=lambda r: r["rule_id"]):
                    self._open_rule(cur, pipe, rule_id, list(group))
                self.result.queued += pipe.queued
                self.result.duplicates += pipe.duplicates
                self.result.skipped += pipe.failed
                self.result.mails.extend(pipe.mails)
            self._clear(cur, [r for r in rows if r["action"] == "clear"])
        return self.result

    def _open_rule(self, cur: db.Cursor, pipe: Pipeline, rule_id: int,
                   rows: Sequence[Mapping[str, Any]]) -> None:
        try:
            with db.savepoint(cur, "fraud_rule"):
                cur.execute('INSERT INTO fraud_detection_log (fraud_detection_id, create_on, '
                            'create_by, status, finish_time, "time") VALUES '
                            '(%s, %s, %s, %s, %s, %s) RETURNING id',
                            (rule_id, self.now, CREATED_AUTO, LOG_OVER_LIMIT, self.now,
                             int(self.now.timestamp())))
                log_id = cur.fetchone()["id"]
                opened = [row for row in rows if self._open(cur, pipe, log_id, row)]
                if not opened:  # another daemon took every one: no empty run row
                    raise _NothingNew
        except _NothingNew:
            return
        except db.CONNECTION_ERRORS:
            raise
        except Exception:
            self.result.skipped += len(rows)
            log.exception("fraud_detection: rule %s: recording %d breach(es) failed and was "
                          "rolled back; retried next sweep", rule_id, len(rows))
            return
        for row in opened:
            self.result.state_changes += 1
            log.warning("fraud_detection: %srule %s %r: client %s trunk %s %r over the limit "
                        "in the %s (%s: %s > %s)%s",
                        "[dry run] would have: " if self.settings.dry_run else "", rule_id,
                        row["rule_name"], row["client_id"], row["resource_id"], row["alias"],
                        WINDOW_TEXT[row["window_name"]],
                        ", ".join(TYPE_TEXT[t] for t in row["types"]),
                        ", ".join(f"{a:.2f}" for a in row["actuals"]),
                        ", ".join(str(v) for v in row["limits"]),
                        "; trunk blocked" if row["is_block"] else "")

    def _open(self, cur: db.Cursor, pipe: Pipeline, log_id: int,
              row: Mapping[str, Any]) -> bool:
        """Episode, block, details and mail of one (trunk, window); False when another
        sweep opened the episode first."""
        cur.execute(sql.SQL(
            "INSERT INTO {} (rule_id, resource_id, window_name, opened_at, log_id, "
            "block_types) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING "
            "RETURNING rule_id").format(self.episodes),
            (row["rule_id"], row["resource_id"], row["window_name"], self.now, log_id,
             list(row["types"])))
        if cur.fetchone() is None:
            return False
        blocked = False
        if row["is_block"]:
            cur.execute(_BLOCK, {"trunk": row["resource_id"], "client": row["client_id"],
                                 "action": ACTION_FRAUD, "by": BLOCKED_BY, "now": self.now,
                                 "now_epoch": int(self.now.timestamp())})
            got = cur.fetchone()
            blocked = True  # blocked now, or already by an earlier dnl_ad fraud block
            if got:
                cur.execute(sql.SQL("UPDATE {} SET res_block_id = %s WHERE rule_id = %s AND "
                                    "resource_id = %s AND window_name = %s").format(
                                        self.episodes),
                            (got["res_block_id"], row["rule_id"], row["resource_id"],
                             row["window_name"]))
        partner, system = nocs(row) if row["is_send_mail"] else ("", "")
        execute_values(cur, "INSERT INTO fraud_detection_log_detail (fraud_detection_log_id, "
                       "ingress_id, block_type, limit_value, actual_value, partner_email, "
                       "system_email, is_block, is_send_email) VALUES %s",
                       [(log_id, row["resource_id"], t, lim, two_decimals(act),
                         partner[:200] or None, system[:200] or None, blocked,
                         bool(row["is_send_mail"]))
                        for t, lim, act in zip(row["types"], row["limits"], row["actuals"],
                                               strict=True)])
        if row["is_send_mail"]:
            pipe.queue(cur, Notice(
                kind=KIND,
                dedupe_key=dedupe_key(row["resource_id"], row["rule_id"], row["window_name"],
                                      self.now),
                template=TEMPLATE, client_id=row["client_id"],
                recipients="; ".join(a for a in (partner, system) if a),
                context=context(row, self.now, blocked), decided_at=self.now,
                alert_rule=(f"fraud rule {row['rule_name']}: "
                            + ", ".join(TYPE_TEXT[t] for t in row["types"])
                            + f" over the limit in the {WINDOW_TEXT[row['window_name']]}"),
                resource_id=row["resource_id"],
                meta={"rule_id": row["rule_id"], "log_id": log_id}))
        return True

    def _clear(self, cur: db.Cursor, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        execute_values(cur, sql.SQL(
            "DELETE FROM {} e USING (VALUES %s) AS v(rule_id, resource_id, window_name) "
            "WHERE e.rule_id = v.rule_id AND e.resource_id = v.resource_id "
            "AND e.window_name = v.window_name").format(self.episodes).as_string(cur),
            [(r["rule_id"], r["resource_id"], r["window_name"]) for r in rows],
            template="(%s::int, %s::int, %s::text)")
        rules = sorted({r["rule_id"] for r in rows if r["rule_name"] is not None})
        if rules:
            execute_values(cur, 'INSERT INTO fraud_detection_log (fraud_detection_id, '
                           'create_on, create_by, status, finish_time, "time") VALUES %s',
                           [(rid, self.now, CREATED_AUTO, LOG_NORMAL, self.now,
                             int(self.now.timestamp())) for rid in rules])
        self.result.state_changes += len(rows)
        for r in rows:
            why = ("the rule is gone or inactive" if r["rule_name"] is None
                   else "the trunk is gone" if r["alias"] is None else "back under the limits")
            log.info("fraud_detection: rule %s %r: trunk %s %r: %s cleared (%s; open since "
                     "%s)", r["rule_id"], r["rule_name"], r["resource_id"], r["alias"],
                     WINDOW_TEXT[r["window_name"]], why, r["opened_at"].isoformat())


class _NothingNew(Exception):
    """Every breach of a rule was opened by another sweep: roll its run row back."""


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Run one fraud sweep at `now`."""
    return FraudSweep(database, now, settings).run()


def check_line(cur: db.Cursor, settings: Settings) -> str:
    """For `dnl-ad check`: active rules, rules that can fire, open breaches."""
    cur.execute("SELECT count(*) FILTER (WHERE active) AS active, count(*) FILTER (WHERE "
                "active AND (coalesce(hourly_minute, 0) > 0 OR coalesce(hourly_revenue, 0) > 0 "
                "OR coalesce(daily_minute, 0) > 0 OR coalesce(daily_revenue, 0) > 0)) AS live, "
                "count(*) FILTER (WHERE active AND is_block) AS blocking "
                "FROM fraud_detection")
    n = cur.fetchone()
    cur.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(
        migrations.own(settings.own_schema, EPISODES)))
    open_now = cur.fetchone()["n"]
    return (f"{n['active']} active fraud rule(s), {n['live']} with a limit set, "
            f"{n['blocking']} blocking; {open_now} breach(es) open now")
