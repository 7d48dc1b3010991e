"""`check` goes as far as MAIL FROM and RSET, so it sees what a real MTA refuses only
there (530 STARTTLS first) or at HELO (504 need fully-qualified hostname); the HELO
name is SMTP_HELO_NAME (default this host's FQDN), in check and in delivery alike."""

from __future__ import annotations

from dnl_ad import check, delivery
from dnl_ad.config import Settings
from dnl_ad.devtools.smtp_sink import SmtpSink
from dnl_ad.mail import smtp as mail_smtp
from tests import factories
from tests.mail_helpers import NOW, notice, queue
from tests.test_smtp_tls import ca, server_ctx  # noqa: F401  (fixtures)

SYSTEM = {"fromemail": "billing@carrier.example"}


def _cfg(sink: SmtpSink, **changes) -> Settings:
    return Settings(smtp_host=sink.host, smtp_port=sink.port, **changes)


def test_check_sees_530_starttls_first_at_mail_from(server_ctx) -> None:  # noqa: F811
    with SmtpSink(tls_context=server_ctx, require_starttls=True) as sink:
        row = check.check_smtp(_cfg(sink, smtp_security="none"), SYSTEM)
    assert row.status == check.FAIL
    assert "MAIL FROM:<billing@carrier.example> refused: 530" in row.detail


def test_check_sees_a_refused_helo_name(smtp) -> None:
    smtp.reply_to_helo("504 5.5.2 <vm>: Helo command rejected: need fully-qualified hostname")
    row = check.check_smtp(_cfg(smtp, smtp_helo_name="vm"), SYSTEM)
    assert row.status == check.FAIL
    assert "EHLO/HELO vm refused" in row.detail and "need fully-qualified" in row.detail
    assert "SMTP_HELO_NAME" in row.detail


def test_check_passes_and_says_what_it_did(smtp) -> None:
    row = check.check_smtp(_cfg(smtp, smtp_helo_name="mail.carrier.example"), SYSTEM)
    assert row.status == check.OK, row.detail
    assert "EHLO as mail.carrier.example" in row.detail and "RSET ok" in row.detail
    assert "without TLS" in row.detail


def test_delivery_says_smtp_helo_name(database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice()])
    cfg = settings.replace(smtp_helo_name="mail.carrier.example")
    assert delivery.deliver(database, cfg, now=NOW).sent == 1
    assert smtp.messages[0].helo == "mail.carrier.example"


def test_default_helo_name_is_the_fqdn() -> None:
    import socket

    assert mail_smtp.default_helo_name() == (socket.getfqdn() or socket.gethostname())
    assert mail_smtp.resolve(Settings(), {}).helo_name == ""


def test_check_names_a_missing_smtp_ca_file(smtp, tmp_path) -> None:
    row = check.check_smtp(_cfg(smtp, smtp_ca_file=str(tmp_path / "nope.pem")), SYSTEM)
    assert row.status == check.FAIL and "SMTP_CA_FILE=" in row.detail


def test_check_says_tls_when_starttls_was_used(server_ctx, ca, tmp_path) -> None:  # noqa: F811
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    with SmtpSink(tls_context=server_ctx, require_starttls=True) as sink:
        row = check.check_smtp(_cfg(sink, smtp_ca_file=str(path)), SYSTEM)
    assert row.status == check.OK and "over TLS" in row.detail, row.detail
