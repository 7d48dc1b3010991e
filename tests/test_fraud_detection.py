"""Alert 9, the v5 UI's fraud rules, on the REAL v5 schema (explicit `now`): a breach
writes one log, one detail per check, one mail and (with is_block) one block; the next
minute nothing new; below the limit the cleared line; 0 limits never fire."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from dnl_ad import delivery
from dnl_ad.alerts import fraud_detection

from . import factories as f
from .conftest import utc
from .test_v5_alerts import body, seed_system, ui_client

NOW = utc(2026, 11, 21, 4, 0)


def rule(conn, **values: Any) -> dict[str, Any]:
    """A rule as the UI's Fraud Detection page stores it (limits 0 when left empty)."""
    defaults: dict[str, Any] = {"rule_name": "Night revenue", "active": True,
                                "hourly_minute": 0, "hourly_revenue": 0, "daily_minute": 0,
                                "daily_revenue": 0, "is_block": True, "is_send_mail": True,
                                "email_to": 2, "ingress_ids": ""}
    return f.insert(conn, "fraud_detection", **{**defaults, **values})


def qos(conn, trunk: dict[str, Any], at: dt.datetime, cost: str, seconds: int = 60,
        direction: int = 0) -> None:
    f.insert(conn, "qos_route_report", report_time=at, resource_id=trunk["resource_id"],
             direction=direction, cost=Decimal(cost), bill_time=seconds, total_calls=1,
             not_zero_calls=1, code="44")


def count(conn, table: str) -> int:
    return f.rows(conn, f"SELECT count(*) AS n FROM {table}")[0]["n"]  # noqa: S608 (fixed)


def client_with_trunks(conn, name: str) -> tuple[dict[str, Any], dict[str, Any], dict]:
    c = ui_client(conn, name, noc_email=f"noc@{name}.example", login=f"{name}_portal")
    return (c, f.trunk(conn, c["client_id"], alias=f"{name}-in1"),
            f.trunk(conn, c["client_id"], alias=f"{name}-in2"))


def test_a_trunk_over_hourly_revenue(v5_conn, v5_database, v5_settings, smtp, caplog) -> None:
    seed_system(v5_conn)
    r = rule(v5_conn, hourly_revenue=10)
    c, t1, t2 = client_with_trunks(v5_conn, "fraudy")
    qos(v5_conn, t1, NOW - dt.timedelta(minutes=10), "12.345")
    qos(v5_conn, t1, NOW - dt.timedelta(minutes=20), "40", direction=1)  # egress: not counted
    qos(v5_conn, t1, NOW - dt.timedelta(minutes=70), "40")               # before the hour
    qos(v5_conn, t2, NOW - dt.timedelta(minutes=10), "3")

    result = fraud_detection.sweep(v5_database, NOW, v5_settings)
    assert (result.queued, result.state_changes) == (1, 1)
    [log_row] = f.rows(v5_conn, 'SELECT id, fraud_detection_id, status, create_by, '
                       'create_on, "time" FROM fraud_detection_log')
    assert (log_row["fraud_detection_id"], log_row["status"], log_row["create_by"]) == (
        r["id"], 1, 0)
    assert log_row["create_on"] == NOW and log_row["time"] == int(NOW.timestamp())
    [detail] = f.rows(v5_conn, "SELECT fraud_detection_log_id, ingress_id, block_type, "
                      "limit_value, actual_value, partner_email, system_email, is_block, "
                      "is_send_email FROM fraud_detection_log_detail")
    assert detail == {"fraud_detection_log_id": log_row["id"], "ingress_id": t1["resource_id"],
                      "block_type": 1, "limit_value": 10, "actual_value": "12.35",
                      "partner_email": "noc@fraudy.example",
                      "system_email": "noc@carrier.example", "is_block": True,
                      "is_send_email": True}
    [block] = f.rows(v5_conn, "SELECT ingress_res_id, ingress_client_id, action_type, "
                     "update_by, unblock_at FROM resource_block")
    assert block == {"ingress_res_id": t1["resource_id"], "ingress_client_id": c["client_id"],
                     "action_type": 3, "update_by": "dnl_ad fraud detection",
                     "unblock_at": None}  # manual unblock, as the UI expects
    delivery.deliver(v5_database, v5_settings, now=NOW)
    [mail] = smtp.messages
    assert sorted(mail.rcpt_tos) == ["noc@carrier.example", "noc@fraudy.example"]
    assert mail.message["Subject"] == ("Fraud alert: trunk fraudy-in1 over the limit of rule "
                                       "Night revenue (blocked)")
    text = body(mail)
    for shown in ("1h revenue", "10.00 USD", "12.35 USD", "last 60 minutes", "BLOCKED",
                  "fraudy_portal"):
        assert shown in text, (shown, text)
    assert f.rows(v5_conn, "SELECT type, status FROM email_log") == [{"type": 33, "status": 0}]

    # the next minute: nothing new
    again = fraud_detection.sweep(v5_database, NOW + dt.timedelta(minutes=1), v5_settings)
    assert (again.queued, again.state_changes) == (0, 0)
    assert [count(v5_conn, t) for t in ("fraud_detection_log", "fraud_detection_log_detail",
                                        "resource_block", "dnl_ad.outbox")] == [1, 1, 1, 1]

    # an hour later the window is below the limit: the cleared line, a status-0 run row
    caplog.set_level(logging.INFO, logger="dnl_ad")
    later = NOW + dt.timedelta(minutes=55)
    assert fraud_detection.sweep(v5_database, later, v5_settings).state_changes == 1
    cleared = [m.getMessage() for m in caplog.records if "cleared" in m.getMessage()]
    assert len(cleared) == 1 and "fraudy-in1" in cleared[0] and "last 60 minutes" in cleared[0]
    assert f.rows(v5_conn, "SELECT status FROM fraud_detection_log ORDER BY id") == [
        {"status": 1}, {"status": 0}]
    assert count(v5_conn, "resource_block") == 1  # the operator unblocks
    assert fraud_detection.sweep(v5_database, later, v5_settings).state_changes == 0
    # a new breach later is a new episode: a new mail, and no second block on the trunk
    qos(v5_conn, t1, later - dt.timedelta(minutes=1), "11")
    assert fraud_detection.sweep(v5_database, later, v5_settings).queued == 1
    assert count(v5_conn, "resource_block") == 1


def test_rules_with_zero_limits_or_inactive_never_fire(v5_conn, v5_database,
                                                       v5_settings) -> None:
    seed_system(v5_conn)
    rule(v5_conn, rule_name="empty")                                   # all limits 0
    rule(v5_conn, rule_name="nulls", hourly_minute=None, hourly_revenue=None,
         daily_minute=None, daily_revenue=None)
    rule(v5_conn, rule_name="off", active=False, hourly_revenue=1)
    _, t1, _ = client_with_trunks(v5_conn, "busy")
    qos(v5_conn, t1, NOW - dt.timedelta(minutes=5), "99999", seconds=99999)
    result = fraud_detection.sweep(v5_database, NOW, v5_settings)
    assert (result.queued, result.state_changes) == (0, 0)
    assert count(v5_conn, "fraud_detection_log") == 0 and count(v5_conn, "resource_block") == 0


def test_listed_trunks_minutes_windows_and_no_block_without_is_block(
        v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    _, t1, t2 = client_with_trunks(v5_conn, "listed")
    rule(v5_conn, hourly_minute=30, daily_minute=100, is_block=False, email_to=0,
         ingress_ids=f" {t2['resource_id']}, 999999")
    for trunk in (t1, t2):  # 40 min in the hour, 120 min in the day: both windows breach
        qos(v5_conn, trunk, NOW - dt.timedelta(minutes=5), "1", seconds=40 * 60)
        qos(v5_conn, trunk, NOW - dt.timedelta(hours=5), "1", seconds=80 * 60)
    result = fraud_detection.sweep(v5_database, NOW, v5_settings)
    assert result.queued == 2                      # one mail per window, only trunk 2
    assert count(v5_conn, "fraud_detection_log") == 1
    details = f.rows(v5_conn, "SELECT ingress_id, block_type, actual_value, is_block "
                     "FROM fraud_detection_log_detail ORDER BY block_type")
    assert details == [{"ingress_id": t2["resource_id"], "block_type": 0,
                        "actual_value": "40.00", "is_block": False},
                       {"ingress_id": t2["resource_id"], "block_type": 2,
                        "actual_value": "120.00", "is_block": False}]
    assert count(v5_conn, "resource_block") == 0
    delivery.deliver(v5_database, v5_settings, now=NOW)
    assert {tuple(m.rcpt_tos) for m in smtp.messages} == {("noc@carrier.example",)}
    assert {m.message["Subject"] for m in smtp.messages} == {
        "Fraud alert: trunk listed-in2 over the limit of rule Night revenue"}


def test_check_lists_the_fraud_rules(v5_conn, v5_database, v5_settings) -> None:
    from dnl_ad import check

    seed_system(v5_conn)
    rule(v5_conn, hourly_revenue=5)
    rule(v5_conn, rule_name="empty")
    with v5_database.transaction() as cur:
        rows = {r.check: r for r in check.check_settings(cur, v5_settings, NOW)}
    assert rows["fraud rules"].detail == ("2 active fraud rule(s), 1 with a limit set, "
                                          "2 blocking; 0 breach(es) open now")
