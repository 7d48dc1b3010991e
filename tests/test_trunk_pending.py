"""Alert 6, trunk pending suspension: against the real PostgreSQL and SMTP sink."""

from __future__ import annotations

import datetime as dt
import logging

from dnl_ad import delivery
from dnl_ad.alerts import trunk_pending

from . import factories as f
from .conftest import utc

NOW = utc(2026, 3, 1, 8)
H = dt.timedelta(hours=1)
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


def _set_templates(conn, **values):
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM mail_tmplate")
        tid = cur.fetchone()["id"]
    f.update(conn, "mail_tmplate", {"id": tid}, **values)


def test_deadline_in_30_hours_sends_nothing(conn, database, settings) -> None:
    _, t = _client_trunk(conn)
    f.rate_send(conn, t["resource_id"], NOW + 30 * H)
    result = trunk_pending.sweep(database, NOW, settings)
    assert result.queued == 0
    assert _outbox(conn) == []


def test_deadline_in_20_hours_queues_one_notice_once(conn, database, settings) -> None:
    c, t = _client_trunk(conn)
    log, _ = f.rate_send(conn, t["resource_id"], NOW + 20 * H)
    first = trunk_pending.sweep(database, NOW, settings)
    assert first.queued == 1
    rows = _outbox(conn)
    assert [r["dedupe_key"] for r in rows] == [f"trunk_pending:{t['resource_id']}:{log['id']}:24"]
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
    f.insert(conn, "resource_ip", resource_id=t["resource_id"], ip="10.0.0.2")
    f.insert(conn, "resource_ip", resource_id=t["resource_id"], ip="10.0.0.1")
    f.insert(conn, "resource_prefix", resource_id=t["resource_id"], tech_prefix="77")
    _set_templates(conn, download_rate_notice_subject="Rates for {trunk_name}",
                   download_rate_notice_content=TAGS)
    link = "https://portal.example/rates/deck_march.csv"
    f.rate_send(conn, t["resource_id"], utc(2026, 3, 2, 4), file=link)
    trunk_pending.sweep(database, NOW, settings)
    [row] = _outbox(conn)
    assert row["subject"] == "Rates for acme-main"
    local = "2026-03-02 12:00:00 GMT+08:00"
    assert row["html_body"] == "|".join([
        "Acme Telecom", "acme", "acme-main", "deck_march.csv", local, local, local, link, link,
        "10.0.0.1,10.0.0.2", "77", ""])


def test_company_falls_back_to_name_and_optional_tables_may_be_absent(
        conn, database, settings) -> None:
    f.system(conn, sys_timezone="-0500")
    c = f.client(conn, name="solo", company=None)
    t = f.trunk(conn, c["client_id"], alias="solo-1")
    with conn.cursor() as cur:
        cur.execute("DROP TABLE resource_ip")
        cur.execute("DROP TABLE resource_prefix")
    _set_templates(conn, download_rate_notice_subject="s", download_rate_notice_content=TAGS)
    f.rate_send(conn, t["resource_id"], utc(2026, 3, 2, 4), file="deck.csv")
    assert trunk_pending.sweep(database, NOW, settings).queued == 1
    [row] = _outbox(conn)
    local = "2026-03-01 23:00:00 GMT-05:00"
    assert row["html_body"] == "|".join([
        "solo", "solo", "solo-1", "deck.csv", local, local, local, "deck.csv", "deck.csv",
        "", "", ""])


def test_downloaded_sends_are_ignored(conn, database, settings) -> None:
    c, t = _client_trunk(conn)
    f.rate_send(conn, t["resource_id"], NOW + 20 * H, download_date=NOW - H)
    t2 = f.trunk(conn, c["client_id"], alias="acme-2")
    _, det = f.rate_send(conn, t2["resource_id"], NOW + 20 * H)
    f.insert(conn, "rate_download_log", client_id=c["client_id"], log_detail_id=det["id"],
             download_time=NOW - H, download_ip="192.0.2.1")
    t3 = f.trunk(conn, c["client_id"], alias="acme-3")
    f.rate_send(conn, t3["resource_id"], NOW + 20 * H, is_email_alert=False)
    t4 = f.trunk(conn, c["client_id"], alias="acme-4")
    f.rate_send(conn, t4["resource_id"], NOW + 20 * H, status=False)
    assert trunk_pending.sweep(database, NOW, settings).queued == 0
    assert _outbox(conn) == []


def test_only_the_latest_rate_send_counts(conn, database, settings) -> None:
    c, t = _client_trunk(conn)
    # An older undownloaded send (deadline in 10 h) is superseded by a newer one (20 h).
    f.rate_send(conn, t["resource_id"], NOW + 10 * H)
    newer, _ = f.rate_send(conn, t["resource_id"], NOW + 20 * H)
    # A second trunk: its newer send was downloaded, so the older one no longer counts.
    t2 = f.trunk(conn, c["client_id"], alias="acme-2")
    f.rate_send(conn, t2["resource_id"], NOW + 5 * H)
    f.rate_send(conn, t2["resource_id"], NOW + 20 * H, download_date=NOW - H)
    assert trunk_pending.sweep(database, NOW, settings).queued == 1
    assert [r["dedupe_key"] for r in _outbox(conn)] == [
        f"trunk_pending:{t['resource_id']}:{newer['id']}:24"]


def test_inactive_trunk_or_client_gets_nothing(conn, database, settings) -> None:
    f.system(conn)
    c = f.client(conn)
    t = f.trunk(conn, c["client_id"], active=False)
    f.rate_send(conn, t["resource_id"], NOW + 20 * H)
    off = f.client(conn, status=False)
    t2 = f.trunk(conn, off["client_id"])
    f.rate_send(conn, t2["resource_id"], NOW + 20 * H)
    assert trunk_pending.sweep(database, NOW, settings).queued == 0
    assert _outbox(conn) == []


def test_passed_deadline_is_not_pending(conn, database, settings) -> None:
    _, t = _client_trunk(conn)
    f.rate_send(conn, t["resource_id"], NOW)
    f.rate_send(conn, f.trunk(conn, t["client_id"])["resource_id"], NOW - H)
    assert trunk_pending.sweep(database, NOW, settings).queued == 0


def test_staged_warnings_each_once_latest_opened_only(conn, database, settings) -> None:
    _, t = _client_trunk(conn)
    _set_templates(conn, hour_subject_48="48h {trunk_name}", hour_content_48="c48",
                   hour_subject_3="3h {trunk_name}", hour_content_3="c3",
                   hour_subject_1="1h {trunk_name}", hour_content_1="c1",
                   download_rate_notice_subject="day {trunk_name}",
                   download_rate_notice_content="cday")
    log, _ = f.rate_send(conn, t["resource_id"], NOW + 40 * H)
    t2 = f.trunk(conn, t["client_id"], alias="late-seen")
    log2, _ = f.rate_send(conn, t2["resource_id"], NOW + 2 * H)
    # First sight: trunk 1 is in the 48 h window; trunk 2, 2 h before, gets only the 3 h stage.
    trunk_pending.sweep(database, NOW, settings)
    trunk_pending.sweep(database, NOW + 1.5 * H, settings)  # trunk 2: 30 min left, 1 h stage
    trunk_pending.sweep(database, NOW + 17 * H, settings)   # 23 h left: one-day stage
    trunk_pending.sweep(database, NOW + 18 * H, settings)   # still the one-day stage
    trunk_pending.sweep(database, NOW + 38 * H, settings)   # 2 h left: 3 h stage
    trunk_pending.sweep(database, NOW + 39.5 * H, settings)  # 30 min left: 1 h stage
    got = [(r["dedupe_key"], r["subject"]) for r in _outbox(conn)]
    r1, r2 = t["resource_id"], t2["resource_id"]
    assert got == [
        (f"trunk_pending:{r2}:{log2['id']}:3", "3h late-seen"),
        (f"trunk_pending:{r1}:{log['id']}:48", "48h acme-main"),
        (f"trunk_pending:{r2}:{log2['id']}:1", "1h late-seen"),
        (f"trunk_pending:{r1}:{log['id']}:24", "day acme-main"),
        (f"trunk_pending:{r1}:{log['id']}:3", "3h acme-main"),
        (f"trunk_pending:{r1}:{log['id']}:1", "1h acme-main"),
    ]


def test_one_day_template_choice(conn, database, settings) -> None:
    _, t = _client_trunk(conn)
    _set_templates(conn, pending_trunk_subject="pending {trunk_name}",
                   pending_trunk_content="p")
    f.rate_send(conn, t["resource_id"], NOW + 20 * H)
    trunk_pending.sweep(database, NOW, settings)
    assert [r["subject"] for r in _outbox(conn)] == ["pending acme-main"]
    assert trunk_pending.one_day_template({"download_rate_notice_subject": "a",
                                           "download_rate_notice_content": "b",
                                           "pending_trunk_subject": "c",
                                           "pending_trunk_content": "d"}) == \
        "download_rate_notice"
    assert trunk_pending.one_day_template({"hour_subject_24": "a", "hour_content_24": "b"}) == \
        "hour_24"
    assert trunk_pending.one_day_template({}) == "download_rate_notice"


def test_notice_is_delivered(conn, database, settings, smtp) -> None:
    _, t = _client_trunk(conn)
    _set_templates(conn, download_rate_notice_subject="Download {rate_update_file_name}",
                   download_rate_notice_content="Before {download_deadline}")
    f.rate_send(conn, t["resource_id"], NOW + 20 * H, file="deck.csv")
    trunk_pending.sweep(database, NOW, settings)
    delivery.deliver(database, settings, now=NOW)
    [msg] = smtp.messages
    assert msg.rcpt_tos == ["billing@client.example"]
    assert msg.message["Subject"] == "Download deck.csv"


def test_dry_run_writes_nothing(conn, database, settings, caplog, tmp_path) -> None:
    _, t = _client_trunk(conn)
    f.rate_send(conn, t["resource_id"], NOW + 20 * H)
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
    # must not stop the sweep: both trunks are warned, the bad link shown as written.
    c, t = _client_trunk(conn)
    t2 = f.trunk(conn, c["client_id"], alias="acme-backup")
    _set_templates(conn, download_rate_notice_subject="Rates {rate_update_file_name}",
                   download_rate_notice_content="{rate_download_link}")
    bad = "http://[portal.example/rates/deck.csv"
    f.rate_send(conn, t["resource_id"], NOW + 20 * H, file=bad)
    f.rate_send(conn, t2["resource_id"], NOW + 21 * H, file="deck2.csv")
    result = trunk_pending.sweep(database, NOW, settings)
    assert result.queued == 2
    assert [r["subject"] for r in _outbox(conn)] == [f"Rates {bad}", "Rates deck2.csv"]
