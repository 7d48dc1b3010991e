"""An SMTP outage costs no notice: the whole delivery backs off, nothing is charged an
attempt, and a notice ends only by age (DELIVERY_MAX_AGE_HOURS). Real sink, stopped and
started again; simulated time passed as `now`."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter

from dnl_ad import delivery
from tests import factories
from tests.mail_helpers import NOW, email_log, notice, outbox_rows, queue

S = dt.timedelta(seconds=1)


def _run(database, cfg, start: dt.datetime, end: dt.datetime, step: dt.timedelta):
    now, results = start, []
    while now < end:
        results.append(delivery.deliver(database, cfg, now=now))
        now += step
    return now, results


def test_fault_run_2000_notices_through_a_2h10m_outage(database, settings, conn, smtp,
                                                       caplog) -> None:
    """2,000 notices due, SMTP down for 2 h 10 min (the production retry settings), then
    up: 2,000 delivered, 0 failed, 0 duplicates, no attempt charged for the outage."""
    caplog.set_level(logging.INFO, logger="dnl_ad")
    factories.system(conn)
    cfg = settings.replace(retry_base_seconds=60, retry_max_seconds=3600, max_attempts=8,
                           smtp_backoff_max_seconds=300)
    queue(database, cfg, [notice(f"fault:{i}", client_id=i, recipients=f"c{i}@x.example")
                          for i in range(2000)])
    smtp.stop()
    down_until = NOW + dt.timedelta(hours=2, minutes=10)
    now, results = _run(database, cfg, NOW, down_until, 30 * S)
    assert sum(r.sent + r.retry + r.failed for r in results) == 0
    assert sum(r.deferred for r in results) >= 500  # it did try, now and then
    rows = outbox_rows(conn)
    assert {(r["status"], r["attempts"], r["lease_until"]) for r in rows} == {
        ("pending", 0, None)}
    assert all("cannot connect" in (r["last_error"] or "cannot connect") for r in rows)
    assert email_log(conn) == []
    paused = [r for r in caplog.records if "delivery paused" in r.getMessage()]
    assert len(paused) == 1 and "Connection refused" in paused[0].getMessage()

    smtp.start()
    now, results = _run(database, cfg, now, now + dt.timedelta(minutes=15), 30 * S)
    assert sum(r.sent for r in results) == 2000
    assert sum(r.failed + r.retry for r in results) == 0
    ids = Counter(m.message["Message-ID"] for m in smtp.messages)
    assert len(ids) == 2000 and max(ids.values()) == 1
    assert Counter((r["status"], r["attempts"]) for r in outbox_rows(conn)) == {
        ("sent", 1): 2000}
    logs = email_log(conn)
    assert len(logs) == 2000 and {r["status"] for r in logs} == {0}
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 1


def test_backoff_is_capped_and_skips_claims_while_it_runs(database, settings, conn,
                                                          smtp) -> None:
    factories.system(conn)
    cfg = settings.replace(retry_base_seconds=10, smtp_backoff_max_seconds=25)
    queue(database, cfg, [notice()])
    smtp.stop()
    tried = []
    now = NOW
    for _ in range(12):
        result = delivery.deliver(database, cfg, now=now)
        if result.deferred:
            tried.append(int((now - NOW).total_seconds()))
        now += S
    # tries at 0, +10, +20 (waits 10, 20, then 25 capped): each try waits out the backoff
    assert tried == [0, 10] and outbox_rows(conn)[0]["attempts"] == 0
    smtp.start()
    assert delivery.deliver(database, cfg, now=NOW + 30 * S).sent == 1


def test_a_notice_expires_only_by_age_with_a_final_email_log_row(database, settings, conn,
                                                                 smtp) -> None:
    factories.system(conn)
    cfg = settings.replace(delivery_max_age_hours=2)
    queue(database, cfg, [notice("old:1", client_id=5, recipients="a@x.example")])
    smtp.stop()
    _run(database, cfg, NOW, NOW + dt.timedelta(hours=2) - S, 60 * S)
    assert outbox_rows(conn)[0]["status"] == "pending" and email_log(conn) == []
    result = delivery.deliver(database, cfg, now=NOW + dt.timedelta(hours=2))
    assert result.expired == 1
    [row] = outbox_rows(conn)
    assert row["status"] == "failed" and row["attempts"] == 0
    assert row["last_error"].startswith("expired: not delivered within 2 h")
    [log] = email_log(conn)
    assert (log["status"], log["client_id"], log["email_addresses"]) == (1, 5, "a@x.example")
    assert "expired" in log["error"] and "cannot connect" in log["error"]
    smtp.start()
    assert delivery.deliver(database, cfg, now=NOW + dt.timedelta(hours=3)).total == 0
    assert smtp.messages == []


def test_421_at_helo_and_a_silent_server_charge_nothing(database, settings, conn,
                                                        smtp) -> None:
    import socket

    factories.system(conn)
    queue(database, settings, [notice(f"q:{i}") for i in range(3)])
    smtp.reply_to_helo("421 4.3.2 too busy, try later")
    first = delivery.deliver(database, settings, now=NOW)
    assert (first.deferred, first.retry) == (3, 0)
    assert all("421 4.3.2" in r["last_error"] for r in outbox_rows(conn))
    with socket.socket() as silent:  # accepts TCP (backlog) but never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        cfg = settings.replace(smtp_port=silent.getsockname()[1], smtp_timeout_seconds=1)
        second = delivery.deliver(database, cfg, now=NOW + 10 * S)
    assert (second.deferred, second.retry) == (3, 0)
    assert all(r["attempts"] == 0 and "timed out" in r["last_error"]
               for r in outbox_rows(conn))
    smtp.reply_to_helo("")
    assert delivery.deliver(database, settings, now=NOW + 20 * S).sent == 3
