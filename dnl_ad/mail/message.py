"""MIME messages: a rendered notice -> the exact bytes the outbox stores and SMTP sends.

multipart/alternative (text, then HTML), UTF-8 throughout, Date = the notice's decision
instant, Message-ID derived from the dedupe key so a retry sends the same message, From
with its display name (mail_sender.name or system_parameter.emailname), Reply-To
(REPLY_TO, else system_parameter.noc_email's first address). Header
text loses CR/LF and other control characters before it reaches a header, so template
or client data can never add a header. Addresses are split outside quotes and angle
brackets (`"Weird, Name" <w@x.com>` is one address), parsed with email.utils and checked
against a plain syntax; invalid ones are dropped with a log line naming the alert, the
client and the address. An internationalised domain is sent in its ASCII (IDNA) form;
an internationalised local part (`名前@例え.jp`) makes the message need SMTPUTF8, which
delivery uses when the server offers it (else the notice fails, saying why). At most
MAX_RECIPIENTS addresses per notice; the rest are logged and dropped.

Headers: the body is assembled here, byte for byte as the compat32 generator writes a
multipart/alternative of two base64 UTF-8 text parts (headers folded by the same policy),
at a fraction of the generator's cost per message; the address
headers are written by us from parsed, validated addresses (one per folded line, UTF-8
as is for SMTPUTF8), and a Subject that is not plain short ASCII, or that holds text
looking like an RFC 2047 encoded word (`=?utf-8?b?...?=`), is itself encoded (folded
encoded words, so a subject over 998 octets is still a valid header and a reader shows
the look-alike as the literal text it is).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import random
import re
import sys
from dataclasses import dataclass
from email.header import Header
from email.policy import compat32
from email.utils import format_datetime, formataddr, getaddresses
from functools import lru_cache
from pathlib import Path

from ..notice import Notice
from .render import MailConfig, Rendered

log = logging.getLogger(__name__)

# A pragmatic address syntax: dot-atom local part, a domain with at least one dot.
# (A non-ASCII local part is checked by _utf8_local; a non-ASCII domain is IDNA-encoded.)
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
    sender_id: str = ""  # the mail_sender id the From came from ("": the default sender)

    @property
    def recipients(self) -> list[str]:
        return self.to + self.cc


def clean_header(text: object) -> str:
    """Header-safe text: control characters (CR, LF, NUL, ...) become one space."""
    return " ".join(_CONTROL.sub(" ", str(text or "")).split())


def split_addresses(text: str | None) -> list[str]:
    """billing_email text -> the pieces between `;` and `,` outside quotes and angle
    brackets (not yet validated)."""
    pieces, current, quoted, angle, escaped = [], [], False, 0, False
    for ch in text or "":
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            angle += 1
        elif ch == ">" and not quoted and angle:
            angle -= 1
        elif ch in ";," and not quoted and not angle:
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


_UTF8_LOCAL_BAD = re.compile(r'[\s()<>\[\]:;@\\,"]')


def _ascii_domain(domain: str) -> str | None:
    """The domain in ASCII (IDNA for an internationalised one), or None when invalid."""
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return domain


@lru_cache(maxsize=1024)  # the same From and Reply-To for every notice of a sweep
def _parse(candidate: str) -> tuple[str, str] | None:
    """(display name, normalised address) when `candidate` is one valid address."""
    if _ADDRESS.fullmatch(candidate):  # a bare ASCII address, as most are: no parser
        return ("", candidate) if len(candidate) <= 254 else None
    if _CONTROL.search(candidate):
        return None
    parsed = getaddresses([candidate])
    if len(parsed) != 1:
        return None
    name, addr = parsed[0][0].strip(), parsed[0][1].strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local:
        return None
    domain = _ascii_domain(domain)
    if domain is None or not re.fullmatch(rf"{_LABEL}(?:\.{_LABEL})+", domain):
        return None
    if local.isascii():
        if not re.fullmatch(_LOCAL, local):
            return None
    elif _UTF8_LOCAL_BAD.search(local) or local.startswith(".") or local.endswith(".") \
            or ".." in local:
        return None
    addr = f"{local}@{domain}"
    if len(addr.encode("utf-8")) > 254:
        return None
    return name, addr


def valid_address(candidate: str) -> str | None:
    """The bare address if `candidate` ("a@b.com" or "Name <a@b.com>") is valid, else None.
    An internationalised domain comes back in its IDNA (ASCII) form."""
    found = _parse(candidate)
    return found[1] if found else None


def needs_smtputf8(addresses: list[str]) -> bool:
    """An address with a non-ASCII local part can only travel with SMTPUTF8."""
    return any(not a.isascii() for a in addresses)


def _addresses(pieces: list[str], notice: Notice, field: str,
               seen: set[str], rejected: list[str]) -> list[tuple[str, str]]:
    good = []
    for piece in pieces:
        found = _parse(piece)
        if found is None:
            rejected.append(piece)
            log.warning("%s client %s: invalid %s address %r dropped (key %s)", notice.kind,
                        notice.client_id, field, piece, notice.dedupe_key)
            continue
        if found[1].lower() not in seen:
            seen.add(found[1].lower())
            good.append(found)
    return good


def _encoded(text: str) -> str:
    """RFC 2047 encoded words for `text` (UTF-8, folded): a reader shows exactly `text`."""
    return Header(text, "utf-8").encode(linesep="\r\n")


def _needs_encoding(text: str) -> bool:
    return (not text.isascii() or "=?" in text
            or any(len(word) > 70 for word in text.split()))


def format_address(name: str, addr: str) -> str:
    """`Name <addr>` for a header: the name quoted, or encoded when it is not plain ASCII
    or looks like an encoded word; the address as is (UTF-8 for SMTPUTF8)."""
    name = clean_header(name)
    if not name:
        return addr
    if _needs_encoding(name):
        return f"{_encoded(name)} <{addr}>"
    return formataddr((name, addr))


def _address_header(field: str, formatted: list[str]) -> bytes:
    """One address header, one address per folded line (never near the 998 limit)."""
    return (f"{field}: " + ",\r\n ".join(formatted) + "\r\n").encode()


def message_id(dedupe_key: str, from_addr: str) -> str:
    """<readable-key.hash@domain>: the same for every retry of the same notice."""
    readable = re.sub(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+", ".", dedupe_key).strip(".")[:64]
    digest = hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:16]
    domain = from_addr.rpartition("@")[2] if "@" in from_addr else "dnl-ad.invalid"
    return f"<{readable or 'notice'}.{digest}@{domain}>"


@lru_cache(maxsize=256)  # one decision instant for every notice of a sweep
def _date_header(when: dt.datetime) -> str:
    return format_datetime(when)


def sender(rendered: Rendered, config: MailConfig) -> str:
    """mail_sender via the template's _from id, else system_parameter.fromemail, else
    the ini's SMTP_FROM; the first that is a valid address."""
    return _sender(rendered, config)[1]


def _sender(rendered: Rendered, config: MailConfig) -> tuple[str, str]:
    """(mail_sender id or "", address) of the notice's From; ("", "") when none is valid."""
    from_id = (rendered.from_id or "").strip()
    candidates = []
    if from_id and from_id.lower() != "default":
        # a mail_sender id; traffic_alert.mail_from may hold an address itself
        if from_id in config.senders:
            candidates.append((from_id, config.senders[from_id]))
        elif "@" in from_id:
            candidates.append(("", from_id))
    candidates += [("", config.system.get("fromemail") or ""), ("", config.default_from or "")]
    for sender_id, candidate in candidates:
        addr = valid_address(str(candidate).strip())
        if addr:
            return sender_id, addr
    return "", ""


def _sender_name(sender_id: str, config: MailConfig) -> str:
    """The From display name: mail_sender.name for a mail_sender, else
    system_parameter.emailname ("Email Sender Name" in the UI)."""
    if sender_id:
        return str((config.sender_rows.get(sender_id) or {}).get("name") or "")
    return str(config.system.get("emailname") or "")


def _reply_to(config: MailConfig) -> str:
    """REPLY_TO (ini), else the first valid address of system_parameter.noc_email."""
    for text in (config.reply_to, config.system.get("noc_email")):
        for piece in split_addresses(str(text or "")):
            found = _parse(piece)
            if found:
                return format_address(*found)
    return ""


def _cap(to: list[tuple[str, str]], cc: list[tuple[str, str]], limit: int,
         notice: Notice, rejected: list[str]) -> tuple[list[tuple[str, str]],
                                                       list[tuple[str, str]]]:
    """At most `limit` recipients (To first); the rest are logged once and dropped."""
    if len(to) + len(cc) <= limit:
        return to, cc
    kept_to = to[:limit]
    kept_cc = cc[:max(limit - len(kept_to), 0)]
    dropped = [a for _, a in to[limit:]] + [a for _, a in cc[len(kept_cc):]]
    rejected.extend(dropped)
    log.warning("%s client %s: %d recipients, more than MAX_RECIPIENTS=%d; not sent to %d "
                "of them: %s%s (key %s)", notice.kind, notice.client_id,
                len(to) + len(cc), limit, len(dropped), ", ".join(dropped[:10]),
                " ..." if len(dropped) > 10 else "", notice.dedupe_key)
    return kept_to, kept_cc


def build(notice: Notice, rendered: Rendered, config: MailConfig) -> Mail:
    """The MIME message for one rendered notice (never raises for bad data)."""
    sender_id, from_addr = _sender(rendered, config)
    seen: set[str] = set()
    rejected: list[str] = []
    to_pairs = _addresses(split_addresses(notice.recipients)
                          + [p for extra in notice.extra_recipients
                             for p in split_addresses(extra)],
                          notice, "To", seen, rejected)
    cc_pairs = _addresses(split_addresses(rendered.cc), notice, "Cc", seen, rejected)
    to_pairs, cc_pairs = _cap(to_pairs, cc_pairs, config.max_recipients,
                              notice, rejected)
    to, cc = [a for _, a in to_pairs], [a for _, a in cc_pairs]
    subject = clean_header(rendered.subject)
    mid = message_id(notice.dedupe_key, from_addr)

    error = ""
    if not from_addr:
        error = ("no valid sender address (template _from / mail_sender, "
                 "system_parameter.fromemail, SMTP_FROM)")
    elif not to and not cc:
        error = "no valid recipient in " + (repr(notice.recipients) if notice.recipients
                                            else "an empty billing_email")

    # The address headers are written by _address_header (see the module docstring).
    head = _address_header("From", [format_address(_sender_name(sender_id, config),
                                                   from_addr) if from_addr
                                    else "undisclosed-sender:;"])
    reply_to = _reply_to(config)
    if reply_to:
        head += _address_header("Reply-To", [reply_to])
    head += _address_header("To", [format_address(n, a) for n, a in to_pairs]
                            or ["undisclosed-recipients:;"])
    if cc:
        head += _address_header("Cc", [format_address(n, a) for n, a in cc_pairs])
    raw = head + mime_body(
        [("Subject", Header(subject, "utf-8") if _needs_encoding(subject) else subject),
         ("Date", _date_header(notice.decided_at)), ("Message-ID", mid),
         ("Auto-Submitted", "auto-generated"), ("X-DNL-AD-Kind", clean_header(notice.kind))],
        rendered.text, rendered.html)
    return Mail(from_addr, to, cc, subject, rendered.text, rendered.html, mid, raw,
                tuple(rejected), error, sender_id)


_PART_HEAD = ('Content-Type: text/{}; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
              "Content-Transfer-Encoding: base64\r\n\r\n")
_TOKEN_WIDTH = len(repr(sys.maxsize - 1))


def _boundary() -> str:
    """A boundary as the email package makes one; it cannot occur in base64 text."""
    return "=" * 15 + f"{random.randrange(sys.maxsize):0{_TOKEN_WIDTH}d}" + "=="


def _base64_part(subtype: str, text: str) -> bytes:
    """The part's head and body in base64 lines of 76 characters, as
    base64.encodebytes writes them (a test compares), CRLF-terminated."""
    encoded = base64.b64encode(text.encode("utf-8"))
    lines = [encoded[i:i + 76] for i in range(0, len(encoded), 76)]
    body = b"\r\n".join(lines) + b"\r\n" if lines else b""
    return _PART_HEAD.format(subtype).encode("ascii") + body


def fold_at_spaces(name: str, value: str, width: int = 78) -> bytes:
    """`name: value` as header lines of at most `width` characters where its words allow,
    folded by a CRLF before a space (RFC 5322 2.2.3), so unfolding gives `value` back
    exactly. For an ASCII value without line breaks; a word longer than a line stays
    whole (a subject's words are at most 70 characters: _needs_encoding). compat32 folds
    such a value too, preferring a break after ';' or ','; at spaces it is ten times
    cheaper, and the subject is the one header that needs it in almost every notice."""
    words = value.split(" ")
    lines, line, used = [], words[0], len(name) + 2
    for word in words[1:]:
        if used + len(line) + 1 + len(word) > width and line.strip():
            lines.append(line)
            line, used = " " + word, 0
        else:
            line += " " + word
    lines.append(line)
    return (f"{name}: " + "\r\n".join(lines) + "\r\n").encode("ascii")


# The Content-Type header folded once for a model boundary: every boundary _boundary()
# makes has the same length and no place to fold in it, so they all fold the same way.
_BOUNDARY_MODEL = "=" * 15 + "7" * _TOKEN_WIDTH + "=="
_CONTENT_TYPE = _WIRE.fold_binary(
    "Content-Type", f'multipart/alternative; boundary="{_BOUNDARY_MODEL}"')


def mime_body(headers: list[tuple[str, str | Header]], text: str, html: str, *,
              boundary: str | None = None) -> bytes:
    """The message from its Content-Type on: exactly what MIMEMultipart("alternative")
    with `headers` and two MIMEText(..., "utf-8") parts (text, then HTML) gives as bytes
    under compat32 with CRLF, without building and walking the message objects."""
    boundary = boundary or _boundary()

    def fold(name: str, value: str | Header) -> bytes:
        # a short ASCII value is written as is, as compat32 does; a longer one is folded
        # at its spaces; the rest (encoded words) compat32 folds
        if isinstance(value, str) and value.isascii() and "\n" not in value \
                and "\r" not in value:
            return fold_at_spaces(name, value)
        return _WIRE.fold_binary(name, value)

    if len(boundary) == len(_BOUNDARY_MODEL):  # as _boundary() makes them: folded alike
        content_type = _CONTENT_TYPE.replace(_BOUNDARY_MODEL.encode(), boundary.encode())
    else:
        content_type = fold("Content-Type", f'multipart/alternative; boundary="{boundary}"')
    head = b"".join([content_type, fold("MIME-Version", "1.0"),
                     *(fold(name, value) for name, value in headers)])
    dash = f"--{boundary}".encode("ascii")
    return b"".join([head, b"\r\n", dash, b"\r\n", _base64_part("plain", text),
                     b"\r\n", dash, b"\r\n", _base64_part("html", html),
                     b"\r\n", dash, b"--\r\n"])


def write_eml(mail: Mail, directory: Path) -> Path:
    """Dry run: the message as an .eml file named after its Message-ID."""
    directory.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", mail.message_id.strip("<>")) + ".eml"
    path = directory / name
    path.write_bytes(mail.raw)
    return path
