"""Alert 3, daily usage summary: real PostgreSQL, explicit `now`, rendered outbox rows."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

from dnl_ad.alerts import usage_summary

from . import factories as f
from .conftest import utc
from .daily_support import keys, money, outbox, tags_of, use_tag_template

H = dt.timedelta(hours=1)
DAY = "2026-11-20"  # the report day (local) in every test


def _setup(conn, sys_timezone: str = "+00:00") -> None:
    f.system(conn, sys_timezone=sys_timezone, switch_alias="Carrier Switch")
    use_tag_template(conn, "auto_summary", "usage_summary")


def _summary_client(conn, name: str, zone: str | None, hour: int | None, **values):
    return f.client(conn, name=name, company=f"{name} Co", is_auto_summary=True,
                    auto_send_zone=zone, auto_summary_hour=hour,
                    billing_email=f"{name}@client.example", **values)


def _key(client) -> str:
    return f"usage_summary:{client['client_id']}:{DAY}"


def _edges(conn, client_id: int, start: dt.datetime, end: dt.datetime) -> None:
    """Ingress rows just outside and just inside [start, end): 1 + 1000 outside, 10 + 100
    inside; start and end - 1 h lie in different UTC-day partitions."""
    for when, calls in ((start - H, 1), (start, 10), (end - H, 100), (end, 1000)):
        f.traffic(conn, report_time=when, ingress_client_id=client_id, ingress_id=1,
                  egress_client_id=None, ingress_total_calls=calls, not_zero_calls=calls)


GMT = {"east": "GMT+08:00", "west": "GMT-05:00", "nepal": "GMT+05:45", "sys": "GMT+03:00"}


def _zone_clients(conn) -> dict[str, dict]:
    """Four clients in four zones (one via sys_timezone +03:00), each with edge traffic
    around its local 2026-11-20; plus a disabled and an inactive client."""
    _setup(conn, sys_timezone="+03:00")
    east = _summary_client(conn, "east", "+08:00", 6)
    west = _summary_client(conn, "west", "-05:00", 6)
    nepal = _summary_client(conn, "nepal", "+05:45", 6)
    system_zone = _summary_client(conn, "sys", None, None)  # sys_timezone, hour 0
    f.client(conn, name="off", is_auto_summary=False)
    f.client(conn, name="inactive", status=False, is_auto_summary=True)
    windows = {  # local 2026-11-20 in UTC
        "east": (utc(2026, 11, 19, 16), utc(2026, 11, 20, 16)),
        "west": (utc(2026, 11, 20, 5), utc(2026, 11, 21, 5)),
        "nepal": (utc(2026, 11, 19, 18, 15), utc(2026, 11, 20, 18, 15)),
        "sys": (utc(2026, 11, 19, 21), utc(2026, 11, 20, 21)),
    }
    clients = {"east": east, "west": west, "nepal": nepal, "sys": system_zone}
    for name, (start, end) in windows.items():
        _edges(conn, clients[name]["client_id"], start, end)
    return clients


def _assert_exact_days(conn, clients: dict[str, dict]) -> None:
    for name, client in clients.items():
        tags = tags_of(conn, _key(client))
        assert tags["total_call_buy"] == "110", name  # 10 + 100: both partitions, no edges
        assert tags["total_not_zero_calls_buy"] == "110", name
        assert tags["begin_time"] == f"{DAY} 00:00:00", name
        assert tags["end_time"] == f"{DAY} 23:59:59", name
        assert tags["customer_gmt"] == GMT[name], name
        assert tags["client_name"] == name


def test_each_zone_gets_its_previous_local_day_at_its_own_send_hour(conn, database,
                                                                    settings) -> None:
    clients = _zone_clients(conn)
    settings = settings.replace(catchup_hours=2)  # the day before's report is out of reach

    schedule = [  # (now, clients whose report exists after the sweep)
        (utc(2026, 11, 20, 20, 59), set()),
        (utc(2026, 11, 20, 21, 0), {"sys"}),          # 00:00 at +03:00
        (utc(2026, 11, 20, 21, 59), {"sys"}),
        (utc(2026, 11, 20, 22, 0), {"sys", "east"}),  # 06:00 at +08:00
        (utc(2026, 11, 21, 0, 14), {"sys", "east"}),
        (utc(2026, 11, 21, 0, 15), {"sys", "east", "nepal"}),  # 06:00 at +05:45
        (utc(2026, 11, 21, 10, 59), {"sys", "east", "nepal"}),
        (utc(2026, 11, 21, 11, 0), {"sys", "east", "nepal", "west"}),  # 06:00 at -05:00
    ]
    for now, expected in schedule:
        usage_summary.sweep(database, now, settings)
        assert keys(conn) == {_key(clients[n]) for n in expected}, now

    _assert_exact_days(conn, clients)
    rows = {r["dedupe_key"]: r for r in outbox(conn)}
    assert rows[_key(clients["east"])]["to_addrs"] == ["east@client.example"]
    assert rows[_key(clients["east"])]["subject"] == "report east"


def test_all_zones_in_one_sweep_keep_their_own_windows(conn, database, settings) -> None:
    clients = _zone_clients(conn)
    # 11:00 UTC on the 21st: all four reports are due (the oldest 14 h ago), one query.
    result = usage_summary.sweep(database, utc(2026, 11, 21, 11), settings)
    assert {_key(c) for c in clients.values()} <= keys(conn)
    assert result.queued == len(keys(conn))
    _assert_exact_days(conn, clients)


def test_buy_and_sell_in_one_mail_and_one_sided_clients(conn, database, settings) -> None:
    _setup(conn)
    both = _summary_client(conn, "both", "+08:00", 0, balance=150.25, allowed_credit=-300)
    seller = _summary_client(conn, "seller", "+08:00", 0, balance=-20.5)
    buyer = _summary_client(conn, "buyer", "+08:00", 0, balance=None)
    f.trunk(conn, both["client_id"], alias="both-in")
    f.trunk(conn, both["client_id"], alias="both-out", ingress=False, egress=True)
    day = utc(2026, 11, 19, 16)  # local 2026-11-20 00:00 at +08:00
    # `both` buys (ingress) twice, once from `seller`; and sells (egress) once to `buyer`.
    f.traffic(conn, report_time=day + 2 * H, ingress_client_id=both["client_id"],
              egress_client_id=seller["client_id"], ingress_total_calls=10,
              ingress_success_calls=6, not_zero_calls=5, ingress_bill_time=300,
              ingress_call_cost=Decimal("1.5"), duration=320, egress_total_calls=9,
              egress_success_calls=6, egress_bill_time=290, egress_call_cost=Decimal("1.1"))
    f.traffic(conn, report_time=day + 13 * H, ingress_client_id=both["client_id"],
              ingress_total_calls=20, ingress_success_calls=14, not_zero_calls=12,
              ingress_bill_time=630, ingress_call_cost=Decimal("3.25"), duration=700)
    f.traffic(conn, report_time=day + 20 * H, ingress_client_id=buyer["client_id"],
              egress_client_id=both["client_id"], ingress_total_calls=8,
              ingress_success_calls=5, not_zero_calls=4, ingress_bill_time=250,
              ingress_call_cost=Decimal("2.7"), duration=250, egress_total_calls=7,
              egress_success_calls=5, egress_bill_time=240, egress_call_cost=Decimal("2.4"))

    result = usage_summary.sweep(database, utc(2026, 11, 20, 16, 1), settings)
    assert result.queued == 3

    t = tags_of(conn, _key(both))
    assert (t["total_call_buy"], t["total_success_call_buy"], t["total_not_zero_calls_buy"]) \
        == ("30", "20", "17")
    assert t["total_billed_min_buy"] == "15.50"  # (300 + 630) s
    assert money(t["total_billed_amount_buy"]) == Decimal("4.75")
    assert t["buy_total_duration"] == "17.00"  # (320 + 700) s
    assert (t["total_call_sell"], t["total_success_call_sell"], t["total_not_zero_calls_sell"]) \
        == ("7", "5", "4")
    assert t["total_billed_min_sell"] == "4.00"
    assert money(t["total_billed_amount_sell"]) == Decimal("2.40")
    assert t["sell_total_duration"] == "4.17"  # 250 s
    assert money(t["balance"]) == Decimal("150.25")
    assert money(t["credit_limit"]) == Decimal("300")
    assert money(t["remaining_credit"]) == Decimal("450.25")
    assert t["switch_alias"] == "Carrier Switch"  # system_parameter.switch_alias
    assert t["company_name"] == "both Co"

    s = tags_of(conn, _key(seller))  # only sells (egress of the first row)
    assert (s["total_call_buy"], s["total_not_zero_calls_buy"]) == ("0", "0")
    assert money(s["total_billed_amount_buy"]) == 0 and s["total_billed_min_buy"] == "0.00"
    assert (s["total_call_sell"], s["total_success_call_sell"]) == ("9", "6")
    assert s["total_billed_min_sell"] == "4.83" and money(s["total_billed_amount_sell"]) \
        == Decimal("1.10")
    assert s["balance"] == "(20.50)"  # negative money in parentheses

    b = tags_of(conn, _key(buyer))  # only buys (ingress of the last row)
    assert (b["total_call_buy"], b["total_success_call_buy"]) == ("8", "5")
    assert money(b["total_billed_amount_buy"]) == Decimal("2.70")
    assert (b["total_call_sell"], b["total_not_zero_calls_sell"]) == ("0", "0")
    assert b["balance"] == "unknown" and b["remaining_credit"] == "unknown"


def test_same_now_twice_queues_once_without_rendering_again(conn, database, settings) -> None:
    _setup(conn)
    c = _summary_client(conn, "once", "+08:00", 6)
    now = utc(2026, 11, 20, 22, 30)
    first = usage_summary.sweep(database, now, settings)
    second = usage_summary.sweep(database, now, settings)
    assert (first.queued, second.queued) == (1, 0)
    assert second.duplicates == 1  # found by the batch outbox lookup, before rendering
    assert [r["dedupe_key"] for r in outbox(conn)] == [_key(c)]


def test_report_missed_while_down_goes_out_once_after_restart(conn, database, settings) -> None:
    _setup(conn)
    c = _summary_client(conn, "late", "+08:00", 0)
    cid = c["client_id"]
    f.traffic(conn, report_time=utc(2026, 11, 20, 3), ingress_client_id=cid,
              ingress_total_calls=42, not_zero_calls=42)
    # Last sweep before the outage: 23:00 local on the 20th (the 20th's report not due yet).
    usage_summary.sweep(database, utc(2026, 11, 20, 15), settings)
    assert _key(c) not in keys(conn)
    # Back at 02:00 local on the 21st: the report due at 00:00 goes out, once.
    back = utc(2026, 11, 20, 18)
    assert usage_summary.sweep(database, back, settings).queued == 1
    assert usage_summary.sweep(database, back + dt.timedelta(minutes=1), settings).queued == 0
    assert [r["dedupe_key"] for r in outbox(conn)].count(_key(c)) == 1
    assert tags_of(conn, _key(c))["total_call_buy"] == "42"


def test_report_older_than_catchup_hours_is_not_sent_and_logged_once(conn, database, settings,
                                                                     caplog) -> None:
    _setup(conn)
    caplog.set_level(logging.WARNING, logger="dnl_ad.alerts.daily_common")
    c = _summary_client(conn, "gone", "+08:00", 0)
    settings = settings.replace(catchup_hours=1)
    usage_summary.sweep(database, utc(2026, 11, 20, 15), settings)  # 23:00 local, 20th
    before = keys(conn)
    # Back at 02:00 local: the 20th's report was due 2 h ago, beyond CATCHUP_HOURS=1.
    for minute in (0, 5):
        result = usage_summary.sweep(database, utc(2026, 11, 20, 18, minute), settings)
        assert result.queued == 0
    assert keys(conn) == before and _key(c) not in before
    lost = [r.getMessage() for r in caplog.records
            if f"client {c['client_id']} day {DAY}" in r.getMessage()]
    assert len(lost) == 1  # logged once, not once per sweep
    assert "not sent" in lost[0] and "CATCHUP_HOURS=1" in lost[0]


def test_outage_longer_than_catchup_hours_sends_only_the_recent_report(conn, database,
                                                                       settings) -> None:
    _setup(conn)  # CATCHUP_HOURS = 24 (default)
    c = _summary_client(conn, "away", "+08:00", 0)
    usage_summary.sweep(database, utc(2026, 11, 20, 15), settings)  # 23:00 local, 20th
    # Down 27 hours, back at 02:00 local on the 22nd: the 20th's report (due 26 h ago) is
    # lost, the 21st's (due 2 h ago) goes out.
    usage_summary.sweep(database, utc(2026, 11, 21, 18), settings)
    found = keys(conn)
    assert f"usage_summary:{c['client_id']}:2026-11-21" in found
    assert _key(c) not in found


def test_not_zero_flag_skips_days_without_billed_calls(conn, database, settings) -> None:
    _setup(conn)
    quiet = _summary_client(conn, "quiet", "+08:00", 0, auto_summary_not_zero=1)
    chatty = _summary_client(conn, "chatty", "+08:00", 0, auto_summary_not_zero=0)
    seller = _summary_client(conn, "seller", "+08:00", 0, auto_summary_not_zero=1)
    when = utc(2026, 11, 20, 1)
    for c in (quiet, chatty):  # attempts, none billed
        f.traffic(conn, report_time=when, ingress_client_id=c["client_id"],
                  ingress_total_calls=5, not_zero_calls=0)
    f.traffic(conn, report_time=when, egress_client_id=seller["client_id"],
              egress_total_calls=3, not_zero_calls=1)  # one billed call, sell side only
    usage_summary.sweep(database, utc(2026, 11, 20, 16, 5), settings)
    assert keys(conn) == {_key(chatty), _key(seller)}
    assert tags_of(conn, _key(chatty))["total_call_buy"] == "5"
    # A later sweep does not reconsider the skipped day.
    assert usage_summary.sweep(database, utc(2026, 11, 20, 17), settings).queued == 0


def test_default_template_renders_the_numbers(conn, database, settings) -> None:
    f.system(conn)  # mail_tmplate empty: the project's default templates
    c = _summary_client(conn, "plain", "+08:00", 0, balance=12.5)
    f.traffic(conn, report_time=utc(2026, 11, 20, 1), ingress_client_id=c["client_id"],
              ingress_total_calls=4321, ingress_call_cost=Decimal("98.765"), not_zero_calls=1)
    usage_summary.sweep(database, utc(2026, 11, 20, 16, 5), settings)
    (row,) = outbox(conn)
    for body in (row["text_body"], row["html_body"]):
        assert "4321" in body and "98.77" in body and "12.50" in body
        assert "GMT+08:00" in body and f"{DAY} 00:00:00" in body


def test_delivered_over_smtp_with_both_halves(conn, database, settings, smtp) -> None:
    from dnl_ad import delivery

    _setup(conn)
    c = _summary_client(conn, "wire", "-05:00", 6, balance=75)
    other = _summary_client(conn, "other", "-05:00", 6)
    f.traffic(conn, report_time=utc(2026, 11, 20, 12), ingress_client_id=c["client_id"],
              egress_client_id=other["client_id"], ingress_total_calls=31,
              egress_total_calls=29, not_zero_calls=20, ingress_call_cost=Decimal("6.2"),
              egress_call_cost=Decimal("5.8"))
    now = utc(2026, 11, 21, 11, 30)  # 06:30 at -05:00
    assert usage_summary.sweep(database, now, settings).queued == 2
    assert delivery.deliver(database, settings, now=now).sent == 2
    by_to = {m.rcpt_tos[0]: m.message for m in smtp.messages}
    mine = by_to["wire@client.example"]
    assert mine["Subject"] == "report wire"
    html_part = mine.get_body(("html",)).get_content()
    assert "total_call_buy=[31]" in html_part and "total_billed_amount_buy=[6.20]" in html_part
    assert "total_call_sell=[0]" in html_part and "balance=[75.00]" in html_part
    theirs = by_to["other@client.example"].get_body(("html",)).get_content()
    assert "total_call_sell=[29]" in theirs and "total_billed_amount_sell=[5.80]" in theirs


def test_a_quiet_day_is_recorded_not_later_logged_as_lost(conn, dsn, settings,
                                                          caplog) -> None:
    """Issue 16 item 9: a day with nothing to report is recorded as quiet; a restarted
    daemon (no memory) neither reads it again nor logs it as a missed report."""
    from dnl_ad import db

    _setup(conn)
    c = _summary_client(conn, "silent", "+08:00", 0, auto_summary_not_zero=1)
    first = db.Database(dsn)
    try:
        assert usage_summary.sweep(first, utc(2026, 11, 20, 16, 5), settings).queued == 0
    finally:
        first.close()
    quiet = f.rows(conn, "SELECT dedupe_key FROM dnl_ad.report_quiet")
    assert quiet == [{"dedupe_key": _key(c)}]
    caplog.set_level(logging.WARNING, logger="dnl_ad.alerts.daily_common")
    restarted = db.Database(dsn)  # a new daemon: its memory is empty
    try:
        later = utc(2026, 11, 21, 20)  # 28 h after the due time: beyond CATCHUP_HOURS
        usage_summary.sweep(restarted, later, settings.replace(catchup_hours=2))
    finally:
        restarted.close()
    assert not [r for r in caplog.records if f"client {c['client_id']} day {DAY}"
                in r.getMessage()]


def test_a_decided_group_is_not_read_again_until_a_member_changes(conn, database, settings,
                                                                  caplog) -> None:
    """Clients sharing their send settings are one group: once all its reports are
    decided, later sweeps only read the group; a client joining it is served at once."""
    from dnl_ad.alerts import daily_common

    _setup(conn)
    caplog.set_level(logging.WARNING, logger="dnl_ad.alerts.daily_common")
    settings = settings.replace(catchup_hours=1)
    first = _summary_client(conn, "first", "+08:00", 0)
    at = utc(2026, 11, 20, 18)  # 02:00 local: the 20th's report is 2 h old, beyond 1 h
    usage_summary.sweep(database, at, settings)
    groups = dict(daily_common.memory_for(database).groups)
    assert len(groups) == 1  # decided: the lost report was logged
    caplog.clear()
    usage_summary.sweep(database, at + dt.timedelta(minutes=1), settings)
    assert daily_common.memory_for(database).groups == groups and caplog.records == []
    # a second client with the same settings joins: the group is read again, and only
    # the newcomer's lost report is said (the first one's was said already)
    second = _summary_client(conn, "second", "+08:00", 0)
    usage_summary.sweep(database, at + dt.timedelta(minutes=2), settings)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"client {second['client_id']} day {DAY}" in text
    assert f"client {first['client_id']} day" not in text
    assert len(daily_common.memory_for(database).groups) == 2
