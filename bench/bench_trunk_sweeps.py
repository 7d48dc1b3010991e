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

from _support import bench_settings, populate, provider_database, timed

from dnl_ad import db
from dnl_ad.alerts import trunk_common, trunk_pending, trunk_suspended
from dnl_ad.devtools import demo_data


def _generate(cur: db.Cursor, n: int, now: dt.datetime) -> None:
    demo_data.generate(cur, n, now, traffic_hours=1)
    cur.execute("ANALYZE")


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    now = dt.datetime.now(dt.UTC)
    with provider_database("bench_trunks") as (dsn, tmp):
        populate(dsn, lambda cur: _generate(cur, n, now))
        settings = bench_settings(dsn, tmp)
        database = db.Database(dsn)
        with database.transaction() as cur:
            pending, _ = timed("candidate query, next 48 h", lambda: trunk_common.candidates(
                cur, now, now + dt.timedelta(hours=48)))
            overdue, _ = timed("candidate query, overdue", lambda: trunk_common.candidates(
                cur, dt.datetime(1970, 1, 1, tzinfo=dt.UTC), now))
        print(f"  candidates: {len(pending):,} pending, {len(overdue):,} overdue")
        dry, _ = timed("suspension sweep, dry run", lambda: trunk_suspended.sweep(
            database, now, settings.replace(dry_run=True)))
        print(f"  would block {dry.state_changes:,}")
        res, _ = timed("pending sweep", lambda: trunk_pending.sweep(database, now, settings))
        print(f"  queued {res.queued:,}")
        res, _ = timed("pending sweep again (all duplicates)",
                       lambda: trunk_pending.sweep(database, now, settings))
        print(f"  queued {res.queued:,}, duplicates {res.duplicates:,}")
        res, _ = timed("suspension sweep", lambda: trunk_suspended.sweep(
            database, now, settings))
        print(f"  blocked {res.state_changes:,}, queued {res.queued:,}")
        database.close()
    print(f"clients {n:,}")


if __name__ == "__main__":
    main()
