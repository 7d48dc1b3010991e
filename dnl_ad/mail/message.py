"""MIME messages: a rendered notice -> the exact bytes the outbox stores and SMTP sends.

multipart/alternative (text, then HTML), UTF-8 throughout, Date = the notice's decision
instant, Message-ID derived from the dedupe key so a retry sends the same message. Header
text loses CR/LF and other control characters before it reaches a header, so template
or client data can never add a header. Addresses are parsed with email.utils and checked
against a plain syntax; invalid ones are dropped with a log line naming the alert, the
client and the address.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, getaddresses
from pathlib import Path

from ..notice import Notice
from .render import MailConfig, Rendered

log = logging.getLogger(__name__)

# A pragmatic address syntax: dot-atom local part, a domain with at least one dot.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})+")
_WIRE = compat32.clone(linesep="\r\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")


@dataclass(frozen=True)
class Mail:
    """One message as the outbox stores it. `to`/`cc` hold valid addresses only;
    `rejected` the ones dropped; `error` says why the notice cannot be sent at all."""

    from_addr: str
    to: list[str]
    cc: list[str]
    subject: str
    text: str
    html: str
    message_id: str
    raw: bytes
    rejected: tuple[str, ...] = ()
    error: str = ""

    @property
    def recipients(self) -> list[str]:
        return self.to + self.cc


def clean_header(text: object) -> str:
    """Header-safe text: control characters (CR, LF, NUL, ...) become one space."""
    return " ".join(_CONTROL.sub(" ", str(text or "")).split())


def split_addresses(text: str | None) -> list[str]:
    """billing_email text -> the pieces between `;` and `,` (not yet validated)."""
    return [a.strip() for a in re.split(r"[;,]", text or "") if a.strip()]


def valid_address(candidate: str) -> str | None:
    """The bare address if `candidate` ("a@b.com" or "Name <a@b.com>") is valid, else None."""
    if _CONTROL.search(candidate):
        return None
    parsed = getaddresses([candidate])
    if len(parsed) != 1:
        return None
    addr = parsed[0][1].strip()
    if not addr or len(addr) > 254 or not _ADDRESS.fullmatch(addr):
        return None
    return addr


def _addresses(pieces: list[str], notice: Notice, field: str,
               seen: set[str], rejected: list[str]) -> list[str]:
    good = []
    for piece in pieces:
        addr = valid_address(piece)
        if addr is None:
            rejected.append(piece)
            log.warning("%s client %s: invalid %s address %r dropped (key %s)", notice.kind,
                        notice.client_id, field, piece, notice.dedupe_key)
            continue
        if addr.lower() not in seen:
            seen.add(addr.lower())
            good.append(addr)
    return good


def message_id(dedupe_key: str, from_addr: str) -> str:
    """<readable-key.hash@domain>: the same for every retry of the same notice."""
    readable = re.sub(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+", ".", dedupe_key).strip(".")[:64]
    digest = hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:16]
    domain = from_addr.rpartition("@")[2] if "@" in from_addr else "dnl-ad.invalid"
    return f"<{readable or 'notice'}.{digest}@{domain}>"


def sender(rendered: Rendered, config: MailConfig) -> str:
    """mail_sender via the template's _from id, else system_parameter.fromemail, else
    the ini's SMTP_FROM; the first that is a valid address."""
    from_id = (rendered.from_id or "").strip()
    candidates = []
    if from_id and from_id.lower() != "default":
        # a mail_sender id; traffic_alert.mail_from may hold an address itself
        candidates.append(config.senders.get(from_id) or (from_id if "@" in from_id else ""))
    candidates += [config.system.get("fromemail") or "", config.default_from or ""]
    for candidate in candidates:
        addr = valid_address(str(candidate).strip())
        if addr:
            return addr
    return ""


def build(notice: Notice, rendered: Rendered, config: MailConfig) -> Mail:
    """The MIME message for one rendered notice (never raises for bad data)."""
    from_addr = sender(rendered, config)
    seen: set[str] = set()
    rejected: list[str] = []
    to = _addresses(split_addresses(notice.recipients)
                    + [p for extra in notice.extra_recipients for p in split_addresses(extra)],
                    notice, "To", seen, rejected)
    cc = _addresses(split_addresses(rendered.cc), notice, "Cc", seen, rejected)
    subject = clean_header(rendered.subject)
    mid = message_id(notice.dedupe_key, from_addr)

    error = ""
    if not from_addr:
        error = ("no valid sender address (template _from / mail_sender, "
                 "system_parameter.fromemail, SMTP_FROM)")
    elif not to and not cc:
        error = "no valid recipient in " + (repr(notice.recipients) if notice.recipients
                                            else "an empty billing_email")

    # The legacy (compat32) MIME classes: several times faster than EmailMessage, which
    # matters when a sweep renders thousands of notices in one transaction.
    msg = MIMEMultipart("alternative")
    msg["From"] = from_addr or "undisclosed-sender:;"
    msg["To"] = ", ".join(to) if to else "undisclosed-recipients:;"
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")
    msg["Date"] = format_datetime(notice.decided_at)
    msg["Message-ID"] = mid
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-DNL-AD-Kind"] = clean_header(notice.kind)
    msg.attach(MIMEText(rendered.text, "plain", "utf-8"))
    msg.attach(MIMEText(rendered.html, "html", "utf-8"))
    raw = msg.as_bytes(policy=_WIRE)
    return Mail(from_addr, to, cc, subject, rendered.text, rendered.html, mid, raw,
                tuple(rejected), error)


def write_eml(mail: Mail, directory: Path) -> Path:
    """Dry run: the message as an .eml file named after its Message-ID."""
    directory.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", mail.message_id.strip("<>")) + ".eml"
    path = directory / name
    path.write_bytes(mail.raw)
    return path
