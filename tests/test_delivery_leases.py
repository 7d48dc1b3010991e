"""Leases: a deliverer records outcomes only on rows it still holds (claim token), and
dead deliverers' leases are released at start by the active daemon."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

from dnl_ad import db, delivery, outbox
from tests import factories
from tests.mail_helpers import NOW, email_log, notice, outbox_rows, queue

S = dt.timedelta(seconds=1)


def test_two_deliverers_a_lost_lease_is_one_warning_and_no_double_mark(
        database, settings, conn, smtp, dsn, caplog) -> None:
    """Deliverer A's lease runs out while its message 1 is in hand and deliverer B claims
    the rows: A must not mark row 1 (B will), warn once, and start nothing more."""
    caplog.set_level(logging.WARNING, logger="dnl_ad")
    factories.system(conn)
    queue(database, settings, [notice(f"m:{i}", recipients=f"r{i}@x.example")
                               for i in range(4)])
    lease = delivery.lease_for(settings)
    other = db.Database(dsn)
    taken: list[outbox.Claimed] = []

    def b_claims() -> None:
        with other.transaction() as cur:
            taken.extend(outbox.claim(cur, "dnl_ad", now=NOW + lease + S, limit=10,
                                      lease=lease))

    smtp.call_on_message(1, b_claims)
    a = delivery.deliver(database, settings, now=NOW)
    assert len(taken) == 4 and len(smtp.messages) == 1  # A started nothing after message 1
    rows = outbox_rows(conn)
    assert {r["status"] for r in rows} == {"pending"} and {r["attempts"] for r in rows} == {0}
    assert {r["claim_token"] for r in rows} == {taken[0].token}
    assert email_log(conn) == []
    warnings = [r for r in caplog.records if "lease" in r.getMessage()]
    assert len(warnings) == 1 and a.released == 0

    # B records its own outcomes: one mark and one email_log row per notice
    with other.single_statement() as cur:
        marked = outbox.record(cur, "dnl_ad", [outbox.Mark(
            r.id, outbox.SENT, r.todo, [], 1, NOW + lease + S, None, NOW + lease + S)
            for r in taken], [(r.id, outbox.LogEntry(NOW, r.client_id, r.recipients, 1, "",
                                                     0, "", "250", r.subject, ""))
                              for r in taken], taken[0].token)
    other.close()
    assert marked == {r.id for r in taken}
    assert len(email_log(conn)) == 4
    assert {r["status"] for r in outbox_rows(conn)} == {"sent"}


def test_a_lease_that_ran_out_unclaimed_still_records(database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice()])
    with database.transaction() as cur:
        [row] = outbox.claim(cur, "dnl_ad", now=NOW, limit=1, lease=S)
        marked = outbox.record(cur, "dnl_ad", [outbox.Mark(
            row.id, outbox.SENT, row.todo, [], 1, NOW, None, NOW + 10 * S)], [], row.token)
    assert marked == {row.id} and outbox_rows(conn)[0]["status"] == "sent"


def test_release_dead_leases_makes_claimed_rows_deliverable_at_once(
        database, settings, conn, smtp) -> None:
    factories.system(conn)
    queue(database, settings, [notice(f"k:{i}", recipients=f"r{i}@x.example")
                               for i in range(5)])
    paused = db.Database(settings.connection_string)  # a deliverer that is only paused
    with paused.transaction() as cur:
        outbox.claim(cur, "dnl_ad", now=NOW, limit=1, lease=delivery.lease_for(settings))
    dead = db.Database(settings.connection_string)  # one that claims three, then is killed
    with dead.transaction() as cur:
        outbox.claim(cur, "dnl_ad", now=NOW, limit=3, lease=delivery.lease_for(settings))
    dead.close()
    assert delivery.deliver(database, settings, now=NOW + S).sent == 1  # the rest waits
    # only the claims whose session is gone are freed: the paused one keeps its notice
    assert delivery.release_dead_leases(database, settings) == 3
    paused.close()
    assert delivery.release_dead_leases(database, settings) == 1
    assert delivery.deliver(database, settings, now=NOW + 2 * S).sent == 4
    assert len({m.message["Message-ID"] for m in smtp.messages}) == 5


def test_daemon_start_releases_a_killed_deliverer_s_leases(settings, conn, smtp,
                                                           tmp_path) -> None:
    """A deliverer killed mid-batch left 20 rows under a 300 s lease: the daemon started
    next delivers them within seconds, not after the lease."""
    from tests.test_daemon import cli, wait_for, write_ini

    factories.system(conn)
    database = db.Database(settings.connection_string)
    real_now = dt.datetime.now(dt.UTC)  # the daemon runs on the real clock
    try:
        queue(database, settings, [notice(f"c:{i}", recipients=f"r{i}@x.example",
                                          decided_at=real_now) for i in range(20)])
        with database.transaction() as cur:
            claimed = outbox.claim(cur, "dnl_ad", now=real_now, limit=100,
                                   lease=delivery.lease_for(settings))
    finally:
        database.close()
    assert len(claimed) == 20
    ini = write_ini(tmp_path / "dnl_ad.ini", settings)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DNL_AD_")},
           "DNL_AD_CONFIG": str(ini), "DNL_AD_DELIVERY_SECONDS": "1"}
    assert cli(env, "start").returncode == 0
    try:
        wait_for(lambda: len(smtp.messages) == 20, 20, "the claimed notices to go out")
    finally:
        cli(env, "stop")
    assert "claimed by a deliverer that is gone" in Path(settings.logfile).read_text()
