"""Benchmark: the usage-limit ladder (alert 8) for N clients with limits (default 20,000)
over 1,000,000 cdr_report_detail rows, on an embedded PostgreSQL.

    .venv/bin/python bench/bench_limits.py [N] [ROWS]

Every client has a daily limit (its local day, zones as in the demo data) and an hourly
one; 50 hourly rows per client over the last 50 hours (ROWS / N), plus fresh rows of the
running hour in qos_route_report. Every 10th client has a low daily limit (past 50 % in
most zones), every 50th a very low one (past 100 %: its trunk is blocked).

Printed side by side, in the same run:
- the bare aggregation: each client's usage over its own local day and the running hour
  (the same windows the sweep uses), run by psql (server time, best of 3); and the
  naive one-zone GROUP BY over the same rows, for scale;
- the first ladder sweep (steps reached: notices rendered, blocks written);
- the steady sweep (every step already sent: what runs every minute), best of 3: the
  client list, the windows in Python, the decision query, the commit. It should stay
  within 1.5x the bare aggregation.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys

from _support import bench_settings, populate, provider_database, psql_seconds, show, stopwatch

from dnl_ad import db
from dnl_ad.alerts import usage_limit
from dnl_ad.devtools import demo_data

NOW = dt.datetime(2026, 11, 21, 10, 30, tzinfo=dt.UTC)


def fill(cur: db.Cursor, n: int, rows: int) -> None:
    """Demo clients (no demo traffic), then the limits and the report rows."""
    demo_data.generate(cur, n, NOW, traffic_hours=0)
    cur.execute("DELETE FROM cdr_report_detail")
    per_client = max(rows // n, 1)
    hour = NOW.replace(minute=0)
    day = (hour - dt.timedelta(hours=per_client)).date()
    while day <= NOW.date():
        db.ensure_cdr_partition(cur, day)
        day += dt.timedelta(days=1)
    cur.execute("UPDATE client SET daily_limit = CASE WHEN client_id % 50 = 0 THEN 20 "
                "WHEN client_id % 10 = 0 THEN 60 ELSE 1000 END, hourly_limit = 100")
    cur.execute(
        "INSERT INTO cdr_report_detail (report_time, ingress_client_id, ingress_id, "
        "egress_client_id, egress_id, ingress_total_calls, not_zero_calls, "
        "ingress_bill_time, ingress_call_cost, duration) "
        "SELECT %(hour)s - h * interval '1 hour', c, 2 * c - 1, NULL, NULL, 10, 6, 360, "
        "5.0, 370 FROM generate_series(1, %(n)s) AS c "
        "CROSS JOIN generate_series(1, %(per)s) AS h",
        {"hour": hour, "n": n, "per": per_client})
    cur.execute(
        "INSERT INTO qos_route_report (report_time, resource_id, code, direction, "
        "total_calls, not_zero_calls, bill_time, cost) "
        "SELECT %(hour)s + m * interval '10 minutes', 2 * c - 1, '44', 0, 3, 2, 120, 1.0 "
        "FROM generate_series(1, %(n)s) AS c CROSS JOIN generate_series(0, 2) AS m",
        {"hour": hour, "n": n})
    cur.execute("ANALYZE")


def bare_queries(database: db.Database, settings) -> tuple[str, str, int]:
    """(bare aggregation, naive GROUP BY) as psql will run them, and the window count.

    The bare aggregation is the least any ladder must compute: every client's usage over
    its own local day and the clock hour (the sweep's very windows and usage CTEs), with
    no state, no limit, no step."""
    schema, unit = settings.own_schema, settings.usage_limit_unit
    with database.transaction() as cur:
        cur.execute(usage_limit.zones_query(schema))
        params = usage_limit.window_params(cur.fetchall(), NOW, settings)
        bare = usage_limit.sql.SQL(
            "WITH {windows}, s AS (SELECT w.client_id, w.period AS span, w.t0 AS a, "
            "w.t1 AS b FROM w), {usage} SELECT client_id, span, v FROM usage").format(
                windows=usage_limit.windows_cte(schema), usage=usage_limit.usage_cte(unit))
        cur.execute(bare, params)
        count = len(cur.fetchall())
        windows = cur.mogrify(bare, params).decode()
        naive = cur.mogrify(
            "SELECT d.ingress_client_id, sum(d.ingress_call_cost) FROM cdr_report_detail d "
            "WHERE d.report_time >= %(lo)s AND d.report_time < %(hi)s GROUP BY 1",
            {"lo": NOW - dt.timedelta(hours=34), "hi": NOW}).decode()
        return windows, naive, count


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    with provider_database("bench_limits") as (dsn, tmp):
        _, seconds = stopwatch(lambda: populate(dsn, lambda cur: fill(cur, n, rows)))
        database = db.Database(dsn)
        with database.transaction() as cur:
            cur.execute("SELECT count(*) AS n FROM cdr_report_detail")
            have = cur.fetchone()["n"]
        print(f"{n:,} clients with limits, {have:,} cdr_report_detail rows, "
              f"{3 * n:,} qos_route_report rows, generated in {seconds:.1f} s")
        settings = bench_settings(dsn, tmp)
        windows, naive, count = bare_queries(database, settings)
        bare = min(psql_seconds(dsn, [windows] * 3))
        show(f"bare aggregation, {count:,} windows, psql best of 3", bare, unit="ms")
        show("naive one-zone GROUP BY (no windows), psql best of 3",
             min(psql_seconds(dsn, [naive] * 3)), unit="ms")
        first, seconds = stopwatch(lambda: usage_limit.sweep(database, NOW, settings))
        show("first ladder sweep (steps reached, blocks written)", seconds, unit="ms")
        with database.transaction() as cur:
            cur.execute("SELECT count(*) AS n FROM resource_block")
            blocks = cur.fetchone()["n"]
        print(f"    queued {first.queued:,} notices, {blocks:,} trunk blocks")
        later = NOW + dt.timedelta(minutes=1)
        best = float("inf")
        for _ in range(3):
            res, seconds = stopwatch(lambda: usage_limit.sweep(database, later, settings))
            best = min(best, seconds)
        show("steady ladder sweep (nothing new), best of 3", best, unit="ms")
        print(f"    queued {res.queued:,}; steady sweep / bare aggregation = "
              f"{best / bare:.2f}")
        database.close()


if __name__ == "__main__":
    main()
