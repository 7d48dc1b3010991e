"""The project's own provider SQL against the real DNL v5 schema (../shared/dnl_v5).

The subset (dnl_ad/sql/provider_schema.sql) builds the demo and fast-test databases; it
must match the v5 dump column for column, in name and type, for every column it has
(which is every column dnl_ad reads or writes, plus keys). Both catalogs are read; the dump
wins.
"""

from __future__ import annotations

import psycopg2

from dnl_ad import contract

_COLUMNS = """
SELECT c.relname AS table_name, a.attname AS column_name,
       format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0
  AND NOT a.attisdropped AND c.relname = ANY(%s)
"""


def columns(conn, tables: list[str]) -> dict[tuple[str, str], str]:
    with conn.cursor() as cur:
        cur.execute(_COLUMNS, (tables,))
        return {(r["table_name"], r["column_name"]): r["type"] for r in cur.fetchall()}


def subset_tables(conn) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                    "AND c.relkind IN ('r', 'p') AND NOT c.relispartition")
        return sorted(r["relname"] for r in cur.fetchall())


def differences(subset_conn, v5_conn) -> list[str]:
    """Every subset column missing from v5 or typed differently there, as text."""
    tables = subset_tables(subset_conn)
    ours = columns(subset_conn, tables)
    theirs = columns(v5_conn, tables)
    found = []
    for (table, column), typ in sorted(ours.items()):
        real = theirs.get((table, column))
        if real is None:
            found.append(f"{table}.{column}: not in the v5 schema")
        elif real != typ:
            found.append(f"{table}.{column}: subset {typ}, v5 {real}")
    return found


def test_subset_matches_v5_column_for_column(conn, v5_conn):
    assert subset_tables(conn), "the subset created no table"
    assert differences(conn, v5_conn) == []


def test_a_changed_subset_type_is_caught(conn, v5_conn):
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE rate_send_log ALTER COLUMN download_deadline "
                    "TYPE timestamptz")
    assert differences(conn, v5_conn) == [
        "rate_send_log.download_deadline: subset timestamp with time zone, v5 date"]


def test_a_subset_column_v5_lacks_is_caught(conn, v5_conn):
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE system_parameter ADD COLUMN id integer")
    assert differences(conn, v5_conn) == ["system_parameter.id: not in the v5 schema"]


def test_every_contract_column_is_in_the_subset(conn):
    have = columns(conn, subset_tables(conn))
    missing = [f"{t}.{c}" for t, cols in contract.REQUIRED.items() for c in cols
               if (t, c) not in have]
    assert missing == []


def test_every_required_contract_column_is_in_v5(v5_conn):
    present = {}
    for (table, column) in columns(v5_conn, list(contract.REQUIRED)):
        present.setdefault(table, set()).add(column)
    assert contract.missing_columns(present) == {}


def test_v5_lacks_the_optional_cc_columns_and_they_read_as_empty(v5_conn):
    have = columns(v5_conn, ["mail_tmplate"])
    assert ("mail_tmplate", "no_download_rate_cc") not in have
    assert ("mail_tmplate", "download_rate_notice_cc") not in have
    assert ("mail_tmplate", "pending_trunk_cc") in have


def test_v5_has_the_change_feed_triggers(v5_conn):
    with v5_conn.cursor() as cur:
        cur.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'client'::regclass "
                    "AND NOT tgisinternal")
        names = {r["tgname"] for r in cur.fetchall()}
    assert "class4_trig_record_client" in names
    with v5_conn.cursor() as cur, __import__("pytest").raises(psycopg2.Error):
        cur.execute("SELECT id FROM system_parameter")
