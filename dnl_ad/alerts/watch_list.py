"""Alert 14, destination watch lists (CDR-Stats' blacklist and whitelist), from dnl_ad's
own `watch_entry` table (`dnl-ad watch add|list|remove`).

An entry is a prefix (matched against the start of the call's code, `ingress_code`, else
`egress_code`) or a country (matched against `ingress_country` or `egress_country`,
ignoring case), global or for one client. For a client's calls (its ingress traffic in
`cdr_report_detail`) to a destination, as CDR-Stats decides, whitelist first:

1. a destination on a whitelist that applies (global or the client's) is allowed, even
   when a blacklist names it too;
2. else a destination on an applicable blacklist is an alert ("blacklisted", the
   longest matching entry names it);
3. else, when any whitelist applies to the client, the destination is outside it: an
   alert ("outside the whitelist", named by the call's country, else its code).

Each check looks at the UTC days of yesterday and today; one alert per client,
destination and day (dedupe key), to the operator's NOC (`system_parameter.noc_email`)
and, when an entry says `notify_client`, the client's NOC (`client.noc_email`, else its
billing contact), with calls, billed minutes and cost. email_log type 33 (fraud).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from .. import db, migrations
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, recipients

log = logging.getLogger(__name__)

KIND = "watch_list"
TEMPLATE = "watch_list"

_MATCH = """((e.kind = 'prefix' AND starts_with(t.code, e.value))
          OR (e.kind = 'country' AND (lower(t.in_country) = lower(e.value)
                                      OR lower(t.eg_country) = lower(e.value))))"""
_APPLIES = "(e.client_id IS NULL OR e.client_id = t.client_id)"

_VIOLATIONS = """
WITH e AS (SELECT * FROM {entries}),
t AS (
    SELECT d.ingress_client_id AS client_id,
           date_trunc('day', d.report_time AT TIME ZONE 'UTC')::date AS day,
           coalesce(nullif(d.ingress_code, ''), d.egress_code, '') AS code,
           coalesce(d.ingress_country, '') AS in_country,
           coalesce(d.egress_country, '') AS eg_country,
           sum(d.ingress_total_calls) AS calls, sum(d.ingress_bill_time) AS bill_time,
           sum(d.ingress_call_cost) AS cost
    FROM cdr_report_detail d
    WHERE d.report_time >= %(since)s AND d.report_time < %(until)s
      AND d.ingress_client_id IS NOT NULL AND d.ingress_total_calls > 0
    GROUP BY 1, 2, 3, 4, 5
), j AS (
    SELECT t.*,
           EXISTS (SELECT 1 FROM e WHERE e.list = 'white' AND {applies} AND {match})
               AS whitelisted,
           (SELECT e.kind || ' ' || e.value FROM e
             WHERE e.list = 'black' AND {applies} AND {match}
             ORDER BY length(e.value) DESC, e.id LIMIT 1) AS blacklisted,
           (SELECT bool_or(e.notify_client) FROM e
             WHERE e.list = 'black' AND {applies} AND {match}) AS black_notify,
           EXISTS (SELECT 1 FROM e WHERE e.list = 'white' AND {applies}) AS has_whitelist,
           (SELECT bool_or(e.notify_client) FROM e WHERE e.list = 'white' AND {applies})
               AS white_notify
    FROM t
), v AS (
    SELECT client_id, day,
           CASE WHEN blacklisted IS NOT NULL THEN 'blacklisted'
                ELSE 'outside the whitelist' END AS reason,
           coalesce(blacklisted, 'country ' || nullif(in_country, ''),
                    'country ' || nullif(eg_country, ''), 'code ' || code) AS destination,
           calls, bill_time, cost,
           CASE WHEN blacklisted IS NOT NULL THEN coalesce(black_notify, false)
                ELSE coalesce(white_notify, false) END AS notify_client
    FROM j
    WHERE NOT whitelisted AND (blacklisted IS NOT NULL OR has_whitelist)
)
SELECT v.client_id, v.day, v.reason, v.destination, sum(v.calls)::bigint AS calls,
       coalesce(sum(v.bill_time), 0)::bigint AS bill_time,
       coalesce(sum(v.cost), 0)::numeric AS cost, bool_or(v.notify_client) AS notify_client,
       c.name AS client_name, c.company, c.noc_email, c.billing_email, c.email,
       cur.code AS currency
FROM v
LEFT JOIN client c ON c.client_id = v.client_id
LEFT JOIN currency cur ON cur.currency_id = c.currency_id
GROUP BY v.client_id, v.day, v.reason, v.destination, c.name, c.company, c.noc_email,
         c.billing_email, c.email, cur.code
ORDER BY v.day, v.client_id, v.destination
"""


def violations_query(schema: str) -> sql.Composed:
    return sql.SQL(_VIOLATIONS).format(entries=migrations.own(schema, "watch_entry"),
                                       applies=sql.SQL(_APPLIES), match=sql.SQL(_MATCH))


def window(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[start of yesterday, now): UTC days, late rows of yesterday included."""
    today = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=1), now


def dedupe_key(client_id: int, destination: str, day: dt.date) -> str:
    return f"{KIND}:{client_id}:{destination}:{day.isoformat()}"


def context(row: Mapping[str, Any]) -> dict[str, Any]:
    name = row.get("client_name") or f"client {row['client_id']}"
    return {
        "client_name": name, "company_name": row.get("company") or name,
        "destination": row["destination"], "reason": row["reason"],
        "day": row["day"].isoformat(), "calls": int(row["calls"]),
        "minutes": f"{Decimal(row['bill_time']) / 60:.2f}",
        "cost": Decimal(row["cost"]), "currency": row.get("currency") or "",
    }


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """One query finds every client, destination and day that breaks a list; each gets its
    notice once (dedupe key)."""
    result = SweepResult(KIND)
    since, until = window(now)
    schema = settings.own_schema
    with db.unit_of_work(database, dry_run=settings.dry_run) as cur:
        cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) AS any").format(
            migrations.own(schema, "watch_entry")))
        if not cur.fetchone()["any"]:
            return result
        cur.execute(violations_query(schema), {"since": since, "until": until})
        rows = cur.fetchall()
        if not rows:
            return result
        pipe = Pipeline.open(cur, settings)
        operator = str(pipe.system.get("noc_email") or "").strip()
        for row in rows:
            client = (str(row.get("noc_email") or "").strip() or recipients.partner(row)) \
                if row["notify_client"] else ""
            new = pipe.queue(cur, Notice(
                kind=KIND, dedupe_key=dedupe_key(row["client_id"], row["destination"],
                                                 row["day"]),
                template=TEMPLATE, client_id=row["client_id"],
                recipients=operator or client,
                extra_recipients=(client,) if operator and client else (),
                context=context(row), decided_at=now,
                alert_rule=f"watch list: {row['destination']} {row['reason']}"))
            if new:
                log.warning("watch_list: client %s %r called %s (%s) on %s: %s calls",
                            row["client_id"], row.get("client_name"), row["destination"],
                            row["reason"], row["day"], row["calls"])
        result.queued += pipe.queued
        result.duplicates += pipe.duplicates
        result.skipped += pipe.failed
        result.mails.extend(pipe.mails)
    return result
