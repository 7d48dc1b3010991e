"""Alert 4, daily balance summary: real PostgreSQL, explicit `now`, rendered outbox rows."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

from dnl_ad.alerts import balance_summary

from . import factories as f
from .conftest import utc
from .daily_support import keys, money, outbox, tags_of, use_tag_template

DAY = dt.date(2026, 11, 20)  # report day (local)
NOW = utc(2026, 11, 20, 22, 30)  # 06:30 on the 21st at +08:00


def _setup(conn) -> None:
    f.system(conn)
    use_tag_template(conn, "auto_balance", "balance_summary")


def _client(conn, name: str, **values):
    defaults = {"auto_send_zone": "+08:00", "auto_summary_hour": 6,
                "is_auto_balance": True, "billing_email": f"{name}@client.example"}
    return f.client(conn, name=name, company=f"{name} Co", **{**defaults, **values})


def _history(conn, client_id: int, day: dt.date, balance: str) -> None:
    f.insert(conn, "balance_history_actual", client_id=client_id, date=day,
             actual_balance=Decimal(balance), unbilled_incoming_traffic=0,
             unbilled_outgoing_traffic=0)


def _key(client) -> str:
    return f"balance_summary:{client['client_id']}:{DAY.isoformat()}"


def test_balances_amounts_and_credit(conn, database, settings) -> None:
    _setup(conn)
    c = _client(conn, "acme", balance=1234.56, allowed_credit=-300)
    cid = c["client_id"]
    f.trunk(conn, cid, alias="acme-1")
    # History: the row dated the day before the report day is the beginning balance; the
    # rows around it must not be taken for it.
    _history(conn, cid, DAY - dt.timedelta(days=2), "111.00")
    _history(conn, cid, DAY - dt.timedelta(days=1), "1000.50")
    _history(conn, cid, DAY, "1180.25")
    start = utc(2026, 11, 19, 16)  # local 2026-11-20 00:00
    f.traffic(conn, report_time=start, ingress_client_id=cid, ingress_call_cost=Decimal("40.5"),
              not_zero_calls=1)
    f.traffic(conn, report_time=start + dt.timedelta(hours=23), ingress_client_id=cid,
              ingress_call_cost=Decimal("9.5"), egress_client_id=cid,
              egress_call_cost=Decimal("7.25"), not_zero_calls=1)
    f.traffic(conn, report_time=start - dt.timedelta(hours=1), ingress_client_id=cid,
              ingress_call_cost=Decimal("999"), not_zero_calls=1)  # the day before: excluded

    assert balance_summary.sweep(database, NOW, settings).queued == 1
    t = tags_of(conn, _key(c))
    assert money(t["beginning_balance"]) == Decimal("1000.50")
    assert money(t["beginning_of_day_balance"]) == Decimal("1000.50")
    assert money(t["buy_amount"]) == Decimal("50.00")
    assert money(t["sell_amount"]) == Decimal("7.25")
    assert money(t["ending_balance"]) == Decimal("1180.25")  # the closed report-day row
    assert money(t["current_balance"]) == money(t["balance"]) == Decimal("1234.56")
    assert money(t["credit_limit"]) == money(t["allowed_credit"]) == Decimal("300")
    assert money(t["remaining_credit"]) == Decimal("1534.56")
    assert t["start_time"] == "2026-11-20 00:00:00" and t["end_time"] == "2026-11-20 23:59:59"
    # the history row is the switch's day (+0000): taken at its midnight, 08:00 at +08:00
    assert t["begining_of_day"] == t["beginning_of_day"] == "2026-11-20 08:00:00"
    assert t["current_day"] == "2026-11-20"
    assert t["current_time"] == "2026-11-21 06:30:00"  # now, in the client's zone
    assert t["customer_gmt"] == "GMT+08:00"
    assert t["switch_alias"] == ""  # system_parameter.switch_alias, not a trunk alias
    assert (t["company_name"], t["client_name"]) == ("acme Co", "acme")


def test_double_precision_balance_is_converted_exactly(conn, database, settings) -> None:
    _setup(conn)
    c = _client(conn, "float", balance=0.1 + 0.2, allowed_credit=0)  # 0.30000000000000004
    _history(conn, c["client_id"], DAY - dt.timedelta(days=1), "-5")
    balance_summary.sweep(database, NOW, settings)
    t = tags_of(conn, _key(c))
    assert t["current_balance"] == "0.30"
    assert t["beginning_balance"] == "(5.00)"
    assert money(t["ending_balance"]) == Decimal("0.30")  # no closed row: current balance


def test_missing_history_is_mailed_as_unknown_with_a_warning(conn, database, settings,
                                                             caplog) -> None:
    _setup(conn)
    caplog.set_level(logging.WARNING)
    lonely = _client(conn, "lonely", balance=50)
    other = _client(conn, "other", balance=70)
    _history(conn, other["client_id"], DAY - dt.timedelta(days=1), "60")
    _history(conn, lonely["client_id"], DAY, "55")  # the wrong day: not a beginning balance
    assert balance_summary.sweep(database, NOW, settings).queued == 2
    t = tags_of(conn, _key(lonely))
    assert t["beginning_balance"] == "unknown" and t["beginning_of_day_balance"] == "unknown"
    assert money(t["current_balance"]) == Decimal("50")
    assert money(tags_of(conn, _key(other))["beginning_balance"]) == Decimal("60")
    warnings = [r.getMessage() for r in caplog.records if "balance_history_actual" in
                r.getMessage()]
    assert len(warnings) == 1
    assert f"client {lonely['client_id']}" in warnings[0] and "2026-11-19" in warnings[0]


def test_due_only_at_the_send_hour_and_once(conn, database, settings) -> None:
    _setup(conn)
    settings = settings.replace(catchup_hours=2)
    # The balance summary's own send time (Mass Edit) wins over the shared send hour:
    # 07:00 at +08:00 is 23:00 UTC.
    c = _client(conn, "hourly", auto_summary_hour=3, auto_send_zone="Mars/Olympus",
                daily_balance_send_time=dt.time(7, 0), daily_balance_send_time_zone="+08:00")
    f.client(conn, name="disabled", auto_send_zone="+08:00")  # flag off
    assert balance_summary.sweep(database, utc(2026, 11, 20, 22, 59), settings).queued == 0
    assert balance_summary.sweep(database, utc(2026, 11, 20, 23, 0), settings).queued == 1
    assert balance_summary.sweep(database, utc(2026, 11, 20, 23, 1), settings).queued == 0
    assert keys(conn) == {_key(c)}
    assert outbox(conn)[0]["to_addrs"] == ["hourly@client.example"]
