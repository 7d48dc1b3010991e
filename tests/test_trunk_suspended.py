"""Alert 7, trunk suspension with blocking: against the real PostgreSQL and SMTP sink."""

from __future__ import annotations

import datetime as dt
import logging
import threading

from dnl_ad import db, delivery
from dnl_ad.alerts import trunk_suspended
from dnl_ad.smtp_sink import free_port

from . import factories as f
from .conftest import utc

NOW = utc(2026, 3, 1, 8)
H = dt.timedelta(hours=1)
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


def _assert_untouched(conn, t, det):
    r = _resource(conn, t["resource_id"])
    assert (r["active"], r["disable_by_alert"], r["update_by"]) == (True, False, None)
    d = _detail(conn, det["id"])
    assert (d["status"], d["error"]) == (True, None)


def test_passed_deadline_blocks_logs_and_notifies(conn, database, settings, smtp) -> None:
    c, t = _client_trunk(conn)
    log, det = f.rate_send(conn, t["resource_id"], NOW - H, file="deck.csv")
    result = trunk_suspended.sweep(database, NOW, settings)
    assert (result.state_changes, result.queued) == (1, 1)

    r = _resource(conn, t["resource_id"])
    assert (r["active"], r["disable_by_alert"], r["update_by"], r["update_at"]) == \
        (False, True, "dnl_ad", NOW)
    d = _detail(conn, det["id"])
    assert d["status"] is False and "not downloaded" in d["error"]
    [m] = _modif_log(conn)
    assert (m["time"], m["module"], m["type"], m["name"], m["rollback_extra_info"]) == \
        (NOW, "Trunk", 2, "dnl_ad", '{"type":2}')
    assert "acme-main" in m["detail"] and str(log["id"]) in m["detail"]
    assert m["rollback"].removesuffix(str(t["resource_id"])) == ROLLBACK_PREFIX
    assert m["rollback_msg"]
    assert [(o["dedupe_key"], o["kind"], o["resource_id"]) for o in _outbox(conn)] == [
        (f"trunk_suspended:{t['resource_id']}:{log['id']}", "trunk_suspended",
         t["resource_id"])]

    delivery.deliver(database, settings, now=NOW)
    [msg] = smtp.messages
    assert msg.rcpt_tos == [c["billing_email"]]

    # The operator undoes the block from the UI: the rollback statement re-activates it.
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
    _, t = _client_trunk(conn, daily_balance_send_time_zone="Asia/Hong_Kong")
    with conn.cursor() as cur:
        cur.execute("UPDATE mail_tmplate SET no_download_rate_subject = %s, "
                    "no_download_rate_content = %s",
                    ("{trunk_name} suspended",
                     "{company_name}|{client_name}|{rate_update_file_name}|"
                     "{rate_download_deadline}|{effective_date}"))
    f.rate_send(conn, t["resource_id"], utc(2026, 3, 1, 4), file="https://x.example/d/r.csv")
    trunk_suspended.sweep(database, NOW, settings)
    [row] = f.rows(conn, "SELECT subject, html_body FROM dnl_ad.outbox")
    assert row["subject"] == "acme-main suspended"
    local = "2026-03-01 12:00:00 GMT+08:00"
    assert row["html_body"] == f"Acme Telecom|acme|r.csv|{local}|{local}"


def test_grace_and_future_deadlines(conn, database, settings) -> None:
    _, t = _client_trunk(conn)
    _, det = f.rate_send(conn, t["resource_id"], NOW - dt.timedelta(minutes=10))
    t2 = f.trunk(conn, t["client_id"], alias="later")
    _, det2 = f.rate_send(conn, t2["resource_id"], NOW + H)
    graceful = settings.replace(suspend_grace_minutes=30)
    assert trunk_suspended.sweep(database, NOW, graceful).state_changes == 0
    _assert_untouched(conn, t, det)
    assert trunk_suspended.sweep(database, NOW + dt.timedelta(minutes=21), graceful
                                 ).state_changes == 1
    assert _resource(conn, t["resource_id"])["active"] is False
    _assert_untouched(conn, t2, det2)


def test_superseded_downloaded_and_inactive_are_left_alone(conn, database, settings) -> None:
    c, t = _client_trunk(conn)
    _, old = f.rate_send(conn, t["resource_id"], NOW - 5 * H)  # superseded by a future send
    f.rate_send(conn, t["resource_id"], NOW + 20 * H)
    t2 = f.trunk(conn, c["client_id"], alias="downloaded")
    _, det2 = f.rate_send(conn, t2["resource_id"], NOW - H)
    f.insert(conn, "rate_download_log", client_id=c["client_id"], log_detail_id=det2["id"],
             download_time=NOW - 2 * H)
    off = f.client(conn, status=False)
    t3 = f.trunk(conn, off["client_id"], alias="client off")
    _, det3 = f.rate_send(conn, t3["resource_id"], NOW - H)
    result = trunk_suspended.sweep(database, NOW, settings)
    assert (result.state_changes, result.queued) == (0, 0)
    _assert_untouched(conn, t, old)
    _assert_untouched(conn, t2, det2)
    _assert_untouched(conn, t3, det3)
    assert _modif_log(conn) == [] and _outbox(conn) == []


def test_failure_mid_transaction_leaves_nothing_then_next_sweep_does_it_all(
        conn, database, settings) -> None:
    _, bad = _client_trunk(conn, alias="faulty")
    log_bad, det_bad = f.rate_send(conn, bad["resource_id"], NOW - H)
    good = f.trunk(conn, bad["client_id"], alias="healthy")
    f.rate_send(conn, good["resource_id"], NOW - H)
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
    r = _resource(conn, bad["resource_id"])
    assert (r["active"], r["disable_by_alert"]) == (False, True)
    assert _detail(conn, det_bad["id"])["status"] is False
    assert len(_modif_log(conn)) == 2
    assert [o["dedupe_key"] for o in _outbox(conn)][-1] == \
        f"trunk_suspended:{bad['resource_id']}:{log_bad['id']}"


def test_hostile_alias_is_blocked_and_logged_as_text(conn, database, settings, caplog) -> None:
    _, t = _client_trunk(conn, alias=NASTY)
    _, det = f.rate_send(conn, t["resource_id"], NOW - H)
    with caplog.at_level(logging.INFO, logger="dnl_ad"):
        assert trunk_suspended.sweep(database, NOW, settings).state_changes == 1
    assert repr(NASTY) in caplog.text
    assert _resource(conn, t["resource_id"])["active"] is False
    assert _detail(conn, det["id"])["status"] is False
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
    f.rate_send(conn, t["resource_id"], NOW - H)
    down = settings.replace(smtp_port=free_port())
    assert trunk_suspended.sweep(database, NOW, down).state_changes == 1
    assert _resource(conn, t["resource_id"])["active"] is False
    assert [o["status"] for o in _outbox(conn)] == ["pending"]


def test_dry_run_writes_nothing_and_reports(conn, database, settings, caplog) -> None:
    _, t = _client_trunk(conn)
    _, det = f.rate_send(conn, t["resource_id"], NOW - H)
    with caplog.at_level(logging.INFO, logger="dnl_ad"):
        result = trunk_suspended.sweep(database, NOW, settings.replace(dry_run=True))
    assert (result.state_changes, result.queued, len(result.mails)) == (1, 1, 1)
    assert "would have" in caplog.text and "acme-main" in caplog.text
    _assert_untouched(conn, t, det)
    assert _modif_log(conn) == [] and _outbox(conn) == []
    # Nothing was written, so the real sweep still does it.
    assert trunk_suspended.sweep(database, NOW, settings).state_changes == 1


def test_concurrent_daemon_does_not_suspend_twice(conn, dsn, database, settings) -> None:
    """Another daemon closes the detail while our sweep waits on its row lock."""
    _, t = _client_trunk(conn)
    _, det = f.rate_send(conn, t["resource_id"], NOW - H)
    other = db.connect(dsn)
    try:
        with other.cursor() as cur:
            cur.execute("UPDATE rate_send_log_detail SET status = false, error = 'other' "
                        "WHERE id = %s AND status", (det["id"],))
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
    _, t = _client_trunk(conn, billing_email="")
    f.rate_send(conn, t["resource_id"], NOW - H)
    result = trunk_suspended.sweep(database, NOW, settings)
    assert (result.state_changes, result.queued, result.skipped) == (1, 0, 1)
    assert _resource(conn, t["resource_id"])["active"] is False
    assert [o["status"] for o in _outbox(conn)] == ["failed"]
    assert [(r["type"], r["status"]) for r in f.rows(conn, "SELECT * FROM email_log")] == \
        [(35, 1)]


def test_malformed_rate_link_still_blocks(conn, database, settings) -> None:
    # A rate deck link urlparse rejects ("http://[...") must not keep the trunk unblocked.
    _, t = _client_trunk(conn)
    _, det = f.rate_send(conn, t["resource_id"], NOW - H, file="http://[portal/deck.csv")
    result = trunk_suspended.sweep(database, NOW, settings)
    assert (result.state_changes, result.queued, result.skipped) == (1, 1, 0)
    assert _resource(conn, t["resource_id"])["active"] is False
    assert _detail(conn, det["id"])["status"] is False
