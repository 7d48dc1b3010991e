"""The system_parameter / mail_sender columns as the DNL v5 UI stores them, for SMTP tests
that must run on the project's provider subset before and after it matches v5."""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from tests import factories


def update_all(conn, table: str, **values: Any) -> None:
    """UPDATE every row of a (one-row) table."""
    query = sql.SQL("UPDATE {} SET {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values))
    with conn.cursor() as cur:
        cur.execute(query, list(values.values()))


def v5_system(conn, **values: Any) -> None:
    """One system_parameter row with v5 types: smtp_secure integer, smtpport varchar,
    loginemail and emailname present (added or retyped only where the subset differs)."""
    factories.system(conn)
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE system_parameter ALTER COLUMN smtp_secure TYPE integer"
                    " USING NULLIF(smtp_secure::text, '')::integer")
        cur.execute("ALTER TABLE system_parameter ALTER COLUMN smtpport TYPE varchar(50)"
                    " USING smtpport::text")
        cur.execute("ALTER TABLE system_parameter ADD COLUMN IF NOT EXISTS loginemail"
                    " varchar(12)")
        cur.execute("ALTER TABLE system_parameter ADD COLUMN IF NOT EXISTS emailname"
                    " varchar(50)")
        cur.execute("ALTER TABLE system_parameter ADD COLUMN IF NOT EXISTS noc_email"
                    " varchar(1000)")
    if values:
        update_all(conn, "system_parameter", **values)


def v5_mail_sender(conn, **values: Any) -> dict[str, Any]:
    """One mail_sender row with v5 columns (smtp_port varchar, secure integer, name,
    loginemail)."""
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE mail_sender ALTER COLUMN smtp_port TYPE varchar(50)"
                    " USING smtp_port::text")
        cur.execute("ALTER TABLE mail_sender ALTER COLUMN secure TYPE integer"
                    " USING NULLIF(secure::text, '')::integer")
        cur.execute("ALTER TABLE mail_sender ADD COLUMN IF NOT EXISTS name varchar(100)")
        cur.execute("ALTER TABLE mail_sender ADD COLUMN IF NOT EXISTS loginemail varchar(12)")
    return factories.insert(conn, "mail_sender", **values)
