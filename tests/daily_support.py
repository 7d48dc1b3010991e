"""Helpers shared by the daily-report tests (alerts 3-5): tag templates, outbox reading,
money parsing. (The CDR API server is tests/cdr_api_server.py.)"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from dnl_ad.mail.render import KNOWN_TAGS

from . import factories as f

_PAIR = re.compile(r"([a-z_]+)=\[(.*?)\]", re.S)


def tag_template(kind: str) -> str:
    """An operator template printing every tag of `kind` as name=[value]."""
    return "".join(f"<p>{t}=[{{{t}}}]</p>" for t in KNOWN_TAGS[kind])


def use_tag_template(conn, prefix: str, kind: str, subject: str = "report {client_name}") -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM mail_tmplate")
        tid = cur.fetchone()["id"]
    f.update(conn, "mail_tmplate", {"id": tid}, **{f"{prefix}_subject": subject,
                                                  f"{prefix}_content": tag_template(kind)})


def outbox(conn) -> list[dict[str, Any]]:
    return f.rows(conn, "SELECT dedupe_key, kind, client_id, to_addrs, subject, text_body, "
                        "html_body FROM dnl_ad.outbox ORDER BY id")


def keys(conn) -> set[str]:
    return {r["dedupe_key"] for r in outbox(conn)}


def tags_of(conn, key: str) -> dict[str, str]:
    """The name=[value] pairs rendered into the outbox row with dedupe key `key`."""
    rows = [r for r in outbox(conn) if r["dedupe_key"] == key]
    assert len(rows) == 1, f"expected one outbox row for {key}, got {len(rows)}"
    return dict(_PAIR.findall(rows[0]["html_body"]))


def money(text: str) -> Decimal:
    """'1,234.50' -> Decimal; '(12.50)' -> Decimal('-12.50') (the renderer's money)."""
    t = text.strip().replace(",", "")
    if t.startswith("(") and t.endswith(")"):
        return -Decimal(t[1:-1])
    return Decimal(t)
