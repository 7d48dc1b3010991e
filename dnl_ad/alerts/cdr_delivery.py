"""Alert 5: the daily CDR delivery, one mail with a download link per trunk that carried calls.

For each due client (the previous day in its daily_cdr_generation_zone, sent at its send
hour), every active trunk of the direction daily_cdr_generation_type asks for (0 ingress,
1 egress, 2 both) with at least one non-zero call in the window gets a link: from the
DNL CDR export API when it is configured and answers in time, else the static
CDR_DOWNLOAD_URL link (dnl_ad.cdr_api). One mail lists them all, to whom
auto_daily_balance_recipient names. A client with no such trunk gets no mail. cdr_count
is the number of calls (attempts) on the listed trunks
in the window: the number of records the files hold.

The API can take minutes, so the sweep runs in three steps and holds no transaction
while it waits on HTTP: read (who is due, their trunks), links, then queue.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from markupsafe import Markup
from psycopg2 import sql

from .. import clock, db
from ..cdr_api import Link, LinkMaker
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, daily_common
from .daily_common import Due

log = logging.getLogger(__name__)

KIND = "cdr_delivery"
SPEC = daily_common.DailySpec(KIND, "daily_cdr_generation", "auto_cdr", "daily CDR delivery",
                              taken_over="last_cdrdown_time",
                              report_zone_column="daily_cdr_generation_zone")

# Per due window: each active trunk of the client with non-zero calls in it, and its calls.
# One index range scan per window and side on the (client, report_time) indexes, grouped
# by trunk; only trunks that belong to the client and are active count.
def _leg(side: str, types: tuple[int, ...]) -> sql.Composable:
    """One direction's trunks, only when client.daily_cdr_generation_type (0 incoming =
    ingress trunks, 1 outgoing = egress, 2 both; NULL = 0) asks for it."""
    return sql.SQL(
        "SELECT d.{p}_id AS trunk, {s} AS side, sum(d.{p}_total_calls) AS calls, "
        "sum(d.not_zero_calls) AS nz FROM cdr_report_detail d "
        "WHERE coalesce(cc.daily_cdr_generation_type, 0) = ANY({t}) "
        "AND d.{p}_client_id = w.client_id AND d.report_time >= w.t0 "
        "AND d.report_time < w.t1 AND d.report_time >= %(lo)s AND d.report_time < %(hi)s "
        "GROUP BY d.{p}_id"
    ).format(p=sql.SQL(side), s=sql.Literal(side), t=sql.Literal(list(types)))


QUERY = sql.SQL(
    "WITH {windows}, "
    "legs AS (SELECT w.key, x.trunk, x.side, x.calls, x.nz FROM w "
    "JOIN client cc ON cc.client_id = w.client_id "
    "CROSS JOIN LATERAL ({ingress} UNION ALL {egress}) x), "
    "per AS (SELECT key, trunk, side, sum(calls) AS calls FROM legs "
    "GROUP BY key, trunk, side HAVING sum(nz) > 0) "
    "SELECT w.key, {client}, r.resource_id, r.alias, per.side, "
    "per.calls::bigint AS calls "
    "FROM per JOIN w ON w.key = per.key {join} "
    "JOIN resource r ON r.resource_id = per.trunk AND r.client_id = w.client_id AND r.active "
    "ORDER BY w.key, r.resource_id, per.side"
).format(windows=daily_common.WINDOWS, ingress=_leg("ingress", (0, 2)),
         egress=_leg("egress", (1, 2)), client=daily_common.CLIENT_COLUMNS,
         join=daily_common.CLIENT_JOIN)


def fetch(cur: db.Cursor, due: list[Due]) -> dict[str, dict[str, Any]]:
    """key -> client columns plus `trunks`: [(resource_id, alias, calls)] and, in the same
    order, `sides` ('ingress' / 'egress': the CDR export's ingress_id or egress_id); only
    keys with traffic."""
    grouped: dict[str, dict[str, Any]] = {}
    if not due:
        return grouped
    cur.execute(QUERY, daily_common.windows_params(due))
    for row in cur.fetchall():
        entry = grouped.setdefault(row["key"], {**dict(row), "trunks": [], "sides": []})
        entry["trunks"].append((row["resource_id"], row["alias"] or "", int(row["calls"])))
        entry["sides"].append(row["side"])
    return grouped


def file_name(alias: str, trunk_id: int, day: dt.date) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", alias).strip("_") or f"trunk{trunk_id}"
    return f"{stem}_{day:%Y%m%d}.csv"


def context(due: Due, row: Mapping[str, Any], links: list[tuple[Link, str, int]]
            ) -> dict[str, Any]:
    """Every CDR-delivery tag (PROVIDER_DB.md); links are (link, alias, calls) per trunk."""
    items = Markup("").join(
        Markup('<li><a href="{}">{}</a></li>').format(link.url, alias or f"trunk {link.trunk_id}")
        for link, alias, _ in links)
    return {
        **daily_common.identity_context(due, row),
        "cdr_count": sum(calls for _, _, calls in links),
        "download_link": Markup("<ul>") + items + Markup("</ul>"),
        "file_name": ", ".join(file_name(a, lk.trunk_id, due.report_day) for lk, a, _ in links),
        "share_link": links[0][0].url,  # one URL (the first trunk's); download_link has all
        "trunk_name": ",".join(alias for _, alias, _ in links),
        "current_day": due.report_day.isoformat(),
        "currency": row.get("currency") or "",
    }


def sweep(database: db.Database, now: dt.datetime, settings: Settings, *,
          sleep: Callable[[float], None] | None = None) -> SweepResult:
    """Queue yesterday's (local) CDR links for every client whose send hour has come.

    1. Read: enabled clients, their due windows, keys already queued (skipped), and one
       query for every remaining window's trunks with non-zero calls.
    2. Links, outside any transaction (the API may take minutes; `sleep` is injectable).
       A dry run uses the static links only: it starts no export on the provider's API.
    3. Queue: each client's notice in its own savepoint; a client without traffic is
       remembered as settled and not looked at again for that day; one whose every link
       failed is not (a later sweep within the catch-up window tries again).
    """
    now = clock.require_aware(now)
    result = SweepResult(KIND)
    mem = daily_common.memory_for(database)
    with database.transaction() as cur:
        due = daily_common.plan(cur, SPEC, now, settings, database, result)
        rows = fetch(cur, due)
    for d in due:
        if d.key not in rows:
            mem.settled[d.key] = d.report_day
            log.debug("%s: client %s: no active trunk with non-zero calls on %s; no mail",
                      KIND, d.client_id, d.report_day)
    if not rows:
        return result
    link_settings = settings
    if settings.dry_run and settings.cdr_api_url:
        # An export request is work on the provider's side: a dry run does not start any.
        log.info("%s: dry run: the CDR API is not called; showing the static links", KIND)
        link_settings = settings.replace(cdr_api_url="")
    maker = LinkMaker(link_settings, **({"sleep": sleep} if sleep is not None else {}))
    links: dict[str, list[tuple[Link, str, int]]] = {}
    for d in due:
        row = rows.get(d.key)
        if row is None:
            continue
        found = []
        for trunk_id, alias, calls in row["trunks"]:
            link = maker.link(d.client_id, trunk_id, alias, d.start, d.end)
            if link is not None:
                found.append((link, alias, calls))
        links[d.key] = found
        if not found:
            # every link failed (logged by the LinkMaker): not settled, so a later sweep
            # within CATCHUP_HOURS tries again; an API outage must not lose the day
            result.skipped += 1
            log.warning("%s: client %s: no download link for %s; no mail now, retried next "
                        "sweep", KIND, d.client_id, d.report_day)

    with db.unit_of_work(database, dry_run=settings.dry_run) as cur:
        pipeline = Pipeline.open(cur, settings)

        def build(d: Due, row: Mapping[str, Any]) -> Notice | None:
            return daily_common.notice(SPEC, d, row, context(d, row, links[d.key]), now,
                                       pipeline.system, settings)

        daily_common.queue_all(cur, pipeline, SPEC, [d for d in due if links.get(d.key)],
                               rows, build, database, result)
        daily_common.finish(result, pipeline)
    return result
