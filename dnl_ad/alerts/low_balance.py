"""Alert 1, low balance: the balance is at or below the client's notify threshold.

Who (PROVIDER_DB.md, v5 UI): an active client without unlimited credit whose "Low Balance
Notification" checkbox is set (`client.is_daily_balance_notification`, despite its name)
or whose `client_low_balance_config.is_notify` ("Alert and Notification", Mass Edit) is
true. `client.low_balance_notice` is not a setting (every v5 form writes false): ignored.

Threshold: `value_type` 0 (or NULL): balance <= `actual_notify_balance`; 1: remaining
credit `balance - allowed_credit` <= `percentage_notify_balance` % of the credit limit
`-allowed_credit` (allowed_credit is stored negative), i.e. balance <= allowed_credit *
(1 - pct/100), postpaid clients with a credit limit only. A client without a config row
uses the legacy `client.notify_client_balance`.

When: the first notice at once; then one per day at `daily_send_time` o'clock GMT (NULL:
the client's local midnight), or one per clock hour when `send_time_type` = 1, until
`duplicate_days` days have had a notice. Recipients per `send_to` (0 owner's billing
contact, 1 partner's, 2 both). The UI's columns: client.last_lowbalance_time,
client_low_balance_config.last_alert_time and duplicate_send_days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from psycopg2 import sql

from .. import clock, db
from . import recipients
from .balance_common import BalanceRule

KIND = "low_balance"

THRESHOLD = sql.SQL("""CASE
    WHEN cfg.client_id IS NULL THEN cl.notify_client_balance
    WHEN coalesce(cfg.value_type, 0) = 1 THEN
        CASE WHEN cl.allowed_credit < 0
             THEN cl.allowed_credit * (1 - cfg.percentage_notify_balance / 100) END
    ELSE cfg.actual_notify_balance
END""")


def _threshold_problem(row: Mapping[str, Any]) -> str:
    if not row["has_config"]:
        return "no client_low_balance_config row and client.notify_client_balance is NULL"
    if row["value_type"] == 1:
        if row["allowed_credit"] >= 0:
            return ("percentage mode (value_type 1) needs a postpaid credit limit; "
                    "client.allowed_credit is 0")
        return "percentage mode but client_low_balance_config.percentage_notify_balance is NULL"
    return "client_low_balance_config.actual_notify_balance is NULL"


def _record(cur: db.Cursor, row: Mapping[str, Any], now: dt.datetime, n: int,
            days: int) -> None:
    # one round trip for both tables; the config row may be missing (legacy threshold)
    cur.execute("WITH c AS (UPDATE client SET last_lowbalance_time = %(now)s "
                "WHERE client_id = %(id)s) "
                "UPDATE client_low_balance_config SET last_alert_time = %(now)s, "
                "duplicate_send_days = %(days)s WHERE client_id = %(id)s",
                {"now": now, "id": row["client_id"], "days": days})


def _reset(cur: db.Cursor, ids: list[int]) -> int:
    cur.execute("UPDATE client SET last_lowbalance_time = NULL "
                "WHERE client_id = ANY(%s) AND last_lowbalance_time IS NOT NULL", (ids,))
    written = cur.rowcount
    cur.execute("UPDATE client_low_balance_config SET last_alert_time = NULL, "
                "duplicate_send_days = 0 WHERE client_id = ANY(%s) "
                "AND (last_alert_time IS NOT NULL OR duplicate_send_days <> 0)", (ids,))
    return written + cur.rowcount


def _next_due(row: Mapping[str, Any], instant: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    if row.get("send_time_type") == 1:
        return clock.next_clock_hour(instant)
    hour = row.get("daily_send_time")
    if isinstance(hour, int) and 0 <= hour <= 23:
        return clock.next_at_hour(instant, hour, clock.UTC)
    return clock.next_at_hour(instant, 0, zone)


RULE = BalanceRule(
    kind=KIND,
    template="lowbalance",
    title="low balance",
    enabled=sql.SQL("(coalesce(cl.is_daily_balance_notification, false) "
                    "OR coalesce(cfg.is_notify, false))"),
    threshold=THRESHOLD,
    provider_open=sql.SQL("(cl.last_lowbalance_time IS NOT NULL "
                          "OR cfg.last_alert_time IS NOT NULL)"),
    provider_last=sql.SQL("greatest(cl.last_lowbalance_time, cfg.last_alert_time)"),
    provider_count=sql.SQL("coalesce(NULLIF(cfg.duplicate_send_days, 0), 1)"),
    threshold_problem=_threshold_problem,
    record=_record,
    reset=_reset,
    audience=lambda row: recipients.low_balance_audience(row.get("send_to")),
    next_due=_next_due,
)


# The registry calls `sweep(database, now, settings)`: the rule's own sweep.
sweep = RULE.sweep
