"""Benchmark: load N demo clients (default 100,000) into a fresh embedded PostgreSQL.

    .venv/bin/python bench/bench_load.py [N]

Prints the rows written and the seconds taken by demo_data.generate (COPY + set-based SQL).
"""

from __future__ import annotations

import datetime as dt
import sys

from _support import populate, provider_database, stopwatch

from dnl_ad.devtools import demo_data


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    now = dt.datetime.now(dt.timezone.utc)
    with provider_database("bench_load") as (dsn, _):
        result, seconds = stopwatch(
            lambda: populate(dsn, lambda cur: demo_data.generate(cur, n, now)))
    print(f"clients {result.clients:,}  trunks {result.trunks:,}  "
          f"rate details {result.rate_details:,}  traffic rows {result.traffic_rows:,}")
    print(f"load time {seconds:.1f} s  ({result.clients / seconds:,.0f} clients/s)")


if __name__ == "__main__":
    main()
