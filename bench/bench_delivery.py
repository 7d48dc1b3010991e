"""Benchmark: notices delivered per second by dnl_ad.delivery through a real SMTP sink,
beside a bare smtplib loop sending the same messages to the same sink.

    .venv/bin/python bench/bench_delivery.py [N] [--latency-ms MS] [--sessions 1,4,8]

N notices (default 2000). The bare loop uses one connection and only does
MAIL/RCPT/DATA; delivery also claims the rows (FOR UPDATE SKIP LOCKED), records every
outcome in the outbox and writes an email_log row per notice, over SMTP_SESSIONS
parallel sessions (each value of --sessions is one run, the outbox refilled between
runs). --latency-ms makes the sink wait that long before answering each DATA, as a
real relay across a network does: then one session is bounded by its round trips and
parallel sessions pay off. Queueing (render + build + enqueue) is timed too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import smtplib
from decimal import Decimal

from _support import RemoteSink, bench_settings, populate, provider_database, stopwatch

from dnl_ad import db, delivery
from dnl_ad.config import Settings
from dnl_ad.notice import Notice
from dnl_ad.pipeline import Pipeline

NOW = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


def _notices(n: int) -> list[Notice]:
    return [Notice("low_balance", f"bench:{i}", "lowbalance", i, f"client{i}@bench.example",
                   {"company_name": f"Client {i} 有限公司", "client_name": f"c{i}",
                    "balance": Decimal("-12.5") + i, "notify_balance": Decimal("100"),
                    "credit_limit": Decimal("300"), "remaining_credit": Decimal("287.5")},
                   NOW, alert_rule="bench") for i in range(n)]


def _provider_rows(cur: db.Cursor) -> None:
    """The sender address and the (default) templates delivery reads."""
    cur.execute("INSERT INTO system_parameter (sys_id, fromemail, sys_timezone) "
                "VALUES (1, 'billing@carrier.example', '+0000')")
    cur.execute("INSERT INTO mail_tmplate DEFAULT VALUES")


def _queue(database: db.Database, settings: Settings, notices: list[Notice]) -> None:
    """Render, build and enqueue every notice in one transaction, as a sweep does."""
    with database.transaction() as cur:
        cur.execute("TRUNCATE dnl_ad.outbox, dnl_ad.smtp_backoff, email_log")
        pipeline = Pipeline.open(cur, settings)
        for notice in notices:
            pipeline.queue(cur, notice)


def _outbox(database: db.Database) -> list[tuple[str, list[str], bytes]]:
    """Every queued message as (from, to, raw bytes), for the bare smtplib loop."""
    with database.transaction() as cur:
        cur.execute("SELECT from_addr, to_addrs, message FROM dnl_ad.outbox ORDER BY id")
        return [(r["from_addr"], list(r["to_addrs"]), bytes(r["message"]))
                for r in cur.fetchall()]


def _bare_send(host: str, port: int, messages: list[tuple[str, list[str], bytes]]) -> None:
    with smtplib.SMTP(host, port, local_hostname="bench") as smtp:
        for from_addr, to, raw in messages:
            smtp.sendmail(from_addr, to, raw)


def main(n: int, latency_ms: float, sessions: list[int]) -> None:
    logging.basicConfig(level=logging.WARNING)
    runs: list[tuple[int, float, int]] = []
    with provider_database("bench_delivery") as (dsn, tmp):
        populate(dsn, _provider_rows)
        database = db.Database(dsn)
        sink = RemoteSink(latency_ms / 1000)
        try:
            notices = _notices(n)
            queue_s = 0.0
            for count in sessions:
                settings = bench_settings(dsn, tmp, sink, delivery_batch=n,
                                          smtp_sessions=count)
                _, queue_s = stopwatch(lambda s=settings: _queue(database, s, notices))
                sink.ask("reset")
                result, deliver_s = stopwatch(
                    lambda s=settings: delivery.deliver(database, s, now=NOW))
                assert result.sent == n and sink.ask("count") == n, result
                runs.append((count, deliver_s, result.connections))
            messages = _outbox(database)
            sink.ask("reset")
            _, bare_s = stopwatch(lambda: _bare_send(sink.host, sink.port, messages))
            assert sink.ask("count") == n
        finally:
            sink.stop()
        database.close()

    print(f"notices: {n}, loopback aiosmtpd sink (own process) answering each DATA after "
          f"{latency_ms:g} ms")
    print(f"  queue (render + MIME + enqueue, one transaction): {n / queue_s:9.0f} notices/s")
    print(f"  bare smtplib loop, one connection (send only):    {n / bare_s:9.0f} notices/s")
    for count, deliver_s, connections in runs:
        label = f"  deliver, SMTP_SESSIONS={count} ({connections} connection(s)):"
        print(f"{label:<52}{n / deliver_s:9.0f} notices/s  "
              f"({bare_s / deliver_s:.2f}x bare)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--sessions", default="1",
                        help="comma-separated SMTP_SESSIONS values, one run each")
    args = parser.parse_args()
    main(args.n, args.latency_ms, [int(v) for v in args.sessions.split(",")])
