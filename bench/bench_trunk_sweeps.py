"""Benchmark: alerts 6 and 7 over N demo clients (default 100,000) on an embedded PostgreSQL.

    .venv/bin/python bench/bench_trunk_sweeps.py [N]

Prints the seconds taken by the shared candidate query (pending and overdue windows), a
dry-run suspension sweep, and the real pending and suspension sweeps (render + enqueue +
trunk blocks), with how many notices and blocks each produced.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import tempfile
import time
from pathlib import Path

from dnl_ad import db, demo_data
from dnl_ad.alerts import trunk_common, trunk_pending, trunk_suspended
from dnl_ad.config import REPO_ROOT, Settings
from dnl_ad.embedded_pg import EmbeddedPostgres, build_provider_database


def _timed(label: str, work):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    out = work()
    print(f"{label:<44} {time.perf_counter() - started:7.2f} s")
    return out


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="dnl_ad_bench_") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            dsn = build_provider_database(server.admin_dsn, "bench_trunks")
            conn = db.connect(dsn)
            with conn.cursor() as cur:
                demo_data.generate(cur, n, now, traffic_hours=1)
                cur.execute("ANALYZE")
            conn.commit()
            conn.close()
            settings = Settings(connection_string=dsn, dry_run_dir=str(Path(tmp) / "eml"),
                                template_dir=str(REPO_ROOT / "templates"))
            database = db.Database(dsn)
            with database.transaction() as cur:
                pending = _timed("candidate query, next 48 h", lambda: trunk_common.candidates(
                    cur, now, now + dt.timedelta(hours=48)))
                overdue = _timed("candidate query, overdue", lambda: trunk_common.candidates(
                    cur, dt.datetime(1970, 1, 1, tzinfo=dt.UTC), now))
            print(f"  candidates: {len(pending):,} pending, {len(overdue):,} overdue")
            dry = _timed("suspension sweep, dry run", lambda: trunk_suspended.sweep(
                database, now, settings.replace(dry_run=True)))
            print(f"  would block {dry.state_changes:,}")
            res = _timed("pending sweep", lambda: trunk_pending.sweep(database, now, settings))
            print(f"  queued {res.queued:,}")
            res = _timed("pending sweep again (all duplicates)",
                         lambda: trunk_pending.sweep(database, now, settings))
            print(f"  queued {res.queued:,}, duplicates {res.duplicates:,}")
            res = _timed("suspension sweep", lambda: trunk_suspended.sweep(
                database, now, settings))
            print(f"  blocked {res.state_changes:,}, queued {res.queued:,}")
            database.close()
        finally:
            server.cleanup()
    print(f"clients {n:,}")


if __name__ == "__main__":
    main()
