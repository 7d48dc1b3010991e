"""Every alert on the REAL DNL v5 schema (../shared/dnl_v5), seeded as the v5 UI stores
its settings (PROVIDER_DB.md "What the UI's settings mean"): each yields its mail with
the right recipients and tags, and its provider writes fire the engine's change-feed
triggers (client_record / resource_record rows appear).

Also here: taking over from the original dnl_ad without a duplicate, and the overdue
limit of the first suspension sweep.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from dnl_ad import check, delivery
from dnl_ad.alerts import (
    balance_summary,
    cdr_delivery,
    low_balance,
    trunk_pending,
    trunk_suspended,
    usage_summary,
    zero_balance,
)

from . import factories as f
from .conftest import utc

NOW = utc(2026, 11, 21, 4, 0)          # 12:00 at +08:00
REPORT_DAY = dt.date(2026, 11, 20)     # the previous local day at +08:00
DAY_START = utc(2026, 11, 19, 16)      # 2026-11-20 00:00 at +08:00


def body(received) -> str:
    """The text part of a delivered message."""
    for part in received.message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_content()
    raise AssertionError("no text part")


def html(received) -> str:
    for part in received.message.walk():
        if part.get_content_type() == "text/html":
            return part.get_content()
    raise AssertionError("no html part")


def records(conn, table: str) -> int:
    return f.rows(conn, f"SELECT count(*) AS n FROM {table}")[0]["n"]  # noqa: S608 (fixed)


def email_log(conn) -> list[dict[str, Any]]:
    return f.rows(conn, "SELECT client_id, type, status, email_addresses FROM email_log "
                  "ORDER BY id")


def seed_system(conn) -> None:
    """system_parameter and mail_tmplate as a fresh v5 install has them, SMTP via ini."""
    f.system(conn, sys_timezone="+0000", emailname="Carrier Billing",
             finance_email="finance@carrier.example", noc_email="noc@carrier.example",
             switch_alias="Carrier Switch", switch_ip="203.0.113.10")


def ui_client(conn, name: str, **values: Any) -> dict[str, Any]:
    """A client as the v5 Add page writes it: low_balance_notice false, zero-balance flag
    NULL unless checked, currency set, zones stored as +HH:MM."""
    defaults: dict[str, Any] = {"company": f"{name.title()} Ltd", "mode": 1,
                                "low_balance_notice": False, "auto_send_zone": "+08:00",
                                "billing_email": f"billing@{name}.example",
                                "email": f"main@{name}.example"}
    return f.client(conn, name=name, **{**defaults, **values})


def deliver(v5_database, v5_settings, smtp, now=NOW):
    result = delivery.deliver(v5_database, v5_settings, now=now)
    assert result.failed == 0
    return smtp.messages


# --- the seven alerts ---------------------------------------------------------------

def test_low_balance_on_v5(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = ui_client(v5_conn, "acme", balance=10.0, currency_code="EUR",
                  is_daily_balance_notification=True,
                  low_config={"value_type": 0, "actual_notify_balance": 50, "send_to": 2,
                              "send_time_type": 0, "daily_send_time": 8,
                              "duplicate_days": 3})
    # Mass Edit's switch alone enables it too; the legacy low_balance_notice alone does not
    m = ui_client(v5_conn, "massedit", balance=1.0,
                  low_config={"is_notify": True, "value_type": 0, "actual_notify_balance": 5,
                              "send_to": 1})
    ui_client(v5_conn, "legacy", balance=1.0, low_balance_notice=True,
              low_config={"value_type": 0, "actual_notify_balance": 5})
    before = records(v5_conn, "client_record")

    assert low_balance.sweep(v5_database, NOW, v5_settings).queued == 2
    got = {tuple(sorted(m_.rcpt_tos)): m_ for m_ in deliver(v5_database, v5_settings, smtp)}
    both = got[("billing@acme.example", "finance@carrier.example")]  # send_to 2: both
    assert ("billing@massedit.example",) in got                    # send_to 1: partner
    text = body(both)
    assert "Acme Ltd" in text and "10.00" in text and "50.00" in text
    assert both.message["From"].endswith("<billing@carrier.example>") or \
        "billing@carrier.example" in both.message["From"]
    # provider writes, through the engine's trigger
    cfg = f.rows(v5_conn, "SELECT last_alert_time, duplicate_send_days FROM "
                 "client_low_balance_config WHERE client_id = %s", (c["client_id"],))[0]
    assert cfg == {"last_alert_time": NOW, "duplicate_send_days": 1}
    assert f.rows(v5_conn, "SELECT last_lowbalance_time FROM client WHERE client_id = %s",
                  (c["client_id"],))[0]["last_lowbalance_time"] == NOW
    assert records(v5_conn, "client_record") == before + 2 * 2  # B and A row per update
    assert [(r["client_id"], r["type"], r["status"]) for r in email_log(v5_conn)] == [
        (c["client_id"], 1, 0), (m["client_id"], 1, 0)]
    # the next notice at daily_send_time 08:00 GMT, not before
    assert low_balance.sweep(v5_database, utc(2026, 11, 21, 7, 59), v5_settings).queued == 0
    # (massedit has no daily_send_time: its next one is at its local midnight)
    assert low_balance.sweep(v5_database, utc(2026, 11, 21, 8, 0), v5_settings).queued == 1


def test_low_balance_hourly_and_duplicate_days_on_v5(v5_conn, v5_database,
                                                     v5_settings) -> None:
    seed_system(v5_conn)
    ui_client(v5_conn, "hourly", balance=10.0, is_daily_balance_notification=True,
              low_config={"value_type": 0, "actual_notify_balance": 50, "send_to": 1,
                          "send_time_type": 1, "duplicate_days": 1})
    sent = [low_balance.sweep(v5_database, NOW + dt.timedelta(minutes=m), v5_settings).queued
            for m in (0, 30, 60, 120)]
    assert sent == [1, 0, 1, 1]  # hourly within the one day duplicate_days allows
    assert low_balance.sweep(v5_database, utc(2026, 11, 22, 0, 0), v5_settings).queued == 0


def test_percentage_threshold_on_v5(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    # credit limit 1000 (stored -1000), alert at 10 % remaining: balance <= -900
    ui_client(v5_conn, "postpaid", mode=2, allowed_credit=-1000, balance=-950.0,
              is_daily_balance_notification=True,
              low_config={"value_type": 1, "percentage_notify_balance": 10, "send_to": 1})
    ui_client(v5_conn, "fine", mode=2, allowed_credit=-1000, balance=-850.0,
              is_daily_balance_notification=True,
              low_config={"value_type": 1, "percentage_notify_balance": 10, "send_to": 1})
    assert low_balance.sweep(v5_database, NOW, v5_settings).queued == 1


def test_zero_balance_on_v5(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = ui_client(v5_conn, "broke", balance=-5.0, zero_balance_notice=True,
                  billing_email=None)  # falls back to client.email
    ui_client(v5_conn, "unchecked", balance=-5.0)  # zero_balance_notice NULL: not enabled
    before = records(v5_conn, "client_record")
    assert zero_balance.sweep(v5_database, NOW, v5_settings).queued == 1
    [mail] = deliver(v5_database, v5_settings, smtp)
    assert mail.rcpt_tos == ["main@broke.example"]
    assert "Broke Ltd" in body(mail)
    row = f.rows(v5_conn, "SELECT zero_balance_notice_time, zero_balance_notice_last_sent "
                 "FROM client WHERE client_id = %s", (c["client_id"],))[0]
    assert row == {"zero_balance_notice_time": 1, "zero_balance_notice_last_sent": NOW}
    assert records(v5_conn, "client_record") == before + 2
    assert [(r["type"], r["status"]) for r in email_log(v5_conn)] == [(4, 0)]


def _traffic(conn, client_id: int, trunk_in: int, trunk_out: int) -> None:
    """Hourly rows in the report day, into the v5 parent (no daily child: its trigger
    keeps them in the parent), plus one the hour before the day (not counted)."""
    for hour, calls in ((1, 10), (13, 20)):
        f.traffic(conn, report_time=DAY_START + dt.timedelta(hours=hour),
                  ingress_client_id=client_id, ingress_id=trunk_in, ingress_total_calls=calls,
                  ingress_success_calls=calls // 2, not_zero_calls=calls // 2,
                  ingress_bill_time=calls * 30, ingress_call_cost=Decimal("1.25") * calls,
                  duration=calls * 31, egress_client_id=None)
    f.traffic(conn, report_time=DAY_START + dt.timedelta(hours=5), egress_client_id=client_id,
              egress_id=trunk_out, egress_total_calls=7, egress_success_calls=4,
              not_zero_calls=4, egress_bill_time=240, egress_call_cost=Decimal("2.40"),
              duration=250)
    f.traffic(conn, report_time=DAY_START - dt.timedelta(hours=1), ingress_client_id=client_id,
              ingress_id=trunk_in, ingress_total_calls=999, not_zero_calls=999,
              ingress_call_cost=Decimal("999"))


def _reporting_client(conn, **values: Any) -> dict[str, Any]:
    c = ui_client(conn, "daily", **{"balance": 321.5, "auto_summary_hour": 0,
                                    "auto_daily_balance_recipient": 2, **values})
    t_in = f.trunk(conn, c["client_id"], alias="daily-in")
    t_out = f.trunk(conn, c["client_id"], alias="daily-out", ingress=False, egress=True)
    _traffic(conn, c["client_id"], t_in["resource_id"], t_out["resource_id"])
    return c


def test_usage_summary_on_v5(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = _reporting_client(v5_conn, is_auto_summary=True)
    assert f.rows(v5_conn, "SELECT count(*) AS n FROM ONLY cdr_report_detail")[0]["n"] == 4
    assert usage_summary.sweep(v5_database, NOW, v5_settings).queued == 1
    [mail] = deliver(v5_database, v5_settings, smtp)
    # auto_daily_balance_recipient 2: partner's and owner's billing contacts
    assert sorted(mail.rcpt_tos) == ["billing@daily.example", "finance@carrier.example"]
    text = body(mail)
    assert "Daily Ltd" in text and "2026-11-20 00:00:00" in text and "GMT+08:00" in text
    assert "37.50" in text      # buy: (10 + 20) calls x 1.25, the hour before not counted
    assert "2.40" in text       # sell
    assert [(r["client_id"], r["type"]) for r in email_log(v5_conn)] == [(c["client_id"], 2)]


def test_balance_summary_on_v5(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = _reporting_client(v5_conn, is_auto_balance=True, numer_of_days_balance=1,
                          daily_balance_send_time=dt.time(3, 30),
                          daily_balance_send_time_zone="+00:00")
    f.insert(v5_conn, "balance_history_actual", client_id=c["client_id"],
             date=REPORT_DAY - dt.timedelta(days=1), actual_balance=Decimal("400.12"))
    # its own send time (03:30 GMT) wins over the shared send hour (00:00 at +08:00)
    v5_settings = v5_settings.replace(catchup_hours=0)
    assert balance_summary.sweep(v5_database, utc(2026, 11, 21, 3, 29), v5_settings).queued == 0
    assert balance_summary.sweep(v5_database, utc(2026, 11, 21, 3, 30), v5_settings).queued == 1
    [mail] = deliver(v5_database, v5_settings, smtp)
    text = body(mail)
    assert "400.12" in text and "321.50" in text
    assert [(r["client_id"], r["type"]) for r in email_log(v5_conn)] == [(c["client_id"], 8)]


def test_cdr_delivery_on_v5(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = _reporting_client(v5_conn, daily_cdr_generation=True,
                          daily_cdr_generation_zone="+08:00", daily_cdr_generation_type=0,
                          auto_daily_balance_recipient=0)
    assert cdr_delivery.sweep(v5_database, NOW, v5_settings).queued == 1
    [mail] = deliver(v5_database, v5_settings, smtp)
    assert mail.rcpt_tos == ["billing@daily.example"]   # recipient 0: partner only
    text = html(mail)
    assert "daily-in" in text and "daily-out" not in text  # type 0: incoming calls only
    assert f"start={int(DAY_START.timestamp())}" in text
    assert [(r["client_id"], r["type"]) for r in email_log(v5_conn)] == [(c["client_id"], 5)]


def _trunk_with_send(conn, name: str, deadline: dt.date, **send: Any) -> tuple[dict, dict]:
    c = ui_client(conn, name)
    t = f.trunk(conn, c["client_id"], alias=f"{name}-in")
    log, _ = f.rate_send(conn, t["resource_id"], deadline, **send)
    return t, log


def test_trunk_pending_on_v5(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    f.update(v5_conn, "mail_tmplate", {"id": 1},
             pending_trunk_subject="Download {rate_update_file_name} for {trunk_name}",
             pending_trunk_content="<p>{company_name}: by {rate_download_deadline}</p>")
    _trunk_with_send(v5_conn, "pending", NOW.date(), is_disable=False)
    _trunk_with_send(v5_conn, "noreminder", NOW.date(), is_email_alert=False)
    assert trunk_pending.sweep(v5_database, NOW, v5_settings).queued == 1
    [mail] = deliver(v5_database, v5_settings, smtp)
    assert mail.rcpt_tos == ["billing@pending.example"]
    assert mail.message["Subject"] == "Download rates_2026.csv for pending-in"
    assert "Pending Ltd: by 2026-11-22 07:59:59" in html(mail)  # 23:59:59 GMT at +08:00
    assert [r["type"] for r in email_log(v5_conn)] == [36]
    assert trunk_suspended.sweep(v5_database, NOW + dt.timedelta(days=1),
                                 v5_settings).state_changes == 1  # only the is_disable one


def test_trunk_suspended_on_v5(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    t, log = _trunk_with_send(v5_conn, "late", NOW.date() - dt.timedelta(days=1))
    before = records(v5_conn, "resource_record")
    result = trunk_suspended.sweep(v5_database, NOW, v5_settings)
    assert (result.state_changes, result.queued) == (1, 1)
    trunk = f.rows(v5_conn, "SELECT active, disable_by_alert, update_by FROM resource "
                   "WHERE resource_id = %s", (t["resource_id"],))[0]
    assert trunk == {"active": False, "disable_by_alert": True, "update_by": "dnl_ad"}
    assert records(v5_conn, "resource_record") > before  # the engine's change feed saw it
    detail = f.rows(v5_conn, "SELECT status, error FROM rate_send_log_detail "
                    "WHERE log_id = %s", (log["id"],))[0]
    assert detail["status"] == 4 and "not downloaded" in detail["error"]
    [modif] = f.rows(v5_conn, "SELECT module, type, name, rollback, rollback_extra_info, "
                     "rollback_flg FROM modif_log")
    assert (modif["module"], modif["type"], modif["name"]) == ("Trunk", 4, "dnl_ad")
    assert modif["rollback_extra_info"] == '{"type":1}' and modif["rollback_flg"] is None
    [mail] = deliver(v5_database, v5_settings, smtp)
    assert mail.rcpt_tos == ["billing@late.example"] and "late-in" in body(mail)
    assert [r["type"] for r in email_log(v5_conn)] == [36]
    # the UI's rollback button runs the statement as is: the trunk is back
    with v5_conn.cursor() as cur:
        cur.execute(modif["rollback"])
    assert f.rows(v5_conn, "SELECT active FROM resource WHERE resource_id = %s",
                  (t["resource_id"],))[0]["active"] is True
    # ... and is never blocked again for the same rate send
    assert trunk_suspended.sweep(v5_database, NOW + dt.timedelta(hours=1),
                                 v5_settings).state_changes == 0


# --- taking over from the original dnl_ad ---------------------------------------------

def test_take_over_sends_nothing_the_original_already_sent(v5_conn, v5_database, v5_settings,
                                                           smtp) -> None:
    """The original sent today's low-balance notice, today's usage summary and a rate
    send's suspension: dnl_ad's first sweeps send none of them again."""
    seed_system(v5_conn)
    sent_at = NOW - dt.timedelta(hours=2)
    low = ui_client(v5_conn, "low", balance=10.0, is_daily_balance_notification=True,
                    last_lowbalance_time=sent_at,
                    low_config={"value_type": 0, "actual_notify_balance": 50, "send_to": 1,
                                "daily_send_time": 0, "duplicate_days": 3,
                                "duplicate_send_days": 1, "last_alert_time": sent_at})
    rep = _reporting_client(v5_conn, is_auto_summary=True,
                            last_autoreport_time=utc(2026, 11, 20, 16, 2))
    # the original blocked this trunk: detail closed (status 4), trunk inactive
    t, log = _trunk_with_send(v5_conn, "blocked", NOW.date() - dt.timedelta(days=1))
    f.update(v5_conn, "rate_send_log_detail", {"log_id": log["id"]}, status=4)
    f.update(v5_conn, "resource", {"resource_id": t["resource_id"]}, active=False,
             disable_by_alert=True)

    for sweep in (low_balance.sweep, usage_summary.sweep, trunk_suspended.sweep,
                  trunk_pending.sweep):
        assert sweep(v5_database, NOW, v5_settings).queued == 0, sweep.__module__
    assert delivery.deliver(v5_database, v5_settings, now=NOW).sent == 0
    assert smtp.messages == []
    # the low-balance episode was taken over: the next notice is the original's schedule
    assert f.rows(v5_conn, "SELECT notices, adopted FROM dnl_ad.balance_episode "
                  "WHERE client_id = %s", (low["client_id"],))[0] == {"notices": 1,
                                                                       "adopted": True}
    assert low_balance.sweep(v5_database, utc(2026, 11, 22, 0, 0), v5_settings).queued == 1
    assert f.rows(v5_conn, "SELECT duplicate_send_days FROM client_low_balance_config "
                  "WHERE client_id = %s", (low["client_id"],))[0]["duplicate_send_days"] == 2
    # an operator re-activates the trunk the original blocked: never blocked again
    f.update(v5_conn, "resource", {"resource_id": t["resource_id"]}, active=True,
             disable_by_alert=False)
    assert trunk_suspended.sweep(v5_database, NOW, v5_settings).state_changes == 0
    # the next day's summary is dnl_ad's to send
    assert usage_summary.sweep(v5_database, NOW + dt.timedelta(days=1),
                               v5_settings).queued == 1
    assert rep["client_id"]


def test_a_trunk_ten_days_overdue_is_not_suspended_and_check_lists_it(
        v5_conn, v5_database, v5_settings, caplog) -> None:
    seed_system(v5_conn)
    old, _ = _trunk_with_send(v5_conn, "forgotten", NOW.date() - dt.timedelta(days=10))
    recent, _ = _trunk_with_send(v5_conn, "recent", NOW.date() - dt.timedelta(days=1))
    caplog.set_level("WARNING")
    assert trunk_suspended.sweep(v5_database, NOW, v5_settings).state_changes == 1
    assert trunk_suspended.sweep(v5_database, NOW, v5_settings).state_changes == 0
    active = {r["resource_id"]: r["active"] for r in f.rows(v5_conn, "SELECT resource_id, "
                                                            "active FROM resource")}
    assert active == {old["resource_id"]: True, recent["resource_id"]: False}
    lines = [r.getMessage() for r in caplog.records if "SUSPEND_MAX_OVERDUE_DAYS" in
             r.getMessage()]
    assert len(lines) == 1 and "forgotten-in" in lines[0]  # logged once, not every sweep
    with v5_database.transaction() as cur:
        rows = check.check_settings(cur, v5_settings, NOW)
    overdue = [r for r in rows if r.check == "overdue rate sends"]
    assert overdue and "forgotten-in" in overdue[0].detail


def test_check_reports_the_v5_settings_it_found(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    ui_client(v5_conn, "a", balance=10.0, is_daily_balance_notification=True,
              is_auto_summary=True)
    ui_client(v5_conn, "b", balance=10.0, zero_balance_notice=True, is_auto_balance=True,
              daily_cdr_generation=True)
    _trunk_with_send(v5_conn, "p", NOW.date() + dt.timedelta(days=1))
    with v5_database.transaction() as cur:
        rows = {r.check: r for r in check.check_settings(cur, v5_settings, NOW)}
    enabled = rows["clients enabled per alert"].detail
    for text in ("low balance 1", "zero balance 1", "usage summary 1", "balance summary 1",
                 "daily CDR 1"):
        assert text in enabled, enabled
    assert "1" in rows["rate sends pending"].detail
    assert all(r.status != check.FAIL for r in rows.values())


@pytest.mark.parametrize("column", ["no_download_rate_cc", "download_rate_notice_cc"])
def test_columns_v5_lacks_read_as_empty(v5_conn, v5_database, v5_settings, column) -> None:
    from dnl_ad.mail.render import MailConfig

    seed_system(v5_conn)
    with v5_database.transaction() as cur:
        config = MailConfig.load(cur, v5_settings)
    assert config.part("no_download_rate", "cc") is None
    assert column not in config.templates


# --- usage summary settings: period, grouping, CDR links, settling -------------------

def _coded_traffic(conn, client_id: int, trunk: int, at: dt.datetime, country: str,
                   code_name: str, calls: int, cost: str) -> None:
    f.traffic(conn, report_time=at, ingress_client_id=client_id, ingress_id=trunk,
              ingress_total_calls=calls, not_zero_calls=calls, ingress_bill_time=calls * 60,
              ingress_call_cost=Decimal(cost), ingress_country=country,
              ingress_code_name=code_name, ingress_code="52")


@pytest.mark.parametrize(("group_by", "shown", "hidden"), [
    (0, ["Mexico", "Brazil"], ["Mexico Mobile"]),
    (1, ["Mexico Mobile", "Mexico Fixed", "Brazil Mobile"], []),
])
def test_usage_summary_detail_rows_follow_group_by(v5_conn, v5_database, v5_settings, smtp,
                                                   group_by, shown, hidden) -> None:
    seed_system(v5_conn)
    c = ui_client(v5_conn, "grouped", is_auto_summary=True, auto_summary_hour=0,
                  auto_summary_group_by=group_by)
    t = f.trunk(v5_conn, c["client_id"], alias="grouped-in")["resource_id"]
    _coded_traffic(v5_conn, c["client_id"], t, DAY_START + dt.timedelta(hours=2), "Mexico",
                   "Mexico Mobile", 10, "7.00")
    _coded_traffic(v5_conn, c["client_id"], t, DAY_START + dt.timedelta(hours=3), "Mexico",
                   "Mexico Fixed", 5, "1.00")
    _coded_traffic(v5_conn, c["client_id"], t, DAY_START + dt.timedelta(hours=4), "Brazil",
                   "Brazil Mobile", 4, "2.50")
    assert usage_summary.sweep(v5_database, NOW, v5_settings).queued == 1
    [mail] = deliver(v5_database, v5_settings, smtp)
    text = body(mail)
    for name in shown:
        assert name in text, name
    for name in hidden:
        assert name not in text, name
    if group_by == 0:  # both Mexico rows summed in one line
        assert "8.00" in text.split("Mexico", 1)[1].splitlines()[0]


def test_usage_summary_every_four_hours(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    settings = v5_settings.replace(report_settle_minutes=30, catchup_hours=0)
    c = ui_client(v5_conn, "fourhourly", is_auto_summary=True, auto_send_zone="+00:00",
                  auto_summary_period=4, auto_summary_hour=6)
    t = f.trunk(v5_conn, c["client_id"], alias="fh-in")["resource_id"]
    for hour in (3, 5, 7, 8):
        _coded_traffic(v5_conn, c["client_id"], t, utc(2026, 11, 21, hour), "Mexico",
                       "Mexico Mobile", 1, f"{hour}.00")
    assert usage_summary.sweep(v5_database, utc(2026, 11, 21, 8, 29), settings).queued == 0
    assert usage_summary.sweep(v5_database, utc(2026, 11, 21, 8, 30), settings).queued == 1
    [row] = f.rows(v5_conn, "SELECT dedupe_key, text_body FROM dnl_ad.outbox")
    assert row["dedupe_key"] == f"usage_summary:{c['client_id']}:2026-11-21T04:00"
    assert "12.00" in row["text_body"]  # the 05:00 and 07:00 rows: 5 + 7, not 3 nor 8
    assert "2026-11-21 04:00:00" in row["text_body"] and "07:59:59" in row["text_body"]
    assert usage_summary.sweep(v5_database, utc(2026, 11, 21, 8, 31), settings).queued == 0


def test_minute_periods_are_served_hourly_and_said_once(v5_conn, v5_database, v5_settings,
                                                        caplog) -> None:
    seed_system(v5_conn)
    settings = v5_settings.replace(catchup_hours=0)
    c = ui_client(v5_conn, "quarter", is_auto_summary=True, auto_send_zone="+00:00",
                  auto_summary_period=-15)
    caplog.set_level("WARNING")
    assert usage_summary.sweep(v5_database, utc(2026, 11, 21, 9, 0), settings).queued == 1
    assert usage_summary.sweep(v5_database, utc(2026, 11, 21, 9, 15), settings).queued == 0
    assert usage_summary.sweep(v5_database, utc(2026, 11, 21, 10, 0), settings).queued == 1
    lines = [r.getMessage() for r in caplog.records if "auto_summary_period" in r.getMessage()]
    assert len(lines) == 1 and f"client {c['client_id']}" in lines[0]


def test_usage_summary_includes_the_cdr_links(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = ui_client(v5_conn, "withcdr", is_auto_summary=True, auto_summary_hour=0,
                  auto_summary_include_cdr=True)
    t = f.trunk(v5_conn, c["client_id"], alias="withcdr-in")["resource_id"]
    _coded_traffic(v5_conn, c["client_id"], t, DAY_START + dt.timedelta(hours=2), "Mexico",
                   "Mexico Mobile", 3, "1.00")
    plain = ui_client(v5_conn, "nocdr", is_auto_summary=True, auto_summary_hour=0)
    t2 = f.trunk(v5_conn, plain["client_id"], alias="nocdr-in")["resource_id"]
    _coded_traffic(v5_conn, plain["client_id"], t2, DAY_START + dt.timedelta(hours=2),
                   "Mexico", "Mexico Mobile", 3, "1.00")
    assert usage_summary.sweep(v5_database, NOW, v5_settings).queued == 2
    mails = {m.rcpt_tos[0]: m for m in deliver(v5_database, v5_settings, smtp)}
    with_cdr = html(mails["billing@withcdr.example"])
    assert f"i={t}" in with_cdr and "portal.carrier.example/cdr" in with_cdr
    assert "portal.carrier.example/cdr" not in html(mails["billing@nocdr.example"])


def test_a_day_is_read_only_once_it_has_settled(v5_conn, v5_database, v5_settings) -> None:
    """The switch writes an hour's rows minutes after the hour: with send hour 0 the day
    is read REPORT_SETTLE_MINUTES after midnight, and its last hour is in the mail."""
    seed_system(v5_conn)
    settings = v5_settings.replace(report_settle_minutes=30)
    c = ui_client(v5_conn, "settled", is_auto_summary=True, auto_send_zone="+00:00",
                  auto_summary_hour=0, auto_summary_not_zero=1)
    t = f.trunk(v5_conn, c["client_id"], alias="settled-in")["resource_id"]
    assert usage_summary.sweep(v5_database, utc(2026, 11, 21, 0, 5), settings).queued == 0
    # the 23:00 row lands at 00:20, after a sweep at 00:05 that must not freeze the day
    _coded_traffic(v5_conn, c["client_id"], t, utc(2026, 11, 20, 23), "Mexico",
                   "Mexico Mobile", 3, "4.25")
    assert usage_summary.sweep(v5_database, utc(2026, 11, 21, 0, 30), settings).queued == 1
    [row] = f.rows(v5_conn, "SELECT text_body FROM dnl_ad.outbox")
    assert "4.25" in row["text_body"]


def test_check_exits_0_on_a_v5_database(v5_conn, v5_settings, smtp) -> None:
    import io

    seed_system(v5_conn)
    ui_client(v5_conn, "a", balance=10.0, is_daily_balance_notification=True,
              low_config={"value_type": 0, "actual_notify_balance": 50})
    out = io.StringIO()
    assert check.main(v5_settings, out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "clients enabled per alert" in text and "low balance 1" in text
    assert "rate sends pending" in text and "all checks passed" in text


def test_take_over_a_pending_warning_the_original_sent(v5_conn, v5_database, v5_settings,
                                                       caplog) -> None:
    """email_log names no trunk: a stage counts as sent when the original mailed the client
    a type-36 notice after that stage's window opened."""
    seed_system(v5_conn)
    warned, _ = _trunk_with_send(v5_conn, "warned", NOW.date())
    fresh, _ = _trunk_with_send(v5_conn, "fresh", NOW.date())
    stale, _ = _trunk_with_send(v5_conn, "stale", NOW.date())
    for t, at in ((warned, NOW - dt.timedelta(hours=1)), (stale, NOW - dt.timedelta(days=3))):
        f.insert(v5_conn, "email_log", client_id=t["client_id"], type=36, status=0,
                 send_time=at, subject="Pending Trunk Suspension Notice",
                 alert_rule="pending trunk", email_addresses="x@client.example")
    caplog.set_level("INFO")
    result = trunk_pending.sweep(v5_database, NOW, v5_settings)
    keys = {r["client_id"] for r in f.rows(v5_conn, "SELECT client_id FROM dnl_ad.outbox")}
    assert keys == {fresh["client_id"], stale["client_id"]}  # a mail 3 days ago was another
    assert result.queued == 2
    assert any("already sent by the original daemon" in r.getMessage() and
               "warned-in" in r.getMessage() for r in caplog.records)
    # dnl_ad's own email_log rows never count as the original's
    assert trunk_pending.sweep(v5_database, NOW, v5_settings).queued == 0


def test_balance_summary_says_when_the_beginning_balance_was_taken(v5_conn, v5_database,
                                                                   v5_settings, smtp) -> None:
    """Issue 16 item 10: balance_history_actual holds the switch's days (sys_timezone
    +0000 here), the client reads its own (+08:00): the mail says at which local instant
    the beginning balance was taken; with numer_of_days_balance 3 it is the balance
    before the first of the three days."""
    seed_system(v5_conn)
    c = _reporting_client(v5_conn, is_auto_balance=True, numer_of_days_balance=3)
    for day, amount in ((REPORT_DAY - dt.timedelta(days=3), "111.11"),
                        (REPORT_DAY - dt.timedelta(days=1), "999.99")):
        f.insert(v5_conn, "balance_history_actual", client_id=c["client_id"], date=day,
                 actual_balance=Decimal(amount))
    assert balance_summary.sweep(v5_database, NOW, v5_settings).queued == 1
    [mail] = deliver(v5_database, v5_settings, smtp)
    text = body(mail)
    assert "111.11" in text and "999.99" not in text
    assert "2026-11-18 00:00:00" in text      # the first day's start, at +08:00
    assert "at 2026-11-18 08:00:00" in text   # the switch's midnight, in the client's zone


def test_balance_summary_same_zone_shows_no_extra_instant(v5_conn, v5_database, v5_settings,
                                                          smtp) -> None:
    seed_system(v5_conn)
    f.update(v5_conn, "system_parameter", {"sys_id": 1}, sys_timezone="+0800")
    c = _reporting_client(v5_conn, is_auto_balance=True)
    f.insert(v5_conn, "balance_history_actual", client_id=c["client_id"],
             date=REPORT_DAY - dt.timedelta(days=1), actual_balance=Decimal("222.22"))
    assert balance_summary.sweep(v5_database, NOW, v5_settings).queued == 1
    [mail] = deliver(v5_database, v5_settings, smtp)
    assert "222.22" in body(mail) and " at 2026-11-20" not in body(mail)
