"""Alert 4: the daily balance summary for the client's previous local day.

Beginning balance: balance_history_actual's row dated the day before the report day
(its actual_balance is the balance at the end of that day, so at the start of the report
day). Ending balance: the row dated the report day when the billing engine has closed
it, else the current balance. Buy and sell amounts: the client's ingress and egress
cost in the report window (cdr_report_detail). Current balance: c4_client_balance (double
precision, converted exactly through numeric). A client without a beginning row still
gets its mail, with the beginning balance shown as "unknown", and a warning is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from psycopg2 import sql

from .. import clock, db
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, daily_common
from .daily_common import UNKNOWN, Due, money

log = logging.getLogger(__name__)

KIND = "balance_summary"
SPEC = daily_common.DailySpec(KIND, "is_auto_balance", "auto_balance", "daily balance summary",
                              taken_over="last_autobalance_time", own_send_time=True,
                              days_column="numer_of_days_balance")

_HISTORY = ("LEFT JOIN LATERAL (SELECT h.actual_balance FROM balance_history_actual h "
            "WHERE h.client_id = w.client_id AND h.date = {day} "
            "ORDER BY h.id DESC LIMIT 1) {alias} ON true")

QUERY = sql.SQL(
    "WITH {windows} SELECT w.key, {client}, "
    "h0.actual_balance AS beginning_balance, (h0.actual_balance IS NOT NULL) AS has_beginning, "
    "h1.actual_balance AS closed_balance, "
    "coalesce(buy.cost, 0) AS buy_amount, coalesce(sell.cost, 0) AS sell_amount "
    "FROM w {join} {h0} {h1} {traffic}"
).format(
    windows=daily_common.WINDOWS,
    traffic=daily_common.TRAFFIC,
    client=daily_common.CLIENT_COLUMNS,
    join=daily_common.CLIENT_JOIN,
    h0=sql.SQL(_HISTORY).format(day=sql.SQL("w.first - 1"), alias=sql.Identifier("h0")),
    h1=sql.SQL(_HISTORY).format(day=sql.SQL("w.day"), alias=sql.Identifier("h1")),
)


def history_instant(due: Due, switch_zone: dt.tzinfo) -> dt.datetime:
    """The instant the beginning balance refers to: balance_history_actual rows are the
    switch's days (system_parameter.sys_timezone), so the row dated the day before the
    report day holds the balance at the switch's midnight, which is the start of the
    client's day only when both zones agree."""
    return clock.local_instant(due.first_day, switch_zone)


def context(due: Due, row: Mapping[str, Any], now: dt.datetime,
            switch_zone: dt.tzinfo | None = None) -> dict[str, Any]:
    """Every balance-summary tag (PROVIDER_DB.md) from one row. When the switch's day and
    the client's day start at different instants, `begining_of_day` says when the
    beginning balance was taken (in the client's zone), and the mail shows it."""
    ctx = daily_common.client_context(due, row, KIND)
    taken = history_instant(due, switch_zone) if switch_zone is not None else due.start
    if row.get("has_beginning"):
        beginning: Any = money(row["beginning_balance"])
    else:
        beginning = UNKNOWN
        log.warning("%s: client %s: no balance_history_actual row for %s; beginning balance "
                    "of %s shown as %r", KIND, due.client_id,
                    due.first_day - dt.timedelta(days=1), due.first_day, UNKNOWN)
    closed = row.get("closed_balance")
    ending = money(closed) if closed is not None else ctx["balance"]
    ctx.update({
        "start_time": due.begin_text,
        "beginning_balance": beginning,
        "beginning_of_day_balance": beginning,
        "begining_of_day": due.local_text(taken),  # when the beginning balance was taken
        "beginning_of_day": due.local_text(taken),
        "buy_amount": money(row.get("buy_amount")),
        "sell_amount": money(row.get("sell_amount")),
        "ending_balance": ending,
        "current_balance": ctx["balance"],
        "current_time": due.local_text(now),
        "current_day": due.report_day.isoformat(),
    })
    return ctx


def build(due: Due, row: Mapping[str, Any], now: dt.datetime,
          pipeline: Pipeline) -> Notice | None:
    switch_zone = clock.client_zone(due.client_id, None, None,
                                     pipeline.system.get("sys_timezone"))
    return daily_common.notice(SPEC, due, row, context(due, row, now, switch_zone), now,
                               pipeline.system, pipeline.settings)


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Queue yesterday's (local) balance summary for every client whose send hour has come.

    1. One query: enabled clients; zones and due windows worked out in Python.
    2. One query: which reports are queued already (not re-rendered).
    3. One query: history rows, amounts and balances of every remaining window at once.
    4. The notices rendered and queued in bounded batches (dnl_ad.batches).
    """
    return daily_common.run(database, now, settings, SPEC, QUERY, build)
