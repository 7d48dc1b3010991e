"""Test data builders for the provider tables: one generic insert plus defaults that
make a client "interesting" only in the ways a test says.

Identifiers go through psycopg2.sql, values are bound parameters, as everywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg2 import sql

from dnl_ad import db


def insert(conn, table: str, **values: Any) -> dict[str, Any]:
    """INSERT one row and return it (all columns) as a dict."""
    cols = list(values)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(sql.Placeholder() * len(cols)),
    )
    with conn.cursor() as cur:
        cur.execute(query, [values[c] for c in cols])
        return dict(cur.fetchone())


def update(conn, table: str, where: dict[str, Any], **values: Any) -> None:
    query = sql.SQL("UPDATE {} SET {} WHERE {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values),
        sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in where),
    )
    with conn.cursor() as cur:
        cur.execute(query, [*values.values(), *where.values()])


def system(conn, **values: Any) -> dict[str, Any]:
    """The one system_parameter row (and the one mail_tmplate row, empty = defaults)."""
    defaults = {"sys_timezone": "+00:00", "fromemail": "billing@carrier.example",
                "smtphost": "127.0.0.1", "smtpport": 25, "finance_email": "finance@carrier.example"}
    row = insert(conn, "system_parameter", **{**defaults, **values})
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM mail_tmplate")
        if cur.fetchone()["n"] == 0:
            cur.execute("INSERT INTO mail_tmplate DEFAULT VALUES")
    return row


def client(conn, *, balance: float | None = 100.0, low_config: dict[str, Any] | None = None,
           **values: Any) -> dict[str, Any]:
    """A client (active, prepay, no alert enabled unless given), its balance row and,
    when `low_config` is given, its client_low_balance_config row."""
    defaults: dict[str, Any] = {"name": "client", "company": "Client Co", "status": True,
                                "mode": 1, "allowed_credit": 0,
                                "billing_email": "billing@client.example"}
    row = insert(conn, "client", **{**defaults, **values})
    insert(conn, "c4_client_balance", client_id=str(row["client_id"]), balance=balance)
    if low_config is not None:
        insert(conn, "client_low_balance_config", client_id=row["client_id"], **low_config)
    return row


def set_balance(conn, client_id: int, balance: float | None) -> None:
    update(conn, "c4_client_balance", {"client_id": str(client_id)}, balance=balance)


def trunk(conn, client_id: int, **values: Any) -> dict[str, Any]:
    defaults = {"alias": f"trunk-{client_id}", "active": True, "ingress": True, "egress": False}
    return insert(conn, "resource", client_id=client_id, **{**defaults, **values})


def rate_send(conn, resource_id: int, deadline: dt.datetime | None, *, is_email_alert: bool = True,
              file: str = "rates_2026.csv", created: dt.datetime | None = None,
              **detail: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A rate_send_log row and its detail row for one trunk."""
    log = insert(conn, "rate_send_log", file=file, download_deadline=deadline,
                 is_email_alert=is_email_alert,
                 create_time=created or (deadline or dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
                 - dt.timedelta(days=3))
    det = insert(conn, "rate_send_log_detail", log_id=log["id"], resource_id=resource_id,
                 **{"status": True, **detail})
    return log, det


def traffic(conn, **values: Any) -> dict[str, Any]:
    """One hourly cdr_report_detail row; creates the UTC-day partition it needs."""
    with conn.cursor() as cur:
        db.ensure_cdr_partition(cur, values["report_time"].astimezone(dt.UTC).date())
    return insert(conn, "cdr_report_detail", **values)


def rows(conn, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return [dict(r) for r in cur.fetchall()]
