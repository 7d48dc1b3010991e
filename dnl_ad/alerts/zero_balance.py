"""Alert 2, zero balance: the client has used up its money (prepay balance <= 0) or its
credit (postpay balance <= allowed_credit). Clients with unlimited credit never get it.

The episode rules are balance_common's (duplicate_days from client_low_balance_config
applies here too); the UI's columns are client.zero_balance_notice_time (notices in the
open episode, 0 when none) and client.zero_balance_notice_last_sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from psycopg2 import sql

from .. import db
from .balance_common import BalanceRule

KIND = "zero_balance"

THRESHOLD = sql.SQL("CASE cl.mode WHEN 1 THEN 0 WHEN 2 THEN coalesce(cl.allowed_credit, 0) END")


def _threshold_problem(row: Mapping[str, Any]) -> str:
    return f"unknown client.mode {row['mode']!r} (1 = prepay, 2 = postpay)"


def _record(cur: db.Cursor, row: Mapping[str, Any], now: dt.datetime, n: int) -> None:
    cur.execute("UPDATE client SET zero_balance_notice_time = %s, "
                "zero_balance_notice_last_sent = %s WHERE client_id = %s",
                (n, now, row["client_id"]))


def _reset(cur: db.Cursor, ids: list[int]) -> int:
    cur.execute("UPDATE client SET zero_balance_notice_time = 0, "
                "zero_balance_notice_last_sent = NULL WHERE client_id = ANY(%s) "
                "AND (zero_balance_notice_time <> 0 OR zero_balance_notice_last_sent IS NOT NULL)",
                (ids,))
    return cur.rowcount


RULE = BalanceRule(
    kind=KIND,
    template="zerobalance",
    title="zero balance",
    enabled=sql.SQL("cl.zero_balance_notice"),
    threshold=THRESHOLD,
    provider_open=sql.SQL("cl.zero_balance_notice_time <> 0 "
                          "OR cl.zero_balance_notice_last_sent IS NOT NULL"),
    threshold_problem=_threshold_problem,
    record=_record,
    reset=_reset,
)


# The registry calls `sweep(database, now, settings)`: the rule's own sweep.
sweep = RULE.sweep
