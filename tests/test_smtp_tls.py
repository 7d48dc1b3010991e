"""SMTP security against a TLS-enabled aiosmtpd: STARTTLS + AUTH, implicit TLS,
certificate verification, and where the SMTP settings come from."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator

import pytest
import trustme
from aiosmtpd.smtp import AuthResult, LoginPassword

from dnl_ad import delivery
from dnl_ad.config import Settings
from dnl_ad.devtools.smtp_sink import SmtpSink
from dnl_ad.mail import smtp as mail_smtp
from tests import factories
from tests.mail_helpers import NOW, email_log, notice, outbox_rows, queue


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture
def trust_ca(ca: trustme.CA, tmp_path, monkeypatch) -> None:
    """Trust the test CA the standard way (SSL_CERT_FILE), as an operator with a
    private CA would."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


class Logins:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts"
              and auth_data.password == b"s3cret")
        self.seen.append((auth_data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def logins() -> Logins:
    return Logins()


@pytest.fixture
def starttls_sink(server_ctx, logins) -> Iterator[SmtpSink]:
    with SmtpSink(tls_context=server_ctx, require_starttls=True, authenticator=logins,
                  auth_require_tls=True, auth_required=True) as sink:
        yield sink


def _settings(settings: Settings, sink: SmtpSink, **changes) -> Settings:
    return settings.replace(smtp_host=sink.host, smtp_port=sink.port, **changes)


def test_starttls_with_auth(database, settings, conn, starttls_sink, logins, trust_ca) -> None:
    factories.system(conn)
    queue(database, settings, [notice("tls:1"), notice("tls:2")])
    cfg = _settings(settings, starttls_sink, smtp_security="starttls", smtp_user="alerts",
                    smtp_password="s3cret")
    result = delivery.deliver(database, cfg, now=NOW)
    assert (result.sent, result.connections) == (2, 1)
    assert len(starttls_sink.messages) == 2
    assert logins.seen == [("alerts", True)]


def test_wrong_password_is_retried_not_failed(database, settings, conn, starttls_sink, logins,
                                              trust_ca, caplog) -> None:
    factories.system(conn)
    queue(database, settings, [notice()])
    cfg = _settings(settings, starttls_sink, smtp_security="starttls", smtp_user="alerts",
                    smtp_password="wrong-pw-123")
    assert delivery.deliver(database, cfg, now=NOW).deferred == 1
    [row] = outbox_rows(conn)
    assert "login as 'alerts' refused" in row["last_error"] and row["status"] == "pending"
    assert row["attempts"] == 0  # our setup, not the notice: nothing charged
    assert "wrong-pw-123" not in caplog.text and "wrong-pw-123" not in row["last_error"]
    assert starttls_sink.messages == [] and email_log(conn) == []


def test_plain_session_is_refused_by_a_server_requiring_starttls(
        database, settings, conn, starttls_sink) -> None:
    factories.system(conn)
    queue(database, settings, [notice()])
    result = delivery.deliver(database, _settings(settings, starttls_sink), now=NOW)
    assert (result.sent, result.deferred) == (0, 1) and starttls_sink.messages == []
    [row] = outbox_rows(conn)
    assert "530" in row["last_error"] and row["attempts"] == 0  # a setup problem: deferred


def test_unverifiable_certificate_is_refused_unless_verification_is_off(
        database, settings, conn, starttls_sink) -> None:
    # no trust_ca: the server's certificate comes from an unknown CA
    factories.system(conn)
    queue(database, settings, [notice()])
    cfg = _settings(settings, starttls_sink, smtp_security="starttls", smtp_user="alerts",
                    smtp_password="s3cret")
    refused = delivery.deliver(database, cfg, now=NOW)
    assert (refused.sent, refused.deferred) == (0, 1) and starttls_sink.messages == []
    assert "certificate not trusted" in outbox_rows(conn)[0]["last_error"]
    insecure = delivery.deliver(database, cfg.replace(smtp_verify=False),
                                now=NOW + dt.timedelta(hours=1))
    assert insecure.sent == 1 and len(starttls_sink.messages) == 1


def test_implicit_tls(database, settings, conn, server_ctx, trust_ca) -> None:
    factories.system(conn)
    queue(database, settings, [notice()])
    with SmtpSink(ssl_context=server_ctx) as sink:
        result = delivery.deliver(database, _settings(settings, sink, smtp_security="ssl"),
                                  now=NOW)
        assert result.sent == 1 and len(sink.messages) == 1


def test_implicit_tls_with_wrong_hostname_is_refused(database, settings, conn, ca,
                                                     trust_ca) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mail.other.example").configure_cert(ctx)
    factories.system(conn)
    queue(database, settings, [notice()])
    with SmtpSink(ssl_context=ctx) as sink:
        result = delivery.deliver(database, _settings(settings, sink, smtp_security="ssl"),
                                  now=NOW)
        assert result.sent == 0 and sink.messages == []
    assert "certificate not trusted" in outbox_rows(conn)[0]["last_error"]


def test_settings_come_from_system_parameter_unless_the_ini_overrides(
        database, settings, conn, smtp) -> None:
    factories.system(conn, smtphost=smtp.host, smtpport=smtp.port, smtp_secure=0)
    queue(database, settings, [notice()])
    from_db = settings.replace(smtp_host="", smtp_port=0, smtp_security="")
    assert delivery.deliver(database, from_db, now=NOW).sent == 1
    assert len(smtp.messages) == 1


@pytest.mark.parametrize(("ini", "system", "expected"), [
    ({}, {"smtphost": "mx.db.example", "smtpport": 465}, ("mx.db.example", 465, "ssl")),
    ({}, {"smtphost": "mx.db.example", "smtpport": 587}, ("mx.db.example", 587, "starttls")),
    ({}, {"smtphost": "mx", "smtpport": 2525, "smtp_secure": "tls"}, ("mx", 2525, "starttls")),
    ({}, {"smtphost": "mx", "smtpport": None}, ("mx", 25, "auto")),
    ({}, {"smtphost": "mx", "smtpport": 25, "smtp_secure": "none"}, ("mx", 25, "auto")),
    ({"smtp_security": "none"}, {"smtphost": "mx", "smtpport": 25}, ("mx", 25, "none")),
    ({"smtp_host": "ini.example", "smtp_security": "ssl"}, {"smtphost": "mx", "smtpport": 25},
     ("ini.example", 25, "ssl")),
    ({"smtp_port": 2525}, {"smtphost": "mx", "smtpport": 465}, ("mx", 2525, "auto")),
])
def test_resolve(ini, system, expected) -> None:
    cfg = mail_smtp.resolve(Settings(**ini), system)
    assert (cfg.host, cfg.port, cfg.security) == expected


def test_resolve_credentials_and_no_password_in_repr() -> None:
    system = {"smtphost": "mx", "emailusername": "db-user", "emailpassword": "db-pw"}
    cfg = mail_smtp.resolve(Settings(), system)
    assert (cfg.user, cfg.password) == ("db-user", "db-pw")
    assert "db-pw" not in repr(cfg) and "db-pw" not in cfg.where
    cfg = mail_smtp.resolve(Settings(smtp_user="ini-user", smtp_password="ini-pw"), system)
    assert (cfg.user, cfg.password) == ("ini-user", "ini-pw")


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path) -> str:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_starttls_is_used_whenever_offered_with_default_settings(
        database, settings, conn, server_ctx, ca_file) -> None:
    """Port 25, security unset in the ini and 0 in the database: the server offers
    STARTTLS (without requiring it), so the message must go over TLS."""
    factories.system(conn)
    queue(database, settings, [notice()])
    with SmtpSink(tls_context=server_ctx) as sink:
        cfg = _settings(settings, sink, smtp_security="", smtp_ca_file=ca_file)
        assert mail_smtp.resolve(cfg, {"smtp_secure": 0}).security == "auto"
        assert delivery.deliver(database, cfg, now=NOW).sent == 1
        [got] = sink.messages
        assert got.tls


def test_security_none_in_the_ini_is_plain_even_when_starttls_is_offered(
        database, settings, conn, server_ctx) -> None:
    factories.system(conn)
    queue(database, settings, [notice()])
    with SmtpSink(tls_context=server_ctx) as sink:
        assert delivery.deliver(database, _settings(settings, sink), now=NOW).sent == 1
        assert not sink.messages[0].tls


def test_smtp_ca_file_is_trusted(database, settings, conn, starttls_sink, logins,
                                 ca_file) -> None:
    factories.system(conn)
    queue(database, settings, [notice()])
    cfg = _settings(settings, starttls_sink, smtp_security="starttls", smtp_user="alerts",
                    smtp_password="s3cret", smtp_ca_file=ca_file)
    assert delivery.deliver(database, cfg, now=NOW).sent == 1
    assert starttls_sink.messages[0].tls and logins.seen == [("alerts", True)]


def test_no_password_in_the_clear_unless_allowed(database, settings, conn, logins,
                                                 caplog) -> None:
    """A server without STARTTLS that would take AUTH in the clear: dnl_ad must refuse
    to send the password there (nothing charged), unless SMTP_ALLOW_PLAIN_AUTH=true."""
    factories.system(conn)
    queue(database, settings, [notice()])
    with SmtpSink(authenticator=logins, auth_require_tls=False) as sink:
        cfg = _settings(settings, sink, smtp_security="", smtp_user="alerts",
                        smtp_password="s3cret")
        refused = delivery.deliver(database, cfg, now=NOW)
        assert (refused.sent, refused.deferred) == (0, 1) and logins.seen == []
        [row] = outbox_rows(conn)
        assert "in the clear" in row["last_error"] and row["attempts"] == 0
        assert "s3cret" not in caplog.text
        allowed = delivery.deliver(database, cfg.replace(smtp_allow_plain_auth=True),
                                   now=NOW + dt.timedelta(hours=1))
        assert allowed.sent == 1 and logins.seen == [("alerts", True)]


def test_a_server_requiring_starttls_that_rate_limits_and_closes_now_and_then(
        database, settings, conn, server_ctx, ca_file) -> None:
    """As a real MTA behaves: 530 before STARTTLS, `450 4.7.1` after 4 messages in a
    session, 421 on every 9th MAIL. Default security (STARTTLS when offered): every
    notice delivered over TLS, none lost or twice, no attempt charged for a 421 or a
    rate-limit answer."""
    factories.system(conn)
    n = 40
    queue(database, settings, [notice(f"mta:{i}", recipients=f"r{i}@x.example")
                               for i in range(n)])
    with SmtpSink(tls_context=server_ctx, require_starttls=True) as sink:
        sink.rate_limit(4)
        sink.close_every(9)
        cfg = _settings(settings, sink, smtp_security="", smtp_ca_file=ca_file)
        now = NOW
        for _ in range(60):
            delivery.deliver(database, cfg, now=now)
            now += dt.timedelta(seconds=10)
        got = list(sink.messages)
        refusals = list(sink.handler.refusals)
    assert len(got) == n and all(m.tls for m in got)
    assert len({m.message["Message-ID"] for m in got}) == n
    assert any(r.startswith("450 4.7.1") for r in refusals)
    assert any(r.startswith("421") for r in refusals)
    rows = outbox_rows(conn)
    assert {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}
    assert len(email_log(conn)) == n
