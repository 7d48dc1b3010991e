"""A server-wide 4xx is not a per-message answer: 421 (to any command, RSET included), a
rate limit (4xx to MAIL FROM, enhanced status 4.7.x or 4.5.3) stop the session, back the
whole delivery off and charge nothing to messages not yet answered. SIZE= is sent when
offered. Against the real sink misbehaving as a rate-limiting MTA does."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from dnl_ad import delivery
from dnl_ad.mail import smtp as mail_smtp
from tests import factories
from tests.mail_helpers import NOW, email_log, notice, outbox_rows, queue

S = dt.timedelta(seconds=1)


def _queue(database, settings, conn, n: int) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"w:{i}", recipients=f"r{i}@x.example")
                               for i in range(n)])


def test_rate_limit_at_mail_from_stops_the_session_and_charges_nothing(
        database, settings, conn, smtp) -> None:
    _queue(database, settings, conn, 10)
    smtp.rate_limit(3)  # Postfix: 450 4.7.1 Error: too much mail from ...
    first = delivery.deliver(database, settings, now=NOW)
    assert (first.sent, first.retry, first.failed, first.deferred) == (3, 0, 0, 7)
    assert smtp.handler.mail_count == 4  # one refused MAIL, not seven
    pending = [r for r in outbox_rows(conn) if r["status"] == "pending"]
    assert len(pending) == 7 and {r["attempts"] for r in pending} == {0}
    assert all("450 4.7.1" in r["last_error"] for r in pending)
    # backed off: a run before the backoff ends claims nothing
    assert delivery.deliver(database, settings, now=NOW + S / 2).total == 0
    assert smtp.handler.mail_count == 4
    now = NOW + S
    for _ in range(10):
        delivery.deliver(database, settings, now=now)
        now += 10 * S
    assert Counter(r["status"] for r in outbox_rows(conn)) == {"sent": 10}
    assert {r["attempts"] for r in outbox_rows(conn)} == {1}
    assert len({m.message["Message-ID"] for m in smtp.messages}) == len(smtp.messages) == 10


def test_421_to_rset_ends_the_session_without_charging_the_next_message(
        database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice("g:0", recipients="gone@x.example"),
                               notice("g:1", recipients="a@x.example"),
                               notice("g:2", recipients="b@x.example")])
    smtp.reply_for("gone@x.example", "550 5.1.1 no such user")
    smtp.reply_to_rset("421 4.3.2 service shutting down")
    first = delivery.deliver(database, settings, now=NOW)
    assert (first.sent, first.failed, first.retry, first.deferred) == (0, 1, 0, 2)
    rows = {r["dedupe_key"]: r for r in outbox_rows(conn)}
    assert rows["g:0"]["status"] == "failed"
    assert [rows[k]["attempts"] for k in ("g:1", "g:2")] == [0, 0]
    assert "RSET answered 421" in rows["g:1"]["last_error"]
    smtp.reply_to_rset("")
    assert delivery.deliver(database, settings, now=NOW + 2 * S).sent == 2


@pytest.mark.parametrize("reply", ["452 4.5.3 Error: too many recipients",
                                   "450 4.7.1 Client host rejected: rate limit"])
def test_rate_limit_at_rcpt_charges_nothing(database, settings, conn, smtp, reply) -> None:
    _queue(database, settings, conn, 3)
    smtp.reply_for("r1@x.example", reply)
    first = delivery.deliver(database, settings, now=NOW)
    assert (first.sent, first.retry, first.deferred) == (1, 0, 2)
    assert {r["attempts"] for r in outbox_rows(conn) if r["status"] == "pending"} == {0}
    assert email_log(conn)[0]["status"] == 0 and len(email_log(conn)) == 1


def test_a_plain_4xx_to_one_recipient_is_still_that_notice_s_attempt(
        database, settings, conn, smtp) -> None:
    _queue(database, settings, conn, 3)
    smtp.reply_for("r1@x.example", "450 4.2.1 mailbox busy")
    first = delivery.deliver(database, settings, now=NOW)
    assert (first.sent, first.retry, first.deferred) == (2, 1, 0)


def test_421_now_and_then_loses_nothing_and_charges_nothing(database, settings, conn,
                                                            smtp) -> None:
    _queue(database, settings, conn, 30)
    smtp.close_every(7)
    now = NOW
    for _ in range(20):
        delivery.deliver(database, settings, now=now)
        now += 10 * S
    assert Counter((r["status"], r["attempts"]) for r in outbox_rows(conn)) == {
        ("sent", 1): 30}
    assert len(smtp.handler.refusals) >= 4
    assert len({m.message["Message-ID"] for m in smtp.messages}) == len(smtp.messages) == 30


def test_size_is_declared_when_the_server_offers_it(database, settings, conn, smtp) -> None:
    _queue(database, settings, conn, 1)
    assert delivery.deliver(database, settings, now=NOW).sent == 1
    [got] = smtp.messages
    [row] = outbox_rows(conn)
    assert f"SIZE={len(bytes(row['message']))}" in got.mail_options


@pytest.mark.parametrize(("code", "text", "wide"), [
    (421, "421 4.3.2 closing", True), (450, "450 4.7.1 too much mail", True),
    (452, "452 4.5.3 too many recipients", True), (451, "451 4.3.0 local error", False),
    (450, "450 4.2.1 mailbox busy", False), (550, "550 5.7.1 no", False),
    (452, "452 too many recipients", False)])
def test_server_wide(code, text, wide) -> None:
    assert mail_smtp.server_wide(code, text) is wide
