"""SMTP settings as the DNL v5 UI stores them: smtp_secure 0-3, loginemail, smtpport text."""

from __future__ import annotations

import logging

import pytest

from dnl_ad import delivery
from dnl_ad.config import Settings
from dnl_ad.mail import smtp as mail_smtp
from tests.mail_helpers import NOW, notice, outbox_rows, queue
from tests.smtp_v5 import v5_system

V5 = {"smtphost": "mx.example", "emailusername": "u", "emailpassword": "p"}


@pytest.mark.parametrize(("system", "expected"), [
    ({"smtp_secure": 0, "smtpport": "25"}, (25, "auto")),
    ({"smtp_secure": 0, "smtpport": ""}, (25, "auto")),
    ({"smtp_secure": 1, "smtpport": "587"}, (587, "starttls")),
    ({"smtp_secure": 1, "smtpport": ""}, (587, "starttls")),
    ({"smtp_secure": 2, "smtpport": ""}, (465, "ssl")),
    ({"smtp_secure": 2, "smtpport": "2465"}, (2465, "ssl")),
    ({"smtp_secure": None, "smtpport": "465"}, (465, "ssl")),
    ({"smtp_secure": "1", "smtpport": " 2525 "}, (2525, "starttls")),
])
def test_v5_smtp_secure_and_port(system, expected) -> None:
    cfg = mail_smtp.resolve(Settings(), {**V5, **system})
    assert (cfg.port, cfg.security) == expected


def test_v5_ntlm_is_said_once_and_means_starttls_when_offered_with_auth(caplog) -> None:
    caplog.set_level(logging.WARNING)
    mail_smtp._ntlm_warned.clear()
    for _ in range(3):
        cfg = mail_smtp.resolve(Settings(), {**V5, "smtp_secure": 3, "smtpport": "25"})
    assert (cfg.security, cfg.user) == ("auto", "u")
    assert sum("NTLM" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(("loginemail", "user"), [
    ("true", "u"), ("false", ""), ("FALSE", ""), (None, "u"), ("", "u")])
def test_v5_loginemail_decides_whether_to_auth(loginemail, user) -> None:
    cfg = mail_smtp.resolve(Settings(), {**V5, "loginemail": loginemail})
    assert cfg.user == user and (cfg.password == "p") == bool(user)


def test_loginemail_false_sends_without_auth_end_to_end(database, settings, conn,
                                                        smtp) -> None:
    """The sink offers no AUTH: a stored username with loginemail 'false' must not make
    delivery try to log in (it would fail every run)."""
    v5_system(conn, smtphost=smtp.host, smtpport=str(smtp.port), smtp_secure=0,
              loginemail="false", emailusername="alerts", emailpassword="pw")
    queue(database, settings, [notice()])
    from_db = settings.replace(smtp_host="", smtp_port=0, smtp_security="")
    assert delivery.deliver(database, from_db, now=NOW).sent == 1
    assert len(smtp.messages) == 1 and outbox_rows(conn)[0]["status"] == "sent"


@pytest.mark.parametrize("raw", [
    b"Subject: plain\r\n\r\nno line starts with a dot\r\n",
    b"Subject: dots\r\n\r\n.a line with a leading dot\r\n..two\r\n.\r\nend\r\n",
    b".first line\r\n\r\nbody without a final line break",
])
def test_mail_rcpt_and_data_reach_the_server_intact(smtp, raw: bytes) -> None:
    """The session's own MAIL/RCPT/DATA (no per-message parsing, dot-stuffing only when
    a line starts with '.') deliver exactly what smtplib's would."""
    config = mail_smtp.SmtpConfig(smtp.host, smtp.port, "none")
    with mail_smtp.Session(config) as session:
        result = session.send("from@carrier.example", ["a@client.example",
                                                       "b+tag@client.example"], raw)
    assert {r: code for r, (code, _) in result.replies.items()} == {
        "a@client.example": 250, "b+tag@client.example": 250}
    got = smtp.messages[0]
    assert got.mail_from == "from@carrier.example"
    assert got.rcpt_tos == ["a@client.example", "b+tag@client.example"]
    expected = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
    assert got.raw == expected
