"""Issue 16 item 11: the outbox does not grow forever; what still matters stays."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from dnl_ad import retention
from dnl_ad.config import ConfigError, load_settings

from . import factories as f
from .conftest import utc
from .mail_helpers import notice, queue

NOW = utc(2026, 11, 21, 10)


def _finish(conn, key: str, status: str, at: dt.datetime) -> None:
    with conn.cursor() as cur:
        cur.execute("UPDATE dnl_ad.outbox SET status = %s, finished_at = %s "
                    "WHERE dedupe_key = %s", (status, at, key))


def test_finished_rows_past_the_retention_go_in_batches_pending_ones_stay(
        conn, database, settings, monkeypatch) -> None:
    f.system(conn)
    old = NOW - dt.timedelta(days=91)
    keys = [f"low_balance:{i}:x:1" for i in range(7)]
    queue(database, settings, [notice(k, client_id=i) for i, k in enumerate(keys)])
    for k in keys[:3]:
        _finish(conn, k, "sent", old)
    _finish(conn, keys[3], "failed", old)
    _finish(conn, keys[4], "sent", NOW - dt.timedelta(days=89))  # within the retention
    # keys[5], keys[6]: still pending, however old
    with conn.cursor() as cur:
        cur.execute("UPDATE dnl_ad.outbox SET created_at = %s WHERE status = 'pending'",
                    (old,))
        cur.execute("INSERT INTO dnl_ad.report_quiet VALUES ('usage_summary:1:2026-08-01', %s),"
                    " ('usage_summary:1:2026-11-20', %s)", (old, NOW))
    monkeypatch.setattr(retention, "BATCH", 2)  # 4 rows to go: three batches
    assert retention.purge(database, settings, NOW) == 4
    left = {r["dedupe_key"] for r in f.rows(conn, "SELECT dedupe_key FROM dnl_ad.outbox")}
    assert left == {keys[4], keys[5], keys[6]}
    quiet = f.rows(conn, "SELECT dedupe_key FROM dnl_ad.report_quiet")
    assert quiet == [{"dedupe_key": "usage_summary:1:2026-11-20"}]
    assert retention.purge(database, settings, NOW) == 0


def test_dry_run_purges_nothing(conn, database, settings) -> None:
    f.system(conn)
    queue(database, settings, [notice("k:1")])
    _finish(conn, "k:1", "sent", NOW - dt.timedelta(days=400))
    assert retention.purge(database, settings.replace(dry_run=True), NOW) == 0
    assert len(f.rows(conn, "SELECT id FROM dnl_ad.outbox")) == 1


def test_a_retention_shorter_than_the_catch_up_is_refused(tmp_path: Path) -> None:
    ini = tmp_path / "dnl_ad.ini"
    ini.write_text("[dnl_ad]\nOUTBOX_RETENTION_DAYS = 2\nCATCHUP_HOURS = 48\n")
    with pytest.raises(ConfigError, match="OUTBOX_RETENTION_DAYS"):
        load_settings(ini, env={})
