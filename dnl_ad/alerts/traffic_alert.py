"""Alert 13, traffic alerts: the v5 UI's `traffic_alert` rows, "previous hour attempts
less than `less_hour` and current hour attempts greater than `greater_hour`" for the
listed carriers (`carriers`, client ids, comma separated) and code names (`code_name`,
comma separated; empty: all destinations together). A sudden surge from a carrier that
was quiet is the classic sign of traffic pumping or a hijacked account.

Evaluated each hour, once the hour's rows are in (TRAFFIC_SETTLE_MINUTES after its end):
the current hour is the last complete one, the previous hour the one before; a carrier
with no row in the previous hour had 0 attempts there. Attempts are the carrier's
ingress attempts (`ingress_total_calls` of `ingress_client_id`, code names from
`ingress_code_name`). One query for all active rows; one mail per row, carrier, code name
and hour, from the row's own `mail_from` (a mail_sender id or an address),
`mail_subject` and `mail_content` (default `templates/traffic_alert.*`) to `email`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping
from typing import Any

from .. import db
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult
from . import quality_common as qc

log = logging.getLogger(__name__)

KIND = "traffic_alert"

_SURGES = """
WITH t AS (
    SELECT * FROM unnest(%(alert_id)s::int[], %(carrier)s::int[], %(code_name)s::text[],
                         %(less)s::int[], %(greater)s::int[])
      AS t(alert_id, carrier, code_name, less, greater)
), s AS (
    SELECT t.alert_id, t.carrier, t.code_name, t.less, t.greater,
           coalesce(sum(d.ingress_total_calls) FILTER (WHERE d.report_time >= %(cur)s), 0)
               AS current_calls,
           coalesce(sum(d.ingress_total_calls) FILTER (WHERE d.report_time < %(cur)s), 0)
               AS previous_calls
    FROM t
    LEFT JOIN cdr_report_detail d
           ON d.ingress_client_id = t.carrier AND d.report_time >= %(prev)s
          AND d.report_time < %(end)s
          AND (t.code_name = '' OR d.ingress_code_name = t.code_name)
    GROUP BY t.alert_id, t.carrier, t.code_name, t.less, t.greater
)
SELECT s.*, c.name AS client_name, c.company
FROM s LEFT JOIN client c ON c.client_id = s.carrier
WHERE s.previous_calls < s.less AND s.current_calls > s.greater
ORDER BY s.alert_id, s.carrier, s.code_name
"""


def split_list(text: Any) -> list[str]:
    return [p.strip() for p in re.split(r"[,;\n]", str(text or "")) if p.strip()]


def hours(now: dt.datetime, settle: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    """(start of the previous hour, start of the current hour): the current hour is the
    last one complete `settle` ago."""
    end = qc.floor_hour(now - settle)
    return end - dt.timedelta(hours=2), end - dt.timedelta(hours=1)


def load(cur: db.Cursor) -> list[Mapping[str, Any]]:
    cur.execute("SELECT to_regclass('traffic_alert') IS NOT NULL AS present")
    if not cur.fetchone()["present"]:
        return []
    cur.execute("SELECT * FROM traffic_alert WHERE coalesce(active, false) ORDER BY id")
    return [dict(r) for r in cur.fetchall()]


def problem(row: Mapping[str, Any]) -> str:
    """Why an active row cannot be evaluated ('' when it can)."""
    if row.get("less_hour") is None or row.get("greater_hour") is None:
        return "less_hour and greater_hour must both be set"
    carriers = split_list(row.get("carriers"))
    if not carriers or not all(c.isdigit() for c in carriers):
        return f"carriers {row.get('carriers')!r} is not a list of client ids"
    if not str(row.get("email") or "").strip():
        return "no email"
    return ""


_REPORTED: set[tuple[str, int, str]] = set()


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    result = SweepResult(KIND)
    prev, cur_hour = hours(now, dt.timedelta(minutes=settings.traffic_settle_minutes))
    with db.unit_of_work(database, dry_run=settings.dry_run) as cur:
        rows = load(cur)
        arrays: dict[str, list[Any]] = {k: [] for k in ("alert_id", "carrier", "code_name",
                                                         "less", "greater")}
        by_id = {}
        for row in rows:
            why = problem(row)
            if why:
                key = (database.safe_name, row["id"], why)
                if key not in _REPORTED:
                    _REPORTED.add(key)
                    log.warning("traffic_alert: row %s is not evaluated: %s", row["id"], why)
                continue
            by_id[row["id"]] = row
            for carrier in split_list(row["carriers"]):
                for code_name in split_list(row.get("code_name")) or [""]:
                    arrays["alert_id"].append(row["id"])
                    arrays["carrier"].append(int(carrier))
                    arrays["code_name"].append(code_name)
                    arrays["less"].append(int(row["less_hour"]))
                    arrays["greater"].append(int(row["greater_hour"]))
        if not arrays["alert_id"]:
            return result
        cur.execute(_SURGES, {**arrays, "prev": prev, "cur": cur_hour,
                              "end": cur_hour + dt.timedelta(hours=1)})
        surges = cur.fetchall()
        if not surges:
            return result
        pipe = Pipeline.open(cur, settings)
        for surge in surges:
            row = by_id[surge["alert_id"]]
            template = f"traffic_alert:{row['id']}"
            pipe.mail_config.add_template(template, subject=row.get("mail_subject"),
                                          content=row.get("mail_content"),
                                          sender=row.get("mail_from"))
            new = pipe.queue(cur, Notice(
                kind=KIND,
                dedupe_key=(f"{KIND}:{row['id']}:{surge['carrier']}:{surge['code_name']}:"
                            f"{cur_hour:%Y%m%dT%H}"),
                template=template, client_id=surge["carrier"],
                recipients=str(row.get("email") or "").strip(),
                context=context(surge, prev, cur_hour), decided_at=now,
                alert_rule=(f"traffic alert {row['id']}: previous hour < {row['less_hour']}, "
                            f"current hour > {row['greater_hour']}"),
                meta={"traffic_alert_id": row["id"]}))
            if new:  # said when the surge is first seen, not every sweep of the hour
                log.warning("traffic_alert: row %s: carrier %s %r%s: %s attempts in the hour from "
                            "%s after %s the hour before", row["id"], surge["carrier"],
                            surge["client_name"],
                            f" code name {surge['code_name']!r}" if surge["code_name"] else "",
                            surge["current_calls"], f"{cur_hour:%H:%M}", surge["previous_calls"])
        result.queued += pipe.queued
        result.duplicates += pipe.duplicates
        result.skipped += pipe.failed
        result.mails.extend(pipe.mails)
    return result


def context(surge: Mapping[str, Any], prev: dt.datetime, cur_hour: dt.datetime
            ) -> dict[str, Any]:
    name = surge.get("client_name") or f"client {surge['carrier']}"
    return {
        "carrier": name, "client_name": name,
        "company_name": surge.get("company") or name,
        "code_name": surge["code_name"] or "all destinations",
        "previous_hour": f"{prev:%Y-%m-%d %H:%M} GMT",
        "current_hour": f"{cur_hour:%Y-%m-%d %H:%M} GMT",
        "previous_hour_calls": int(surge["previous_calls"]),
        "current_hour_calls": int(surge["current_calls"]),
        "less_hour": int(surge["less"]), "greater_hour": int(surge["greater"]),
    }
