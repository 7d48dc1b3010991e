"""Shared builders for the mail pipeline tests: a Notice, and queueing it for real."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from dnl_ad import db
from dnl_ad.config import Settings
from dnl_ad.notice import Notice
from dnl_ad.pipeline import Pipeline

NOW = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


def notice(key: str = "low_balance:1:2026-03-02:1", *, kind: str = "low_balance",
           template: str = "lowbalance", client_id: int | None = 1,
           recipients: str | None = "billing@client.example", decided_at: dt.datetime = NOW,
           **context: Any) -> Notice:
    ctx: dict[str, Any] = {"company_name": "Client Co", "client_name": "client",
                           "balance": Decimal("-12.5")}
    ctx.update(context)
    return Notice(kind=kind, dedupe_key=key, template=template, client_id=client_id,
                  recipients=recipients, context=ctx, decided_at=decided_at,
                  alert_rule=f"{kind} test rule")


def queue(database: db.Database, settings: Settings, notices: Iterable[Notice]) -> Pipeline:
    """Queue notices through the real pipeline in one committed transaction."""
    with database.transaction() as cur:
        pipeline = Pipeline.open(cur, settings)
        for n in notices:
            pipeline.queue(cur, n)
    return pipeline


def outbox_rows(conn) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM dnl_ad.outbox ORDER BY id")
        return [dict(r) for r in cur.fetchall()]


def email_log(conn) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM email_log ORDER BY id")
        return [dict(r) for r in cur.fetchall()]
