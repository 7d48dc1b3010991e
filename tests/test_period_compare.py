"""Alert 12, period-over-period rules (CDR-Stats style), on the REAL v5 schema with
explicit `now`: each condition in its direction, the % change against the previous value,
days, weeks and months really judged once settled, the same day a week earlier, the
minimum sample, the scope; and the `dnl-ad rule` commands."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dnl_ad import cli, delivery, migrations
from dnl_ad.alerts import period_compare
from dnl_ad.own_rules import RuleError, add_rule

from . import factories as f
from .conftest import utc
from .test_daemon import write_ini
from .test_v5_alerts import email_log, seed_system, ui_client

NOW = utc(2026, 11, 21, 1, 0)          # 2026-11-20 (a Friday) settled at 01:00
DAY = utc(2026, 11, 20)


def day_traffic(conn, client: dict[str, Any], day: dt.datetime, calls: int, answered: int,
                *, acd: int = 60, country: str = "Nigeria") -> None:
    f.traffic(conn, report_time=day + dt.timedelta(hours=10),
              ingress_client_id=client["client_id"], ingress_id=client["trunk"],
              ingress_total_calls=calls, not_zero_calls=answered, duration=answered * acd,
              ingress_country=country)


def customer(conn, name: str = "pumpco") -> dict[str, Any]:
    c = ui_client(conn, name)
    c["trunk"] = f.trunk(conn, c["client_id"], alias=f"{name}-in")["resource_id"]
    return c


def rule(conn, schema: str = "dnl_ad", **values: Any) -> int:
    base = {"name": "ASR watch", "metric": "asr", "scope": "all", "scope_value": "",
            "side": 1, "period": "day", "condition": "falls_by_pct", "value": 20,
            "compare_to": "previous", "min_calls": 100, "recipients": "noc@carrier.example"}
    with conn.cursor() as cur:
        return add_rule(cur, schema, **{**base, **values})


@pytest.fixture
def asr_drop(v5_conn) -> dict[str, Any]:
    """ASR 50 % on 2026-11-19 (200 calls), 30 % on 2026-11-20 (200 calls)."""
    seed_system(v5_conn)
    c = customer(v5_conn)
    day_traffic(v5_conn, c, DAY - dt.timedelta(days=1), 200, 100)
    day_traffic(v5_conn, c, DAY, 200, 60)
    return c


def test_a_falling_asr_mails_both_values_and_the_change_once(v5_conn, v5_database,
                                                              v5_settings, smtp,
                                                              asr_drop) -> None:
    rule(v5_conn, value=39)
    assert period_compare.sweep(v5_database, NOW, v5_settings).queued == 1
    delivery.deliver(v5_database, v5_settings, now=NOW)
    [mail] = smtp.messages
    assert mail.rcpt_tos == ["noc@carrier.example"]
    text = next(p.get_content() for p in mail.message.walk()
                if p.get_content_type() == "text/plain")
    assert "2026-11-20: ASR 30.00 % over 200 calls" in text
    assert "2026-11-19: ASR 50.00 % over 200 calls" in text
    assert "Change: -20.00 % (-40.00 % of the earlier value)" in text
    assert [(r["type"], r["status"]) for r in email_log(v5_conn)] == [(22, 0)]
    # the period is judged once: later sweeps the same day send nothing
    for later in (NOW, NOW + dt.timedelta(hours=5)):
        assert period_compare.sweep(v5_database, later, v5_settings).queued == 0


@pytest.mark.parametrize(("condition", "value", "fires"), [
    # 50 -> 30: -20 points, -40 % of the previous value (of the average 40: -50 %,
    # of the current 30: -66.7 %: a wrong base fires at 41)
    ("falls_by_pct", 39, True), ("falls_by_pct", 41, False), ("rises_by_pct", 0, False),
    ("falls_by", 19, True), ("falls_by", 21, False), ("rises_by", 0, False),
    ("lt", 31, True), ("lt", 29, False), ("gt", 29, True), ("gt", 31, False)])
def test_each_condition_in_its_direction(v5_conn, v5_database, v5_settings, asr_drop,
                                         condition, value, fires) -> None:
    rule(v5_conn, condition=condition, value=value)
    assert period_compare.sweep(v5_database, NOW, v5_settings).queued == (1 if fires else 0)


@pytest.mark.parametrize(("condition", "value", "fires"), [
    ("rises_by_pct", 66, True), ("rises_by_pct", 67, False), ("falls_by_pct", 0, False),
    ("rises_by", 19, True), ("falls_by", 0, False)])
def test_a_rising_asr(v5_conn, v5_database, v5_settings, condition, value, fires) -> None:
    seed_system(v5_conn)
    c = customer(v5_conn)
    day_traffic(v5_conn, c, DAY - dt.timedelta(days=1), 200, 60)   # 30 %
    day_traffic(v5_conn, c, DAY, 200, 100)                         # 50 %: +66.67 %
    rule(v5_conn, condition=condition, value=value)
    assert period_compare.sweep(v5_database, NOW, v5_settings).queued == (1 if fires else 0)


def test_acd_rule(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    c = customer(v5_conn)
    day_traffic(v5_conn, c, DAY - dt.timedelta(days=1), 200, 100, acd=90)
    day_traffic(v5_conn, c, DAY, 200, 100, acd=45)
    rule(v5_conn, metric="acd", condition="falls_by_pct", value=49)   # -50 %
    rule(v5_conn, metric="acd", condition="lt", value=45)             # 45 is not < 45
    assert period_compare.sweep(v5_database, NOW, v5_settings).queued == 1


def test_not_judged_before_the_period_settles(v5_conn, v5_database, v5_settings,
                                              asr_drop) -> None:
    rule(v5_conn, value=39)
    assert period_compare.sweep(v5_database, utc(2026, 11, 21, 0, 59), v5_settings).queued == 0
    assert period_compare.sweep(v5_database, NOW, v5_settings).queued == 1


def test_minimum_sample_in_both_periods(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    c = customer(v5_conn)
    day_traffic(v5_conn, c, DAY - dt.timedelta(days=1), 80, 40)     # 50 %, too few
    day_traffic(v5_conn, c, DAY, 200, 60)                           # 30 %
    rule(v5_conn, condition="falls_by_pct", value=10)                # previous too thin
    rule(v5_conn, condition="lt", value=40)                          # current is enough
    rule(v5_conn, condition="lt", value=40, min_calls=201)           # current too thin
    assert period_compare.sweep(v5_database, NOW, v5_settings).queued == 1
    runs = f.rows(v5_conn, "SELECT rule_id, fired FROM dnl_ad.period_rule_run ORDER BY 1")
    assert runs == [{"rule_id": 1, "fired": False}, {"rule_id": 2, "fired": True},
                    {"rule_id": 3, "fired": False}]


def test_weekly_rules_run(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = customer(v5_conn)
    week = utc(2026, 11, 16)                                       # Monday, ISO week 47
    day_traffic(v5_conn, c, week - dt.timedelta(days=5), 300, 150)    # week 46: 50 %
    day_traffic(v5_conn, c, week + dt.timedelta(days=2), 300, 90)     # week 47: 30 %
    rule(v5_conn, period="week", value=39)
    # on Sunday the week is not over yet
    assert period_compare.sweep(v5_database, utc(2026, 11, 22, 23), v5_settings).queued == 0
    assert period_compare.sweep(v5_database, utc(2026, 11, 23, 1), v5_settings).queued == 1
    delivery.deliver(v5_database, v5_settings, now=utc(2026, 11, 23, 1))
    assert "2026-W47" in str(smtp.messages[0].message["Subject"])


def test_monthly_rules_run(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = customer(v5_conn)
    day_traffic(v5_conn, c, utc(2026, 10, 31), 300, 150)   # October: 50 %
    day_traffic(v5_conn, c, utc(2026, 11, 1), 300, 90)     # November: 30 %
    rule(v5_conn, period="month", value=39)
    assert period_compare.sweep(v5_database, utc(2026, 11, 30, 23), v5_settings).queued == 0
    assert period_compare.sweep(v5_database, utc(2026, 12, 1, 1), v5_settings).queued == 1
    delivery.deliver(v5_database, v5_settings, now=utc(2026, 12, 1, 1))
    assert "2026-11" in str(smtp.messages[0].message["Subject"])


def test_same_day_a_week_earlier(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    c = customer(v5_conn)
    day_traffic(v5_conn, c, DAY - dt.timedelta(days=7), 200, 100)   # last Friday 50 %
    day_traffic(v5_conn, c, DAY - dt.timedelta(days=1), 200, 60)    # Thursday 30 %
    day_traffic(v5_conn, c, DAY, 200, 60)                           # Friday 30 %
    rule(v5_conn, value=10)                                          # vs Thursday: 0 %
    rule(v5_conn, value=10, compare_to="week_before")                # vs last Friday: -40 %
    assert period_compare.sweep(v5_database, NOW, v5_settings).queued == 1
    assert f.rows(v5_conn, "SELECT rule_id FROM dnl_ad.period_rule_run WHERE fired") == [
        {"rule_id": 2}]


def test_scopes_count_only_their_traffic(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    bad, good = customer(v5_conn, "bad"), customer(v5_conn, "good")
    day_traffic(v5_conn, bad, DAY, 200, 40, country="Chad")        # 20 %
    day_traffic(v5_conn, good, DAY, 200, 120, country="France")    # 60 %
    ids = [rule(v5_conn, condition="lt", value=30, scope=s, scope_value=v)
           for s, v in (("client", str(bad["client_id"])), ("client", str(good["client_id"])),
                        ("trunk", str(bad["trunk"])), ("country", "France"),
                        ("country", "Chad"), ("all", ""))]
    assert period_compare.sweep(v5_database, NOW, v5_settings).queued == 3
    fired = {r["rule_id"] for r in f.rows(v5_conn, "SELECT rule_id FROM "
                                          "dnl_ad.period_rule_run WHERE fired")}
    assert fired == {ids[0], ids[2], ids[4]}   # all traffic: 40 %, not below 30


def test_bad_rules_are_refused(v5_conn) -> None:
    for values, text in (({"metric": "mos"}, "--metric"), ({"value": "x"}, "--value"),
                         ({"period": "month", "compare_to": "week_before"}, "week_before"),
                         ({"recipients": "not an address"}, "--to")):
        with pytest.raises(RuleError, match=text):
            rule(v5_conn, **values)


def test_rule_commands(v5_conn, v5_settings, tmp_path, capsys) -> None:
    ini = str(write_ini(tmp_path / "dnl_ad.ini", v5_settings))
    assert cli.main(["--config", ini, "rule", "add", "--name", "Chad ASR", "--metric", "asr",
                     "--scope", "country:Chad", "--period", "week", "--condition",
                     "falls_by_pct", "--value", "25", "--min-calls", "500",
                     "--to", "noc@carrier.example"]) == 0
    assert "rule 1 added" in capsys.readouterr().out
    assert cli.main(["--config", ini, "rule", "list"]) == 0
    out = capsys.readouterr().out
    assert "Chad ASR: ASR falls by more than 25% against the previous week" in out
    assert "country Chad" in out and "min 500 calls" in out
    assert cli.main(["--config", ini, "rule", "add", "--name", "x", "--metric", "asr",
                     "--period", "fortnight", "--condition", "lt", "--value", "1",
                     "--to", "noc@carrier.example"]) == 2
    assert "--period 'fortnight'" in capsys.readouterr().err
    assert cli.main(["--config", ini, "rule", "remove", "1"]) == 0
    assert cli.main(["--config", ini, "rule", "remove", "1"]) == 1
    with v5_conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM dnl_ad.period_rule")
        assert cur.fetchone()["n"] == 0
    assert migrations  # the commands migrate the own schema first
