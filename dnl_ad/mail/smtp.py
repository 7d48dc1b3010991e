"""SMTP: one session per delivery batch, per-recipient results, reconnect on a drop.

Where the settings come from: the ini (SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASSWORD,
SMTP_SECURITY) wins, field by field, over the provider's system_parameter as the DNL v5
UI stores it (smtphost, smtpport varchar, emailusername, emailpassword, smtp_secure
integer 0 none / 1 STARTTLS / 2 SSL / 3 NTLM, loginemail 'true'/'false' = whether to
AUTH at all). Security: 'ssl' = implicit TLS, 'starttls', 'auto' (STARTTLS when the
server offers it) or 'none'; when neither names it, port 465 means ssl and 587
starttls. NTLM is not supported: 3 is logged once and treated as 'auto' with AUTH.
STARTTLS is used whenever the server offers it, unless SMTP_SECURITY=none; AUTH without
TLS is refused unless SMTP_ALLOW_PLAIN_AUTH=true. Certificates are verified (SMTP_VERIFY)
against SMTP_CA_FILE when set, else the system CA store (or SSL_CERT_FILE).
"""

from __future__ import annotations

import functools
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings

log = logging.getLogger(__name__)

# system_parameter.smtp_secure / mail_sender.secure: v5 stores 0-3; older databases text
# (the provider's "none" means "no TLS required": STARTTLS is still used when offered)
_SECURE_ALIASES = {"ssl": "ssl", "tls": "starttls", "starttls": "starttls", "none": "auto",
                   "": "", "0": "auto", "1": "starttls", "2": "ssl", "3": "ntlm"}
_ntlm_warned: set[str] = set()


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # none | auto | starttls | ssl
    user: str = ""
    password: str = field(default="", repr=False)
    verify: bool = True
    timeout: float = 30.0
    ca_file: str = ""            # SMTP_CA_FILE: trust this CA (else the system store)
    allow_plain_auth: bool = False  # SMTP_ALLOW_PLAIN_AUTH: AUTH without TLS
    helo_name: str = ""          # SMTP_HELO_NAME (empty: this host's FQDN)

    @property
    def key(self) -> str:
        """Which server this is, for the server-wide backoff (host:port:user)."""
        return f"{self.host}:{self.port}:{self.user}"

    @property
    def where(self) -> str:
        """host:port (security) for log lines; never the password."""
        security = "starttls when offered" if self.security == "auto" else self.security
        return f"{self.host}:{self.port} ({security}{', auth' if self.user else ''})"


def _system_port(raw: Any) -> int:
    """system_parameter.smtpport as a port number (0: not set); SessionError when it is
    something else, so delivery claims nothing and says why."""
    text = "" if raw is None else str(raw).strip()
    if not text:
        return 0
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SessionError(f"system_parameter.smtpport={raw!r} is not a port number; "
                           "fix it or set SMTP_PORT")
    return int(text)


def _security(raw: Any, where: str) -> str:
    """smtp_secure / secure (0-3 or legacy text) -> none | starttls | ssl | auto | ''."""
    text = "" if raw is None else str(raw).strip().lower()
    security = _SECURE_ALIASES.get(text, "")
    if security == "ntlm":
        if where not in _ntlm_warned:
            _ntlm_warned.add(where)
            log.warning("%s=3 (NTLM) is not supported: using STARTTLS when the server "
                        "offers it, and AUTH PLAIN/LOGIN", where)
        security = "auto"
    return security


def _wants_login(raw: Any) -> bool:
    """loginemail: 'false' (any case) means never AUTH, whatever username is stored."""
    if raw is None:
        return True
    return str(raw).strip().lower() not in {"false", "0", "f", "no"}


def resolve(settings: Settings, system: Mapping[str, Any]) -> SmtpConfig:
    """The effective SMTP settings: ini fields override system_parameter fields."""
    host = settings.smtp_host or str(system.get("smtphost") or "").strip() or "localhost"
    port = settings.smtp_port or _system_port(system.get("smtpport"))
    security = settings.smtp_security or _security(system.get("smtp_secure"),
                                                   "system_parameter.smtp_secure")
    if not security:
        security = {465: "ssl", 587: "starttls"}.get(port, "auto")
    if not port:
        port = {"ssl": 465, "starttls": 587}.get(security, 25)
    if settings.smtp_user:
        user, password = settings.smtp_user, settings.smtp_password
    elif _wants_login(system.get("loginemail")):
        user = str(system.get("emailusername") or "").strip()
        password = settings.smtp_password or str(system.get("emailpassword") or "")
    else:
        user, password = "", ""
    return SmtpConfig(host, port, security, user, password, settings.smtp_verify,
                      float(settings.smtp_timeout_seconds), settings.smtp_ca_file,
                      settings.smtp_allow_plain_auth, settings.smtp_helo_name)


@functools.lru_cache(maxsize=1)
def default_helo_name() -> str:
    """This host's fully qualified name (once per process: the lookup may be slow); a
    real MTA may refuse a bare host name in HELO (`504 need fully-qualified hostname`)."""
    return socket.getfqdn() or socket.gethostname() or "localhost"


def _hello(smtp: smtplib.SMTP, c: SmtpConfig, name: str) -> None:
    """EHLO, else HELO; SessionError naming the name we used when both are refused."""
    code, msg = smtp.ehlo()
    if code == 250:
        return
    ehlo = _reply_text(code, msg)
    if code == 421 or not 500 <= code < 600:  # closing, or busy: no point saying HELO
        raise SessionError(f"SMTP {c.where}: EHLO {name} answered {ehlo}")
    code, msg = smtp.helo()
    if code != 250:
        raise SessionError(f"SMTP {c.where}: EHLO/HELO {name} refused: {ehlo}; "
                           f"{_reply_text(code, msg)} (set SMTP_HELO_NAME to a fully "
                           "qualified name the server accepts)")


def resolve_sender(settings: Settings, sender: Mapping[str, Any]) -> SmtpConfig:
    """A mail_sender row's own server (smtp_host, smtp_port, secure, username, password,
    loginemail), with the ini's TLS, timeout and HELO settings; the ini's SMTP_HOST and
    friends are for the default server only."""
    host = str(sender.get("smtp_host") or "").strip()
    where = f"mail_sender {sender.get('id')}"
    port_text = str(sender.get("smtp_port") or "").strip()
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
        raise SessionError(f"{where}: smtp_port={sender.get('smtp_port')!r} is not a port "
                           "number")
    port = int(port_text) if port_text else 0
    security = _security(sender.get("secure"), f"{where} secure")
    if not security:
        security = {465: "ssl", 587: "starttls"}.get(port, "auto")
    if not port:
        port = {"ssl": 465, "starttls": 587}.get(security, 25)
    login = _wants_login(sender.get("loginemail"))
    user = str(sender.get("username") or "").strip() if login else ""
    password = str(sender.get("password") or "") if user else ""
    return SmtpConfig(host, port, security, user, password, settings.smtp_verify,
                      float(settings.smtp_timeout_seconds), settings.smtp_ca_file,
                      settings.smtp_allow_plain_auth, settings.smtp_helo_name)


class SessionError(Exception):
    """The session cannot be (re)established: connect, TLS, certificate or AUTH failed.
    Every message still waiting in the batch is retried later."""


@dataclass(frozen=True)
class SendResult:
    """Per-recipient replies for one message: address -> (code, text).

    `connection_lost` is set when the connection failed while this message was in hand
    (after its RCPTs were answered): recipients without a reply then count as not
    delivered (retried later, one attempt charged). `trouble` says the server as a whole
    cannot go on (421 to RSET, a dropped connection): the message's own outcome stands,
    and the caller stops the session and backs the whole delivery off.
    """

    replies: dict[str, tuple[int, str]]
    connection_lost: str = ""
    trouble: str = ""


class ServerTrouble(SessionError):
    """The server answered for itself, not for the message in hand: 421 (closing), a
    rate limit (a 4xx to MAIL FROM, or enhanced status 4.7.x / 4.5.3), or the connection
    dropped before the message was answered. No attempt is charged to that message."""


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def server_wide(code: int, text: str) -> bool:
    """A 4xx that speaks for the whole server (rather than one recipient or message):
    421, or an enhanced status 4.7.x (policy / rate limit) or 4.5.3 (too many)."""
    if code == 421:
        return True
    if not 400 <= code < 500:
        return False
    m = _ENHANCED.match(text.partition(" ")[2] if text[:3].isdigit() else text)
    return bool(m) and (m.group(2) == "7" or (m.group(2), m.group(3)) == ("5", "3"))


def tls_context(verify: bool, ca_file: str = "") -> ssl.SSLContext:
    """Certificates and host names verified (against `ca_file` when given, else the
    system store or SSL_CERT_FILE) unless `verify` is off."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _reply_text(code: int, msg: bytes | str) -> str:
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return f"{code} {' '.join(text.split())}".strip()


# MAIL, RCPT and DATA as smtplib sends them, without its per-message parsing: the outbox
# holds addresses already validated and normalised (mail.message), so smtplib's quoteaddr
# (an email.utils.parseaddr per address) would give "<addr>" back, and a message in which
# no line starts with "." needs no dot-stuffing (smtplib runs a regex over every byte).
# Internationalised addresses (SMTPUTF8) keep smtplib's own commands.

def _mail(smtp: smtplib.SMTP, from_addr: str, options: Sequence[str]) -> tuple[int, bytes]:
    if not from_addr.isascii() or any(o.lower() == "smtputf8" for o in options):
        return smtp.mail(from_addr, options)
    optionlist = " " + " ".join(options) if options and smtp.does_esmtp else ""
    smtp.putcmd("mail", f"FROM:<{from_addr}>{optionlist}")
    return smtp.getreply()


def _rcpt(smtp: smtplib.SMTP, rcpt: str) -> tuple[int, bytes]:
    if not rcpt.isascii():
        return smtp.rcpt(rcpt)
    smtp.putcmd("rcpt", f"TO:<{rcpt}>")
    return smtp.getreply()


def _data(smtp: smtplib.SMTP, raw: bytes) -> tuple[int, bytes]:
    """smtplib.SMTP.data for bytes (SMTPDataError when DATA gets no 354)."""
    if raw.startswith(b".") or b"\n." in raw:
        return smtp.data(raw)
    smtp.putcmd("data")
    code, reply = smtp.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    smtp.send(raw + (b".\r\n" if raw.endswith(b"\r\n") else b"\r\n.\r\n"))
    return smtp.getreply()


class Session:
    """A lazily opened SMTP connection reused for a batch; reopened after a drop."""

    def __init__(self, config: SmtpConfig, max_per_connection: int = 0) -> None:
        self.config = config
        self.connections = 0
        self.max_per_connection = max_per_connection  # SMTP_MAX_PER_SESSION (0: no limit)
        self._sent_here = 0  # messages on the current connection
        self.tls = False  # the last connection runs over TLS
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> smtplib.SMTP:
        c = self.config
        local = c.helo_name or default_helo_name()
        try:
            if c.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, local_hostname=local,
                                                      timeout=c.timeout,
                                                      context=tls_context(c.verify,
                                                                          c.ca_file))
            else:
                smtp = smtplib.SMTP(c.host, c.port, local_hostname=local, timeout=c.timeout)
            try:
                _hello(smtp, c, local)
                tls = c.security == "ssl"
                if c.security == "starttls" or (c.security == "auto"
                                                and smtp.has_extn("starttls")):
                    smtp.starttls(context=tls_context(c.verify, c.ca_file))
                    _hello(smtp, c, local)
                    tls = True
                if c.user and not tls and not c.allow_plain_auth:
                    raise SessionError(
                        f"SMTP {c.where}: refusing to send the password of {c.user!r} "
                        "in the clear (the server offers no STARTTLS); use TLS "
                        "(SMTP_SECURITY=ssl or starttls) or set SMTP_ALLOW_PLAIN_AUTH=true")
                if c.user:
                    smtp.login(c.user, c.password)
            except BaseException:
                _quietly_close(smtp)
                raise
        except ssl.SSLCertVerificationError as exc:
            raise SessionError(f"SMTP {c.where}: certificate not trusted: "
                               f"{exc.verify_message or exc}") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise SessionError(f"SMTP {c.where}: login as {c.user!r} refused: "
                               f"{_reply_text(exc.smtp_code, exc.smtp_error)}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise SessionError(f"SMTP {c.where}: {exc}") from None
        except SessionError:
            raise
        except (OSError, smtplib.SMTPException) as exc:
            raise SessionError(f"SMTP {c.where}: cannot connect: "
                               f"{type(exc).__name__}: {exc}") from None
        self.connections += 1
        self.tls = tls
        log.debug("SMTP connected to %s (connection %d)", c.where, self.connections)
        return smtp

    def probe(self, from_addr: str) -> list[str]:
        """Connect, EHLO, TLS and AUTH exactly as delivery does, then MAIL FROM and RSET
        (a server that wants STARTTLS or AUTH first says so only at MAIL), then hang up;
        returns the extensions the server offers (`dnl-ad check`). Raises SessionError."""
        smtp = self._open()
        try:
            code, msg = smtp.mail(from_addr)
            if code != 250:
                raise SessionError(f"SMTP {self.config.where}: MAIL FROM:<{from_addr}> "
                                   f"refused: {_reply_text(code, msg)}")
            code, msg = smtp.rset()
            if code != 250:
                raise SessionError(f"SMTP {self.config.where}: RSET refused: "
                                   f"{_reply_text(code, msg)}")
            return sorted(smtp.esmtp_features)
        except (OSError, smtplib.SMTPException) as exc:
            raise SessionError(f"SMTP {self.config.where}: {type(exc).__name__}: "
                               f"{exc}") from None
        finally:
            self._smtp = smtp
            self.close()

    def send(self, from_addr: str, recipients: Sequence[str], raw: bytes) -> SendResult:
        """Send one message.

        Raises SessionError when no session can be made, and ServerTrouble when the server
        refuses for itself before answering about this message (421, rate limit, a drop
        before its RCPTs were answered); in both cases no attempt is charged and the
        session is closed.
        """
        if self._smtp is not None and self.max_per_connection and \
                self._sent_here >= self.max_per_connection:
            self.close()  # the relay's limit of messages per session: QUIT, reconnect
        if self._smtp is None:
            self._smtp = self._open()
            self._sent_here = 0
        self._sent_here += 1
        smtp = self._smtp
        where = self.config.where
        replies: dict[str, tuple[int, str]] = {}
        answered = False  # has the server said anything about this message's recipients?
        try:
            options = [f"SIZE={len(raw)}"] if smtp.has_extn("size") else []
            if not from_addr.isascii() or any(not r.isascii() for r in recipients):
                if not smtp.has_extn("smtputf8"):
                    why = (f"553 5.6.7 not sent: an internationalised address needs "
                           f"SMTPUTF8, which SMTP {where} does not offer")
                    return SendResult({r: (553, why) for r in recipients})
                options += ["SMTPUTF8"] + (["BODY=8BITMIME"] if smtp.has_extn("8bitmime")
                                           else [])
            code, msg = _mail(smtp, from_addr, options)
            text = _reply_text(code, msg)
            if code == 530:  # "authentication / STARTTLS required": our setup, not the mail
                self.close()
                raise SessionError(f"SMTP {where}: the server wants "
                                   f"{'STARTTLS or ' if self.config.security != 'starttls' else ''}"
                                   f"AUTH first: {text}")
            if 400 <= code < 500:  # a 4xx to MAIL FROM is about us, not the message
                self.close()
                raise ServerTrouble(f"SMTP {where}: MAIL FROM refused for now: {text}")
            if code != 250:
                replies = {r: (code, text) for r in recipients}
                return SendResult(replies, trouble=self._reset())
            accepted = []
            for rcpt in recipients:
                code, msg = _rcpt(smtp, rcpt)
                text = _reply_text(code, msg)
                if server_wide(code, text):
                    self.close()
                    raise ServerTrouble(f"SMTP {where}: RCPT TO refused for now: {text}")
                answered = True
                if 200 <= code < 300:  # 250, 251, or a stray 2xx: accepted all the same
                    accepted.append(rcpt)
                else:
                    replies[rcpt] = (code, text)
            if not accepted:
                return SendResult(replies, trouble=self._reset())
            try:
                code, msg = _data(smtp, raw)
            except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
                if not 400 <= exc.smtp_code < 600:
                    raise
                code, msg = exc.smtp_code, exc.smtp_error
            text = _reply_text(code, msg)
            if server_wide(code, text):
                self.close()
                raise ServerTrouble(f"SMTP {where}: message refused for now: {text}")
            for rcpt in accepted:
                replies[rcpt] = (code, text)
            return SendResult(replies, trouble=self._reset() if code != 250 else "")
        except ServerTrouble:
            raise
        except SessionError:
            raise
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self.close()
            lost = f"SMTP {where}: connection lost: {type(exc).__name__}: {exc}"
            if not answered:
                raise ServerTrouble(lost) from None
            return SendResult(replies, connection_lost=lost, trouble=lost)
        except smtplib.SMTPResponseException as exc:
            # a command answered with something unusable: this message is retried later
            self.close()
            text = _reply_text(exc.smtp_code, exc.smtp_error)
            return SendResult(replies, connection_lost=text, trouble=f"SMTP {where}: {text}")

    def _reset(self) -> str:
        """After a refusal: RSET for the next message. Returns '' when the session can go
        on, else why not (RSET answered 421 or anything but 250, or the server is gone);
        the session is then closed. The refusal itself stands either way: a server that
        answers 5xx and then disconnects has still refused the message for good."""
        if self._smtp is None:
            return f"SMTP {self.config.where}: the server closed the connection"
        try:
            code, msg = self._smtp.rset()
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            return f"SMTP {self.config.where}: RSET failed: {type(exc).__name__}: {exc}"
        if code != 250:
            self.close()
            return f"SMTP {self.config.where}: RSET answered {_reply_text(code, msg)}"
        return ""

    def close(self) -> None:
        if self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                _quietly_close(smtp)


def _quietly_close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.close()
    except OSError:
        pass
