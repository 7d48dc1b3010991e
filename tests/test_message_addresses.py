"""Addresses and headers a real mailbox meets: quoted commas, internationalised
addresses (SMTPUTF8), subjects over 998 octets, encoded-word look-alikes, and a cap on
recipients per notice."""

from __future__ import annotations

import email
import email.policy
import logging
from pathlib import Path

from dnl_ad import delivery
from dnl_ad.devtools.smtp_sink import SmtpSink
from dnl_ad.mail import message as mail_message
from dnl_ad.mail.render import MailConfig, render_notice
from tests import factories
from tests.mail_helpers import NOW, email_log, notice, outbox_rows, queue

REPO = Path(__file__).resolve().parent.parent


def build(n, **columns):
    cfg = MailConfig(dict(columns), {}, {"fromemail": "billing@carrier.example"},
                     REPO / "templates")
    return mail_message.build(n, render_notice(n, cfg), cfg)


def parse(raw: bytes):
    """Headers may be UTF-8 (RFC 6532) when an address needs SMTPUTF8."""
    return email.message_from_string(raw.decode("utf-8"), policy=email.policy.SMTPUTF8)


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def test_a_display_name_with_a_comma_inside_quotes_is_one_address() -> None:
    mail = build(notice(recipients='"Weird, Name" <w@x.com>; b@client.example'))
    assert mail.to == ["w@x.com", "b@client.example"] and mail.rejected == ()
    to = parse(mail.raw)["To"]
    assert [(a.display_name, a.addr_spec) for a in to.addresses] == [
        ("Weird, Name", "w@x.com"), ("", "b@client.example")]


def test_split_addresses_respects_quotes_and_angles() -> None:
    assert mail_message.split_addresses('"A; B, C" <a@x.com>, d@x.com;e@x.com') == [
        '"A; B, C" <a@x.com>', "d@x.com", "e@x.com"]


def test_an_internationalised_address_is_accepted() -> None:
    mail = build(notice(recipients="名前@例え.jp, user@bücher.example"))
    assert mail.to == ["名前@xn--r8jz45g.jp", "user@xn--bcher-kva.example"]
    assert mail_message.needs_smtputf8(mail.to)
    assert parse(mail.raw)["To"].addresses[0].username == "名前"


def test_smtputf8_is_used_when_offered(database, settings, conn) -> None:
    factories.system(conn)
    queue(database, settings, [notice(recipients="名前@例え.jp")])
    with SmtpSink(enable_SMTPUTF8=True) as sink:
        result = delivery.deliver(database, settings.replace(smtp_port=sink.port), now=NOW)
        assert result.sent == 1
        [got] = sink.messages
        assert got.rcpt_tos == ["名前@xn--r8jz45g.jp"] and "SMTPUTF8" in got.mail_options


def test_without_smtputf8_the_notice_fails_saying_why(database, settings, conn) -> None:
    factories.system(conn)
    queue(database, settings, [notice(recipients="名前@例え.jp")])
    with SmtpSink(enable_SMTPUTF8=False) as sink:
        result = delivery.deliver(database, settings.replace(smtp_port=sink.port), now=NOW)
        assert (result.sent, result.failed) == (0, 1) and sink.messages == []
    [log] = email_log(conn)
    assert log["status"] == 1 and "SMTPUTF8" in log["error"]
    assert outbox_rows(conn)[0]["status"] == "failed"


def test_a_subject_over_998_octets_is_a_valid_folded_header() -> None:
    name = "Acme" + "x" * 1500 + " Ünïcødé " + "y" * 600
    mail = build(notice(company_name=name))
    assert max(len(line) for line in header_lines(mail.raw)) <= 998
    assert name in parse(mail.raw)["Subject"]
    ascii_name = "A" * 1200
    mail = build(notice(company_name=ascii_name))
    assert max(len(line) for line in header_lines(mail.raw)) <= 998
    assert ascii_name in parse(mail.raw)["Subject"]


def test_an_encoded_word_look_alike_stays_literal_text() -> None:
    evil = "=?utf-8?b?ZXZpbA==?="
    mail = build(notice(company_name=evil))
    subject = parse(mail.raw)["Subject"]
    assert evil in subject and "evil" not in subject.replace(evil, "")
    assert mail_message.format_address(evil, "a@x.com").startswith("=?utf-8?b?")
    assert parse(b"To: " + mail_message.format_address(evil, "a@x.com").encode()
                 + b"\r\n\r\n")["To"].addresses[0].display_name == evil


def test_recipients_are_capped_and_the_rest_logged(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="dnl_ad.mail.message")
    many = "; ".join(f"u{i}@client.example" for i in range(10_000))
    mail = build(notice(recipients=many, client_id=8))
    assert len(mail.to) == 50 and mail.to[0] == "u0@client.example"
    assert len(mail.rejected) == 9_950
    to_header = [line for line in header_lines(mail.raw) if line.startswith(b" u")]
    assert len(to_header) == 49 and len(mail.raw) < 20_000
    [line] = [r.getMessage() for r in caplog.records if "MAX_RECIPIENTS" in r.getMessage()]
    assert "client 8" in line and "9950" in line


def _cfg(system: dict, **kw) -> MailConfig:
    return MailConfig({"lowbalance_from": kw.pop("from_id", None)},
                      {"7": "sales@carrier.example"},
                      {"fromemail": "billing@carrier.example", **system},
                      REPO / "templates", sender_rows={"7": {"id": 7, "name": "Sales, Team",
                                                             "email": "sales@carrier.example"}},
                      **kw)


def _headers(cfg: MailConfig, n=None):
    n = n or notice("usage_summary:42:2026-03-01")
    return parse(mail_message.build(n, render_notice(n, cfg), cfg).raw)


def test_from_has_the_display_name_and_reply_to_the_noc() -> None:
    msg = _headers(_cfg({"emailname": "Carrier Billing",
                         "noc_email": "bad; noc@carrier.example, other@carrier.example"}))
    [sender] = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Carrier Billing",
                                                       "billing@carrier.example")
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == ["noc@carrier.example"]
    assert msg["Date"].datetime == NOW
    assert msg["Message-ID"].startswith("<usage_summary.42.2026-03-01.")


def test_mail_sender_name_and_the_ini_reply_to_win() -> None:
    msg = _headers(_cfg({"emailname": "Carrier Billing", "noc_email": "noc@carrier.example"},
                        from_id="7", reply_to="Help Desk <help@carrier.example>"))
    [sender] = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Sales, Team", "sales@carrier.example")
    [reply] = msg["Reply-To"].addresses
    assert (reply.display_name, reply.addr_spec) == ("Help Desk", "help@carrier.example")


def test_no_reply_to_without_one() -> None:
    assert _headers(_cfg({}))["Reply-To"] is None


def test_display_name_and_reply_to_from_the_v5_database(database, settings, conn,
                                                        smtp) -> None:
    from tests.smtp_v5 import v5_system

    v5_system(conn, emailname="Carrier Billing", noc_email="noc@carrier.example")
    queue(database, settings, [notice()])
    assert delivery.deliver(database, settings, now=NOW).sent == 1
    got = smtp.messages[0].message
    assert got["From"].addresses[0].display_name == "Carrier Billing"
    assert got["Reply-To"].addresses[0].addr_spec == "noc@carrier.example"
