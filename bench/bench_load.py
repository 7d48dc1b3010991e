"""Benchmark: load N demo clients (default 100,000) into a fresh embedded PostgreSQL.

    .venv/bin/python bench/bench_load.py [N]

Prints the rows written and the seconds taken by demo_data.generate (COPY + set-based SQL).
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from dnl_ad import db, demo_data
from dnl_ad.embedded_pg import EmbeddedPostgres, build_provider_database


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    now = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="dnl_ad_bench_") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            dsn = build_provider_database(server.admin_dsn, "bench_load")
            conn = db.connect(dsn)
            started = time.perf_counter()
            with conn.cursor() as cur:
                result = demo_data.generate(cur, n, now)
            conn.commit()
            seconds = time.perf_counter() - started
            conn.close()
        finally:
            server.cleanup()
    print(f"clients {result.clients:,}  trunks {result.trunks:,}  "
          f"rate details {result.rate_details:,}  traffic rows {result.traffic_rows:,}")
    print(f"load time {seconds:.1f} s  ({result.clients / seconds:,.0f} clients/s)")


if __name__ == "__main__":
    main()
