"""The outbox: queued once per key, survives a crash, leases, dry run writes nothing."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from dnl_ad import db, delivery, outbox
from tests import factories
from tests.mail_helpers import NOW, email_log, notice, outbox_rows, queue

REPO = Path(__file__).resolve().parent.parent


def test_same_key_twice_queues_one(database, settings, conn) -> None:
    factories.system(conn)
    first = queue(database, settings, [notice("low_balance:1:x:1")])
    second = queue(database, settings, [notice("low_balance:1:x:1", company_name="Changed"),
                                        notice("low_balance:1:x:1")])
    # the pipeline counts outcomes per dedupe key
    assert (first.queued, second.queued, second.duplicates) == (1, 0, 1)
    rows = outbox_rows(conn)
    assert len(rows) == 1 and "Client Co" in rows[0]["subject"]
    with database.transaction() as cur:
        assert outbox.already_queued(cur, "dnl_ad", ["low_balance:1:x:1", "other"]) == {
            "low_balance:1:x:1"}


def test_enqueue_rolls_back_with_the_callers_transaction(database, settings, conn) -> None:
    factories.system(conn)
    try:
        with database.transaction() as cur:
            from dnl_ad.pipeline import Pipeline
            Pipeline.open(cur, settings).queue(cur, notice())
            raise RuntimeError("the alert's state write failed")
    except RuntimeError:
        pass
    assert outbox_rows(conn) == []


def test_crash_between_enqueue_and_send_loses_nothing(dsn, database, settings, conn,
                                                      smtp) -> None:
    factories.system(conn)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from dnl_ad import db
        from dnl_ad.config import Settings
        from tests.mail_helpers import notice, queue
        settings = Settings(connection_string={dsn!r}, smtp_host="127.0.0.1", smtp_port=1,
                            template_dir={str(REPO / "templates")!r})
        queue(db.Database({dsn!r}), settings, [notice("crash:1")])
        os.kill(os.getpid(), signal.SIGKILL)   # committed, never sent
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120,
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert [r["status"] for r in outbox_rows(conn)] == ["pending"]
    assert smtp.messages == []
    result = delivery.deliver(database, settings, now=NOW)
    assert result.sent == 1
    assert [m.message["Message-ID"] for m in smtp.messages] == [outbox_rows(conn)[0]["message_id"]]


def test_a_crashed_delivery_run_leaves_leases_that_expire(database, settings, conn,
                                                          smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"k{i}") for i in range(3)])
    with database.transaction() as cur:  # a run that claimed and then died
        claimed = outbox.claim(cur, "dnl_ad", now=NOW, limit=10,
                               lease=dt.timedelta(minutes=5))
    assert len(claimed) == 3
    assert delivery.deliver(database, settings, now=NOW + dt.timedelta(minutes=1)).total == 0
    assert smtp.messages == []
    result = delivery.deliver(database, settings, now=NOW + dt.timedelta(minutes=6))
    assert result.sent == 3 and len(smtp.messages) == 3


def test_claim_skips_rows_locked_by_another_deliverer(dsn, database, settings, conn) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"k{i}") for i in range(4)])
    other = db.connect(dsn)
    try:
        with other.cursor() as cur:  # first deliverer, transaction still open
            mine = outbox.claim(cur, "dnl_ad", now=NOW, limit=2, lease=dt.timedelta(minutes=5))
            with database.transaction() as cur2:
                theirs = outbox.claim(cur2, "dnl_ad", now=NOW, limit=10,
                                      lease=dt.timedelta(minutes=5))
        other.commit()
    finally:
        other.close()
    assert len(mine) == 2 and len(theirs) == 2
    assert {r.id for r in mine}.isdisjoint({r.id for r in theirs})


def test_dry_run_writes_eml_and_nothing_to_the_database(database, settings, conn, smtp,
                                                        tmp_path) -> None:
    factories.system(conn)
    dry = settings.replace(dry_run=True, dry_run_dir=str(tmp_path / "eml"))
    with db.unit_of_work(database, dry_run=True) as cur:
        from dnl_ad.pipeline import Pipeline
        pipeline = Pipeline.open(cur, dry)
        assert pipeline.queue(cur, notice("dry:1")) is True
        assert pipeline.queue(cur, notice("dry:2", recipients="broken")) is True
    assert pipeline.queued == 1 and pipeline.failed == 1 and len(pipeline.mails) == 2
    files = sorted((tmp_path / "eml").glob("*.eml"))
    assert len(files) == 2 and b"Low balance alert" in files[0].read_bytes()
    assert outbox_rows(conn) == [] and email_log(conn) == []
    # and deliver() does nothing in dry run, even with a real row waiting
    queue(database, settings, [notice("real:1")])
    assert delivery.deliver(database, dry, now=NOW).total == 0
    assert smtp.messages == [] and outbox_rows(conn)[0]["status"] == "pending"


def test_delivery_killed_mid_batch_resends_only_the_message_in_hand(dsn, database, settings,
                                                                    conn, smtp) -> None:
    """The process dies when the server has the 30th message but before it could record
    it: after the lease expires exactly that one message goes again, nothing else."""
    factories.system(conn)
    queue(database, settings, [notice(f"kill:{i}", client_id=i, recipients=f"c{i}@x.example")
                               for i in range(60)])
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from dnl_ad import db, delivery
        from dnl_ad.config import Settings
        from tests.mail_helpers import NOW
        settings = Settings(connection_string={dsn!r}, smtp_host={smtp.host!r},
                            smtp_port={smtp.port}, smtp_security="none")
        print("ready", flush=True)
        sys.stdin.readline()
        delivery.deliver(db.Database({dsn!r}), settings, now=NOW)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    smtp.call_on_message(30, lambda: os.kill(proc.pid, signal.SIGKILL))
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert len(smtp.messages) == 30  # the sink has message 30; its sender never heard "250"
    statuses = [r["status"] for r in outbox_rows(conn)]
    assert statuses.count("sent") == 29

    later = NOW + delivery.lease_for(settings) + dt.timedelta(seconds=1)
    assert delivery.deliver(database, settings.replace(delivery_batch=100), now=later).sent == 31
    received = [m.rcpt_tos[0] for m in smtp.messages]
    assert len(received) == 61 and len(set(received)) == 60
    assert [a for a in received if received.count(a) > 1] == [received[29]] * 2
    assert {r["status"] for r in outbox_rows(conn)} == {"sent"}


def test_the_message_is_stored_uncompressed_and_read_back_whole(database, settings,
                                                                conn) -> None:
    """own_007: the base64 message is kept out of line without compression (nothing to
    gain, CPU at every enqueue and claim); a large one still comes back byte for byte."""
    factories.system(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = "
                    "'dnl_ad.outbox'::regclass AND attname = 'message'")
        assert cur.fetchone()["attstorage"] == "e"
    big = notice("k-big", company_name="x" * 30_000)
    queue(database, settings, [big])
    with database.transaction() as cur:
        rows = outbox.claim(cur, "dnl_ad", now=NOW, limit=5, lease=dt.timedelta(minutes=5))
        cur.execute("SELECT message FROM dnl_ad.outbox WHERE dedupe_key = 'k-big'")
        stored = bytes(cur.fetchone()["message"])
    assert [r.message for r in rows] == [stored] and len(stored) > 30_000


def _sent(row: outbox.Claimed) -> tuple[outbox.Mark, outbox.LogEntry]:
    return (outbox.Mark(row.id, outbox.SENT, row.recipients, [], 1, NOW, None, NOW),
            outbox.LogEntry(NOW, row.client_id, row.recipients, row.email_type,
                            row.alert_rule, 0, "", "250 ok", row.subject, row.html_body))


def test_record_marks_only_rows_under_its_claim_and_logs_only_those(database, settings,
                                                                    conn) -> None:
    factories.system(conn)
    queue(database, settings, [notice("k1"), notice("k2")])
    with database.transaction() as cur:
        rows = outbox.claim(cur, "dnl_ad", now=NOW, limit=10, lease=dt.timedelta(minutes=5))
    retry = outbox.Mark(rows[1].id, outbox.PENDING, ["a@x.example", "b@x.example"], [], 1,
                        NOW + dt.timedelta(minutes=1), "451 later", NOW)
    with database.single_statement() as cur:
        marked = outbox.record(cur, "dnl_ad", [_sent(rows[0])[0], retry],
                               [(rows[0].id, _sent(rows[0])[1])], "someone-else:token")
    assert marked == set() and email_log(conn) == []
    with database.single_statement() as cur:
        marked = outbox.record(cur, "dnl_ad", [_sent(rows[0])[0], retry],
                               [(rows[0].id, _sent(rows[0])[1])], rows[0].token)
    assert marked == {rows[0].id, rows[1].id}
    by_key = {r["dedupe_key"]: r for r in outbox_rows(conn)}
    assert by_key["k1"]["status"] == "sent" and by_key["k2"]["status"] == "pending"
    assert by_key["k2"]["done_addrs"] == ["a@x.example", "b@x.example"]
    assert by_key["k2"]["last_error"] == "451 later" and by_key["k2"]["finished_at"] is None
    assert [r["status"] for r in email_log(conn)] == [0]


def test_one_outcome_is_recorded_by_a_prepared_statement_that_survives_a_pooler(
        database, settings, conn) -> None:
    """One outcome is recorded by a statement prepared once per connection; when the
    server session loses it (a pooler's DEALLOCATE ALL, or another server session) the
    general statement records it, and the next outcome prepares it again."""
    factories.system(conn)
    queue(database, settings, [notice(f"k{i}") for i in range(4)])
    with database.transaction() as cur:
        rows = outbox.claim(cur, "dnl_ad", now=NOW, limit=10, lease=dt.timedelta(minutes=5))

    def record(row: outbox.Claimed) -> set[int]:
        mark, entry = _sent(row)
        with database.single_statement() as cur:
            return outbox.record(cur, "dnl_ad", [mark], [(row.id, entry)], row.token)

    def prepared() -> int:
        with database.single_statement() as cur:
            cur.execute("SELECT count(*) AS n FROM pg_prepared_statements "
                        "WHERE name LIKE 'dnl_ad_record_one%%'")
            return cur.fetchone()["n"]

    assert record(rows[0]) == {rows[0].id} and prepared() == 1
    assert record(rows[1]) == {rows[1].id} and prepared() == 1
    with database.single_statement() as cur:
        cur.execute("DEALLOCATE ALL")
    assert record(rows[2]) == {rows[2].id} and prepared() == 0  # the general statement
    assert record(rows[3]) == {rows[3].id} and prepared() == 1  # prepared again
    assert {r["dedupe_key"]: r["status"] for r in outbox_rows(conn)} == {
        f"k{i}": "sent" for i in range(4)}
    logged = email_log(conn)
    assert len(logged) == 4 and {r["status"] for r in logged} == {0}


def test_sweeps_commit_without_waiting_and_the_claim_waits_for_them(database, settings,
                                                                    conn) -> None:
    """A sweep's unit of work commits with synchronous_commit off; the claim commits
    synchronously even when the server's default is off, which makes every notice it
    takes durable before it is sent."""
    from dnl_ad import db

    factories.system(conn)
    with db.unit_of_work(database, dry_run=False) as cur:
        cur.execute("SELECT current_setting('synchronous_commit') AS s")
        assert cur.fetchone()["s"] == "off"
    queue(database, settings, [notice("k1")])
    with database.transaction() as cur:
        cur.execute("SET synchronous_commit TO off")  # as a server's default may be
    with database.transaction() as cur:
        assert len(outbox.claim(cur, "dnl_ad", now=NOW, limit=5,
                                lease=dt.timedelta(minutes=5))) == 1
        cur.execute("SELECT current_setting('synchronous_commit') AS s")
        assert cur.fetchone()["s"] == "on"


def test_a_batch_stores_every_message_byte_for_byte(database, settings, conn) -> None:
    """enqueue_many sends an ASCII message as text (convert_to) and any other as bytea:
    both are stored exactly as built."""
    factories.system(conn)
    pipeline = queue(database, settings, [])  # a Pipeline with this database's mail settings
    plain = notice("k-ascii", recipients="billing@client.example")
    utf8 = notice("k-utf8", recipients="名前@例え.jp")
    items = [pipeline._prepare(plain), pipeline._prepare(utf8)]
    assert items[0][1].raw.isascii() and not items[1][1].raw.isascii()
    with database.transaction() as cur:
        assert outbox.enqueue_many(cur, "dnl_ad", items) == {"k-ascii", "k-utf8"}
        cur.execute("SELECT dedupe_key, message FROM dnl_ad.outbox")
        stored = {r["dedupe_key"]: bytes(r["message"]) for r in cur.fetchall()}
    assert stored == {"k-ascii": items[0][1].raw, "k-utf8": items[1][1].raw}
