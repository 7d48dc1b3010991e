"""Alert 6, trunk pending suspension: against the real PostgreSQL and SMTP sink.

The deadline is a date (rate_send_log.download_deadline): the trunk has until 23:59:59 GMT
of that day. NOW is 04:00 UTC, so a deadline of TODAY leaves 20 h (the one-day stage),
TOMORROW 44 h and YESTERDAY passed 4 h ago.
"""

from __future__ import annotations

import datetime as dt
import logging

from dnl_ad import delivery
from dnl_ad.alerts import trunk_pending, trunk_suspended

from . import factories as f
from .conftest import utc

NOW = utc(2026, 3, 1, 4)
H = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
TODAY = dt.date(2026, 3, 1)
TOMORROW = TODAY + DAY
YESTERDAY = TODAY - DAY
END_OF_TODAY = utc(2026, 3, 1, 23, 59, 59)  # TODAY's deadline instant
TAGS = ("{company_name}|{client_name}|{trunk_name}|{rate_update_file_name}|"
        "{rate_download_deadline}|{download_deadline}|{effective_date}|{rate_download_link}|"
        "{download_url}|{allowed_ip}|{prefix}|{switch_ip}")


def _client_trunk(conn, **client):
    f.system(conn)
    c = f.client(conn, name="acme", company="Acme Telecom", **client)
    t = f.trunk(conn, c["client_id"], alias="acme-main")
    return c, t


def _outbox(conn):
    return f.rows(conn, "SELECT dedupe_key, kind, client_id, resource_id, subject, html_body, "
                        "to_addrs FROM dnl_ad.outbox ORDER BY id")


def _keys(conn):
    return [r["dedupe_key"] for r in _outbox(conn)]


def _set_templates(conn, **values):
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM mail_tmplate")
        tid = cur.fetchone()["id"]
    f.update(conn, "mail_tmplate", {"id": tid}, **values)


def _offset_detail_ids(conn):
    """Detail ids far from rate_send_log ids, so a query that mixed them up would miss."""
    f.rows(conn, "SELECT setval(pg_get_serial_sequence('rate_send_log_detail', 'id'), 1000)")


def _key(t, log, stage=24):
    return f"trunk_pending:{t['resource_id']}:{log['id']}:{stage}"


def test_deadline_in_44_hours_sends_nothing(conn, database, settings) -> None:
    # Only the one-day stage is in use (no hour_* template filled): tomorrow is too early.
    _, t = _client_trunk(conn)
    f.rate_send(conn, t["resource_id"], TOMORROW)
    result = trunk_pending.sweep(database, NOW, settings)
    assert result.queued == 0
    assert _outbox(conn) == []
    # At the start of the last day (24 h before 23:59:59) the warning goes out.
    assert trunk_pending.sweep(database, utc(2026, 3, 2, 0), settings).queued == 1


def test_deadline_in_20_hours_queues_one_notice_once(conn, database, settings) -> None:
    c, t = _client_trunk(conn)
    log, _ = f.rate_send(conn, t["resource_id"], TODAY)
    first = trunk_pending.sweep(database, NOW, settings)
    assert first.queued == 1
    rows = _outbox(conn)
    assert [r["dedupe_key"] for r in rows] == [_key(t, log)]
    assert rows[0]["kind"] == "trunk_pending"
    assert rows[0]["client_id"] == c["client_id"]
    assert rows[0]["resource_id"] == t["resource_id"]
    assert rows[0]["to_addrs"] == ["billing@client.example"]
    # A second sweep (an hour later, same stage) adds nothing.
    second = trunk_pending.sweep(database, NOW + H, settings)
    assert second.queued == 0
    assert second.duplicates == 1
    assert len(_outbox(conn)) == 1


def test_tags_are_rendered_in_client_zone(conn, database, settings) -> None:
    _, t = _client_trunk(conn, auto_send_zone="+08:00")
    f.update(conn, "system_parameter", {"sys_id": 1}, switch_ip="203.0.113.7")
    f.insert(conn, "resource_ip", resource_id=t["resource_id"], ip="10.0.0.2")
    f.insert(conn, "resource_ip", resource_id=t["resource_id"], ip="10.0.0.1")
    f.insert(conn, "resource_prefix", resource_id=t["resource_id"], tech_prefix="77")
    _set_templates(conn, pending_trunk_subject="Rates for {trunk_name}",
                   pending_trunk_content=TAGS)
    link = "https://portal.example/rates/deck_march.csv"
    log, _ = f.rate_send(conn, t["resource_id"], TODAY, file=link)
    f.update(conn, "rate_send_log", {"id": log["id"]}, effective_date="2026-03-05 00:00:00")
    trunk_pending.sweep(database, NOW, settings)
    [row] = _outbox(conn)
    assert row["subject"] == "Rates for acme-main"
    local = "2026-03-02 07:59:59 GMT+08:00"  # 23:59:59 GMT of the deadline date
    assert row["html_body"] == "|".join([
        "Acme Telecom", "acme", "acme-main", "deck_march.csv", local, local,
        "2026-03-05 00:00:00", link, link, "10.0.0.1,10.0.0.2", "77", "203.0.113.7"])


def test_company_falls_back_to_name_and_optional_tables_may_be_absent(
        conn, database, settings) -> None:
    f.system(conn, sys_timezone="-0500")
    c = f.client(conn, name="solo", company=None, auto_send_zone=None)  # the system zone
    t = f.trunk(conn, c["client_id"], alias="solo-1")
    with conn.cursor() as cur:
        cur.execute("DROP TABLE resource_ip")
        cur.execute("DROP TABLE resource_prefix")
    _set_templates(conn, pending_trunk_subject="s", pending_trunk_content=TAGS)
    log, _ = f.rate_send(conn, t["resource_id"], TODAY, file="deck.csv")
    f.update(conn, "rate_send_log", {"id": log["id"]}, effective_date=None)
    assert trunk_pending.sweep(database, NOW, settings).queued == 1
    [row] = _outbox(conn)
    local = "2026-03-01 18:59:59 GMT-05:00"
    # A file that is not an absolute http(s) link gives no link; no effective date: empty.
    assert row["html_body"] == "|".join([
        "solo", "solo", "solo-1", "deck.csv", local, local, "", "", "", "", "", ""])


def test_downloaded_and_out_of_scope_sends_are_ignored(conn, database, settings) -> None:
    c, t = _client_trunk(conn)
    _offset_detail_ids(conn)
    # The UI's download on the detail: status 3 and download_date.
    _, det = f.rate_send(conn, t["resource_id"], TODAY)
    f.update(conn, "rate_send_log_detail", {"id": det["id"]}, status=3, download_date=TODAY)
    # Only a rate_download_log row for (trunk, rate send id).
    t2 = f.trunk(conn, c["client_id"], alias="acme-2")
    log2, _ = f.rate_send(conn, t2["resource_id"], TODAY)
    f.insert(conn, "rate_download_log", resource_id=t2["resource_id"],
             log_detail_id=log2["id"], download_time=NOW - H, download_ip="192.0.2.1")
    # "Send Reminder Email" off.
    t3 = f.trunk(conn, c["client_id"], alias="acme-3")
    f.rate_send(conn, t3["resource_id"], TODAY, is_email_alert=False)
    # The send marked downloaded (rate_send_log.status 4).
    t4 = f.trunk(conn, c["client_id"], alias="acme-4")
    f.rate_send(conn, t4["resource_id"], TODAY, status=4)
    # An attachment send (download_method 1): nothing to download.
    t5 = f.trunk(conn, c["client_id"], alias="acme-5")
    log5, _ = f.rate_send(conn, t5["resource_id"], TODAY)
    f.update(conn, "rate_send_log", {"id": log5["id"]}, download_method=1)
    # Detail status 2 (unable to deliver): the trunk never got the link.
    t6 = f.trunk(conn, c["client_id"], alias="acme-6")
    _, det6 = f.rate_send(conn, t6["resource_id"], TODAY)
    f.update(conn, "rate_send_log_detail", {"id": det6["id"]}, status=2)
    # A download_date alone (status still 1) also means downloaded.
    t8 = f.trunk(conn, c["client_id"], alias="acme-8")
    _, det8 = f.rate_send(conn, t8["resource_id"], TODAY)
    f.update(conn, "rate_send_log_detail", {"id": det8["id"]}, download_date=TODAY)
    # A control trunk with the same deadline is warned: the sweep does run.
    t7 = f.trunk(conn, c["client_id"], alias="acme-7")
    log7, _ = f.rate_send(conn, t7["resource_id"], TODAY)
    assert trunk_pending.sweep(database, NOW, settings).queued == 1
    assert _keys(conn) == [_key(t7, log7)]


def test_download_log_counts_only_for_its_trunk_and_rate_send(conn, database, settings) -> None:
    # rate_download_log.log_detail_id holds the rate_send_log id (not the detail id).
    c, t = _client_trunk(conn)
    _offset_detail_ids(conn)
    older, _ = f.rate_send(conn, t["resource_id"], YESTERDAY)
    latest, _ = f.rate_send(conn, t["resource_id"], TODAY)
    # A download of the trunk's older send says nothing about the latest one ...
    f.insert(conn, "rate_download_log", resource_id=t["resource_id"],
             log_detail_id=older["id"], download_time=NOW - 30 * H)
    # ... and a trunk's row naming another send's id is not a download of its own send
    # (t2's row names t's send: it neither counts for t2 nor, being t2's, for t).
    t2 = f.trunk(conn, c["client_id"], alias="acme-2")
    log2, _ = f.rate_send(conn, t2["resource_id"], TODAY)
    f.insert(conn, "rate_download_log", resource_id=t2["resource_id"],
             log_detail_id=latest["id"], download_time=NOW - H)
    assert trunk_pending.sweep(database, NOW, settings).queued == 2
    assert sorted(_keys(conn)) == sorted([_key(t, latest), _key(t2, log2)])
    # The trunk downloads its latest send: its later stages are not sent.
    _set_templates(conn, hour_subject_3="3h", hour_content_3="c3")
    f.insert(conn, "rate_download_log", resource_id=t["resource_id"],
             log_detail_id=latest["id"], download_time=NOW)
    assert trunk_pending.sweep(database, END_OF_TODAY - 2 * H, settings).queued == 1
    assert _keys(conn)[-1] == _key(t2, log2, 3)


def test_only_the_latest_link_send_counts(conn, database, settings) -> None:
    c, t = _client_trunk(conn)
    _set_templates(conn, hour_subject_48="48h {trunk_name}", hour_content_48="c48")
    # An older undownloaded send (deadline today, 24 h stage) is superseded by a newer one
    # (deadline tomorrow, 48 h stage).
    f.rate_send(conn, t["resource_id"], TODAY)
    newer, _ = f.rate_send(conn, t["resource_id"], TOMORROW)
    # A second trunk: its newer send was downloaded, so the older one no longer counts.
    t2 = f.trunk(conn, c["client_id"], alias="acme-2")
    f.rate_send(conn, t2["resource_id"], TODAY)
    f.rate_send(conn, t2["resource_id"], TOMORROW, status=4, download_date=TODAY)
    # Two sends with the same deadline date: the newest counts.
    t3 = f.trunk(conn, c["client_id"], alias="acme-3")
    f.rate_send(conn, t3["resource_id"], TODAY)
    newest3, _ = f.rate_send(conn, t3["resource_id"], TODAY)
    # An attachment send never supersedes the trunk's link send.
    t4 = f.trunk(conn, c["client_id"], alias="acme-4")
    link4, _ = f.rate_send(conn, t4["resource_id"], TODAY)
    attach, _ = f.rate_send(conn, t4["resource_id"], TOMORROW)
    f.update(conn, "rate_send_log", {"id": attach["id"]}, download_method=1)
    assert trunk_pending.sweep(database, NOW, settings).queued == 3
    assert sorted(_keys(conn)) == sorted([
        _key(t, newer, 48), _key(t3, newest3), _key(t4, link4)])


def test_inactive_trunk_or_client_gets_nothing(conn, database, settings) -> None:
    f.system(conn)
    c = f.client(conn)
    t = f.trunk(conn, c["client_id"], active=False)
    f.rate_send(conn, t["resource_id"], TODAY)
    off = f.client(conn, status=False)
    t2 = f.trunk(conn, off["client_id"])
    f.rate_send(conn, t2["resource_id"], TODAY)
    assert trunk_pending.sweep(database, NOW, settings).queued == 0
    assert _outbox(conn) == []


def test_passed_deadline_is_not_pending(conn, database, settings) -> None:
    _, t = _client_trunk(conn)
    f.rate_send(conn, t["resource_id"], YESTERDAY)
    t2 = f.trunk(conn, t["client_id"])
    log2, _ = f.rate_send(conn, t2["resource_id"], TODAY)
    # At 23:59:59 GMT of today the deadline is reached: no warning any more.
    assert trunk_pending.sweep(database, END_OF_TODAY, settings).queued == 0
    assert _outbox(conn) == []
    # One second earlier it is still pending (yesterday's is not).
    assert trunk_pending.sweep(database, END_OF_TODAY - dt.timedelta(seconds=1),
                               settings).queued == 1
    assert _keys(conn) == [_key(t2, log2)]


def test_staged_warnings_each_once_latest_opened_only(conn, database, settings) -> None:
    _, t = _client_trunk(conn)
    _set_templates(conn, hour_subject_48="48h {trunk_name}", hour_content_48="c48",
                   hour_subject_3="3h {trunk_name}", hour_content_3="c3",
                   hour_subject_1="1h {trunk_name}", hour_content_1="c1",
                   pending_trunk_subject="day {trunk_name}",
                   pending_trunk_content="cday")
    log, _ = f.rate_send(conn, t["resource_id"], TOMORROW)  # until 2026-03-02 23:59:59
    t2 = f.trunk(conn, t["client_id"], alias="late-seen")
    log2, _ = f.rate_send(conn, t2["resource_id"], TODAY)    # until 2026-03-01 23:59:59
    # First sight at 22:00: trunk 1 (26 h left) is in the 48 h window; trunk 2, 2 h before,
    # gets only the 3 h stage.
    trunk_pending.sweep(database, utc(2026, 3, 1, 22), settings)
    trunk_pending.sweep(database, utc(2026, 3, 1, 23, 30), settings)  # trunk 2: 30 min: 1 h
    trunk_pending.sweep(database, utc(2026, 3, 2, 1), settings)   # 23 h left: one-day stage
    trunk_pending.sweep(database, utc(2026, 3, 2, 2), settings)   # still the one-day stage
    trunk_pending.sweep(database, utc(2026, 3, 2, 22), settings)  # 2 h left: 3 h stage
    trunk_pending.sweep(database, utc(2026, 3, 2, 23, 30), settings)  # 30 min left: 1 h
    got = [(r["dedupe_key"], r["subject"]) for r in _outbox(conn)]
    assert got == [
        (_key(t2, log2, 3), "3h late-seen"),
        (_key(t, log, 48), "48h acme-main"),
        (_key(t2, log2, 1), "1h late-seen"),
        (_key(t, log, 24), "day acme-main"),
        (_key(t, log, 3), "3h acme-main"),
        (_key(t, log, 1), "1h acme-main"),
    ]


def test_one_day_template_choice(conn, database, settings) -> None:
    c, t = _client_trunk(conn)
    # download_rate_notice is the UI's own confirmation: never used for the warning.
    _set_templates(conn, pending_trunk_subject="pending {trunk_name}",
                   pending_trunk_content="p",
                   download_rate_notice_subject="downloaded {trunk_name}",
                   download_rate_notice_content="d")
    log, _ = f.rate_send(conn, t["resource_id"], TODAY)
    trunk_pending.sweep(database, NOW, settings)
    # hour_24, once filled, serves the one-day stage (same stage key).
    _set_templates(conn, hour_subject_24="h24 {trunk_name}", hour_content_24="h")
    t2 = f.trunk(conn, c["client_id"], alias="acme-2")
    log2, _ = f.rate_send(conn, t2["resource_id"], TODAY)
    trunk_pending.sweep(database, NOW, settings)
    assert [(r["dedupe_key"], r["subject"]) for r in _outbox(conn)] == [
        (_key(t, log), "pending acme-main"), (_key(t2, log2), "h24 acme-2")]
    assert trunk_pending.one_day_template({"download_rate_notice_subject": "a",
                                           "download_rate_notice_content": "b",
                                           "pending_trunk_subject": "c",
                                           "pending_trunk_content": "d"}) == "pending_trunk"
    assert trunk_pending.one_day_template({"hour_subject_24": "a", "hour_content_24": "b"}) == \
        "hour_24"
    assert trunk_pending.one_day_template({"hour_subject_24": "a", "hour_content_24": " "}) == \
        "pending_trunk"
    assert trunk_pending.one_day_template({}) == "pending_trunk"


def test_notice_is_delivered_and_logged_as_type_36(conn, database, settings, smtp) -> None:
    c, _ = _client_trunk(conn)
    t = f.trunk(conn, c["client_id"], alias="acme-2")
    _set_templates(conn, pending_trunk_subject="Download {rate_update_file_name}",
                   pending_trunk_content="Before {download_deadline}")
    f.rate_send(conn, t["resource_id"], TODAY, file="deck.csv")
    trunk_pending.sweep(database, NOW, settings)
    delivery.deliver(database, settings, now=NOW)
    [msg] = smtp.messages
    assert msg.rcpt_tos == ["billing@client.example"]
    assert msg.message["Subject"] == "Download deck.csv"
    assert [(r["type"], r["status"], r["client_id"]) for r in
            f.rows(conn, "SELECT * FROM email_log")] == [(36, 0, c["client_id"])]


def test_recipient_falls_back_to_client_email(conn, database, settings) -> None:
    _, t = _client_trunk(conn, billing_email=" ", email="main@client.example")
    f.rate_send(conn, t["resource_id"], TODAY)
    assert trunk_pending.sweep(database, NOW, settings).queued == 1
    assert [r["to_addrs"] for r in _outbox(conn)] == [["main@client.example"]]


def test_reminder_off_is_suspended_but_never_warned(conn, database, settings) -> None:
    # is_email_alert false ("Send Reminder Email" off) with is_disable true.
    _, t = _client_trunk(conn)
    _set_templates(conn, hour_subject_48="48h", hour_content_48="c48",
                   hour_subject_3="3h", hour_content_3="c3",
                   hour_subject_1="1h", hour_content_1="c1")
    log, _ = f.rate_send(conn, t["resource_id"], TODAY, is_email_alert=False)
    for at in (NOW - DAY, NOW, END_OF_TODAY - 2 * H, END_OF_TODAY - 0.5 * H):
        assert trunk_pending.sweep(database, at, settings).queued == 0
    assert _outbox(conn) == []
    after = trunk_suspended.sweep(database, END_OF_TODAY + H, settings)
    assert after.state_changes == 1
    assert _keys(conn) == [f"trunk_suspended:{t['resource_id']}:{log['id']}"]
    assert f.rows(conn, "SELECT active FROM resource WHERE resource_id = %s",
                  (t["resource_id"],)) == [{"active": False}]


def test_dry_run_writes_nothing(conn, database, settings, caplog, tmp_path) -> None:
    _, t = _client_trunk(conn)
    f.rate_send(conn, t["resource_id"], TODAY)
    dry = settings.replace(dry_run=True)
    with caplog.at_level(logging.INFO):
        result = trunk_pending.sweep(database, NOW, dry)
    assert result.queued == 1
    assert len(result.mails) == 1
    assert result.mails[0].to == ["billing@client.example"]
    assert _outbox(conn) == []
    assert "dry run" in caplog.text and "acme-main" in caplog.text
    # The real run afterwards still queues it (the dry run left no trace).
    assert trunk_pending.sweep(database, NOW, settings).queued == 1


def test_malformed_rate_link_does_not_stop_other_trunks(conn, database, settings) -> None:
    # urlparse raises ValueError on "http://[..." (a broken IPv6 host); one such rate send
    # must not stop the sweep: both trunks are warned, the bad file name shown as written
    # and no link offered (it is not a usable absolute link).
    c, t = _client_trunk(conn)
    t2 = f.trunk(conn, c["client_id"], alias="acme-backup")
    _set_templates(conn, pending_trunk_subject="Rates {rate_update_file_name}",
                   pending_trunk_content="[{rate_download_link}]")
    bad = "http://[portal.example/rates/deck.csv"
    f.rate_send(conn, t["resource_id"], TODAY, file=bad)
    good = "https://portal.example/rates/deck2.csv"
    f.rate_send(conn, t2["resource_id"], TODAY, file=good)
    result = trunk_pending.sweep(database, NOW, settings)
    assert result.queued == 2
    assert [(r["subject"], r["html_body"]) for r in _outbox(conn)] == [
        (f"Rates {bad}", "[]"), ("Rates deck2.csv", f"[{good}]")]
