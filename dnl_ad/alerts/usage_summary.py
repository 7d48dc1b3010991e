"""Alert 3: the daily usage summary, buy and sell of the client's previous local day in one mail.

Buy is the traffic the client sent us (cdr_report_detail rows where it is the ingress
client), sell the traffic we sent it (egress client). Both halves come from one
aggregation query over all due clients' windows, on the parent table by report_time so a
local day spanning two UTC-day partitions is summed whole. With auto_summary_not_zero a
day without a single non-zero call in either direction sends nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from psycopg2 import sql

from .. import db
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, daily_common
from .daily_common import Due, count, minutes, money

log = logging.getLogger(__name__)

KIND = "usage_summary"
SPEC = daily_common.DailySpec(KIND, "is_auto_summary", "auto_summary", "daily usage summary",
                              taken_over="last_autoreport_time")

_SIDES = ("total_calls", "success_calls", "not_zero_calls", "bill_time", "cost", "duration")

QUERY = sql.SQL("WITH {windows} SELECT w.key, c.auto_summary_not_zero, {client}, {sides} "
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


def context(due: Due, row: Mapping[str, Any]) -> dict[str, Any]:
    """Every usage-summary tag (PROVIDER_DB.md) from one aggregated row."""
    ctx = daily_common.client_context(due, row, KIND)
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
    3. One aggregation query: buy and sell totals of every remaining window at once.
    4. Each client's notice rendered and queued in its own savepoint.
    """
    return daily_common.run(database, now, settings, SPEC, QUERY, build)
