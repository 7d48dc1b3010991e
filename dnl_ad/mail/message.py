"""MIME message building (minimal first version; hardened by the mail pipeline issue)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from ..notice import Notice
from .render import MailConfig, Rendered


@dataclass(frozen=True)
class Mail:
    from_addr: str
    to: list[str]
    cc: list[str]
    subject: str
    text: str
    html: str
    message_id: str
    raw: bytes


def split_addresses(text: str | None) -> list[str]:
    return [a.strip() for a in re.split(r"[;,]", text or "") if a.strip()]


def build(notice: Notice, rendered: Rendered, config: MailConfig) -> Mail:
    sender = config.senders.get(rendered.from_id or "") or config.system.get("fromemail") or ""
    to = split_addresses(notice.recipients) + list(notice.extra_recipients)
    cc = split_addresses(rendered.cc)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = rendered.subject.replace("\r", " ").replace("\n", " ")
    msg["Date"] = format_datetime(notice.decided_at)
    mid = f"<{notice.dedupe_key.replace(':', '.')}@dnl-ad>"
    msg["Message-ID"] = mid
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return Mail(sender, to, cc, rendered.subject, rendered.text, rendered.html, mid, bytes(msg))


def write_eml(mail: Mail, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", mail.message_id.strip("<>")) + ".eml"
    path = directory / name
    path.write_bytes(mail.raw)
    return path
