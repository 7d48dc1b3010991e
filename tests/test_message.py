"""MIME messages: no header injection, UTF-8 survives, addresses validated, ids stable."""

from __future__ import annotations

import email
import email.policy
import logging
import re
from pathlib import Path

import pytest

from dnl_ad import delivery
from dnl_ad.mail import message as mail_message
from dnl_ad.mail.render import MailConfig, render_notice
from tests import factories
from tests.mail_helpers import NOW, email_log, notice, outbox_rows, queue

REPO = Path(__file__).resolve().parent.parent
EVIL = "X\r\nBcc: evil@example.com"


def build(n, **columns):
    cfg = MailConfig(dict(columns), {"3": "sender3@carrier.example"},
                     {"fromemail": "billing@carrier.example"}, REPO / "templates",
                     default_from="ini@carrier.example")
    return mail_message.build(n, render_notice(n, cfg), cfg)


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_company_name_cannot_inject_a_header() -> None:
    for columns in ({}, {"lowbalance_subject": "Alert {company_name}\r\nBcc: x@example.com"}):
        mail = build(notice(company_name=EVIL), **columns)
        msg = parse(mail.raw)
        assert msg["Bcc"] is None
        assert "evil@example.com" not in (msg["To"] or "") + (msg["Cc"] or "")
        assert "X Bcc: evil@example.com" in msg["Subject"]
        headers = mail.raw.split(b"\r\n\r\n", 1)[0]
        assert not any(line.lower().startswith(b"bcc") for line in headers.split(b"\r\n"))


def test_injection_through_billing_email_is_dropped(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="dnl_ad.mail.message")
    mail = build(notice(recipients="ok@client.example\r\nBcc: evil@example.com; "
                                   "two@client.example"))
    assert mail.to == ["two@client.example"]
    assert "evil@example.com" not in mail.raw.decode()


def test_header_injection_end_to_end(database, settings, conn, smtp) -> None:
    factories.system(conn)
    factories.update(conn, "mail_tmplate", {"id": 1}, lowbalance_subject="{company_name}",
                     lowbalance_content="<p>{company_name}</p>")
    queue(database, settings, [notice(company_name=EVIL)])
    result = delivery.deliver(database, settings, now=NOW)
    assert result.sent == 1
    [got] = smtp.messages
    assert got.rcpt_tos == ["billing@client.example"]
    assert got.message["Bcc"] is None and got.message["Subject"] == "X Bcc: evil@example.com"


def test_non_ascii_subject_and_body_round_trip(database, settings, conn, smtp) -> None:
    name = "深圳市通讯有限公司 — Ünïcødé"
    mail = build(notice(company_name=name))
    msg = parse(mail.raw)
    assert name in msg["Subject"]
    assert all(b < 128 for b in mail.raw)  # 7-bit on the wire: encoded words, base64/qp
    html = msg.get_body(("html",)).get_content()
    assert name in html and name in msg.get_body(("plain",)).get_content()

    factories.system(conn)
    queue(database, settings, [notice(company_name=name)])
    delivery.deliver(database, settings, now=NOW)
    [got] = smtp.messages
    assert name in got.message["Subject"]
    assert name in got.message.get_body(("html",)).get_content()
    [row] = email_log(conn)
    assert name in row["subject"]


def test_structure_date_and_stable_message_id() -> None:
    n = notice("usage_summary:42:2026-03-01")
    a, b = build(n), build(n)
    msg = parse(a.raw)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in msg.iter_parts())
    assert msg["Date"].datetime == NOW
    assert a.message_id == b.message_id == msg["Message-ID"]
    assert "usage_summary.42.2026-03-01" in a.message_id
    assert a.message_id.endswith("@carrier.example>")
    assert build(notice("usage_summary:42:2026-03-02")).message_id != a.message_id
    assert msg["Auto-Submitted"] == "auto-generated"


def test_recipients_split_validated_and_deduplicated(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="dnl_ad.mail.message")
    n = notice(recipients=" a@client.example;b@client.example , not-an-address;; "
                          "Billing Dept <c@client.example>, A@client.example, x@nodot",
               client_id=77)
    mail = build(n, lowbalance_cc="noc@carrier.example; bad cc; b@client.example")
    assert mail.to == ["a@client.example", "b@client.example", "c@client.example"]
    assert mail.cc == ["noc@carrier.example"]
    assert set(mail.rejected) == {"not-an-address", "x@nodot", "bad cc"}
    msg = parse(mail.raw)
    assert msg["Cc"] == "noc@carrier.example"
    lines = [r.getMessage() for r in caplog.records]
    assert any("low_balance client 77" in line and "'not-an-address'" in line for line in lines)
    assert any("'bad cc'" in line for line in lines)


def test_extra_recipients_are_added() -> None:
    from dataclasses import replace
    n = replace(notice(), extra_recipients=("finance@carrier.example",))
    assert build(n).to == ["billing@client.example", "finance@carrier.example"]


def test_sender_choice() -> None:
    assert build(notice(), lowbalance_from="3").from_addr == "sender3@carrier.example"
    assert build(notice(), lowbalance_from="default").from_addr == "billing@carrier.example"
    assert build(notice(), lowbalance_from="99").from_addr == "billing@carrier.example"
    cfg = MailConfig({}, {}, {"fromemail": ""}, REPO / "templates", default_from="ini@x.example")
    n = notice()
    assert mail_message.build(n, render_notice(n, cfg), cfg).from_addr == "ini@x.example"


def test_no_valid_recipient_is_recorded_failed_not_sent(database, settings, conn, smtp) -> None:
    factories.system(conn)
    pipeline = queue(database, settings, [notice(recipients="nobody-at-all; ,"),
                                          notice("k2", recipients=None)])
    assert pipeline.failed == 2 and pipeline.queued == 0
    rows = outbox_rows(conn)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert "no valid recipient" in rows[0]["last_error"]
    logs = email_log(conn)
    assert [r["status"] for r in logs] == [1, 1]
    assert "no valid recipient" in logs[0]["error"] and logs[0]["type"] == 1
    assert delivery.deliver(database, settings, now=NOW).total == 0
    assert smtp.messages == []


def test_write_eml(tmp_path) -> None:
    mail = build(notice())
    path = mail_message.write_eml(mail, tmp_path / "out")
    assert path.read_bytes() == mail.raw and path.suffix == ".eml"


@pytest.mark.parametrize("subject, text, html", [
    ("Low balance: acme", "Balance 12.50 USD\n", "<p>Balance 12.50&nbsp;USD</p>\n"),
    ("Ünïcode and a long subject " * 6, "", "<p>" + "x" * 500 + "</p>"),
    ("=?utf-8?b?bG9vaw==?= alike", "名前 " * 200, "<b>é</b>\r\n" * 40),
])
def test_mime_body_is_what_the_compat32_classes_write(subject, text, html) -> None:
    """The hand-assembled body is byte for byte the email package's own."""
    from email.header import Header
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.policy import compat32

    from dnl_ad.mail.message import _needs_encoding, mime_body

    value = Header(subject, "utf-8") if _needs_encoding(subject) else subject
    headers = [("Subject", value), ("Date", "Sat, 21 Nov 2026 10:00:00 +0000"),
               ("Message-ID", "<k.1@carrier.example>"), ("Auto-Submitted", "auto-generated")]
    # a short boundary, and full-width ones as _boundary() makes them (their Content-Type
    # header comes folded from a model)
    for boundary in ("===============0123456789==", mail_message._boundary(),
                     "=" * 15 + "0" * len(mail_message._boundary()[15:-2]) + "=="):
        msg = MIMEMultipart("alternative", boundary=boundary)
        for name, v in headers:
            msg[name] = v
        msg.attach(MIMEText(text, "plain", "utf-8"))
        msg.attach(MIMEText(html, "html", "utf-8"))
        expected = msg.as_bytes(policy=compat32.clone(linesep="\r\n"))
        assert mime_body(headers, text, html, boundary=boundary) == expected


@pytest.mark.parametrize("candidate", [
    "a@b.example", "first.last+tag@sub.domain.example", "o'neil@x.example",
    "a{b}|c~d=e@x-y.example", "a..b@x.example", ".a@x.example", "a.@x.example",
    "a@x", "a@-x.example", "a@x-.example", "a@x..example", "@x.example", "a@",
    "A@X.EXAMPLE", "a" * 250 + "@x.example", "a@" + "b" * 64 + ".example",
])
def test_the_plain_address_shortcut_agrees_with_the_parser(candidate: str,
                                                           monkeypatch) -> None:
    """_parse skips the email parser for a bare ASCII address; the answer is the same as
    the parser's path gives (the shortcut switched off)."""
    fast = mail_message._parse.__wrapped__(candidate)
    monkeypatch.setattr(mail_message, "_ADDRESS", re.compile(r"(?!)"))  # never matches
    assert fast == mail_message._parse.__wrapped__(candidate)


@pytest.mark.parametrize("subject", [
    "Daily usage summary for Company 1: 2026-11-20 00:00:00 to 2026-11-20 23:59:59",
    "Low balance: acme", "word " * 40, "x" * 70 + " " + "y" * 70 + " z",
    "Trunk in-1, in-2; in-3 suspended: rate deck 2026-11-20 not downloaded by 23:59:59 GMT",
])
def test_a_long_ascii_subject_is_folded_at_its_spaces(subject: str) -> None:
    """Every line within 78 characters where the words allow, and a reader gets the
    subject back exactly (compat32's cheaper stand-in: fold_at_spaces)."""
    mail = build(notice(), lowbalance_subject=subject)
    head = mail.raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    lines = head.split("\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Subject: "))
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        end += 1
    folded = lines[start:end]
    # longer only where one word does not fit beside the header name
    assert all(len(line) <= 78 or len(line.removeprefix("Subject:").split()) == 1
               for line in folded)
    assert "".join(folded)[len("Subject: "):] == " ".join(subject.split())
    parsed = email.message_from_bytes(mail.raw, policy=email.policy.default)
    assert parsed["Subject"] == " ".join(subject.split())
