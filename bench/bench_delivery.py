"""Benchmark: notices delivered per second by dnl_ad.delivery through a real SMTP sink,
beside a bare smtplib loop sending the same messages to the same sink.

    .venv/bin/python bench/bench_delivery.py [N]      (default N = 2000)

Both sides use one SMTP connection. The bare loop only does MAIL/RCPT/DATA; delivery
also claims the rows (FOR UPDATE SKIP LOCKED), records every outcome in the outbox and
writes an email_log row per notice. The ratio says what that bookkeeping costs. Queueing
(render + build + enqueue) is timed too, as notices per second.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import sys
from decimal import Decimal

from _support import bench_settings, populate, provider_database, stopwatch

from dnl_ad import db, delivery
from dnl_ad.config import Settings
from dnl_ad.notice import Notice
from dnl_ad.pipeline import Pipeline
from dnl_ad.smtp_sink import SmtpSink

NOW = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


def _notices(n: int) -> list[Notice]:
    return [Notice("low_balance", f"bench:{i}", "lowbalance", i, f"client{i}@bench.example",
                   {"company_name": f"Client {i} 有限公司", "client_name": f"c{i}",
                    "balance": Decimal("-12.5") + i, "notify_balance": Decimal("100"),
                    "credit_limit": Decimal("300"), "remaining_credit": Decimal("287.5")},
                   NOW, alert_rule="bench") for i in range(n)]


def _provider_rows(cur: db.Cursor) -> None:
    """The sender address and the (default) templates delivery reads."""
    cur.execute("INSERT INTO system_parameter (fromemail, sys_timezone) "
                "VALUES ('billing@carrier.example', '+00:00')")
    cur.execute("INSERT INTO mail_tmplate DEFAULT VALUES")


def _queue(database: db.Database, settings: Settings, notices: list[Notice]) -> None:
    """Render, build and enqueue every notice in one transaction, as a sweep does."""
    with database.transaction() as cur:
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


def main(n: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with provider_database("bench_delivery") as (dsn, tmp):
        populate(dsn, _provider_rows)
        database = db.Database(dsn)
        with SmtpSink() as sink:
            settings = bench_settings(dsn, tmp, sink, delivery_batch=n)
            notices = _notices(n)
            _, queue_s = stopwatch(lambda: _queue(database, settings, notices))
            messages = _outbox(database)
            result, deliver_s = stopwatch(lambda: delivery.deliver(database, settings, now=NOW))
            assert result.sent == n and result.connections == 1, result
            sink.reset()
            _, bare_s = stopwatch(lambda: _bare_send(sink.host, sink.port, messages))
            assert len(sink.messages) == n
        database.close()

    print(f"notices: {n}, one SMTP connection each way, loopback aiosmtpd sink")
    print(f"  queue (render + MIME + enqueue, one transaction): {n / queue_s:9.0f} notices/s")
    print(f"  dnl_ad.delivery.deliver (claim, send, record):    {n / deliver_s:9.0f} notices/s")
    print(f"  bare smtplib loop (send only):                    {n / bare_s:9.0f} notices/s")
    print(f"  ratio deliver / bare:                             {bare_s / deliver_s:9.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
