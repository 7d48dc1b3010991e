"""Alert 7, trunk suspension with blocking: against the real PostgreSQL and SMTP sink.

The deadline is a date (rate_send_log.download_deadline): the trunk has until 23:59:59 GMT
of that day. NOW is 04:00 UTC, so a deadline of YESTERDAY passed 4 h ago, TODAY leaves 20 h.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest

from dnl_ad import db, delivery
from dnl_ad.alerts import trunk_common, trunk_pending, trunk_suspended
from dnl_ad.devtools.smtp_sink import free_port
from dnl_ad.pipeline import Pipeline

from . import factories as f
from .conftest import utc

NOW = utc(2026, 3, 1, 4)
H = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
TODAY = dt.date(2026, 3, 1)
TOMORROW = TODAY + DAY
YESTERDAY = TODAY - DAY
END_OF_TODAY = utc(2026, 3, 1, 23, 59, 59)  # TODAY's deadline instant
ROLLBACK_PREFIX = "UPDATE resource SET active = true, disable_by_alert = false WHERE resource_id = "
NASTY = "O'Brien \"main\"; drop table client;--"


def _client_trunk(conn, alias="acme-main", **client):
    f.system(conn)
    c = f.client(conn, name="acme", company="Acme Telecom", **client)
    t = f.trunk(conn, c["client_id"], alias=alias)
    return c, t


def _resource(conn, resource_id):
    [row] = f.rows(conn, "SELECT * FROM resource WHERE resource_id = %s", (resource_id,))
    return row


def _detail(conn, detail_id):
    [row] = f.rows(conn, "SELECT * FROM rate_send_log_detail WHERE id = %s", (detail_id,))
    return row


def _outbox(conn):
    return f.rows(conn, "SELECT dedupe_key, kind, resource_id, status, subject "
                        "FROM dnl_ad.outbox ORDER BY id")


def _modif_log(conn):
    return f.rows(conn, "SELECT * FROM modif_log ORDER BY id")


def _offset_detail_ids(conn):
    """Detail ids far from rate_send_log ids, so a query that mixed them up would miss."""
    f.rows(conn, "SELECT setval(pg_get_serial_sequence('rate_send_log_detail', 'id'), 1000)")


def _assert_untouched(conn, t, det, detail_status=1):
    r = _resource(conn, t["resource_id"])
    assert (r["active"], r["disable_by_alert"], r["update_by"]) == (True, False, None)
    d = _detail(conn, det["id"])
    assert (d["status"], d["error"]) == (detail_status, None)


def _assert_suspended(conn, t, det):
    r = _resource(conn, t["resource_id"])
    assert (r["active"], r["disable_by_alert"], r["update_by"]) == (False, True, "dnl_ad")
    d = _detail(conn, det["id"])
    assert d["status"] == 4 and "not downloaded" in d["error"]


def test_passed_deadline_blocks_logs_and_notifies(conn, database, settings, smtp) -> None:
    c, t = _client_trunk(conn)
    log, det = f.rate_send(conn, t["resource_id"], YESTERDAY, file="deck.csv")
    result = trunk_suspended.sweep(database, NOW, settings)
    assert (result.state_changes, result.queued) == (1, 1)

    r = _resource(conn, t["resource_id"])
    assert (r["active"], r["disable_by_alert"], r["update_by"], r["update_at"]) == \
        (False, True, "dnl_ad", NOW)
    d = _detail(conn, det["id"])
    assert d["status"] == 4 and "not downloaded" in d["error"]  # 4: expired
    [m] = _modif_log(conn)
    assert (m["time"], m["module"], m["type"], m["name"], m["rollback_extra_info"],
            m["rollback_flg"]) == (NOW, "Trunk", 4, "dnl_ad", '{"type":1}', None)
    assert "acme-main" in m["detail"] and str(log["id"]) in m["detail"]
    assert m["rollback"].removesuffix(str(t["resource_id"])) == ROLLBACK_PREFIX
    assert m["rollback_msg"]
    assert [(o["dedupe_key"], o["kind"], o["resource_id"]) for o in _outbox(conn)] == [
        (f"trunk_suspended:{t['resource_id']}:{log['id']}", "trunk_suspended",
         t["resource_id"])]

    delivery.deliver(database, settings, now=NOW)
    [msg] = smtp.messages
    assert msg.rcpt_tos == [c["billing_email"]]
    assert [(e["type"], e["status"], e["client_id"]) for e in
            f.rows(conn, "SELECT * FROM email_log")] == [(36, 0, c["client_id"])]

    # The operator undoes the block from the UI: the rollback statement, run as is
    # (rollback_extra_info {"type":1}), re-activates it.
    with conn.cursor() as cur:
        cur.execute(m["rollback"])
    r = _resource(conn, t["resource_id"])
    assert (r["active"], r["disable_by_alert"]) == (True, False)
    # ... and no later sweep blocks it again for the same rate send.
    again = trunk_suspended.sweep(database, NOW + 24 * H, settings)
    assert (again.state_changes, again.queued) == (0, 0)
    assert _resource(conn, t["resource_id"])["active"] is True
    assert len(_modif_log(conn)) == 1


def test_tags_of_the_suspension_notice(conn, database, settings) -> None:
    # No auto_send_zone: the zone falls back to daily_balance_send_time_zone.
    _, t = _client_trunk(conn, auto_send_zone=None,
                         daily_balance_send_time_zone="Asia/Hong_Kong")
    with conn.cursor() as cur:
        cur.execute("UPDATE mail_tmplate SET no_download_rate_subject = %s, "
                    "no_download_rate_content = %s",
                    ("{trunk_name} suspended",
                     "{company_name}|{client_name}|{rate_update_file_name}|"
                     "{rate_download_deadline}|{effective_date}|{trunk_name}"))
    log, _ = f.rate_send(conn, t["resource_id"], YESTERDAY, file="https://x.example/d/r.csv")
    f.update(conn, "rate_send_log", {"id": log["id"]}, effective_date="2026-03-02")
    trunk_suspended.sweep(database, NOW, settings)
    [row] = f.rows(conn, "SELECT subject, html_body FROM dnl_ad.outbox")
    assert row["subject"] == "acme-main suspended"
    local = "2026-03-01 07:59:59 GMT+08:00"  # 23:59:59 GMT of 2026-02-28
    assert row["html_body"] == f"Acme Telecom|acme|r.csv|{local}|2026-03-02|acme-main"


def test_grace_and_future_deadlines(conn, database, settings) -> None:
    _, t = _client_trunk(conn)
    _, det = f.rate_send(conn, t["resource_id"], TODAY)
    t2 = f.trunk(conn, t["client_id"], alias="later")
    _, det2 = f.rate_send(conn, t2["resource_id"], TOMORROW)
    # The deadline date has begun but its end (23:59:59 GMT) is still ahead.
    assert trunk_suspended.sweep(database, NOW, settings).state_changes == 0
    assert trunk_suspended.sweep(database, END_OF_TODAY - dt.timedelta(seconds=1),
                                 settings).state_changes == 0
    _assert_untouched(conn, t, det)
    # Passed by 10 min, with 30 min of grace: not yet.
    graceful = settings.replace(suspend_grace_minutes=30)
    assert trunk_suspended.sweep(database, END_OF_TODAY + dt.timedelta(minutes=10), graceful
                                 ).state_changes == 0
    _assert_untouched(conn, t, det)
    assert trunk_suspended.sweep(database, END_OF_TODAY + dt.timedelta(minutes=31), graceful
                                 ).state_changes == 1
    _assert_suspended(conn, t, det)
    _assert_untouched(conn, t2, det2)


def test_superseded_downloaded_and_out_of_scope_are_left_alone(conn, database, settings) -> None:
    c, t = _client_trunk(conn)
    _offset_detail_ids(conn)
    _, old = f.rate_send(conn, t["resource_id"], YESTERDAY)  # superseded by a future send
    f.rate_send(conn, t["resource_id"], TOMORROW)
    # Downloaded: a rate_download_log row keyed by (trunk, rate_send_log id).
    t2 = f.trunk(conn, c["client_id"], alias="downloaded")
    log2, det2 = f.rate_send(conn, t2["resource_id"], YESTERDAY)
    f.insert(conn, "rate_download_log", resource_id=t2["resource_id"],
             log_detail_id=log2["id"], download_time=NOW - 6 * H)
    # Downloaded: detail status 3 with download_date.
    t3 = f.trunk(conn, c["client_id"], alias="detail downloaded")
    _, det3 = f.rate_send(conn, t3["resource_id"], YESTERDAY)
    f.update(conn, "rate_send_log_detail", {"id": det3["id"]}, status=3,
             download_date=YESTERDAY)
    # The send marked downloaded (rate_send_log.status 4).
    t4 = f.trunk(conn, c["client_id"], alias="send downloaded")
    _, det4 = f.rate_send(conn, t4["resource_id"], YESTERDAY, status=4)
    # An attachment send (download_method 1).
    t5 = f.trunk(conn, c["client_id"], alias="attachment")
    log5, det5 = f.rate_send(conn, t5["resource_id"], YESTERDAY)
    f.update(conn, "rate_send_log", {"id": log5["id"]}, download_method=1)
    # Inactive client.
    off = f.client(conn, status=False)
    t6 = f.trunk(conn, off["client_id"], alias="client off")
    _, det6 = f.rate_send(conn, t6["resource_id"], YESTERDAY)
    # Control: a download row naming ANOTHER send's id is no download of this one.
    t7 = f.trunk(conn, c["client_id"], alias="other send downloaded")
    log7, det7 = f.rate_send(conn, t7["resource_id"], YESTERDAY)
    f.insert(conn, "rate_download_log", resource_id=t7["resource_id"],
             log_detail_id=log2["id"], download_time=NOW - 6 * H)
    result = trunk_suspended.sweep(database, NOW, settings)
    assert (result.state_changes, result.queued) == (1, 1)
    _assert_untouched(conn, t, old)
    _assert_untouched(conn, t2, det2)
    _assert_untouched(conn, t3, det3, detail_status=3)
    _assert_untouched(conn, t4, det4)
    _assert_untouched(conn, t5, det5)
    _assert_untouched(conn, t6, det6)
    _assert_suspended(conn, t7, det7)
    assert [o["dedupe_key"] for o in _outbox(conn)] == [
        f"trunk_suspended:{t7['resource_id']}:{log7['id']}"]
    assert [m["rollback"].rsplit(" ", 1)[1] for m in _modif_log(conn)] == \
        [str(t7["resource_id"])]


def test_disable_off_is_warned_but_never_suspended(conn, database, settings) -> None:
    # is_disable false ("Disable The Trunk" off) with is_email_alert true.
    c, t = _client_trunk(conn)
    log, det = f.rate_send(conn, t["resource_id"], TODAY, is_disable=False)
    control = f.trunk(conn, c["client_id"], alias="control")
    _, det_c = f.rate_send(conn, control["resource_id"], TODAY)
    assert trunk_pending.sweep(database, NOW, settings).queued == 2
    assert f"trunk_pending:{t['resource_id']}:{log['id']}:24" in \
        [o["dedupe_key"] for o in _outbox(conn)]
    first = trunk_suspended.sweep(database, END_OF_TODAY + H, settings)
    later = trunk_suspended.sweep(database, END_OF_TODAY + 2 * DAY, settings)
    assert (first.state_changes, later.state_changes) == (1, 0)
    _assert_untouched(conn, t, det)
    _assert_suspended(conn, control, det_c)
    assert [o["kind"] for o in _outbox(conn)] == [
        "trunk_pending", "trunk_pending", "trunk_suspended"]


def test_deadline_past_the_overdue_limit_is_never_suspended_and_logged_once(
        conn, database, settings, caplog) -> None:
    c, t = _client_trunk(conn, alias="forgotten")
    log, det = f.rate_send(conn, t["resource_id"], TODAY - 10 * DAY)
    recent = f.trunk(conn, c["client_id"], alias="recent")
    _, det_r = f.rate_send(conn, recent["resource_id"], TODAY - 2 * DAY)  # within 3 days
    with caplog.at_level(logging.INFO, logger="dnl_ad"):
        first = trunk_suspended.sweep(database, NOW, settings)
        second = trunk_suspended.sweep(database, NOW + H, settings)
    assert (first.state_changes, second.state_changes) == (1, 0)
    _assert_untouched(conn, t, det)
    _assert_suspended(conn, recent, det_r)
    warned = [r.getMessage() for r in caplog.records
              if "SUSPEND_MAX_OVERDUE_DAYS" in r.getMessage()]
    assert len(warned) == 1
    assert "forgotten" in warned[0] and str(log["id"]) in warned[0]
    # The limit is the setting: with 15 days the same trunk is suspended.
    wider = settings.replace(suspend_max_overdue_days=15)
    assert trunk_suspended.sweep(database, NOW + 2 * H, wider).state_changes == 1
    _assert_suspended(conn, t, det)


def test_download_after_the_candidates_query_leaves_the_trunk_active(
        conn, database, settings) -> None:
    """The flip re-checks "not downloaded" itself: a download the UI commits between the
    candidates query and the flip (a stale candidate) must leave the trunk active and its
    detail open; a trunk the operator deactivated meanwhile is left as the operator made it."""
    c, t = _client_trunk(conn, alias="log row")
    _offset_detail_ids(conn)
    log, det = f.rate_send(conn, t["resource_id"], YESTERDAY)
    t2 = f.trunk(conn, c["client_id"], alias="detail downloaded")
    _, det2 = f.rate_send(conn, t2["resource_id"], YESTERDAY)
    t3 = f.trunk(conn, c["client_id"], alias="send downloaded")
    log3, det3 = f.rate_send(conn, t3["resource_id"], YESTERDAY)
    t5 = f.trunk(conn, c["client_id"], alias="download date only")
    _, det5 = f.rate_send(conn, t5["resource_id"], YESTERDAY)
    t6 = f.trunk(conn, c["client_id"], alias="blocked by operator")
    _, det6 = f.rate_send(conn, t6["resource_id"], YESTERDAY)
    t4 = f.trunk(conn, c["client_id"], alias="control")
    log4, det4 = f.rate_send(conn, t4["resource_id"], YESTERDAY)
    oldest, until = trunk_suspended.overdue_window(NOW, settings)
    with db.unit_of_work(database, dry_run=False) as cur:
        pipeline = Pipeline.open(cur, settings)
        stale = trunk_common.candidates(cur, oldest, until, trunk_common.DISABLE)
        assert [s.resource_id for s in stale] == [t["resource_id"], t2["resource_id"],
                                                  t3["resource_id"], t5["resource_id"],
                                                  t6["resource_id"], t4["resource_id"]]
        # The downloads land now, committed by another connection (the UI's).
        f.insert(conn, "rate_download_log", resource_id=t["resource_id"],
                 log_detail_id=log["id"], download_time=NOW)
        f.update(conn, "rate_send_log_detail", {"id": det2["id"]}, status=3,
                 download_date=TODAY)
        f.update(conn, "rate_send_log", {"id": log3["id"]}, status=4)
        f.update(conn, "rate_send_log_detail", {"id": det5["id"]}, download_date=TODAY)
        # The operator deactivates a trunk by hand meanwhile: dnl_ad leaves it to them.
        f.update(conn, "resource", {"resource_id": t6["resource_id"]}, active=False)
        # Another trunk's download of the control's send is not the control's download.
        f.insert(conn, "rate_download_log", resource_id=t["resource_id"],
                 log_detail_id=log4["id"], download_time=NOW)
        for cand in stale[:5]:
            with pytest.raises(trunk_suspended._Skip):
                with db.savepoint(cur, "stale"):
                    trunk_suspended._suspend(cur, pipeline, cand, NOW)
        trunk_suspended._suspend(cur, pipeline, stale[5], NOW)
    _assert_untouched(conn, t, det)
    _assert_untouched(conn, t2, det2, detail_status=3)
    _assert_untouched(conn, t3, det3)
    assert _resource(conn, t5["resource_id"])["active"] is True
    assert (_detail(conn, det5["id"])["status"], _detail(conn, det5["id"])["error"]) == (1, None)
    r6 = _resource(conn, t6["resource_id"])
    assert (r6["active"], r6["disable_by_alert"], r6["update_by"]) == (False, False, None)
    assert (_detail(conn, det6["id"])["status"], _detail(conn, det6["id"])["error"]) == (1, None)
    _assert_suspended(conn, t4, det4)
    assert [o["resource_id"] for o in _outbox(conn)] == [t4["resource_id"]]
    assert len(_modif_log(conn)) == 1


def test_failure_mid_transaction_leaves_nothing_then_next_sweep_does_it_all(
        conn, database, settings) -> None:
    _, bad = _client_trunk(conn, alias="faulty")
    log_bad, det_bad = f.rate_send(conn, bad["resource_id"], YESTERDAY)
    good = f.trunk(conn, bad["client_id"], alias="healthy")
    f.rate_send(conn, good["resource_id"], YESTERDAY)
    # A real fault: modif_log refuses the faulty trunk's row after the detail and the
    # resource were already updated in the same transaction.
    with conn.cursor() as cur:
        cur.execute("CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF NEW.detail LIKE '%faulty%' THEN "
                    "RAISE EXCEPTION 'modif_log is broken'; END IF; RETURN NEW; END $$")
        cur.execute("CREATE TRIGGER test_refuse BEFORE INSERT ON modif_log "
                    "FOR EACH ROW EXECUTE FUNCTION test_refuse()")
    result = trunk_suspended.sweep(database, NOW, settings)
    assert (result.state_changes, result.skipped) == (1, 1)
    _assert_untouched(conn, bad, det_bad)
    assert [o["resource_id"] for o in _outbox(conn)] == [good["resource_id"]]
    assert [m["rollback"].rsplit(" ", 1)[1] for m in _modif_log(conn)] == \
        [str(good["resource_id"])]
    assert _resource(conn, good["resource_id"])["active"] is False

    with conn.cursor() as cur:
        cur.execute("DROP TRIGGER test_refuse ON modif_log")
    result = trunk_suspended.sweep(database, NOW + dt.timedelta(minutes=1), settings)
    assert (result.state_changes, result.skipped) == (1, 0)
    _assert_suspended(conn, bad, det_bad)
    assert len(_modif_log(conn)) == 2
    assert [o["dedupe_key"] for o in _outbox(conn)][-1] == \
        f"trunk_suspended:{bad['resource_id']}:{log_bad['id']}"


def test_hostile_alias_is_blocked_and_logged_as_text(conn, database, settings, caplog) -> None:
    _, t = _client_trunk(conn, alias=NASTY)
    _, det = f.rate_send(conn, t["resource_id"], YESTERDAY)
    with caplog.at_level(logging.INFO, logger="dnl_ad"):
        assert trunk_suspended.sweep(database, NOW, settings).state_changes == 1
    assert repr(NASTY) in caplog.text
    _assert_suspended(conn, t, det)
    [m] = _modif_log(conn)
    assert NASTY in m["detail"]
    assert m["rollback"].removesuffix(str(t["resource_id"])) == ROLLBACK_PREFIX
    assert f.rows(conn, "SELECT to_regclass('client') IS NOT NULL AS ok") == [{"ok": True}]
    with conn.cursor() as cur:
        cur.execute(m["rollback"])
    assert _resource(conn, t["resource_id"])["active"] is True
    assert f.rows(conn, "SELECT count(*) AS n FROM client")[0]["n"] == 1


def test_block_happens_with_smtp_down(conn, database, settings) -> None:
    _, t = _client_trunk(conn)
    _, det = f.rate_send(conn, t["resource_id"], YESTERDAY)
    down = settings.replace(smtp_port=free_port())
    assert trunk_suspended.sweep(database, NOW, down).state_changes == 1
    _assert_suspended(conn, t, det)
    assert [o["status"] for o in _outbox(conn)] == ["pending"]


def test_dry_run_writes_nothing_and_reports(conn, database, settings, caplog) -> None:
    _, t = _client_trunk(conn)
    _, det = f.rate_send(conn, t["resource_id"], YESTERDAY)
    with caplog.at_level(logging.INFO, logger="dnl_ad"):
        result = trunk_suspended.sweep(database, NOW, settings.replace(dry_run=True))
    assert (result.state_changes, result.queued, len(result.mails)) == (1, 1, 1)
    assert "would have" in caplog.text and "acme-main" in caplog.text
    _assert_untouched(conn, t, det)
    assert _modif_log(conn) == [] and _outbox(conn) == []
    # Nothing was written, so the real sweep still does it.
    assert trunk_suspended.sweep(database, NOW, settings).state_changes == 1
    _assert_suspended(conn, t, det)


def test_concurrent_daemon_does_not_suspend_twice(conn, dsn, database, settings) -> None:
    """Another daemon closes the detail while our sweep waits on its row lock."""
    _, t = _client_trunk(conn)
    _, det = f.rate_send(conn, t["resource_id"], YESTERDAY)
    other = db.connect(dsn)
    try:
        with other.cursor() as cur:
            cur.execute("UPDATE rate_send_log_detail SET status = 4, error = 'other' "
                        "WHERE id = %s AND status = 1", (det["id"],))
            assert cur.rowcount == 1
        results = []
        worker = threading.Thread(
            target=lambda: results.append(trunk_suspended.sweep(database, NOW, settings)))
        worker.start()
        _wait_for_lock_wait(conn)
        other.commit()
        worker.join(timeout=30)
    finally:
        other.close()
    assert results and results[0].state_changes == 0
    _r = _resource(conn, t["resource_id"])
    assert (_r["active"], _r["disable_by_alert"]) == (True, False)
    assert _detail(conn, det["id"])["error"] == "other"
    assert _modif_log(conn) == [] and _outbox(conn) == []


def _wait_for_lock_wait(conn) -> None:
    """Block until some session of this database waits on a lock (no clock involved:
    pg_stat_activity is asked until it says so, with a bounded number of tries)."""
    for _ in range(100000):
        rows = f.rows(conn, "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'")
        if rows[0]["n"]:
            return
    raise AssertionError("the sweep never waited on the row lock")


def test_client_without_address_is_blocked_and_failure_recorded(conn, database, settings) -> None:
    _, t = _client_trunk(conn, billing_email="", email=None)
    _, det = f.rate_send(conn, t["resource_id"], YESTERDAY)
    result = trunk_suspended.sweep(database, NOW, settings)
    assert (result.state_changes, result.queued, result.skipped) == (1, 0, 1)
    _assert_suspended(conn, t, det)
    assert [o["status"] for o in _outbox(conn)] == ["failed"]
    assert [(r["type"], r["status"]) for r in f.rows(conn, "SELECT * FROM email_log")] == \
        [(36, 1)]


def test_recipient_falls_back_to_client_email(conn, database, settings) -> None:
    _, t = _client_trunk(conn, billing_email="", email="main@client.example")
    f.rate_send(conn, t["resource_id"], YESTERDAY)
    assert trunk_suspended.sweep(database, NOW, settings).queued == 1
    assert f.rows(conn, "SELECT to_addrs FROM dnl_ad.outbox") == [
        {"to_addrs": ["main@client.example"]}]


def test_malformed_rate_link_still_blocks(conn, database, settings) -> None:
    # A rate deck link urlparse rejects ("http://[...") must not keep the trunk unblocked.
    _, t = _client_trunk(conn)
    _, det = f.rate_send(conn, t["resource_id"], YESTERDAY, file="http://[portal/deck.csv")
    result = trunk_suspended.sweep(database, NOW, settings)
    assert (result.state_changes, result.queued, result.skipped) == (1, 1, 0)
    _assert_suspended(conn, t, det)


def test_a_grace_longer_than_the_overdue_limit_still_suspends(conn, database, settings) -> None:
    """The overdue limit counts from the end of the grace, so a long grace never leaves
    an empty window in which nothing is suspended."""
    _, t = _client_trunk(conn)
    f.rate_send(conn, t["resource_id"], TODAY - 5 * DAY)
    long_grace = settings.replace(suspend_grace_minutes=4 * 24 * 60, suspend_max_overdue_days=3)
    assert trunk_suspended.sweep(database, NOW, long_grace).state_changes == 1
    assert _resource(conn, t["resource_id"])["active"] is False


def test_a_dry_run_daemon_says_each_block_once(conn, database, settings, caplog) -> None:
    """Issue 16 item 24: a dry run decides the same suspension every sweep (it writes
    nothing); the log says it once, not every sweep."""
    _, t = _client_trunk(conn)
    f.rate_send(conn, t["resource_id"], YESTERDAY)
    dry = settings.replace(dry_run=True)
    caplog.set_level(logging.INFO)
    for minute in range(3):
        assert trunk_suspended.sweep(database, NOW + dt.timedelta(minutes=minute),
                                     dry).state_changes == 1
    said = [r for r in caplog.records if r.levelno >= logging.INFO
            and "would have" in r.getMessage()]
    assert len(said) == 1
    assert _resource(conn, t["resource_id"])["active"] is True
