"""Alert 8, the usage-limit ladder, on the REAL v5 schema (explicit `now` everywhere):
50/90/100 % once per period, the block at 100 % and the unblock at the period's end
(only dnl_ad's rows), carry-over, restarts, and each client's own midnight."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from dnl_ad import db
from dnl_ad.alerts import usage_limit

from . import factories as f
from .conftest import utc
from .test_v5_alerts import body, html, records, seed_system, ui_client

NOW = utc(2026, 11, 21, 4, 0)          # 12:00 at +08:00
DAY_START = utc(2026, 11, 20, 16)      # 2026-11-21 00:00 at +08:00
DAY_END = utc(2026, 11, 21, 16)        # 2026-11-22 00:00 at +08:00


def spend(conn, client: dict[str, Any], trunk: dict[str, Any], at: dt.datetime,
          cost: str, seconds: int = 60) -> None:
    """One hourly cdr_report_detail row of the client's ingress traffic."""
    f.traffic(conn, report_time=at, ingress_client_id=client["client_id"],
              ingress_id=trunk["resource_id"], ingress_call_cost=Decimal(cost),
              ingress_bill_time=seconds, ingress_total_calls=1, not_zero_calls=1)


def limited(conn, name: str, **values: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A client with a daily limit of 100 (unless given) and two ingress trunks plus an
    egress one (never blocked)."""
    c = ui_client(conn, name, **{"daily_limit": 100, **values})
    trunks = [f.trunk(conn, c["client_id"], alias=f"{name}-in{n}") for n in (1, 2)]
    f.trunk(conn, c["client_id"], alias=f"{name}-out", ingress=False, egress=True)
    return c, trunks


def sweep(database, settings, now):
    return usage_limit.sweep(database, now, settings)


def delivered(v5_database, v5_settings, smtp, now):
    from dnl_ad import delivery

    result = delivery.deliver(v5_database, v5_settings, now=now)
    assert result.failed == 0
    got = list(smtp.messages)
    smtp.messages.clear()
    return got


def blocks(conn) -> list[dict[str, Any]]:
    return f.rows(conn, "SELECT ingress_res_id, ingress_client_id, action_type, create_by, "
                  "update_by, unblock_at FROM resource_block ORDER BY res_block_id")


def test_ladder_50_90_100_blocks_and_reopens(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c, (t1, t2) = limited(v5_conn, "ladder")
    operator = f.insert(v5_conn, "resource_block", ingress_res_id=t1["resource_id"],
                        ingress_client_id=c["client_id"], action_type=0, create_by="admin",
                        update_by="admin")
    sent: list[str] = []
    for minute, cost in ((0, "40"), (1, "15"), (2, "40"), (3, "6")):  # 40, 55, 95, 101 %
        spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=minute + 1), cost)
        now = NOW + dt.timedelta(minutes=minute)
        sweep(v5_database, v5_settings, now)
        sent += [m.message["Subject"] for m in delivered(v5_database, v5_settings, smtp, now)]
    assert sent == ["50 % of your daily usage limit used",
                    "90 % of your daily usage limit used",
                    "Daily usage limit reached: trunks blocked until "
                    "2026-11-22 00:00:00 GMT+08:00"]
    # 100 %: one row per active ingress trunk, as DNL's fraud daemon writes them
    ours = [b for b in blocks(v5_conn) if b["create_by"] != "admin"]
    assert ours == [{"ingress_res_id": t["resource_id"], "ingress_client_id": c["client_id"],
                     "action_type": 3, "create_by": "dnl_ad usage limit",
                     "update_by": "dnl_ad usage limit",
                     "unblock_at": Decimal(int(DAY_END.timestamp()))} for t in (t1, t2)]
    [alert] = f.rows(v5_conn, "SELECT type, subject, is_view FROM admin_alert")
    assert alert["type"] == 1 and alert["is_view"] == 0 and "ladder" in alert["subject"]
    assert f.rows(v5_conn, "SELECT flag, count(*) AS n FROM resource_block_record "
                  "WHERE create_by = 'dnl_ad usage limit' GROUP BY flag") == [
                      {"flag": "I", "n": 2}]
    # the next sweeps in the period: nothing new
    assert sweep(v5_database, v5_settings, NOW + dt.timedelta(minutes=30)).queued == 0
    assert len(blocks(v5_conn)) == 3
    # the period ends: exactly our rows go (the operator's stays), the client is told
    end = DAY_END + dt.timedelta(seconds=5)
    assert sweep(v5_database, v5_settings, end).queued == 1
    assert [b["create_by"] for b in blocks(v5_conn)] == ["admin"]
    assert f.rows(v5_conn, "SELECT res_block_id FROM resource_block")[0]["res_block_id"] \
        == operator["res_block_id"]
    assert f.rows(v5_conn, "SELECT flag, count(*) AS n FROM resource_block_record "
                  "WHERE create_by = 'dnl_ad usage limit' GROUP BY flag ORDER BY flag") == [
                      {"flag": "D", "n": 2}, {"flag": "I", "n": 2}]
    [reopened] = delivered(v5_database, v5_settings, smtp, end)
    assert reopened.rcpt_tos == ["billing@ladder.example"]
    assert "ladder-in1, ladder-in2" in body(reopened) and "open again" in body(reopened)
    assert [r["type"] for r in f.rows(v5_conn, "SELECT type FROM email_log")] == [33] * 4


def test_the_100_percent_mail_names_trunks_unit_and_copies_the_noc(
        v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c, (t1, _) = limited(v5_conn, "over", currency_code="EUR")
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=2), "123.45")
    assert sweep(v5_database, v5_settings, NOW).queued == 1  # straight to 100 %: one mail
    [mail] = delivered(v5_database, v5_settings, smtp, NOW)
    assert sorted(mail.rcpt_tos) == ["billing@over.example", "noc@carrier.example"]
    text = body(mail)
    for shown in ("123.45 EUR", "100.00 EUR", "amount in EUR", "over-in1, over-in2",
                  "2026-11-22 00:00:00 GMT+08:00", "123 %"):
        assert shown in text, (shown, text)
    assert "123.45&nbsp;EUR" in html(mail)


def test_a_restart_between_steps_sends_no_step_twice(v5_conn, v5_dsn, v5_settings,
                                                      smtp) -> None:
    seed_system(v5_conn)
    c, (t1, _) = limited(v5_conn, "restart")
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=1), "60")
    first = db.Database(v5_dsn)
    assert sweep(first, v5_settings, NOW).queued == 1
    first.close()
    again = db.Database(v5_dsn)  # a new process: only the database remembers
    try:
        assert sweep(again, v5_settings, NOW + dt.timedelta(minutes=1)).queued == 0
        spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=2), "31")
        result = sweep(again, v5_settings, NOW + dt.timedelta(minutes=2))
        assert (result.queued, result.duplicates) == (1, 0)
    finally:
        again.close()
    keys = [r["dedupe_key"] for r in f.rows(v5_conn, "SELECT dedupe_key FROM dnl_ad.outbox "
                                            "ORDER BY id")]
    assert keys == [f"usage_limit:{c['client_id']}:day:20261120T160000Z:50",
                    f"usage_limit:{c['client_id']}:day:20261120T160000Z:90"]


def test_carry_over_raises_todays_limit_by_what_was_left(v5_conn, v5_database, v5_settings,
                                                         smtp) -> None:
    seed_system(v5_conn)
    settings = v5_settings.replace(usage_limit_carry_over=True)
    c, (t1, _) = limited(v5_conn, "carry")
    spend(v5_conn, c, t1, DAY_START - dt.timedelta(hours=5), "70")  # yesterday: 30 % left
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=1), "60")  # 60 of 130: 46 %
    assert sweep(v5_database, settings, NOW).queued == 0
    [state] = f.rows(v5_conn, "SELECT base_limit, carried, limit_value, step FROM "
                     "dnl_ad.usage_limit_state")
    assert state == {"base_limit": Decimal(100), "carried": Decimal(30),
                     "limit_value": Decimal(130), "step": 0}
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=2), "6")   # 66 of 130: 50.7 %
    assert sweep(v5_database, settings, NOW + dt.timedelta(minutes=1)).queued == 1
    [mail] = delivered(v5_database, settings, smtp, NOW + dt.timedelta(minutes=1))
    text = body(mail)
    assert "130.00 USD" in text and "carried over from yesterday: 30.00 USD" in text
    # without carry-over the same usage is already past 50 % of the base limit
    other, (o1, _) = limited(v5_conn, "nocarry")
    spend(v5_conn, other, o1, DAY_START - dt.timedelta(hours=5), "70")
    spend(v5_conn, other, o1, DAY_START + dt.timedelta(hours=1), "60")
    with v5_conn.cursor() as cur:
        cur.execute("INSERT INTO dnl_ad.usage_limit_client (client_id, carry_over) "
                    "VALUES (%s, false)", (other["client_id"],))
    assert sweep(v5_database, settings, NOW + dt.timedelta(minutes=2)).queued == 1


def test_carry_over_is_capped_at_twice_the_base(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    settings = v5_settings.replace(usage_limit_carry_over=True)
    c, (t1, _) = limited(v5_conn, "idle")  # nothing used yesterday
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=1), "99")
    assert sweep(v5_database, settings, NOW).queued == 0      # 99 of 200
    assert f.rows(v5_conn, "SELECT limit_value FROM dnl_ad.usage_limit_state")[0][
        "limit_value"] == Decimal(200)


def test_clients_at_plus_14_and_minus_12_reset_at_their_own_midnights(
        v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    east, (e1, _) = limited(v5_conn, "east", auto_send_zone="+14:00")
    west, (w1, _) = limited(v5_conn, "west", auto_send_zone="-12:00")
    # 2026-11-21: east's day is [11-20 10:00Z, 11-21 10:00Z), west's [11-21 12:00Z, ...)
    spend(v5_conn, east, e1, utc(2026, 11, 21, 9), "60")
    spend(v5_conn, west, w1, utc(2026, 11, 21, 11), "60")     # west: still 11-20 local
    t1 = utc(2026, 11, 21, 9, 30)
    assert sweep(v5_database, v5_settings, t1).queued == 2
    # east's midnight has passed, west's not: only east starts afresh
    spend(v5_conn, east, e1, utc(2026, 11, 21, 10), "60")
    assert sweep(v5_database, v5_settings, utc(2026, 11, 21, 10, 30)).queued == 1
    spend(v5_conn, west, w1, utc(2026, 11, 21, 12), "60")
    assert sweep(v5_database, v5_settings, utc(2026, 11, 21, 11, 59)).queued == 0
    assert sweep(v5_database, v5_settings, utc(2026, 11, 21, 12, 30)).queued == 1
    keys = sorted(r["dedupe_key"] for r in f.rows(v5_conn, "SELECT dedupe_key FROM "
                                                  "dnl_ad.outbox"))
    e, w = east["client_id"], west["client_id"]
    assert keys == sorted([f"usage_limit:{e}:day:20261120T100000Z:50",
                           f"usage_limit:{e}:day:20261121T100000Z:50",
                           f"usage_limit:{w}:day:20261120T120000Z:50",
                           f"usage_limit:{w}:day:20261121T120000Z:50"])


def test_hourly_limit_counts_the_running_hour_from_qos_and_reopens_at_the_hour(
        v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c, (t1, t2) = limited(v5_conn, "hourly", daily_limit=200, hourly_limit=10)
    now = utc(2026, 11, 21, 4, 40)
    # the running hour is not in cdr_report_detail yet: qos_route_report has it
    for trunk, cost, direction, at in ((t1, "6", 0, 20), (t2, "5", 0, 20), (t1, "50", 1, 20)):
        f.insert(v5_conn, "qos_route_report", report_time=utc(2026, 11, 21, 4, at),
                 resource_id=trunk["resource_id"], direction=direction, cost=Decimal(cost),
                 bill_time=60, total_calls=1, not_zero_calls=1)
    # hour 03 is in cdr_report_detail already: its qos rows are not counted twice (the
    # daily usage is 0.5 + 11 = 11.5 of 200; with them it would be 111.5, past 50 %)
    spend(v5_conn, c, t1, utc(2026, 11, 21, 3), "0.5")
    f.insert(v5_conn, "qos_route_report", report_time=utc(2026, 11, 21, 3, 50),
             resource_id=t1["resource_id"], direction=0, cost=Decimal(100), bill_time=60)
    result = sweep(v5_database, v5_settings, now)
    assert result.queued == 1                    # hourly: 11 of 10 (egress not counted)
    assert {b["unblock_at"] for b in blocks(v5_conn)} == {
        Decimal(int(utc(2026, 11, 21, 5).timestamp()))}
    assert f.rows(v5_conn, "SELECT type FROM admin_alert") == [{"type": 2}]
    [mail] = delivered(v5_database, v5_settings, smtp, now)
    assert "hourly" in body(mail) and "11.00 USD" in body(mail)
    assert sweep(v5_database, v5_settings, utc(2026, 11, 21, 5, 0, 30)).queued == 1
    assert blocks(v5_conn) == []


def test_minutes_unit(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    settings = v5_settings.replace(usage_limit_unit="minutes")
    c, (t1, _) = limited(v5_conn, "mins", daily_limit=10)
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=1), "999", seconds=6 * 60)
    assert sweep(v5_database, settings, NOW).queued == 1       # 6 of 10 minutes
    [mail] = delivered(v5_database, settings, smtp, NOW)
    text = body(mail)
    assert "6.00 minutes" in text and "10.00 minutes" in text and "billed minutes" in text


def test_no_limit_no_work_and_dry_run_writes_nothing(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    c, (t1, _) = limited(v5_conn, "dry")
    ui_client(v5_conn, "nolimit", daily_limit=0)
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=1), "150")
    before = records(v5_conn, "resource_block_record")
    result = sweep(v5_database, v5_settings.replace(dry_run=True), NOW)
    assert len(result.mails) == 1 and result.state_changes == 1
    assert blocks(v5_conn) == [] and records(v5_conn, "resource_block_record") == before
    assert f.rows(v5_conn, "SELECT count(*) AS n FROM dnl_ad.usage_limit_state")[0]["n"] == 0


def test_check_lists_clients_with_limits_and_blocks_held(v5_conn, v5_database,
                                                        v5_settings) -> None:
    from dnl_ad import check

    seed_system(v5_conn)
    c, (t1, _) = limited(v5_conn, "checked", hourly_limit=5)
    limited(v5_conn, "daily_only")
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=1), "150")
    sweep(v5_database, v5_settings, NOW)
    with v5_database.transaction() as cur:
        rows = {r.check: r for r in check.check_settings(cur, v5_settings, NOW)}
    detail = rows["usage limits"].detail
    assert "2 client(s) with a daily limit, 1 with an hourly limit" in detail
    assert "USAGE_LIMIT_UNIT=amount, USAGE_LIMIT_STEPS=50,90,100" in detail
    assert "2 trunk block(s) of 1 client(s) held now" in detail


def test_an_operator_raising_the_limit_mid_period_counts_at_once(v5_conn, v5_database,
                                                                 v5_settings) -> None:
    seed_system(v5_conn)
    c, (t1, _) = limited(v5_conn, "raised")
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=1), "60")
    assert sweep(v5_database, v5_settings, NOW).queued == 1          # 50 % of 100
    f.update(v5_conn, "client", {"client_id": c["client_id"]}, daily_limit=400)
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=2), "50")   # 110 of 400 now
    assert sweep(v5_database, v5_settings, NOW + dt.timedelta(minutes=1)).queued == 0
    assert blocks(v5_conn) == []
    spend(v5_conn, c, t1, DAY_START + dt.timedelta(hours=3), "250")  # 360 of 400: 90 %
    assert sweep(v5_database, v5_settings, NOW + dt.timedelta(minutes=2)).queued == 1
    assert f.rows(v5_conn, "SELECT limit_value, step FROM dnl_ad.usage_limit_state") == [
        {"limit_value": Decimal(400), "step": 90}]
