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


def is_v5(conn) -> bool:
    """True on the real v5 schema (it has the engine's change-feed tables)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.client_record') IS NOT NULL AS v5")
        return bool(cur.fetchone()["v5"])


def system(conn, **values: Any) -> dict[str, Any]:
    """The one system_parameter row (and the one mail_tmplate row, empty = defaults),
    stored as the v5 UI stores them (smtpport as text, smtp_secure 0-3)."""
    defaults = {"sys_id": 1, "sys_timezone": "+0000", "fromemail": "billing@carrier.example",
                "smtphost": "127.0.0.1", "smtpport": "25", "smtp_secure": 0,
                "loginemail": "false", "finance_email": "finance@carrier.example"}
    row = insert(conn, "system_parameter", **{**defaults, **values})
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM mail_tmplate")
        if cur.fetchone()["n"] == 0:
            cur.execute("INSERT INTO mail_tmplate DEFAULT VALUES")
    return row


def currency(conn, code: str = "USD") -> int:
    """The currency_id of `code`, created when missing (client.currency_id is NOT NULL)."""
    found = rows(conn, "SELECT currency_id FROM currency WHERE code = %s", (code,))
    if found:
        return found[0]["currency_id"]
    return insert(conn, "currency", code=code)["currency_id"]


def client(conn, *, balance: float | None = 100.0, low_config: dict[str, Any] | None = None,
           currency_code: str = "USD", **values: Any) -> dict[str, Any]:
    """A client (active, prepay, no alert enabled unless given), its balance row and,
    when `low_config` is given, its client_low_balance_config row. `balance=None` leaves
    the client without a c4_client_balance row (the column is NOT NULL in v5)."""
    defaults: dict[str, Any] = {"name": "client", "company": "Client Co", "status": True,
                                "mode": 1, "allowed_credit": 0,
                                "billing_email": "billing@client.example"}
    if "currency_id" not in values:
        values["currency_id"] = currency(conn, currency_code)
    row = insert(conn, "client", **{**defaults, **values})
    if balance is not None:
        insert(conn, "c4_client_balance", client_id=str(row["client_id"]), balance=balance)
    if low_config is not None:
        insert(conn, "client_low_balance_config", client_id=row["client_id"], **low_config)
    return row


def set_balance(conn, client_id: int, balance: float | None) -> None:
    update(conn, "c4_client_balance", {"client_id": str(client_id)}, balance=balance)


def trunk(conn, client_id: int, **values: Any) -> dict[str, Any]:
    defaults = {"alias": f"trunk-{client_id}", "active": True, "ingress": True, "egress": False}
    return insert(conn, "resource", client_id=client_id, **{**defaults, **values})


def rate_send(conn, resource_id: int, deadline: dt.date | None, *,
              is_email_alert: bool = True, is_disable: bool = True,
              file: str = "https://portal.carrier.example/rates/rates_2026.csv",
              created: dt.datetime | None = None, status: int = 5,
              **detail: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A link rate send (rate_send_log, status 5 = waiting for download) and its detail row
    (status 1 = sent) for one trunk, as the v5 UI writes them. The deadline is a date: the
    trunk has until 23:59:59 GMT of that day."""
    if isinstance(deadline, dt.datetime):
        deadline = deadline.astimezone(dt.UTC).date()
    start = deadline or dt.date(2026, 1, 1)
    values: dict[str, Any] = dict(
        file=file, download_deadline=deadline, is_email_alert=is_email_alert,
        is_disable=is_disable, status=status, download_method=2, effective_date=str(start),
        create_time=created or dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
        - dt.timedelta(days=3))
    if is_v5(conn):  # NOT NULL in v5; dnl_ad never reads them
        values.update(rate_table_id=1, format=1, email_template_id=1)
    log = insert(conn, "rate_send_log", **values)
    det = insert(conn, "rate_send_log_detail", log_id=log["id"], resource_id=resource_id,
                 **{"status": 1, "send_to": "rates@client.example", **detail})
    return log, det


def traffic(conn, **values: Any) -> dict[str, Any]:
    """One hourly cdr_report_detail row. The subset needs the UTC-day partition (created
    here); on v5 the parent's trigger keeps a row without a daily child in the parent."""
    if not is_v5(conn):
        with conn.cursor() as cur:
            db.ensure_cdr_partition(cur, values["report_time"].astimezone(dt.UTC).date())
    return insert(conn, "cdr_report_detail", **values)


def rows(conn, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return [dict(r) for r in cur.fetchall()]
