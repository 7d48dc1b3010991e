"""The outbox (minimal first version; the mail pipeline issue adds claim/mark/deliver)."""

from __future__ import annotations

from psycopg2 import sql

from .contract import EMAIL_TYPE
from .db import Cursor
from .mail.message import Mail
from .notice import Notice


def enqueue(cur: Cursor, schema: str, notice: Notice, mail: Mail) -> bool:
    """Insert in the caller's transaction; False (no-op) when the dedupe key exists."""
    cur.execute(
        sql.SQL(
            "INSERT INTO {}.outbox (dedupe_key, kind, client_id, resource_id, email_type, "
            "alert_rule, from_addr, to_addrs, cc_addrs, subject, text_body, html_body, message, "
            "message_id, next_attempt_at, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
        ).format(sql.Identifier(schema)),
        (notice.dedupe_key, notice.kind, notice.client_id, notice.resource_id,
         EMAIL_TYPE[notice.kind], notice.alert_rule, mail.from_addr, mail.to, mail.cc,
         mail.subject, mail.text, mail.html, mail.raw, mail.message_id,
         notice.decided_at, notice.decided_at),
    )
    return cur.fetchone() is not None


def already_queued(cur: Cursor, schema: str, keys: list[str]) -> set[str]:
    """Which of `keys` are in the outbox already (one query for a whole sweep)."""
    if not keys:
        return set()
    cur.execute(
        sql.SQL("SELECT dedupe_key FROM {}.outbox WHERE dedupe_key = ANY(%s)").format(
            sql.Identifier(schema)),
        (keys,),
    )
    return {row["dedupe_key"] for row in cur.fetchall()}
