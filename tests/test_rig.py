"""The rig itself: provider SQL, migrations, reconnect, and the SMTP sink's behaviours."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import psycopg2
import pytest

from dnl_ad import contract, db, migrations
from dnl_ad.devtools.embedded_pg import EmbeddedPostgres, build_provider_database, drop_database
from dnl_ad.devtools.smtp_sink import SmtpSink

from .conftest import utc


def test_provider_sql_creates_every_contract_column(conn) -> None:
    with conn.cursor() as cur:
        present = db.table_columns(cur)
    assert contract.missing_columns(present) == {}
    for table, columns in contract.OPTIONAL.items():
        assert set(columns) <= present[table], table


def test_missing_columns_are_listed_by_table(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE client DROP COLUMN billing_email")
        cur.execute("DROP TABLE payment_term CASCADE")
        present = db.table_columns(cur)
    missing = contract.missing_columns(present)
    assert missing == {"client": ["billing_email"],
                       "payment_term": ["payment_term_id", "name"]}


def test_cdr_report_detail_is_partitioned_by_utc_day(conn) -> None:
    with conn.cursor() as cur:
        name = db.ensure_cdr_partition(cur, utc(2026, 11, 20).date())
        db.ensure_cdr_partition(cur, utc(2026, 11, 21).date())
        assert name == "cdr_report_detail20261120"
        cur.execute(
            "INSERT INTO cdr_report_detail (report_time, ingress_client_id) "
            "VALUES (%s, 1), (%s, 1)",
            (utc(2026, 11, 20, 23), utc(2026, 11, 21, 0)),
        )
        cur.execute("SELECT tableoid::regclass::text AS t FROM cdr_report_detail "
                    "ORDER BY report_time")
        assert [r["t"] for r in cur.fetchall()] == ["cdr_report_detail20261120",
                                                    "cdr_report_detail20261121"]
        # The parent, queried by a range spanning both days, sees both rows.
        cur.execute("SELECT count(*) AS n FROM cdr_report_detail WHERE report_time >= %s "
                    "AND report_time < %s", (utc(2026, 11, 20, 16), utc(2026, 11, 21, 16)))
        assert cur.fetchone()["n"] == 2


def test_migrate_is_idempotent(conn) -> None:
    with conn.cursor() as cur:
        assert migrations.migrate(cur, "dnl_ad") == []  # the template is already migrated
        assert migrations.applied(cur, "dnl_ad") == {v for v, _ in migrations.available()}
        applied = migrations.migrate(cur, "other_schema")
        assert applied == [name for _, name in migrations.available()]
        assert migrations.migrate(cur, "other_schema") == []


def test_connections_are_named_and_rows_are_mappings(dsn: str) -> None:
    c = db.connect(dsn)
    with c.cursor() as cur:
        cur.execute("SELECT current_setting('application_name') AS app, %s::int AS n", (7,))
        row = cur.fetchone()
    c.close()
    assert row["app"] == "dnl_ad" and row["n"] == 7


def test_mask_dsn_hides_password() -> None:
    masked = db.mask_dsn("host=h port=5 dbname=d user=u password=hunter2")
    assert "hunter2" not in masked and "host=h" in masked
    assert "hunter2" not in db.scrub('connection to "postgresql://u:hunter2@h/d" failed')
    assert "hunter2" not in db.scrub("password=hunter2 host=x")


@pytest.fixture
def own_server(tmp_path) -> EmbeddedPostgres:
    """A private server, so restarting it cannot disturb other tests."""
    server = EmbeddedPostgres(tmp_path / "pg")
    yield server
    server.cleanup()


def test_query_after_server_restart_succeeds(own_server: EmbeddedPostgres, caplog) -> None:
    dsn = build_provider_database(own_server.admin_dsn, "restart_test")
    database = db.Database(dsn, min_backoff=0.05, max_backoff=0.2)
    with database.transaction() as cur:
        cur.execute("SELECT pg_backend_pid() AS pid")
        first_pid = cur.fetchone()["pid"]
    own_server.restart()
    # The old connection is dead; run() notices, reconnects and retries the work.
    pid = database.run(lambda cur: (cur.execute("SELECT pg_backend_pid() AS pid"),
                                    cur.fetchone()["pid"])[1])
    assert pid != first_pid
    assert database.down_since is None
    assert "unreachable" in caplog.text and "is back" in caplog.text
    database.close()
    drop_database(own_server.admin_dsn, "restart_test")


def test_outage_logged_once(own_server: EmbeddedPostgres, caplog) -> None:
    dsn = own_server.admin_dsn
    database = db.Database(dsn, min_backoff=0.01, max_backoff=0.02)
    database.connection()
    own_server.stop_server()
    try:
        for _ in range(3):
            with pytest.raises(psycopg2.OperationalError):
                database.run(lambda cur: cur.execute("SELECT 1"), retries=2)
    finally:
        own_server.start_server()
    assert caplog.text.count("unreachable") == 1
    database.run(lambda cur: cur.execute("SELECT 1"))
    assert caplog.text.count("is back") == 1
    database.close()


def _message(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@x.example", to, "Balance 余额"
    msg.set_content("hello")
    return msg


def test_smtp_sink_records_parsed_message(smtp: SmtpSink) -> None:
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        client.send_message(_message("b@y.example"))
    assert len(smtp.messages) == 1
    got = smtp.messages[0]
    assert got.rcpt_tos == ["b@y.example"]
    assert got.message["Subject"] == "Balance 余额"
    assert got.message.get_content().strip() == "hello"


def test_smtp_sink_refuses_on_demand(smtp: SmtpSink) -> None:
    smtp.reply_for("busy@y.example", "450 4.2.1 mailbox busy")
    smtp.reply_for("gone@y.example", "550 5.1.1 no such user")
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            client.send_message(_message("busy@y.example"))
        assert info.value.recipients["busy@y.example"][0] == 450
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            client.send_message(_message("gone@y.example"))
        assert info.value.recipients["gone@y.example"][0] == 550
        refused = client.send_message(_message("gone@y.example, ok@y.example"))
        assert refused == {"gone@y.example": (550, b"5.1.1 no such user")}
    assert [m.rcpt_tos for m in smtp.messages] == [["ok@y.example"]]


def test_smtp_sink_drops_connection_on_demand(smtp: SmtpSink) -> None:
    smtp.drop_on_message(2)
    with smtplib.SMTP(smtp.host, smtp.port) as client:
        client.send_message(_message("one@y.example"))
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.send_message(_message("two@y.example"))
    assert [m.rcpt_tos for m in smtp.messages] == [["one@y.example"]]


def test_connection_errors_are_told_from_errors_on_a_live_connection(database, conn) -> None:
    with pytest.raises(psycopg2.OperationalError) as info:
        with database.transaction() as cur:
            cur.execute("SET LOCAL statement_timeout = '20ms'")
            cur.execute("SELECT pg_sleep(1)")
    assert not db.is_connection_error(info.value)
    with database.transaction() as cur:  # the same connection still serves
        cur.execute("SELECT pg_backend_pid() AS pid")
        pid = cur.fetchone()["pid"]
    with conn.cursor() as other:  # now the server drops it
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg2.OperationalError) as info:
        with database.transaction() as cur:
            cur.execute("SELECT 1")
    assert db.is_connection_error(info.value)
    assert database.down_since is not None
    row = database.run(lambda cur: (cur.execute("SELECT 1 AS one"), cur.fetchone())[1])
    assert row["one"] == 1
    assert database.down_since is None
