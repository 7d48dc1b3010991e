"""Alert 1, low balance: thresholds, episodes, local midnights, bad rows, delivery."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

import pytest

from dnl_ad import clock
from dnl_ad.alerts import balance_common, low_balance

from . import factories as f
from .conftest import utc

NOW = utc(2026, 11, 21, 10, 0)


def sweep(database, settings, now: dt.datetime = NOW, **kw: Any):
    """A sweep with its own zone resolver and complaint memo, so logs are per test."""
    return low_balance.sweep(database, now, settings, resolver=clock.ZoneResolver(),
                             complaints=balance_common.Complaints(), **kw)


def queued(conn, client_id: int | None = None) -> list[dict[str, Any]]:
    if client_id is None:
        return f.rows(conn, "SELECT * FROM dnl_ad.outbox WHERE kind = 'low_balance' ORDER BY id")
    return f.rows(conn, "SELECT * FROM dnl_ad.outbox WHERE kind = 'low_balance' "
                  "AND client_id = %s ORDER BY id", (client_id,))


def provider(conn, client_id: int) -> dict[str, Any]:
    return f.rows(conn, "SELECT c.last_lowbalance_time, g.last_alert_time FROM client c "
                  "LEFT JOIN client_low_balance_config g USING (client_id) "
                  "WHERE c.client_id = %s", (client_id,))[0]


PREPAY = {"mode": 1, "is_daily_balance_notification": True}
POSTPAY = {"mode": 2, "is_daily_balance_notification": True, "allowed_credit": -500,
           "notify_client_balance": 100}
PCT = {"mode": 2, "is_daily_balance_notification": True, "allowed_credit": -1000}
AMOUNT_50 = {"value_type": 0, "actual_notify_balance": 50}
AMOUNT_100 = {"value_type": 0, "actual_notify_balance": 100}
PCT_10 = {"value_type": 1, "percentage_notify_balance": 10}  # threshold: balance <= -900

# (case id, client columns, client_low_balance_config or None, balance,
#  expected: "queued" | "none" | "skipped", recipients when queued, log text when skipped)
CASES = [
    ("prepay amount, below", PREPAY, AMOUNT_50, 10.0, "queued", None, None),
    ("prepay amount, above", PREPAY, AMOUNT_50, 50.01, "none", None, None),
    ("prepay amount, exactly at threshold", PREPAY, AMOUNT_50, 50.0, "queued", None, None),
    ("prepay amount, negative balance", PREPAY, AMOUNT_50, -20.0, "queued", None, None),
    ("postpay amount, below", POSTPAY, AMOUNT_100, 99.99, "queued", None, None),
    ("postpay amount, above", POSTPAY, AMOUNT_100, 100.01, "none", None, None),
    ("postpay amount, exactly at", POSTPAY, AMOUNT_100, 100.0, "queued", None, None),
    ("config row wins over the legacy column", POSTPAY,
     {"value_type": 0, "actual_notify_balance": 20}, 50.0, "none", None, None),
    ("NULL value_type is amount mode", PREPAY,
     {"value_type": None, "actual_notify_balance": 50}, 10.0, "queued", None, None),
    ("Mass Edit is_notify alone enables it", {"mode": 1},
     {"is_notify": True, "value_type": 0, "actual_notify_balance": 50}, 10.0, "queued",
     None, None),
    ("low_balance_notice is not a setting", {"mode": 1, "low_balance_notice": True},
     AMOUNT_50, 10.0, "none", None, None),
    ("percentage mode on a prepaid client", PREPAY, PCT_10, -950.0, "skipped", None,
     "needs a postpaid credit limit"),
    ("percentage, below", PCT, PCT_10, -950.0, "queued", None, None),
    ("percentage, above", PCT, PCT_10, -899.99, "none", None, None),
    ("percentage, exactly at", PCT, PCT_10, -900.0, "queued", None, None),
    ("inactive client", {**PREPAY, "status": False}, AMOUNT_50, 10.0, "none", None, None),
    ("notice flag off", {**PREPAY, "is_daily_balance_notification": False}, AMOUNT_50, 10.0, "none",
     None, None),
    ("unlimited credit", {**PREPAY, "unlimited_credit": True}, AMOUNT_50, 10.0, "none",
     None, None),
    ("postpay, no config row: value mode", POSTPAY, None, 50.0, "queued", None, None),
    ("no config row, legacy threshold NULL", {**PREPAY, "notify_client_balance": None},
     None, 10.0, "skipped", None, "notify_client_balance is NULL"),
    ("NULL threshold", PREPAY, {"value_type": 0}, 10.0, "skipped", None,
     "actual_notify_balance is NULL"),
    ("percentage NULL", PCT, {"value_type": 1}, -950.0, "skipped", None,
     "percentage_notify_balance is NULL"),
    ("no balance row", PREPAY, AMOUNT_50, None, "skipped", None,
     "no c4_client_balance row"),
    ("NULL billing_email", {**PREPAY, "billing_email": None}, AMOUNT_50, 10.0, "skipped",
     None, "no recipient address"),
    ("invalid billing_email", {**PREPAY, "billing_email": "accounts at client"}, AMOUNT_50,
     10.0, "skipped", None, "holds no valid address"),
    ("several addresses", {**PREPAY, "billing_email": "a@client.example; b@client.example,"
                           "  c@other.example"}, AMOUNT_50, 10.0, "queued",
     ["a@client.example", "b@client.example", "c@other.example"], None),
    ("one invalid among valid", {**PREPAY, "billing_email": "a@client.example; nobody"},
     AMOUNT_50, 10.0, "queued", ["a@client.example"], None),
]


@pytest.mark.parametrize("columns, config, balance, expected, recipients, log_text",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_case_table(conn, database, settings, caplog, columns, config, balance, expected,
                    recipients, log_text) -> None:
    f.system(conn)
    bystander = f.client(conn, balance=1000.0, low_config=AMOUNT_50, **PREPAY)
    c = f.client(conn, balance=balance, low_config=config, **columns)
    caplog.set_level(logging.INFO)
    result = sweep(database, settings)

    rows = queued(conn, c["client_id"])
    state = provider(conn, c["client_id"])
    assert queued(conn, bystander["client_id"]) == []
    if expected == "queued":
        assert len(rows) == 1 and result.queued == 1
        row = rows[0]
        assert row["to_addrs"] == (recipients or ["billing@client.example"])
        assert row["dedupe_key"] == f"low_balance:{c['client_id']}:20261121T100000Z:1"
        assert row["status"] == "pending"
        assert state["last_lowbalance_time"] == NOW
        if config is not None:
            assert state["last_alert_time"] == NOW
    else:
        assert rows == [] and result.queued == 0
        assert state["last_lowbalance_time"] is None and state["last_alert_time"] is None
    if expected == "skipped":
        assert result.skipped == 1
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(log_text in m and f"client {c['client_id']}" in m
                   and "low_balance" in m for m in lines), lines
    else:
        assert result.skipped == 0


def test_tags_have_the_right_values(conn, database, settings) -> None:
    """Every tag of the low-balance template, with the values the contract defines."""
    f.system(conn, sys_timezone="+08:00")
    term = f.insert(conn, "payment_term", name="Net 15")
    c = f.client(conn, balance=-950.25, low_config=PCT_10, name="acme", company="Acme Ltd",
                 payment_term_id=term["payment_term_id"], auto_send_zone=None, **PCT)
    f.update(conn, "mail_tmplate", {"id": 1}, lowbalance_subject="Low {company_name}",
             lowbalance_content=" | ".join(f"{t}=[{{{t}}}]" for t in TAGS))
    result = sweep(database, settings.replace(dry_run=True), now=utc(2026, 11, 21, 17, 5, 9))
    assert result.queued == 1
    html = result.mails[0].html
    assert "[Acme Ltd]" in html and "client_name=[acme]" in html
    # 17:05:09 UTC is 01:05:09 on the 22nd at +08:00 (the system zone, client has none).
    for tag, text in [("current_date", "2026-11-22"), ("date", "2026-11-22"),
                      ("time", "01:05:09"), ("now", "2026-11-22 01:05:09"),
                      ("payment_terms", "Net 15"), ("payment_term", "Net 15")]:
        assert f"{tag}=[{text}]" in html, tag
    # Money: the renderer formats Decimals; the digits must be these whatever the style.
    for tag, digits in [("balance", "950.25"), ("notify_balance", "900.00"),
                        ("credit_limit", "1,000.00|1000.00"), ("allow_credit", "1,000.00|1000.00"),
                        ("remaining_credit", "49.75")]:
        part = html.split(f"{tag}=[", 1)[1].split("]", 1)[0]
        assert any(d in part for d in digits.split("|")), (tag, part)
    # Dry run wrote nothing: no outbox row, no provider column, no episode.
    assert queued(conn) == [] and provider(conn, c["client_id"])["last_lowbalance_time"] is None
    assert f.rows(conn, "SELECT * FROM dnl_ad.balance_episode") == []


TAGS = ["company_name", "client_name", "current_date", "date", "time", "now", "balance",
        "notify_balance", "credit_limit", "allow_credit", "remaining_credit", "payment_terms",
        "payment_term"]


def test_context_values_are_decimal_and_positive_limit() -> None:
    row = {"company": None, "name": "acme", "allowed_credit": Decimal("-300"),
           "balance": Decimal("-12.5"), "threshold": Decimal("-250"), "payment_term": None}
    ctx = balance_common.context(row, utc(2026, 11, 21, 23, 30), clock.parse_zone("-03:30"))
    assert ctx["company_name"] == "acme"  # company NULL falls back to name
    assert ctx["credit_limit"] == ctx["allow_credit"] == Decimal("300")
    assert ctx["remaining_credit"] == Decimal("287.5")
    assert ctx["balance"] == Decimal("-12.5") and isinstance(ctx["balance"], Decimal)
    assert ctx["notify_balance"] == Decimal("-250")
    assert (ctx["date"], ctx["time"]) == ("2026-11-21", "20:00:00")
    assert ctx["payment_terms"] == ""
    assert set(TAGS) <= set(ctx)


def test_two_sweeps_at_the_same_now_queue_one_notice(conn, database, settings) -> None:
    f.system(conn)
    c = f.client(conn, balance=10.0, low_config=AMOUNT_50, **PREPAY)
    first = sweep(database, settings)
    second = sweep(database, settings)
    assert (first.queued, second.queued) == (1, 0)
    assert len(queued(conn, c["client_id"])) == 1


@pytest.mark.parametrize("zone, first, before, midnight", [
    # +08:00: 18:00 local; local midnight is 16:00 UTC, long before UTC midnight
    ("+08:00", utc(2026, 11, 21, 10), utc(2026, 11, 21, 15, 59, 59), utc(2026, 11, 21, 16)),
    # -03:30: 06:30 local; UTC midnight (20:30 local) is too early, local midnight 03:30 UTC
    ("-03:30", utc(2026, 11, 21, 10), utc(2026, 11, 22, 3, 29, 59), utc(2026, 11, 22, 3, 30)),
    # +14:00: 19:00 local on the 21st; local midnight is 10:00 UTC the same UTC day
    ("+14:00", utc(2026, 11, 21, 5), utc(2026, 11, 21, 9, 59, 59), utc(2026, 11, 21, 10)),
])
def test_next_notice_comes_at_local_midnight(conn, database, settings, zone, first, before,
                                             midnight) -> None:
    f.system(conn, sys_timezone="+00:00")
    c = f.client(conn, balance=10.0, low_config=AMOUNT_50, auto_send_zone=zone, **PREPAY)
    assert sweep(database, settings, first).queued == 1
    utc_midnight = utc(2026, 11, 22)
    for t in (before, utc_midnight):
        if t < midnight:
            assert sweep(database, settings, t).queued == 0, t
    assert sweep(database, settings, midnight).queued == 1
    keys = [r["dedupe_key"] for r in queued(conn, c["client_id"])]
    start = first.strftime("%Y%m%dT%H%M%SZ")
    assert keys == [f"low_balance:{c['client_id']}:{start}:1",
                    f"low_balance:{c['client_id']}:{start}:2"]
    assert provider(conn, c["client_id"])["last_lowbalance_time"] == midnight
    # and not again that local day
    assert sweep(database, settings, midnight + dt.timedelta(hours=23, minutes=59)).queued == 0


def test_zone_falls_back_to_the_next_source(conn, database, settings) -> None:
    """auto_send_zone empty: daily_balance_send_time_zone (-05:00) sets the local day."""
    f.system(conn, sys_timezone="+08:00")
    f.client(conn, balance=10.0, low_config=AMOUNT_50, auto_send_zone="",
             daily_balance_send_time_zone="-05:00", **PREPAY)
    assert sweep(database, settings, utc(2026, 11, 21, 10)).queued == 1
    assert sweep(database, settings, utc(2026, 11, 22, 4, 59)).queued == 0
    assert sweep(database, settings, utc(2026, 11, 22, 5)).queued == 1


def test_duplicate_days_3_stops_after_three_notices(conn, database, settings) -> None:
    f.system(conn)
    c = f.client(conn, balance=10.0, low_config={**AMOUNT_50, "duplicate_days": 3}, **PREPAY)
    sent = [sweep(database, settings, utc(2026, 11, 21 + d, 12)).queued for d in range(6)]
    assert sent == [1, 1, 1, 0, 0, 0]
    assert [r["dedupe_key"].rsplit(":", 1)[1] for r in queued(conn, c["client_id"])] == [
        "1", "2", "3"]
    # the episode is still open (the UI column keeps the last notice) until recovery
    assert provider(conn, c["client_id"])["last_lowbalance_time"] == utc(2026, 11, 23, 12)


@pytest.mark.parametrize("duplicate_days", [None, 0])
def test_no_duplicate_days_means_one_a_day(conn, database, settings, duplicate_days) -> None:
    f.system(conn)
    f.client(conn, balance=10.0, low_config={**AMOUNT_50, "duplicate_days": duplicate_days},
             **PREPAY)
    sent = [sweep(database, settings, utc(2026, 11, 21 + d, 12)).queued for d in range(5)]
    assert sent == [1, 1, 1, 1, 1]


def test_recovered_then_dropped_again_opens_a_new_episode(conn, database, settings) -> None:
    f.system(conn)
    c = f.client(conn, balance=10.0, low_config=AMOUNT_50, **PREPAY)
    cid = c["client_id"]
    assert sweep(database, settings, utc(2026, 11, 21, 10)).queued == 1
    f.set_balance(conn, cid, 500.0)  # a payment
    result = sweep(database, settings, utc(2026, 11, 21, 11))
    assert (result.queued, result.state_changes) == (0, 1)
    assert provider(conn, cid) == {"last_lowbalance_time": None, "last_alert_time": None}
    assert f.rows(conn, "SELECT * FROM dnl_ad.balance_episode") == []
    # the closed episode costs nothing on the next sweep
    assert sweep(database, settings, utc(2026, 11, 21, 11, 30)).state_changes == 0
    f.set_balance(conn, cid, 5.0)  # dropped again the same local day: notice at once
    assert sweep(database, settings, utc(2026, 11, 21, 12)).queued == 1
    assert [r["dedupe_key"] for r in queued(conn, cid)] == [
        f"low_balance:{cid}:20261121T100000Z:1", f"low_balance:{cid}:20261121T120000Z:1"]
    assert provider(conn, cid)["last_lowbalance_time"] == utc(2026, 11, 21, 12)


@pytest.mark.parametrize("change", [{"status": False},
                                    {"is_daily_balance_notification": False}])
def test_deactivation_closes_the_episode(conn, database, settings, change) -> None:
    f.system(conn)
    c = f.client(conn, balance=10.0, low_config=AMOUNT_50, **PREPAY)
    sweep(database, settings)
    f.update(conn, "client", {"client_id": c["client_id"]}, **change)
    assert sweep(database, settings, NOW + dt.timedelta(days=1)).queued == 0
    assert provider(conn, c["client_id"])["last_lowbalance_time"] is None


def test_stale_provider_columns_are_reset(conn, database, settings) -> None:
    """A last_lowbalance_time left by an older tool on a client that is fine is cleared."""
    f.system(conn)
    c = f.client(conn, balance=500.0, low_config={**AMOUNT_50, "last_alert_time": NOW},
                 last_lowbalance_time=NOW, **PREPAY)
    assert sweep(database, settings).state_changes == 1
    assert provider(conn, c["client_id"]) == {"last_lowbalance_time": None,
                                              "last_alert_time": None}


def test_malformed_rows_are_logged_and_skipped_others_served(conn, database, settings,
                                                            caplog) -> None:
    f.system(conn)
    good = f.client(conn, balance=10.0, low_config=AMOUNT_50, name="good", **PREPAY)
    odd_zone = f.client(conn, balance=10.0, low_config=AMOUNT_50, name="oddzone",
                        auto_send_zone="+99:99", daily_balance_send_time_zone="+05:00",
                        **PREPAY)
    no_threshold = f.client(conn, balance=10.0, low_config={"value_type": 0}, **PREPAY)
    no_balance = f.client(conn, balance=None, low_config=AMOUNT_50, **PREPAY)
    boom = f.client(conn, balance=10.0, low_config=AMOUNT_50, name="boom", **PREPAY)
    late = f.client(conn, balance=10.0, low_config=AMOUNT_50, name="late", **PREPAY)
    # A database error while writing one client's state (a provider trigger gone wrong).
    with conn.cursor() as cur:
        cur.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.client_id = %s THEN RAISE EXCEPTION 'provider trigger refused'; "
                    "END IF; RETURN NEW; END $$", (boom["client_id"],))
        cur.execute("CREATE TRIGGER refuse BEFORE UPDATE ON client FOR EACH ROW "
                    "EXECUTE FUNCTION refuse()")
    caplog.set_level(logging.INFO)
    resolver, complaints = clock.ZoneResolver(), balance_common.Complaints()
    result = low_balance.sweep(database, NOW, settings, resolver=resolver, complaints=complaints)

    served = {r["client_id"] for r in queued(conn)}
    assert served == {good["client_id"], odd_zone["client_id"], late["client_id"]}
    assert result.queued == 3 and result.skipped == 3
    # the failed client's episode step was rolled back with its savepoint
    episodes = {r["client_id"] for r in f.rows(conn, "SELECT * FROM dnl_ad.balance_episode")}
    assert episodes == served
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"client {odd_zone['client_id']}: auto_send_zone '+99:99' is not a usable" in text
    assert f"client {no_threshold['client_id']}" in text and "actual_notify_balance" in text
    assert f"client {no_balance['client_id']}" in text and "balance is NULL" in text
    assert f"client {boom['client_id']} (boom): queue the notice: failed" in text
    # odd zone fell back to +05:00: its next notice is due at 19:00 UTC, local midnight
    assert f.rows(conn, "SELECT next_due_at FROM dnl_ad.balance_episode WHERE client_id = %s",
                  (odd_zone["client_id"],))[0]["next_due_at"] == utc(2026, 11, 21, 19)
    # The same bad rows are not logged again on the next sweep.
    caplog.clear()
    again = low_balance.sweep(database, NOW, settings, resolver=resolver, complaints=complaints)
    assert again.skipped == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == []


def test_reported_bad_rows_stay_in_the_database_until_their_problem_changes(
        conn, database, settings, caplog) -> None:
    """A misconfigured client is shipped to Python once: later sweeps only count it
    (still skipped), until its row changes and the new problem is said."""
    f.system(conn)
    bad = f.client(conn, balance=None, low_config=AMOUNT_50, **PREPAY)
    caplog.set_level(logging.INFO)
    kw = {"resolver": clock.ZoneResolver(), "complaints": balance_common.Complaints()}
    assert low_balance.sweep(database, NOW, settings, **kw).skipped == 1
    reported = kw["complaints"].reported_bad(database.safe_name, "low_balance")
    assert list(reported) == [bad["client_id"]]
    with database.transaction() as cur:
        cur.execute(balance_common.new_problems_query(low_balance.RULE, "dnl_ad"),
                    balance_common.new_problems_params(low_balance.RULE, NOW, reported))
        rows = cur.fetchall()
    assert [(r["action"], r["known_bad"]) for r in rows] == [(None, 1)]
    assert low_balance.sweep(database, NOW, settings, **kw).skipped == 1
    # the threshold goes too: the row differs, so the new problem is reported
    with conn.cursor() as cur:
        cur.execute("INSERT INTO c4_client_balance (client_id, balance) VALUES (%s, 10)",
                    (str(bad["client_id"]),))
        cur.execute("UPDATE client_low_balance_config SET value_type = 0, "
                    "actual_notify_balance = NULL WHERE client_id = %s", (bad["client_id"],))
    conn.commit()
    caplog.clear()
    assert low_balance.sweep(database, NOW, settings, **kw).skipped == 1
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"client {bad['client_id']}" in text and "actual_notify_balance" in text


def test_dry_run_writes_nothing(conn, database, settings, tmp_path) -> None:
    f.system(conn)
    c = f.client(conn, balance=10.0, low_config=AMOUNT_50, **PREPAY)
    result = sweep(database, settings.replace(dry_run=True))
    assert result.queued == 1 and len(result.mails) == 1
    assert result.mails[0].to == ["billing@client.example"]
    assert queued(conn) == [] and provider(conn, c["client_id"])["last_lowbalance_time"] is None
    assert list((tmp_path / "dry-run").glob("*.eml"))


def test_fine_clients_cost_no_python_work(conn, database, settings) -> None:
    """The query returns only clients for which something must happen."""
    f.system(conn)
    for _ in range(20):
        f.client(conn, balance=1000.0, low_config=AMOUNT_50, **PREPAY)
    due = f.client(conn, balance=1.0, low_config=AMOUNT_50, **PREPAY)
    with database.transaction() as cur:
        cur.execute(balance_common.sweep_query(low_balance.RULE, "dnl_ad"),
                    {"kind": "low_balance", "now": NOW, "today": NOW.date()})
        rows = cur.fetchall()
    assert [(r["client_id"], r["action"]) for r in rows] == [(due["client_id"], "open")]


def test_smtp_outage_keeps_the_decision_and_mail_goes_out_later(conn, database, settings,
                                                                smtp) -> None:
    from dnl_ad import delivery
    from dnl_ad.devtools.smtp_sink import free_port

    f.system(conn)
    c = f.client(conn, balance=10.0, low_config=AMOUNT_50, name="acme",
                 billing_email="a@client.example; b@client.example", **PREPAY)
    down = settings.replace(smtp_port=free_port())  # nothing listens there: an outage
    assert sweep(database, down).queued == 1
    outage = delivery.deliver(database, down, now=NOW)
    assert (outage.sent, outage.deferred) == (0, 1)
    # the decision stands: queued once, provider columns written, nothing lost or charged
    [row] = queued(conn, c["client_id"])
    assert row["status"] == "pending" and row["attempts"] == 0
    assert provider(conn, c["client_id"])["last_lowbalance_time"] == NOW
    assert sweep(database, down, NOW + dt.timedelta(minutes=1)).queued == 0
    assert smtp.messages == []
    # SMTP is back: the retry delivers the same notice, once, to both addresses
    back = delivery.deliver(database, settings, now=NOW + dt.timedelta(minutes=5))
    assert back.sent == 1
    [msg] = smtp.messages
    assert sorted(msg.rcpt_tos) == ["a@client.example", "b@client.example"]
    assert msg.message["Message-ID"].strip() == row["message_id"]
    assert "10.00" in msg.message.get_body(("plain",)).get_content()
    log_rows = f.rows(conn, "SELECT client_id, type, status FROM email_log")
    assert log_rows == [{"client_id": c["client_id"], "type": 1, "status": 0}]
    assert delivery.deliver(database, settings, now=NOW + dt.timedelta(hours=1)).sent == 0


def test_a_client_row_the_ui_holds_locked_is_skipped_not_waited_on(conn, database, settings,
                                                                   dsn, caplog) -> None:
    """Issue 16 item 4: the web UI holding one client row FOR UPDATE must not stall the
    sweep: the others are served at once, the held one is said once and served once free.
    Batches of 2 show that the batches around the held row are committed too."""
    from dnl_ad import db

    f.system(conn)
    clients = [f.client(conn, balance=10.0, low_config=AMOUNT_50, **PREPAY) for _ in range(5)]
    held = clients[2]["client_id"]
    ui = db.connect(dsn)
    settings = settings.replace(sweep_batch=2)
    kw = {"resolver": clock.ZoneResolver(), "complaints": balance_common.Complaints()}

    def sweep(database, settings, now=NOW):  # one daemon's memory across its sweeps
        return low_balance.sweep(database, now, settings, **kw)

    caplog.set_level(logging.INFO)
    try:
        with ui.cursor() as cur:
            cur.execute("SELECT * FROM client WHERE client_id = %s FOR UPDATE", (held,))
        first = sweep(database, settings)
        second = sweep(database, settings, NOW + dt.timedelta(minutes=1))
    finally:
        ui.rollback()
        ui.close()
    assert first.queued == 4 and first.skipped == 1
    assert second.queued == 0
    assert {r["client_id"] for r in queued(conn)} == {c["client_id"] for c in clients} - {held}
    lines = [r.getMessage() for r in caplog.records if "locked by another session" in
             r.getMessage()]
    assert len(lines) == 1 and f"client {held} " in lines[0]
    assert sweep(database, settings, NOW + dt.timedelta(minutes=2)).queued == 1
    assert held in {r["client_id"] for r in queued(conn)}


@pytest.mark.parametrize("bad", ["NaN", "1e16", "-2e15"])
def test_a_balance_that_is_no_amount_is_bad_data_said_once(conn, database, settings, caplog,
                                                           bad) -> None:
    """Issue 16 item 28: NaN or a balance beyond 1e15 is bad data: the client is skipped
    with one log line (not a mail with an empty amount); the others are served."""
    f.system(conn)
    c = f.client(conn, balance=1.0, low_config=AMOUNT_50, **PREPAY)
    with conn.cursor() as cur:
        cur.execute("UPDATE c4_client_balance SET balance = %s::numeric WHERE client_id = %s",
                    (bad, str(c["client_id"])))
    good = f.client(conn, balance=10.0, low_config=AMOUNT_50, **PREPAY)
    kw = {"resolver": clock.ZoneResolver(), "complaints": balance_common.Complaints()}
    caplog.set_level(logging.WARNING)
    for minute in (0, 1):
        low_balance.sweep(database, NOW + dt.timedelta(minutes=minute), settings, **kw)
    assert [r["client_id"] for r in queued(conn)] == [good["client_id"]]
    lines = [r.getMessage() for r in caplog.records if "not a usable amount" in r.getMessage()]
    assert len(lines) == 1 and f"client {c['client_id']} " in lines[0]


def test_a_connection_lost_mid_sweep_is_one_outage_not_a_traceback_per_client(
        conn, database, settings, caplog) -> None:
    """Issue 16 item 5: the server ends the sweep's session in the middle of its batches
    (a trigger terminates the backend at the 3rd client): one line for the outage, one
    when it ends, no traceback per remaining client; the next sweep serves everyone."""
    from dnl_ad import db

    f.system(conn)
    clients = [f.client(conn, balance=10.0, low_config=AMOUNT_50, **PREPAY) for _ in range(6)]
    victim = clients[2]["client_id"]
    with conn.cursor() as cur:
        cur.execute("CREATE FUNCTION kill_me() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$")
        cur.execute("CREATE TRIGGER kill_me BEFORE UPDATE ON client FOR EACH ROW "
                    "WHEN (NEW.client_id = %s) EXECUTE PROCEDURE kill_me()", (victim,))
    caplog.set_level(logging.INFO)
    with pytest.raises(db.CONNECTION_ERRORS):
        sweep(database, settings.replace(sweep_batch=1))
    with conn.cursor() as cur:
        cur.execute("DROP TRIGGER kill_me ON client")
    assert sweep(database, settings).queued == 6 - 2  # the first two went before the loss
    text = caplog.text
    assert text.count("is unreachable") == 1 and text.count("is back after") == 1
    assert "Traceback" not in text
    assert len(queued(conn)) == 6


def test_sessions_carry_the_configured_timeouts(dsn) -> None:
    """Issue 16 item 4: lock, statement and idle-in-transaction timeouts are set."""
    from dnl_ad import db

    database = db.Database(dsn, timeouts=db.SessionTimeouts(2, 60, 120))
    try:
        with database.transaction() as cur:
            cur.execute("SELECT current_setting('lock_timeout') AS l, "
                        "current_setting('statement_timeout') AS s, "
                        "current_setting('idle_in_transaction_session_timeout') AS i")
            assert cur.fetchone() == {"l": "2s", "s": "1min", "i": "2min"}
    finally:
        database.close()
