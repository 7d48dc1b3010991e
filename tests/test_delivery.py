"""Delivery against the real SMTP sink: one connection per batch, per-recipient 2xx/4xx/5xx,
drops, backoff, shutdown, email_log."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter

from aiosmtpd.controller import Controller

from dnl_ad import delivery
from dnl_ad.devtools.smtp_sink import RecordingHandler, SmtpSink, _SinkSMTP, free_port
from tests import factories
from tests.mail_helpers import NOW, email_log, notice, outbox_rows, queue

S = dt.timedelta(seconds=1)


def test_thousand_notices_over_one_connection(database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"bulk:{i}", client_id=i, recipients=f"c{i}@x.example")
                               for i in range(1000)])
    result = delivery.deliver(database, settings.replace(delivery_batch=1000,
                                                         smtp_sessions=1), now=NOW)
    assert (result.sent, result.retry, result.failed, result.connections) == (1000, 0, 0, 1)
    assert len(smtp.messages) == 1000 and smtp.connections() == 1
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == sorted(
        f"c{i}@x.example" for i in range(1000))
    assert Counter(r["status"] for r in outbox_rows(conn)) == {"sent": 1000}
    logs = email_log(conn)
    assert len(logs) == 1000 and {r["status"] for r in logs} == {0}
    assert delivery.deliver(database, settings, now=NOW + 3600 * S).total == 0


def test_batch_size_limits_one_run(database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"b:{i}") for i in range(5)])
    assert delivery.deliver(database, settings.replace(delivery_batch=2), now=NOW).sent == 2
    assert delivery.deliver(database, settings, now=NOW).sent == 3


def test_4xx_recipient_stays_pending_and_is_sent_later(database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(recipients="a@x.example; busy@x.example")])
    smtp.reply_for("busy@x.example", "450 4.2.1 mailbox busy")
    first = delivery.deliver(database, settings, now=NOW)
    assert (first.sent, first.retry) == (0, 1)
    assert [m.rcpt_tos for m in smtp.messages] == [["a@x.example"]]
    [row] = outbox_rows(conn)
    assert row["status"] == "pending" and row["done_addrs"] == ["a@x.example"]
    assert row["attempts"] == 1 and row["next_attempt_at"] == NOW + 1 * S
    assert "450 4.2.1 mailbox busy" in row["last_error"] and row["lease_until"] is None
    assert email_log(conn) == []

    assert delivery.deliver(database, settings, now=NOW).total == 0  # not due yet
    smtp.clear_replies()
    later = delivery.deliver(database, settings, now=NOW + 2 * S)
    assert later.sent == 1
    assert [m.rcpt_tos for m in smtp.messages] == [["a@x.example"], ["busy@x.example"]]
    assert smtp.messages[0].message["Message-ID"] == smtp.messages[1].message["Message-ID"]
    [log] = email_log(conn)
    assert log["status"] == 0 and "busy@x.example" in log["email_addresses"]


def test_5xx_fails_with_the_server_reply_in_email_log(database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice("z:1", kind="zero_balance", template="zerobalance",
                                      recipients="gone@x.example", client_id=9)])
    smtp.reply_for("gone@x.example", "550 5.1.1 no such user here")
    result = delivery.deliver(database, settings, now=NOW)
    assert (result.sent, result.failed) == (0, 1) and smtp.messages == []
    [row] = outbox_rows(conn)
    assert row["status"] == "failed" and row["failed_addrs"] == ["gone@x.example"]
    [log] = email_log(conn)
    assert log["status"] == 1 and "550 5.1.1 no such user here" in log["error"]
    assert (log["client_id"], log["type"], log["alert_rule"]) == (9, 4, "zero_balance test rule")
    assert log["email_addresses"] == "gone@x.example" and log["subject"].startswith("Zero")
    assert "Zero balance alert" in log["content"]
    assert delivery.deliver(database, settings, now=NOW + 3600 * S).total == 0


def test_mixed_5xx_and_2xx_is_sent_to_who_accepted(database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(recipients="ok@x.example, gone@x.example")])
    smtp.reply_for("gone@x.example", "550 5.1.1 unknown")
    assert delivery.deliver(database, settings, now=NOW).sent == 1
    [log] = email_log(conn)
    assert log["status"] == 0 and "gone@x.example: 550 5.1.1 unknown" in log["error"]
    assert log["email_res"].startswith("250")


def test_backoff_then_give_up_after_max_attempts(database, settings, conn, smtp) -> None:
    factories.system(conn)
    cfg = settings.replace(max_attempts=4, retry_base_seconds=10, retry_max_seconds=25)
    queue(database, cfg, [notice(recipients="busy@x.example")])
    smtp.reply_for("busy@x.example", "451 4.3.0 try later")
    now, waits = NOW, []
    for _ in range(3):
        assert delivery.deliver(database, cfg, now=now).retry == 1
        row = outbox_rows(conn)[0]
        waits.append((row["next_attempt_at"] - now).total_seconds())
        now = row["next_attempt_at"]
    assert waits == [10, 20, 25]
    last = delivery.deliver(database, cfg, now=now)
    assert last.failed == 1
    row = outbox_rows(conn)[0]
    assert row["status"] == "failed" and row["attempts"] == 4
    [log] = email_log(conn)
    assert log["status"] == 1 and "gave up after 4 attempts" in log["error"]
    assert "451 4.3.0 try later" in log["error"]


def test_dropped_connection_loses_nothing_and_sends_nothing_twice(database, settings, conn,
                                                                 smtp) -> None:
    """A drop while message 7 is in hand: message 7 is charged one attempt (the drop came
    after its recipients were answered), the session stops, the 13 not yet tried are
    given back uncharged, and the whole delivery backs off."""
    factories.system(conn)
    queue(database, settings, [notice(f"d:{i}", recipients=f"r{i}@x.example")
                               for i in range(20)])
    smtp.drop_on_message(7)
    first = delivery.deliver(database, settings, now=NOW)
    assert (first.sent, first.retry, first.deferred, first.connections) == (6, 1, 13, 1)
    assert len(smtp.messages) == 6 and smtp.connections() == 1
    pending = [r for r in outbox_rows(conn) if r["status"] == "pending"]
    assert sorted(r["attempts"] for r in pending) == [0] * 13 + [1]
    assert all("connection lost" in r["last_error"] for r in pending)
    second = delivery.deliver(database, settings, now=NOW + 2 * S)
    assert second.sent == 14
    ids = [m.message["Message-ID"] for m in smtp.messages]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert {r["message_id"] for r in outbox_rows(conn)} == set(ids)
    assert len(email_log(conn)) == 20


def test_smtp_down_retries_everything_later(database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"s:{i}") for i in range(3)])
    down = settings.replace(smtp_port=free_port())  # nothing listens there
    result = delivery.deliver(database, down, now=NOW)
    assert (result.retry, result.deferred, result.connections) == (0, 3, 0)
    assert all("cannot connect" in r["last_error"] and r["attempts"] == 0
               for r in outbox_rows(conn))
    assert email_log(conn) == []
    assert delivery.deliver(database, settings, now=NOW + 2 * S).sent == 3


def test_should_stop_finishes_the_message_in_hand_and_releases_the_rest(
        database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"t:{i}") for i in range(6)])
    calls = iter(range(100))
    result = delivery.deliver(database, settings, now=NOW,
                              should_stop=lambda: next(calls) >= 2)
    assert (result.sent, result.released) == (2, 4) and len(smtp.messages) == 2
    rest = [r for r in outbox_rows(conn) if r["status"] == "pending"]
    assert len(rest) == 4 and all(r["lease_until"] is None and r["attempts"] == 0 for r in rest)
    assert delivery.deliver(database, settings, now=NOW).sent == 4


def test_5xx_to_data_itself_fails_without_retry(database, settings, conn, smtp) -> None:
    """A server that refuses DATA outright (554, no 354) has refused the message for good."""
    factories.system(conn)
    queue(database, settings, [notice(recipients="a@x.example")])

    smtp.refuse_data_command("554 5.7.1 message content rejected")
    result = delivery.deliver(database, settings, now=NOW)
    assert (result.sent, result.retry, result.failed) == (0, 0, 1)
    [log] = email_log(conn)
    assert log["status"] == 1 and "554" in log["error"]


class _HangUpHandler(RecordingHandler):
    """Answers chosen replies, then (like many real MTAs after a hard refusal) hangs up."""

    def __init__(self, mail_reply: str = "", data_reply: str = "") -> None:
        super().__init__()
        self.mail_reply, self.data_reply = mail_reply, data_reply
        self.hang_up_after = tuple(r[:3] for r in (mail_reply, data_reply) if r)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            with self.lock:
                self.data_count += 1
            return self.data_reply
        return await super().handle_DATA(server, session, envelope)


class _HangUpSMTP(_SinkSMTP):
    async def push(self, status: str) -> None:
        await super().push(status)
        if status.startswith(self.event_handler.hang_up_after):
            self.transport.close()


class _HangUpController(Controller):
    def factory(self):
        return _HangUpSMTP(self.handler, **self.SMTP_kwargs)


@contextlib.contextmanager
def _hanging_up_sink(**replies: str):
    sink = SmtpSink()
    sink.handler = _HangUpHandler(**replies)
    sink.controller = _HangUpController(sink.handler, hostname=sink.host, port=sink.port)
    with sink:
        yield sink


def test_5xx_to_the_message_then_a_hang_up_is_a_refusal_not_a_lost_connection(
        database, settings, conn) -> None:
    """554 after the data, then the server closes: the server refused the message for
    good. It must be failed with the server's reply, not retried as a lost connection."""
    factories.system(conn)
    queue(database, settings, [notice(recipients="a@x.example")])
    with _hanging_up_sink(data_reply="554 5.7.1 message looks like spam") as sink:
        result = delivery.deliver(database, settings.replace(smtp_port=sink.port), now=NOW)
        assert sink.handler.data_count == 1
    assert (result.sent, result.retry, result.failed) == (0, 0, 1)
    [row] = outbox_rows(conn)
    assert row["status"] == "failed" and row["failed_addrs"] == ["a@x.example"]
    [log] = email_log(conn)
    assert log["status"] == 1 and "554 5.7.1 message looks like spam" in log["error"]


def test_5xx_to_mail_from_then_a_hang_up_fails_with_the_reply(database, settings,
                                                              conn) -> None:
    factories.system(conn)
    queue(database, settings, [notice(recipients="a@x.example")])
    with _hanging_up_sink(mail_reply="550 5.7.1 sender not allowed") as sink:
        result = delivery.deliver(database, settings.replace(smtp_port=sink.port), now=NOW)
    assert (result.sent, result.retry, result.failed) == (0, 0, 1)
    [log] = email_log(conn)
    assert log["status"] == 1 and "550 5.7.1 sender not allowed" in log["error"]


def test_421_then_a_hang_up_charges_nothing_and_stops_the_session(
        database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"h:{i}", recipients=f"r{i}@x.example")
                               for i in range(2)])
    with _hanging_up_sink(mail_reply="421 4.3.2 shutting down") as sink:
        result = delivery.deliver(database, settings.replace(smtp_port=sink.port), now=NOW)
        assert result.connections == 1  # the second message was not tried on a dead session
    assert (result.sent, result.retry, result.failed, result.deferred) == (0, 0, 0, 2)
    assert all("421 4.3.2 shutting down" in r["last_error"] and r["attempts"] == 0
               for r in outbox_rows(conn))
    assert email_log(conn) == []
    assert delivery.deliver(database, settings, now=NOW + 2 * S).sent == 2
    assert len(smtp.messages) == 2


def test_a_batch_outliving_its_lease_stops_before_another_deliverer_can_take_its_rows(
        database, settings, conn, smtp) -> None:
    """A slow relay can make one batch last longer than the claim's lease. From then on
    a second deliverer (a second daemon, `harness --send`) may claim the same rows, so
    the first must not start a message once its lease is about to run out: it leaves the
    rest to the next claim, and every notice still goes out exactly once."""
    factories.system(conn)
    queue(database, settings, [notice(f"l:{i}", recipients=f"r{i}@x.example")
                               for i in range(10)])
    lease = delivery.lease_for(settings)
    clock = {"t": 1000.0}
    # message 4 is slow: when it is done, the lease has less left than one message may take
    smtp.call_on_message(4, lambda: clock.__setitem__(
        "t", clock["t"] + lease.total_seconds() - settings.smtp_timeout_seconds))
    first = delivery.deliver(database, settings, now=NOW, monotonic=lambda: clock["t"])
    assert (first.sent, first.retry, first.failed, first.released) == (4, 0, 0, 6)
    assert len(smtp.messages) == 4
    rest = [r for r in outbox_rows(conn) if r["status"] == "pending"]
    assert len(rest) == 6 and all(r["attempts"] == 0 for r in rest)

    # the other deliverer, once the first one's lease has expired, sends the rest once
    second = delivery.deliver(database, settings, now=NOW + lease + S)
    assert second.sent == 6
    ids = [m.message["Message-ID"] for m in smtp.messages]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert len(email_log(conn)) == 10


def test_a_late_release_does_not_free_rows_another_deliverer_has_claimed(
        database, settings, conn, smtp) -> None:
    """SIGTERM after the lease expired and another deliverer claimed the rows: the
    stopping run must not clear that deliverer's lease (a third could then take them)."""
    from dnl_ad import outbox

    factories.system(conn)
    queue(database, settings, [notice(f"r:{i}", recipients=f"r{i}@x.example")
                               for i in range(4)])
    lease = delivery.lease_for(settings)
    taken: list[int] = []

    def other_deliverer_claims() -> None:
        with database.transaction() as cur:
            taken.extend(r.id for r in outbox.claim(cur, "dnl_ad", now=NOW + lease + S,
                                                    limit=10, lease=lease))

    smtp.call_on_message(1, other_deliverer_claims)
    calls = iter(range(100))
    result = delivery.deliver(database, settings, now=NOW,
                              should_stop=lambda: next(calls) >= 1)
    assert result.sent == 1 and len(taken) == 4  # it claimed while message 1 was in hand
    # message 1's outcome is the other deliverer's to record now (its claim holds the row)
    pending = [r for r in outbox_rows(conn) if r["status"] == "pending"]
    assert len(pending) == 4
    assert all(r["lease_until"] == NOW + 2 * lease + S for r in pending)


def test_rcpt_accepted_with_an_unusual_2xx_gets_the_message(database, settings, conn,
                                                            smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(recipients="a@x.example; odd@x.example")])
    smtp.reply_for("odd@x.example", "252 2.1.5 cannot verify, will attempt delivery")
    assert delivery.deliver(database, settings, now=NOW).sent == 1
    assert smtp.messages[0].rcpt_tos == ["a@x.example", "odd@x.example"]


def test_unusable_smtp_port_in_system_parameter_claims_nothing(database, settings, conn, smtp,
                                                               caplog) -> None:
    factories.system(conn, smtpport=None)
    with conn.cursor() as cur:  # a live database may hold text here; ours holds an integer
        cur.execute("ALTER TABLE system_parameter ALTER COLUMN smtpport TYPE varchar(20)")
        cur.execute("UPDATE system_parameter SET smtpport = '25a'")
    queue(database, settings, [notice()])
    for _ in range(3):
        result = delivery.deliver(database, settings.replace(smtp_port=0), now=NOW)
    assert result.total == 0 and smtp.messages == []
    said = [r for r in caplog.records if "system_parameter.smtpport='25a'" in r.getMessage()]
    assert len(said) == 1  # once when it starts, not every run
    [row] = outbox_rows(conn)
    assert row["status"] == "pending" and row["lease_until"] is None and row["attempts"] == 0
    # With SMTP_PORT set in the ini, the broken column no longer matters.
    assert delivery.deliver(database, settings, now=NOW).sent == 1
    assert "usable again" in caplog.text


def test_an_idle_run_asks_one_question_and_a_due_one_delivers(database, settings, conn,
                                                              smtp) -> None:
    """With nothing due (nor old enough to expire) a run sends one indexed query and
    stops: no claim, no SMTP settings read; it says when the first waiting notice is due
    (the loop sleeps until then)."""
    factories.system(conn)

    def last_query() -> str:
        pid = database.connection().get_backend_pid()
        with conn.cursor() as cur:
            cur.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
            return cur.fetchone()["query"]

    empty = delivery.deliver(database, settings, now=NOW)
    assert (empty.total, empty.idle, empty.next_due) == (0, True, None)
    assert "EXISTS" in last_query() and "claim_token" not in last_query()
    queue(database, settings, [notice("k-later")])
    later = NOW + dt.timedelta(minutes=5)
    with conn.cursor() as cur:  # retried later: pending, not yet due
        cur.execute("UPDATE dnl_ad.outbox SET next_attempt_at = %s", (later,))
    waiting = delivery.deliver(database, settings, now=NOW)
    assert (waiting.total, waiting.idle, waiting.next_due) == (0, True, later)
    assert "EXISTS" in last_query() and smtp.messages == []
    with conn.cursor() as cur:  # a live lease holds it longer than its next attempt
        cur.execute("UPDATE dnl_ad.outbox SET lease_until = %s",
                    (later + dt.timedelta(minutes=1),))
    assert delivery.deliver(database, settings, now=NOW).next_due == \
        later + dt.timedelta(minutes=1)
    with conn.cursor() as cur:  # ... unless it expires first
        cur.execute("UPDATE dnl_ad.outbox SET lease_until = NULL, next_attempt_at = %s, "
                    "created_at = %s", (NOW + dt.timedelta(days=9), NOW))
    assert delivery.deliver(database, settings, now=NOW).next_due == \
        NOW + dt.timedelta(hours=settings.delivery_max_age_hours)
    with conn.cursor() as cur:
        cur.execute("UPDATE dnl_ad.outbox SET next_attempt_at = %s", (later,))
    result = delivery.deliver(database, settings, now=later)
    assert result.sent == 1 and len(smtp.messages) == 1 and not result.idle
