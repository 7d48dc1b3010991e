"""mail_sender's own SMTP columns: a template whose _from names a sender with its own
smtp_host is sent through that server, one session per server within a batch; an
outage of one server holds only its own notices."""

from __future__ import annotations

import datetime as dt

from dnl_ad import delivery
from dnl_ad.devtools.smtp_sink import SmtpSink
from tests import factories
from tests.mail_helpers import NOW, notice, outbox_rows, queue
from tests.smtp_v5 import v5_mail_sender

S = dt.timedelta(seconds=1)


def _arrange(database, settings, conn, other: SmtpSink) -> dict:
    factories.system(conn)
    sender = v5_mail_sender(conn, email="sales@carrier.example", name="Sales Team",
                            smtp_host=other.host, smtp_port=str(other.port), secure=0,
                            loginemail="false", username="ignored", password="ignored")
    factories.update(conn, "mail_tmplate", {"id": 1}, lowbalance_from=str(sender["id"]))
    queue(database, settings,
          [notice(f"own:{i}", recipients=f"o{i}@x.example") for i in range(3)]
          + [notice(f"def:{i}", kind="zero_balance", template="zerobalance",
                    recipients=f"d{i}@x.example") for i in range(2)])
    return sender


def test_a_sender_with_its_own_server_is_sent_through_it(database, settings, conn,
                                                         smtp) -> None:
    with SmtpSink() as other:
        sender = _arrange(database, settings, conn, other)
        rows = {r["dedupe_key"]: r for r in outbox_rows(conn)}
        assert rows["own:0"]["sender_id"] == str(sender["id"])
        assert rows["def:0"]["sender_id"] is None
        result = delivery.deliver(database, settings, now=NOW)
        assert (result.sent, result.connections) == (5, 2)
        assert sorted(m.rcpt_tos[0] for m in other.messages) == [
            "o0@x.example", "o1@x.example", "o2@x.example"]
        assert other.connections() == 1 and smtp.connections() == 1
        assert {m.mail_from for m in other.messages} == {"sales@carrier.example"}
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == ["d0@x.example", "d1@x.example"]


def test_one_server_down_holds_only_its_own_notices(database, settings, conn,
                                                    smtp) -> None:
    other = SmtpSink()
    _arrange(database, settings, conn, other)  # the sender's server is not started
    result = delivery.deliver(database, settings, now=NOW)
    assert (result.sent, result.deferred) == (2, 3)
    assert {r["attempts"] for r in outbox_rows(conn) if r["status"] == "pending"} == {0}
    # while it is backed off, its notices are not even claimed
    assert delivery.deliver(database, settings, now=NOW + S / 2).deferred == 0
    with other:
        assert delivery.deliver(database, settings, now=NOW + 2 * S).sent == 3
        assert len(other.messages) == 3
