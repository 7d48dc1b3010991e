"""Alert 1, low balance: the balance is at or below the client's notify threshold.

Threshold (PROVIDER_DB.md): value mode prepay `client_low_balance_config.
actual_notify_balance`; value mode postpay `client.notify_client_balance`; percentage
mode: remaining credit `balance - allowed_credit` <= `percentage_notify_balance`% of the
credit limit `-allowed_credit`, i.e. balance <= allowed_credit * (1 - pct/100), which is
the `notify_balance` the notice shows. The episode rules are balance_common's; the UI's
columns are client.last_lowbalance_time and client_low_balance_config.last_alert_time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from psycopg2 import sql

from .. import db
from .balance_common import BalanceRule

KIND = "low_balance"

THRESHOLD = sql.SQL("""CASE
    WHEN coalesce(cfg.value_type, 0) = 1
        THEN coalesce(cl.allowed_credit, 0) * (1 - cfg.percentage_notify_balance / 100)
    WHEN cl.mode = 1 THEN cfg.actual_notify_balance
    WHEN cl.mode = 2 THEN cl.notify_client_balance
END""")


def _threshold_problem(row: Mapping[str, Any]) -> str:
    if row["value_type"] == 1:
        return "percentage mode but client_low_balance_config.percentage_notify_balance is NULL"
    if row["mode"] == 1:
        if not row["has_config"]:
            return "prepay client has no client_low_balance_config row (no threshold)"
        return "prepay client with client_low_balance_config.actual_notify_balance NULL"
    if row["mode"] == 2:
        return "postpay client with client.notify_client_balance NULL"
    return f"unknown client.mode {row['mode']!r} (1 = prepay, 2 = postpay)"


def _record(cur: db.Cursor, row: Mapping[str, Any], now: dt.datetime, n: int) -> None:
    # one round trip for both tables; the config row may be missing (postpay, value mode)
    cur.execute("WITH c AS (UPDATE client SET last_lowbalance_time = %(now)s "
                "WHERE client_id = %(id)s) "
                "UPDATE client_low_balance_config SET last_alert_time = %(now)s "
                "WHERE client_id = %(id)s", {"now": now, "id": row["client_id"]})


def _reset(cur: db.Cursor, ids: list[int]) -> int:
    cur.execute("UPDATE client SET last_lowbalance_time = NULL "
                "WHERE client_id = ANY(%s) AND last_lowbalance_time IS NOT NULL", (ids,))
    written = cur.rowcount
    cur.execute("UPDATE client_low_balance_config SET last_alert_time = NULL "
                "WHERE client_id = ANY(%s) AND last_alert_time IS NOT NULL", (ids,))
    return written + cur.rowcount


RULE = BalanceRule(
    kind=KIND,
    template="lowbalance",
    title="low balance",
    enabled=sql.SQL("cl.low_balance_notice"),
    threshold=THRESHOLD,
    provider_open=sql.SQL("cl.last_lowbalance_time IS NOT NULL "
                          "OR cfg.last_alert_time IS NOT NULL"),
    threshold_problem=_threshold_problem,
    record=_record,
    reset=_reset,
)


# The registry calls `sweep(database, now, settings)`: the rule's own sweep.
sweep = RULE.sweep
