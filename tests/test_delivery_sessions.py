"""Parallel SMTP sessions (SMTP_SESSIONS), the relay's messages per session
(SMTP_MAX_PER_SESSION) and a global rate (SMTP_RATE_LIMIT)."""

from __future__ import annotations

from collections import Counter

from dnl_ad import delivery
from tests import factories
from tests.mail_helpers import NOW, email_log, notice, outbox_rows, queue


def _queue(database, settings, conn, n: int) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"p:{i}", client_id=i, recipients=f"c{i}@x.example")
                               for i in range(n)])


def test_four_sessions_share_a_batch_and_send_each_notice_once(database, settings, conn,
                                                               smtp) -> None:
    _queue(database, settings, conn, 1000)
    result = delivery.deliver(database, settings.replace(delivery_batch=1000,
                                                         smtp_sessions=4), now=NOW)
    assert (result.sent, result.retry, result.failed, result.connections) == (1000, 0, 0, 4)
    assert smtp.connections() == 4
    ids = Counter(m.message["Message-ID"] for m in smtp.messages)
    assert len(ids) == 1000 and max(ids.values()) == 1
    assert Counter(r["status"] for r in outbox_rows(conn)) == {"sent": 1000}
    assert len(email_log(conn)) == 1000


def test_a_small_batch_stays_on_one_connection(database, settings, conn, smtp) -> None:
    _queue(database, settings, conn, delivery.MIN_PER_SESSION + 10)
    result = delivery.deliver(database, settings.replace(smtp_sessions=8), now=NOW)
    assert result.connections == 1 and result.sent == delivery.MIN_PER_SESSION + 10


def test_messages_per_session_are_capped(database, settings, conn, smtp) -> None:
    _queue(database, settings, conn, 35)
    result = delivery.deliver(database, settings.replace(smtp_sessions=1,
                                                         smtp_max_per_session=10), now=NOW)
    assert (result.sent, result.connections) == (35, 4) and smtp.connections() == 4


def test_the_rate_limit_paces_all_sessions(database, settings, conn, smtp) -> None:
    _queue(database, settings, conn, 120)
    clock = {"t": 0.0}
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # a simulated clock: nothing really sleeps
        slept.append(seconds)
        clock["t"] += seconds

    result = delivery.deliver(database, settings.replace(smtp_sessions=2,
                                                         smtp_rate_limit=20.0),
                              now=NOW, monotonic=lambda: clock["t"], sleep=sleep)
    assert (result.sent, result.connections) == (120, 2)
    assert abs(clock["t"] - 119 / 20) < 0.01  # 120 messages at 20/s: 5.95 s of pacing


def test_sigterm_with_parallel_sessions_releases_what_was_not_started(
        database, settings, conn, smtp) -> None:
    _queue(database, settings, conn, 400)
    stop = {"now": False}
    smtp.call_on_message(50, lambda: stop.__setitem__("now", True))
    result = delivery.deliver(database, settings.replace(smtp_sessions=4), now=NOW,
                              should_stop=lambda: stop["now"])
    assert result.sent + result.released == 400 and result.released > 0
    assert result.sent == len(smtp.messages)
    rest = [r for r in outbox_rows(conn) if r["status"] == "pending"]
    assert len(rest) == result.released
    assert all(r["lease_until"] is None and r["attempts"] == 0 for r in rest)
    assert delivery.deliver(database, settings, now=NOW).sent == result.released


def test_a_rate_limit_in_one_session_stops_them_all_and_charges_nothing(
        database, settings, conn, smtp) -> None:
    _queue(database, settings, conn, 400)
    smtp.rate_limit(20)
    first = delivery.deliver(database, settings.replace(smtp_sessions=4), now=NOW)
    assert first.sent <= 80 and first.sent + first.deferred == 400
    assert first.retry == first.failed == 0
    # all four sessions stopped at their first refusal or before their next message
    assert len(smtp.handler.refusals) <= 4
    rows = outbox_rows(conn)
    assert {r["attempts"] for r in rows if r["status"] == "pending"} == {0}
    with conn.cursor() as cur:
        cur.execute("SELECT failures FROM dnl_ad.smtp_backoff")
        assert [r["failures"] for r in cur.fetchall()] == [1]  # counted once
