"""Alert 11, quality rules (v5 alert_rules), on the REAL v5 schema with explicit `now`:
the AND of the set conditions, the minimum sample, each comparison direction, the log
rows, the mail to the NOCs, the block with its unblock_at and its removal (only ours),
the schedule, and the rules that cannot be computed from aggregates."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dnl_ad import check, delivery
from dnl_ad.alerts import quality_rule

from . import factories as f
from .conftest import utc
from .test_v5_alerts import email_log, seed_system, ui_client

NOW = utc(2026, 11, 21, 10, 5)        # the window: the hour 09:00-10:00
HOUR = utc(2026, 11, 21, 9, 0)


def add_rule(conn, **values: Any) -> dict[str, Any]:
    """A rule as the v5 UI saves it: every metric '1' (ignored) unless given."""
    base: dict[str, Any] = {
        "rule_name": "bad route", "trunk_type": 1, "all_trunk": True, "active": True,
        "asr": "<", "asr_value": 30, "acd": "<", "acd_value": 60, "abr": "1", "pdd": "1",
        "profitability": "1", "revenue": "1", "min_call_attempt": 100, "sample_size": 60,
        "execution_schedule": 1, "specific_minutes": 5, "is_block": True, "is_email": True,
        "unblock_after_min": 30, "trouble_ticket_sent_to": 3, "monitor_by": 0}
    return f.insert(conn, "alert_rules", **{**base, **values})


def hour_traffic(conn, trunk: dict[str, Any], calls: int, asr: float, acd: float, *,
                 at: dt.datetime = HOUR, side: int = 1, **extra: Any) -> None:
    """One hourly row: `calls` attempts, ASR `asr` %, ACD `acd` s."""
    answered = round(calls * asr / 100)
    values: dict[str, Any] = {"report_time": at, "not_zero_calls": answered,
                              "duration": round(answered * acd), "pdd": calls * 2000}
    if side == 1:
        values.update(ingress_id=trunk["resource_id"], ingress_client_id=trunk["client_id"],
                      ingress_total_calls=calls, ingress_call_cost=10, egress_call_cost=8)
    else:
        values.update(egress_id=trunk["resource_id"], egress_client_id=trunk["client_id"],
                      egress_total_calls=calls, ingress_call_cost=10, egress_call_cost=8)
    f.traffic(conn, **{**values, **extra})


def setup(conn, **client: Any) -> dict[str, Any]:
    seed_system(conn)
    c = ui_client(conn, "routeco", noc_email="noc@routeco.example", **client)
    return f.trunk(conn, c["client_id"], alias="routeco-in")


def count(conn, table: str) -> int:
    return f.rows(conn, f"SELECT count(*) AS n FROM {table}")[0]["n"]  # noqa: S608 (fixed)


def test_asr_and_acd_rule_fires_once_logs_mails_and_blocks(v5_conn, v5_database, v5_settings,
                                                           smtp) -> None:
    trunk = setup(v5_conn)
    rule = add_rule(v5_conn)
    hour_traffic(v5_conn, trunk, 150, 25, 50)
    operator_block = f.insert(v5_conn, "resource_block", ingress_res_id=trunk["resource_id"],
                              action_type=0, create_by="admin", unblock_at=0)

    result = quality_rule.sweep(v5_database, NOW, v5_settings)
    assert result.queued == 1

    [log_row] = f.rows(v5_conn, "SELECT * FROM alert_rules_log")
    assert log_row["alert_rules_id"] == rule["id"]
    assert (log_row["limit_asr"], log_row["limit_acd"], log_row["limit_abr"]) == ("<", "<", "1")
    assert (log_row["limit_asr_value"], log_row["limit_acd_value"]) == (30, 60)
    [detail] = f.rows(v5_conn, "SELECT * FROM alert_rules_log_detail")
    assert detail["alert_rules_log_id"] == log_row["id"]
    assert detail["resource_id"] == trunk["resource_id"]
    # 38 of 150 calls answered (ASR 25.33 %), 50 s each
    assert round(detail["asr"], 2) == 25.33 and round(detail["acd"], 2) == 50
    unblock_at = int(NOW.timestamp()) + 30 * 60
    assert detail["valid_to"] == unblock_at and detail["is_block"]
    [block] = f.rows(v5_conn, "SELECT * FROM resource_block WHERE action_type = 1")
    assert block["res_block_id"] == detail["resource_block_id"]
    assert block["ingress_res_id"] == trunk["resource_id"]
    assert block["unblock_at"] == unblock_at and block["create_by"] == "dnl_ad"
    assert count(v5_conn, "resource_block_record") >= 1   # the engine's change feed saw it

    delivery.deliver(v5_database, v5_settings, now=NOW)
    [mail] = smtp.messages
    assert sorted(mail.rcpt_tos) == ["noc@carrier.example", "noc@routeco.example"]  # 3: both
    assert "routeco-in" in str(mail.message["Subject"])
    text = next(p.get_content() for p in mail.message.walk()
                if p.get_content_type() == "text/plain")
    assert "ASR: 25.33 %" in text and "ACD: 50.00 s" in text and "blocked" in text
    assert [(r["type"], r["status"]) for r in email_log(v5_conn)] == [(22, 0)]
    ran = f.rows(v5_conn, "SELECT last_run_time, next_run_time FROM alert_rules")[0]
    assert ran == {"last_run_time": NOW, "next_run_time": NOW + dt.timedelta(minutes=5)}

    # a second run within unblock_after_min: the group still breaks the rule, no mail
    again = quality_rule.sweep(v5_database, NOW + dt.timedelta(minutes=10), v5_settings)
    assert again.queued == 0
    assert count(v5_conn, "alert_rules_log") == 1
    assert count(v5_conn, "resource_block WHERE action_type = 1") == 1

    # unblock_after_min passed: our block is deleted, the operator's stays; the group
    # still breaks the rule, so it is told (and blocked) again
    later = NOW + dt.timedelta(minutes=31)
    assert quality_rule.sweep(v5_database, later, v5_settings).queued == 1
    ids = {r["res_block_id"] for r in f.rows(v5_conn, "SELECT res_block_id FROM "
                                             "resource_block")}
    assert operator_block["res_block_id"] in ids and block["res_block_id"] not in ids
    assert len(ids) == 2 and count(v5_conn, "alert_rules_log") == 2
    # with blocks off, the next expiry leaves only the operator's block
    f.update(v5_conn, "alert_rules", {"id": rule["id"]}, is_block=False, is_email=False)
    quality_rule.sweep(v5_database, later + dt.timedelta(minutes=31), v5_settings)
    ids = {r["res_block_id"] for r in f.rows(v5_conn, "SELECT res_block_id FROM "
                                             "resource_block")}
    assert ids == {operator_block["res_block_id"]}


def test_the_block_goes_at_unblock_at_not_before(v5_conn, v5_database, v5_settings) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn, is_email=False, specific_minutes=60)
    hour_traffic(v5_conn, trunk, 150, 25, 50)
    quality_rule.sweep(v5_database, NOW, v5_settings)
    quality_rule.sweep(v5_database, NOW + dt.timedelta(minutes=29), v5_settings)
    assert count(v5_conn, "resource_block") == 1
    quality_rule.sweep(v5_database, NOW + dt.timedelta(minutes=30), v5_settings)
    assert count(v5_conn, "resource_block") == 0


def test_fewer_calls_than_min_call_attempt_are_not_judged(v5_conn, v5_database,
                                                          v5_settings) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn)
    hour_traffic(v5_conn, trunk, 80, 25, 50)
    assert quality_rule.sweep(v5_database, NOW, v5_settings).queued == 0
    assert count(v5_conn, "alert_rules_log") == 0
    assert count(v5_conn, "resource_block") == 0
    # the rule still ran: the UI sees when
    assert f.rows(v5_conn, "SELECT last_run_time FROM alert_rules")[0]["last_run_time"] == NOW


def test_every_set_condition_must_hold(v5_conn, v5_database, v5_settings) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn)
    hour_traffic(v5_conn, trunk, 150, 25, 90)   # ASR breaks it, ACD does not
    assert quality_rule.sweep(v5_database, NOW, v5_settings).queued == 0
    assert count(v5_conn, "alert_rules_log") == 0


@pytest.mark.parametrize(("op", "asr", "fires"), [
    ("<", 25, True), ("<", 35, False), (">", 35, True), (">", 25, False),
    ("=", 25, True), ("=", 26, False)])
def test_each_comparison_direction(v5_conn, v5_database, v5_settings, op, asr,
                                   fires) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn, asr=op, asr_value=30 if op != "=" else 25, acd="1")
    hour_traffic(v5_conn, trunk, 200, asr, 50)
    assert quality_rule.sweep(v5_database, NOW, v5_settings).queued == (1 if fires else 0)


@pytest.mark.parametrize(("metric", "op", "limit", "fires"), [
    ("pdd", ">", 1500, True), ("pdd", "<", 1500, False),           # PDD is 2000 ms
    ("revenue", "<", 5, True), ("revenue", ">", 5, False),         # revenue is 2
    ("profitability", "<", 30, True), ("profitability", ">", 30, False)])  # 20 %
def test_pdd_revenue_profitability(v5_conn, v5_database, v5_settings, metric, op, limit,
                                   fires) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn, asr="1", acd="1", **{metric: op, f"{metric}_value": limit})
    hour_traffic(v5_conn, trunk, 150, 50, 60)
    assert quality_rule.sweep(v5_database, NOW, v5_settings).queued == (1 if fires else 0)


def test_per_country_groups_and_blocks_only_that_country(v5_conn, v5_database,
                                                         v5_settings) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn, monitor_by=6, is_email=False)
    hour_traffic(v5_conn, trunk, 150, 20, 40, ingress_country="Nigeria")
    hour_traffic(v5_conn, trunk, 150, 60, 40, ingress_country="France")
    quality_rule.sweep(v5_database, NOW, v5_settings)
    [detail] = f.rows(v5_conn, "SELECT country, resource_id FROM alert_rules_log_detail")
    assert detail == {"country": "Nigeria", "resource_id": trunk["resource_id"]}
    [block] = f.rows(v5_conn, "SELECT country, ingress_res_id FROM resource_block")
    assert block == {"country": "Nigeria", "ingress_res_id": trunk["resource_id"]}


def test_egress_rule_and_listed_trunks_only(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    c = ui_client(v5_conn, "vendor", noc_email="noc@vendor.example")
    listed = f.trunk(v5_conn, c["client_id"], alias="v-out", ingress=False, egress=True)
    other = f.trunk(v5_conn, c["client_id"], alias="v-out2", ingress=False, egress=True)
    add_rule(v5_conn, trunk_type=2, all_trunk=False, res_id=str(listed["resource_id"]),
             is_block=True, is_email=False)
    for t in (listed, other):
        hour_traffic(v5_conn, t, 150, 10, 30, side=2)
    hour_traffic(v5_conn, other, 150, 10, 30, side=1)  # ingress side: not this rule's
    quality_rule.sweep(v5_database, NOW, v5_settings)
    assert f.rows(v5_conn, "SELECT engress_res_id, ingress_res_id FROM resource_block") == [
        {"engress_res_id": listed["resource_id"], "ingress_res_id": None}]


def test_windows_under_an_hour_read_qos_route_report(v5_conn, v5_database,
                                                     v5_settings) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn, sample_size=15, monitor_by=7, is_block=False)
    for minute, code, calls, answered in ((52, "4420", 120, 12), (55, "331", 120, 100),
                                          (40, "4420", 500, 0)):  # 40: before the window
        f.insert(v5_conn, "qos_route_report", report_time=NOW - dt.timedelta(minutes=60 - minute),
                 resource_id=trunk["resource_id"], code=code, total_calls=calls,
                 not_zero_calls=answered, call_duration=answered * 20, pdd=0, direction=0)
    result = quality_rule.sweep(v5_database, NOW, v5_settings)
    assert result.queued == 1
    [detail] = f.rows(v5_conn, "SELECT code, asr FROM alert_rules_log_detail")
    assert detail["code"] == "4420" and round(detail["asr"]) == 10


def test_a_group_that_clears_is_told_again_when_it_breaks_again(v5_conn, v5_database,
                                                                v5_settings) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn, is_block=False, unblock_after_min=None, specific_minutes=60)
    hour_traffic(v5_conn, trunk, 150, 25, 50)
    assert quality_rule.sweep(v5_database, NOW, v5_settings).queued == 1
    # the next hour is fine: the episode closes
    hour_traffic(v5_conn, trunk, 150, 60, 90, at=HOUR + dt.timedelta(hours=1))
    assert quality_rule.sweep(v5_database, NOW + dt.timedelta(hours=1),
                              v5_settings).queued == 0
    # still bad without a renewal time: nothing more while it stays open
    hour_traffic(v5_conn, trunk, 150, 25, 50, at=HOUR + dt.timedelta(hours=2))
    assert quality_rule.sweep(v5_database, NOW + dt.timedelta(hours=2),
                              v5_settings).queued == 1
    hour_traffic(v5_conn, trunk, 150, 25, 50, at=HOUR + dt.timedelta(hours=3))
    assert quality_rule.sweep(v5_database, NOW + dt.timedelta(hours=3),
                              v5_settings).queued == 0


def test_a_rule_not_yet_due_does_not_run(v5_conn, v5_database, v5_settings) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn, next_run_time=NOW + dt.timedelta(minutes=1))
    hour_traffic(v5_conn, trunk, 150, 25, 50)
    assert quality_rule.sweep(v5_database, NOW, v5_settings).queued == 0
    assert quality_rule.sweep(v5_database, NOW + dt.timedelta(minutes=1),
                              v5_settings).queued == 1


def _rule(**row: Any) -> quality_rule.Rule:
    base = {"id": 1, "asr": "<", "asr_value": 30, "all_trunk": True, "monitor_by": 0,
            "trunk_type": 1, "sample_size": 60}
    return quality_rule.rule_from_row({**base, **row})


def test_daily_schedule() -> None:
    rule = _rule(execution_schedule=2, daily_time=6, last_run_time=utc(2026, 11, 20, 6, 1))
    assert not quality_rule.is_due(rule, utc(2026, 11, 21, 5, 59))
    assert quality_rule.is_due(rule, utc(2026, 11, 21, 6, 0))
    assert quality_rule.next_slot(rule, utc(2026, 11, 21, 6, 0)) == utc(2026, 11, 22, 6)


def test_weekly_schedule_sunday_is_zero() -> None:
    # 2026-11-22 is a Sunday
    rule = _rule(execution_schedule=3, weekly_value=0, weekly_time=3,
                 last_run_time=utc(2026, 11, 15, 3, 0))
    assert not quality_rule.is_due(rule, utc(2026, 11, 21, 23, 0))   # Saturday
    assert quality_rule.is_due(rule, utc(2026, 11, 22, 3, 0))
    assert quality_rule.next_slot(rule, utc(2026, 11, 22, 3, 0)) == utc(2026, 11, 29, 3)
    never = _rule(execution_schedule=0)
    assert not quality_rule.is_due(never, utc(2026, 11, 22, 3, 0))


@pytest.mark.parametrize(("row", "reason"), [
    ({"monitor_by": 1}, "DNIS"), ({"monitor_by": 4}, "ANI"),
    ({"monitor_by": 6, "sample_size": 15}, "country"),
    ({"revenue": ">", "revenue_value": 1, "sample_size": 30}, "revenue"),
    ({"asr": "1"}, "no condition"), ({"all_trunk": False, "res_id": ""}, "no trunk")])
def test_rules_not_computable_from_aggregates(row, reason) -> None:
    assert reason in quality_rule.not_computable(_rule(**row))
    assert quality_rule.not_computable(_rule()) == ""


def test_skipped_rules_do_not_run_and_check_lists_them(v5_conn, v5_database,
                                                       v5_settings) -> None:
    trunk = setup(v5_conn)
    add_rule(v5_conn, rule_name="by dnis", monitor_by=1)
    add_rule(v5_conn, rule_name="fine", trouble_ticket_subject="{trunk_name} {nonsense}")
    hour_traffic(v5_conn, trunk, 150, 25, 50)
    assert quality_rule.sweep(v5_database, NOW, v5_settings).queued == 1
    assert [r["alert_rules_id"] for r in f.rows(v5_conn, "SELECT alert_rules_id FROM "
                                                "alert_rules_log")] == [2]
    rows = {r.check: r for r in check.run_checks(v5_settings, NOW)}
    assert rows["quality rules"].detail.startswith("2 active alert_rules, 1 evaluated")
    assert rows["quality rules skipped"].status == "WARN"
    assert "rule 1 'by dnis': monitor_by 1 (trunk + DNIS) needs per-call CDRs" in \
        rows["quality rules skipped"].detail
    assert "rule 2 'fine' trouble_ticket_subject: {nonsense}" in \
        rows["quality rule templates"].detail


def test_the_rules_own_template_is_used(v5_conn, v5_database, v5_settings, smtp) -> None:
    trunk = setup(v5_conn)
    sender = f.insert(v5_conn, "mail_sender", email="quality@carrier.example")
    add_rule(v5_conn, trouble_ticket_sent_to=2, trouble_ticket_sent_from=sender["id"],
             trouble_ticket_subject="Ticket {trunk_name}: ASR {asr}",
             trouble_ticket_content="<p>Rule {rule_name} on {trunk_name}</p>")
    hour_traffic(v5_conn, trunk, 150, 25, 50)
    quality_rule.sweep(v5_database, NOW, v5_settings)
    delivery.deliver(v5_database, v5_settings, now=NOW)
    [mail] = smtp.messages
    assert mail.rcpt_tos == ["noc@routeco.example"]              # 2: partner NOC only
    assert str(mail.message["Subject"]) == "Ticket routeco-in: ASR 25.33"
    assert "quality@carrier.example" in str(mail.message["From"])
