"""Alert 3: the usage summary, buy and sell of the client's previous period in one mail.

Buy is the traffic the client sent us (cdr_report_detail rows where it is the ingress
client), sell the traffic we sent it (egress client). Both halves come from one
aggregation query over all due clients' windows, on the parent table by report_time so a
local day spanning two UTC-day partitions is summed whole. With auto_summary_not_zero (1)
a period without a single non-zero call in either direction sends nothing.

The v5 settings (PROVIDER_DB.md): `auto_summary_period` 24 (the previous local day, at
`auto_summary_hour`) or 1/2/4/6/8/12 hours (each block of that length, aligned to local
midnight, once it has ended and settled; -15/-30 minutes are served hourly: the table is
hourly); `auto_summary_group_by` 0 country, 1 code name, 2 code: the detail rows per side
(one more aggregation over the same windows, the 20 largest by amount, the rest as
"Other"); `auto_summary_include_cdr`: the period's CDR download links (the static
CDR_DOWNLOAD_URL links; the API's exports are the daily CDR mail's, alert 5).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from psycopg2 import sql

from .. import cdr_api, clock, db
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, daily_common
from .daily_common import Due, count, minutes, money

log = logging.getLogger(__name__)

KIND = "usage_summary"
SPEC = daily_common.DailySpec(KIND, "is_auto_summary", "auto_summary", "usage summary",
                              taken_over="last_autoreport_time",
                              period_column="auto_summary_period")
GROUP_BY = {0: "Country", 1: "Code name", 2: "Code"}
DETAIL_ROWS = 20
_CDR_NOTED: set[int] = set()


def _detail_side(side: str, code: str) -> sql.Composable:
    cols = {"p": sql.SQL(side), "code": sql.SQL(code),
            "label": sql.Literal("buy" if side == "ingress" else "sell")}
    return sql.SQL(
        "SELECT w.key, {label}::text AS side, "
        "CASE coalesce(c.auto_summary_group_by, 0) WHEN 1 THEN d.{p}_code_name "
        "WHEN 2 THEN d.{code} ELSE d.{p}_country END AS name, "
        "sum(d.{p}_total_calls) AS calls, sum(d.not_zero_calls) AS not_zero, "
        "sum(d.{p}_bill_time) AS bill_time, sum(d.{p}_call_cost) AS cost "
        "FROM w JOIN client c ON c.client_id = w.client_id "
        "JOIN cdr_report_detail d ON d.{p}_client_id = w.client_id "
        "AND d.report_time >= w.t0 AND d.report_time < w.t1 "
        "AND d.report_time >= %(lo)s AND d.report_time < %(hi)s GROUP BY 1, 2, 3"
    ).format(**cols)


# Detail rows per window, side and group (country, code name or code, as the client chose).
DETAILS = sql.SQL("WITH {windows} {buy} UNION ALL {sell} ORDER BY 1, 2, 7 DESC NULLS LAST"
                  ).format(windows=daily_common.WINDOWS,
                           buy=_detail_side("ingress", "ingress_code"),
                           sell=_detail_side("egress", "egress_code"))

_SIDES = ("total_calls", "success_calls", "not_zero_calls", "bill_time", "cost", "duration")

QUERY = sql.SQL("WITH {windows} SELECT w.key, c.auto_summary_not_zero, "
                "c.auto_summary_group_by, c.auto_summary_include_cdr, {client}, {sides} "
                "FROM w {join} {traffic}").format(
    windows=daily_common.WINDOWS,
    traffic=daily_common.TRAFFIC,
    client=daily_common.CLIENT_COLUMNS,
    join=daily_common.CLIENT_JOIN,
    sides=sql.SQL(", ").join(
        sql.SQL("{}.{} AS {}").format(sql.Identifier(side), sql.Identifier(col),
                                      sql.Identifier(f"{side}_{col}"))
        for side in ("buy", "sell") for col in _SIDES),
)


def fetch_details(cur: db.Cursor, due: list[Due]) -> dict[str, dict[str, list[dict]]]:
    """key -> {"buy": [...], "sell": [...]}: the detail rows, largest amount first, the
    ones past DETAIL_ROWS summed as "Other"."""
    found: dict[str, dict[str, list[dict]]] = {}
    if not due:
        return found
    cur.execute(DETAILS, daily_common.windows_params(due))
    raw: dict[str, dict[str, list[list[Any]]]] = {}
    for r in cur.fetchall():
        rows = raw.setdefault(r["key"], {"buy": [], "sell": []})[r["side"]]
        item = [r["name"] or "(unknown)", count(r["calls"]), count(r["not_zero"]),
                int(r["bill_time"] or 0), money(r["cost"])]
        if len(rows) < DETAIL_ROWS:
            rows.append(item)
        elif len(rows) == DETAIL_ROWS:
            rows.append(["Other", *item[1:]])
        else:
            rows[-1][1:] = [a + b for a, b in zip(rows[-1][1:], item[1:], strict=True)]
    for key, sides in raw.items():
        found[key] = {side: [{"name": n, "calls": c, "not_zero": z, "minutes": minutes(b),
                              "amount": a} for n, c, z, b, a in rows]
                      for side, rows in sides.items()}
    return found


def cdr_links(cur: db.Cursor, due: list[Due], rows: Mapping[str, Mapping[str, Any]],
              settings: Settings) -> dict[str, list[dict[str, str]]]:
    """key -> [{trunk, url}] for the clients with auto_summary_include_cdr: the static
    CDR_DOWNLOAD_URL link of each trunk with traffic in the window (no HTTP here: the
    sweep holds its transaction)."""
    wanted = [d for d in due if (rows.get(d.key) or {}).get("auto_summary_include_cdr")]
    if not wanted:
        return {}
    if not settings.cdr_download_url:
        for d in wanted:
            if d.client_id not in _CDR_NOTED:
                _CDR_NOTED.add(d.client_id)
                log.warning("%s: client %s has auto_summary_include_cdr but CDR_DOWNLOAD_URL "
                            "is empty: the summary goes without CDR links (the daily CDR "
                            "mail, alert 5, carries the API's)", KIND, d.client_id)
        return {}
    from .cdr_delivery import fetch as trunks_with_traffic

    links: dict[str, list[dict[str, str]]] = {}
    for key, entry in trunks_with_traffic(cur, wanted).items():
        by_key = {d.key: d for d in wanted}
        d = by_key[key]
        links[key] = [{"trunk": alias or f"trunk {trunk_id}",
                       "url": cdr_api.static_link(settings.cdr_download_url, d.start, d.end,
                                                  trunk_id)}
                      for trunk_id, _side, alias, _calls in entry["trunks"]]
    return links


def context(due: Due, row: Mapping[str, Any]) -> dict[str, Any]:
    """Every usage-summary tag (PROVIDER_DB.md) from one aggregated row."""
    ctx = daily_common.client_context(due, row, KIND)
    ctx["group_by"] = GROUP_BY.get(row.get("auto_summary_group_by") or 0, "Country")
    ctx["details_buy"] = []
    ctx["details_sell"] = []
    ctx["cdr_links"] = []
    for side in ("buy", "sell"):
        ctx[f"total_call_{side}"] = count(row.get(f"{side}_total_calls"))
        ctx[f"total_not_zero_calls_{side}"] = count(row.get(f"{side}_not_zero_calls"))
        ctx[f"total_success_call_{side}"] = count(row.get(f"{side}_success_calls"))
        ctx[f"total_billed_min_{side}"] = minutes(row.get(f"{side}_bill_time"))
        ctx[f"total_billed_amount_{side}"] = money(row.get(f"{side}_cost"))
        ctx[f"{side}_total_duration"] = minutes(row.get(f"{side}_duration"))
    ctx["current_day"] = due.report_day.isoformat()
    return ctx


def build(due: Due, row: Mapping[str, Any], now: dt.datetime,
          pipeline: Pipeline) -> Notice | None:
    """The client's notice, or None when auto_summary_not_zero and no call was billed."""
    ctx = context(due, row)
    ctx["details_buy"] = row.get("details", {}).get("buy", [])
    ctx["details_sell"] = row.get("details", {}).get("sell", [])
    ctx["cdr_links"] = row.get("cdr_links", [])
    if row.get("auto_summary_not_zero") and \
            ctx["total_not_zero_calls_buy"] + ctx["total_not_zero_calls_sell"] == 0:
        log.info("%s: client %s: no non-zero call on %s and auto_summary_not_zero is set; "
                 "no summary", KIND, due.client_id, due.report_day)
        return None
    return daily_common.notice(SPEC, due, row, ctx, now, pipeline.system, pipeline.settings)


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Queue yesterday's (local) usage summary for every client whose send hour has come.

    1. One query: enabled clients; their zones and due windows worked out in Python.
    2. One query: which of those reports are queued already (they are not re-rendered).
    3. One aggregation query: buy and sell totals of every remaining window at once, one
       for the detail rows, and one for the CDR links of the clients that want them.
    4. The notices rendered and queued in bounded batches (dnl_ad.batches).
    """
    now = clock.require_aware(now)
    result = SweepResult(KIND)
    with database.transaction() as cur:
        pipeline = Pipeline.open(cur, settings)
        due = daily_common.plan(cur, SPEC, now, settings, database, result)
        rows = daily_common.fetch_by_key(cur, QUERY, due)
        details = fetch_details(cur, due)
        links = cdr_links(cur, due, rows, settings)
    for key, row in rows.items():
        row["details"] = details.get(key, {})
        row["cdr_links"] = links.get(key, [])
    daily_common.queue_all(database, pipeline, SPEC, due, rows,
                           lambda d, r: build(d, r, now, pipeline), result, now)
    daily_common.finish(result, pipeline)
    return result
