"""The operator hears about failures (issue 14, item 3): a job failing for longer than
ADMIN_ALERT_AFTER_MINUTES, delivery giving notices up, a suspension not written. One mail
(through the outbox, to the real SMTP sink) and one admin_alert row when it starts, one
more when it recovers, never more than one an hour per condition.

The loop's clock is a FakeClock: every test steps time explicitly.
"""

from __future__ import annotations

import datetime as dt
import logging

from dnl_ad import db, operator_alerts
from dnl_ad.alerts import SweepResult
from dnl_ad.scheduler import JobDef, Loop, _delivery_job, operator_job

from . import factories as f
from .conftest import utc
from .test_scheduler import FakeClock

T0 = utc(2026, 11, 21, 9)


def _admin_alerts(conn) -> list[dict]:
    return f.rows(conn, "SELECT type, subject, content, is_view, create_time FROM admin_alert "
                  "ORDER BY id")


def _operator_mail(conn) -> list[dict]:
    return f.rows(conn, "SELECT dedupe_key, to_addrs, status, subject FROM dnl_ad.outbox "
                  "WHERE kind = 'admin_alert' ORDER BY id")


class Flaky:
    """A job that raises while `failing` is set."""

    def __init__(self) -> None:
        self.failing = True

    def __call__(self, now: dt.datetime) -> None:
        if self.failing:
            raise RuntimeError("template store exploded")


def _loop(settings, database, clock, *extra: JobDef) -> Loop:
    return Loop(settings, database, clock=clock,
                jobs=lambda loop: [*extra, JobDef("delivery", 5, _delivery_job(loop)),
                                   operator_job(loop)])


def _run(loop: Loop, clock: FakeClock, minutes: float, step: float = 30) -> None:
    """Tick every `step` seconds for `minutes`."""
    end = clock.now + dt.timedelta(minutes=minutes)
    while clock.now < end:
        loop.tick()
        clock.advance(step)


def _arrange(conn, **system) -> None:
    f.system(conn, system_admin_email="admin@carrier.example",
             noc_email="noc@carrier.example", switch_alias="SW1", **system)


def test_job_failing_16_minutes_one_mail_one_row_recovery_one_more(conn, settings, database,
                                                                  smtp, caplog) -> None:
    _arrange(conn)
    clock = FakeClock(T0)
    flaky = Flaky()
    loop = _loop(settings, database, clock, JobDef("usage_summary", 60, flaky))
    caplog.set_level(logging.INFO)
    _run(loop, clock, 14)
    assert _admin_alerts(conn) == [] and smtp.messages == []  # not yet 15 minutes
    _run(loop, clock, 2.5)  # 16.5 minutes of failures
    rows = _admin_alerts(conn)
    assert len(rows) == 1
    assert rows[0]["type"] == operator_alerts.ADMIN_ALERT_TYPE == 6
    assert rows[0]["subject"] == "dnl_ad on SW1: job usage_summary is failing"
    assert "since 2026-11-21 09:00 UTC" in rows[0]["content"]
    assert "RuntimeError: template store exploded" in rows[0]["content"]
    assert rows[0]["is_view"] == 0
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert sorted(mail.rcpt_tos) == ["admin@carrier.example", "noc@carrier.example"]
    assert mail.message["Subject"] == rows[0]["subject"]
    assert "template store exploded" in mail.message.get_body(("plain",)).get_content()
    assert _operator_mail(conn)[0]["dedupe_key"] == "admin:job:usage_summary:failing:20261121T09"

    _run(loop, clock, 20)  # still failing: nothing more
    assert len(_admin_alerts(conn)) == 1 and len(smtp.messages) == 1

    flaky.failing = False
    _run(loop, clock, 7)  # the job backs off up to 5 minutes: its next run succeeds
    rows = _admin_alerts(conn)
    assert len(rows) == 2 and rows[1]["subject"] == "dnl_ad on SW1: job usage_summary works again"
    assert "It had failed since 2026-11-21 09:00 UTC" in rows[1]["content"]
    assert "template store exploded" in rows[1]["content"]
    assert len(smtp.messages) == 2
    assert smtp.messages[1].message["Subject"] == rows[1]["subject"]

    # a second failure within the hour of the first mail: none, and no recovery either
    flaky.failing = True
    _run(loop, clock, 20)
    flaky.failing = False
    _run(loop, clock, 7)
    assert len(_admin_alerts(conn)) == 2 and len(smtp.messages) == 2
    assert "not told" in caplog.text and "at most once an hour" in caplog.text

    # an hour after the first mail, a new failure is told again
    clock.now = T0 + dt.timedelta(hours=2)
    flaky.failing = True
    _run(loop, clock, 16.5)
    assert len(_admin_alerts(conn)) == 3 and len(smtp.messages) == 3


def test_a_restart_does_not_tell_again(conn, settings, database, smtp) -> None:
    """The state is in dnl_ad.operator_condition: a new Loop (a restart, a take-over) that
    finds the job still failing neither mails nor writes a second row; its recovery is
    told once, with the original start."""
    _arrange(conn)
    clock = FakeClock(T0)
    flaky = Flaky()
    _run(_loop(settings, database, clock, JobDef("low_balance", 60, flaky)), clock, 17)
    assert len(_admin_alerts(conn)) == 1
    restarted = _loop(settings, database, clock, JobDef("low_balance", 60, flaky))
    _run(restarted, clock, 20)
    assert len(_admin_alerts(conn)) == 1 and len(smtp.messages) == 1
    flaky.failing = False
    _run(restarted, clock, 7)
    rows = _admin_alerts(conn)
    assert len(rows) == 2 and "since 2026-11-21 09:00 UTC" in rows[1]["content"]
    assert len(smtp.messages) == 2


def test_admin_email_setting_and_smtp_down_mail_survives(conn, settings, database,
                                                         smtp) -> None:
    """ADMIN_EMAIL replaces the provider's addresses; the mail is an outbox row, so an
    SMTP server that is down only delays it."""
    _arrange(conn)
    clock = FakeClock(T0)
    up = settings
    down = settings.replace(smtp_port=1, admin_email="ops@carrier.example")
    loop = _loop(down, database, clock, JobDef("balance_summary", 60, Flaky()))
    _run(loop, clock, 17)
    assert len(_admin_alerts(conn)) == 1 and smtp.messages == []
    assert [(m["to_addrs"], m["status"]) for m in _operator_mail(conn)] == [
        (["ops@carrier.example"], "pending")]
    loop.settings = up.replace(admin_email="ops@carrier.example")
    clock.advance(3600)
    _run(loop, clock, 1)
    assert [m.rcpt_tos for m in smtp.messages] == [["ops@carrier.example"]]


def test_delivery_giving_up_tells_the_operator_once_and_recovers(conn, settings, database,
                                                                 smtp) -> None:
    _arrange(conn)
    f.client(conn, balance=1.0, mode=1, is_daily_balance_notification=True,
             low_config={"value_type": 0, "actual_notify_balance": 50})
    smtp.reply_for("billing@client.example", "550 5.1.1 no such user")
    from dnl_ad.alerts import low_balance

    clock = FakeClock(T0)
    loop = _loop(settings, database, clock)
    low_balance.sweep(database, T0, settings)
    _run(loop, clock, 2)
    rows = _admin_alerts(conn)
    assert [r["subject"] for r in rows] == ["dnl_ad on SW1: delivery is failing"]
    assert "1 notice(s) given up" in rows[0]["content"] and "550" in rows[0]["content"]
    assert len(smtp.messages) == 1  # the operator mail; the client's was refused
    _run(loop, clock, 10)
    assert len(_admin_alerts(conn)) == 1
    _run(loop, clock, 7)  # 15 minutes without a notice given up
    assert [r["subject"] for r in _admin_alerts(conn)][1:] == [
        "dnl_ad on SW1: delivery works again"]
    assert len(smtp.messages) == 2


def test_suspension_not_written_is_told_at_once(conn, settings, database, smtp) -> None:
    _arrange(conn)
    clock = FakeClock(T0)
    results = [SweepResult("trunk_suspended", failed=1,
                           errors=["trunk_suspended: client 7 trunk 9: suspension: "
                                   "LockNotAvailable: canceling statement"])]

    def suspend(now: dt.datetime) -> SweepResult:
        return results.pop(0) if results else SweepResult("trunk_suspended")

    loop = _loop(settings, database, clock, JobDef("trunk_suspended", 60, suspend))
    _run(loop, clock, 1)
    rows = _admin_alerts(conn)
    assert [r["subject"] for r in rows] == ["dnl_ad on SW1: trunk suspension is failing"]
    assert "LockNotAvailable" in rows[0]["content"]
    _run(loop, clock, 2)
    assert [r["subject"] for r in _admin_alerts(conn)][1:] == [
        "dnl_ad on SW1: trunk suspension works again"]


def test_a_failure_to_tell_is_logged_never_raised(settings, database, caplog) -> None:
    """No admin_alert table (an older provider database): the check logs once and the
    loop goes on."""
    conn = db.connect(settings.connection_string, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE admin_alert")
    finally:
        conn.close()
    clock = FakeClock(T0)
    loop = _loop(settings, database, clock, JobDef("usage_summary", 60, Flaky()))
    caplog.set_level(logging.INFO)
    _run(loop, clock, 20)
    trouble = [r for r in caplog.records if "could not record or tell" in r.getMessage()]
    assert len(trouble) == 1 and "admin_alert" in trouble[0].getMessage()
    assert loop.registry.job(operator_alerts.JOB_NAME).failures == 0  # never raised


def test_v5_schema_gets_the_admin_alert_row(v5_conn, v5_settings, v5_database, smtp) -> None:
    f.system(v5_conn, system_admin_email="admin@carrier.example")
    clock = FakeClock(T0)
    loop = _loop(v5_settings, v5_database, clock, JobDef("cdr_delivery", 60, Flaky()))
    _run(loop, clock, 16.5)
    rows = _admin_alerts(v5_conn)
    assert [(r["type"], r["subject"]) for r in rows] == [(6, "dnl_ad: job cdr_delivery is failing")]
    assert rows[0]["create_time"] is not None
    assert [m.rcpt_tos for m in smtp.messages] == [["admin@carrier.example"]]
    log_rows = f.rows(v5_conn, "SELECT client_id, type, status FROM email_log")
    assert log_rows == [{"client_id": None, "type": 22, "status": 0}]


def test_admin_email_is_validated(tmp_path) -> None:
    import pytest

    from dnl_ad.config import ConfigError, load_settings

    ini = tmp_path / "dnl_ad.ini"
    ini.write_text("[dnl_ad]\n")

    with pytest.raises(ConfigError, match="ADMIN_EMAIL"):
        load_settings(ini, {"DNL_AD_ADMIN_EMAIL": "not an address"})
    with pytest.raises(ConfigError, match="ADMIN_ALERT_AFTER_MINUTES"):
        load_settings(ini, {"DNL_AD_ADMIN_ALERT_AFTER_MINUTES": "0"})
    ok = load_settings(ini, {"DNL_AD_ADMIN_EMAIL": "a@x.example; b@y.example"})
    assert ok.admin_email == "a@x.example; b@y.example" and ok.admin_alert_after_minutes == 15



def test_check_says_where_operator_alerts_go(conn, settings) -> None:
    from dnl_ad import check

    f.system(conn)
    cur = conn.cursor()
    row = check.check_operator_alerts(cur, settings, {"system_admin_email": ""})
    assert row.status == check.WARN and "ADMIN_EMAIL" in row.detail
    row = check.check_operator_alerts(cur, settings.replace(admin_email="ops@x.example"), {})
    assert row.status == check.OK and "to ops@x.example, after 15 min" in row.detail
    cur.execute("DROP TABLE admin_alert")
    row = check.check_operator_alerts(cur, settings.replace(admin_email="ops@x.example"), {})
    assert row.status == check.WARN and "no admin_alert table" in row.detail


def test_dry_run_tells_nothing(conn, settings, database, smtp) -> None:
    _arrange(conn)
    clock = FakeClock(T0)
    loop = _loop(settings.replace(dry_run=True), database, clock,
                 JobDef("usage_summary", 60, Flaky()))
    _run(loop, clock, 20)
    assert _admin_alerts(conn) == [] and _operator_mail(conn) == [] and smtp.messages == []
    assert f.rows(conn, "SELECT count(*) AS n FROM dnl_ad.operator_condition")[0]["n"] == 0
