"""The outage line names the real cause of a lost connection (the server's own words),
not a follow-up "cursor already closed"."""

from __future__ import annotations

import logging

import psycopg2
import pytest

from dnl_ad import db


def test_a_connection_lost_inside_a_savepoint_logs_the_real_cause(database, conn,
                                                                  caplog) -> None:
    caplog.set_level(logging.ERROR, logger="dnl_ad.db")
    with pytest.raises(db.CONNECTION_ERRORS) as raised:
        with database.transaction() as cur:
            cur.execute("SELECT pg_backend_pid() AS pid")
            pid = cur.fetchone()["pid"]
            with db.savepoint(cur):
                with conn.cursor() as other:
                    other.execute("SELECT pg_terminate_backend(%s)", (pid,))
                cur.execute("SELECT 1")
    assert isinstance(raised.value, psycopg2.OperationalError)
    [line] = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert "cursor already closed" not in line
    assert "terminating connection" in line or "server closed the connection" in line
    with database.transaction() as cur:  # and it comes back
        cur.execute("SELECT 1 AS one")
        assert cur.fetchone()["one"] == 1
