"""Benchmark: alerts 1 and 2 over N demo clients (default 100,000; 2 % under the
low-balance threshold, 1 % at zero) on an embedded PostgreSQL, delivered to a loopback
SMTP sink.

    .venv/bin/python bench/bench_balance.py [N]

Prints, for each alert: the bare sweep query run by psql (server time, `\\timing`) beside
the full sweep (query + render + enqueue + provider writes) when the episodes open, and
again in the steady state (every due client already told today: only the query runs);
then the outbox drained through dnl_ad.delivery into an SmtpSink, in notices per second.
The steady-state sweep should cost about what psql's query costs: clients that are fine
never reach Python.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnl_ad import clock, db, delivery, demo_data
from dnl_ad.alerts import balance_common, low_balance, zero_balance
from dnl_ad.config import REPO_ROOT, Settings
from dnl_ad.embedded_pg import EmbeddedPostgres, build_provider_database
from dnl_ad.smtp_sink import SmtpSink


def _timed(label: str, work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = work()
    seconds = time.perf_counter() - started
    print(f"  {label:<50} {seconds * 1000:9.1f} ms")
    return out, seconds


def _psql_binary() -> Path:
    import pgserver

    return Path(pgserver.__file__).resolve().parent / "pginstall" / "bin" / "psql"


def _psql_ms(dsn: str, query: str, runs: int = 3) -> float:
    """Best server-side time of `query` over `runs` runs in one psql session."""
    script = "\\timing on\n" + "".join(f"{query};\n" for _ in range(runs))
    out = subprocess.run([str(_psql_binary()), "-X", "-q", "-d", dsn, "-o", "/dev/null"],
                         input=script, capture_output=True, text=True, check=True).stdout
    times = [float(t) for t in re.findall(r"Time: ([0-9.]+) ms", out)]
    if not times:
        raise RuntimeError(f"psql printed no timing: {out!r}")
    return min(times)


def _bare_query(database: db.Database, rule: balance_common.BalanceRule, now: dt.datetime,
                schema: str) -> tuple[str, int]:
    """The sweep's query as psql will run it, and how many rows it returns now."""
    with database.transaction() as cur:
        params = {"kind": rule.kind, "now": now}
        text = cur.mogrify(balance_common.sweep_query(rule, schema), params).decode()
        cur.execute(balance_common.sweep_query(rule, schema), params)
        return text, len(cur.fetchall())


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    now = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.UTC)
    with tempfile.TemporaryDirectory(prefix="dnl_ad_bench_") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            dsn = build_provider_database(server.admin_dsn, "bench_balance")
            conn = db.connect(dsn)
            started = time.perf_counter()
            with conn.cursor() as cur:
                demo_data.generate(cur, n, now, traffic_hours=1)
            conn.commit()
            conn.close()
            print(f"{n:,} clients generated in {time.perf_counter() - started:.1f} s")
            with SmtpSink() as sink:
                settings = Settings(connection_string=dsn, smtp_host=sink.host,
                                    smtp_port=sink.port, smtp_security="none",
                                    delivery_batch=5000, dry_run_dir=str(Path(tmp) / "eml"),
                                    template_dir=str(REPO_ROOT / "templates"))
                database = db.Database(dsn)
                queued = 0
                for module in (low_balance, zero_balance):
                    rule = module.RULE
                    kw = {"resolver": clock.ZoneResolver(),
                          "complaints": balance_common.Complaints()}
                    print(f"{rule.kind}:")
                    text, due = _bare_query(database, rule, now, settings.own_schema)
                    bare = _psql_ms(dsn, text)
                    print(f"  {'bare query in psql (' + format(due, ',') + ' rows)':<50} "
                          f"{bare:9.1f} ms")
                    res, _ = _timed("sweep, episodes opening",
                                    lambda m=module, k=kw: m.sweep(database, now, settings, **k))
                    print(f"    queued {res.queued:,}, skipped (bad rows) {res.skipped:,}")
                    queued += res.queued
                    later = now + dt.timedelta(minutes=1)
                    text, due = _bare_query(database, rule, later, settings.own_schema)
                    bare = _psql_ms(dsn, text)
                    print(f"  {'bare query in psql, steady (' + format(due, ',') + ' rows)':<50}"
                          f" {bare:9.1f} ms")
                    best = float("inf")
                    for _ in range(3):  # best of 3, like psql: nothing is due, so repeatable
                        started = time.perf_counter()
                        res = module.sweep(database, later, settings, **kw)
                        best = min(best, time.perf_counter() - started)
                    print(f"  {'sweep, steady state (nothing new due), best of 3':<50} "
                          f"{best * 1000:9.1f} ms")
                    print(f"    queued {res.queued:,}")
                print("delivery:")

                def drain() -> int:
                    total = 0
                    while True:
                        r = delivery.deliver(database, settings, now=now)
                        total += r.sent
                        if r.total == 0:
                            return total
                sent, seconds = _timed("deliver the outbox to the SMTP sink", drain)
                print(f"    {sent:,} of {queued:,} notices sent, {len(sink.messages):,} "
                      f"received: {sent / seconds:,.0f} notices/s end to end")
                database.close()
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
