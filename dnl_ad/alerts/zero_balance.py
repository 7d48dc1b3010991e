"""Alert 2, zero balance: the client has used up its money (prepay balance <= 0) or its
credit (postpay balance <= allowed_credit). Clients with unlimited credit never get it.

Enabled by the v5 "Zero Balance Notification" checkbox (`client.zero_balance_notice`,
nullable). The episode rules are balance_common's: one notice at once, then one per
client-local day (duplicate_days from client_low_balance_config applies here too). The
UI's columns: client.zero_balance_notice_time (notices in the open episode, 0 when none)
and client.zero_balance_notice_last_sent. Sent to the partner's billing contact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from psycopg2 import sql

from .. import clock, db
from . import recipients
from .balance_common import BalanceRule

KIND = "zero_balance"

THRESHOLD = sql.SQL("CASE cl.mode WHEN 1 THEN 0 WHEN 2 THEN coalesce(cl.allowed_credit, 0) END")


def _threshold_problem(row: Mapping[str, Any]) -> str:
    return f"unknown client.mode {row['mode']!r} (1 = prepay, 2 = postpay)"


def _record(cur: db.Cursor, row: Mapping[str, Any], now: dt.datetime, n: int,
            days: int) -> None:
    cur.execute("UPDATE client SET zero_balance_notice_time = %s, "
                "zero_balance_notice_last_sent = %s WHERE client_id = %s",
                (n, now, row["client_id"]))


def _reset(cur: db.Cursor, ids: list[int]) -> int:
    cur.execute("UPDATE client SET zero_balance_notice_time = 0, "
                "zero_balance_notice_last_sent = NULL WHERE client_id = ANY(%s) "
                "AND (coalesce(zero_balance_notice_time, 0) <> 0 "
                "OR zero_balance_notice_last_sent IS NOT NULL)", (ids,))
    return cur.rowcount


RULE = BalanceRule(
    kind=KIND,
    template="zerobalance",
    title="zero balance",
    enabled=sql.SQL("coalesce(cl.zero_balance_notice, false)"),
    threshold=THRESHOLD,
    provider_open=sql.SQL("(coalesce(cl.zero_balance_notice_time, 0) <> 0 "
                          "OR cl.zero_balance_notice_last_sent IS NOT NULL)"),
    provider_last=sql.SQL("cl.zero_balance_notice_last_sent"),
    provider_count=sql.SQL("coalesce(NULLIF(cl.zero_balance_notice_time, 0), 1)"),
    threshold_problem=_threshold_problem,
    record=_record,
    reset=_reset,
    audience=lambda row: recipients.PARTNER,
    next_due=lambda row, instant, zone: clock.next_at_hour(instant, 0, zone),
)


# The registry calls `sweep(database, now, settings)`: the rule's own sweep.
sweep = RULE.sweep
