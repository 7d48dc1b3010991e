"""Benchmark: the daily usage summary for N clients (default 20,000) on an embedded PostgreSQL.

    .venv/bin/python bench/bench_usage.py [N] [--sink-in-process]

Every client has a day of hourly traffic in its own local day (two rows per hour, so
about 1,000,000 cdr_report_detail rows for 20,000 clients), spread over six zones. Prints:

- the bare aggregation query for all N windows, run by psql (pgserver ships it), twice;
- the usage-summary sweep that queues all N summaries (plan + aggregation + render +
  enqueue), and the same sweep again when everything is queued (the steady state that
  runs every DAILY_CHECK_SECONDS);
- delivery of all N summaries to the SMTP sink on loopback (dnl_ad.devtools.smtp_sink), as
  summaries per second, and queue + deliver end to end; then the same delivery again
  with SMTP_SESSIONS=1 (the default is 4), for comparison;
- the baseline: the same messages sent by a bare smtplib loop (one connection,
  MAIL/RCPT/DATA only) to the same sink, and end to end as a fraction of it.

The sink runs in a process of its own, as a mail relay does (bench/_support.RemoteSink);
`--sink-in-process` runs it in the benchmark's process instead, where its parsing competes
with the sender for the interpreter lock (how the figures before issue 15 were taken).

Data is generated with set-based SQL on the server (INSERT ... SELECT generate_series).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from dataclasses import replace

from _support import (
    RemoteSink,
    bare_send,
    bench_settings,
    drain,
    outbox_messages,
    populate,
    provider_database,
    psql_seconds,
    show,
    timed,
)

from dnl_ad import db
from dnl_ad.alerts import SweepResult, daily_common, usage_summary
from dnl_ad.devtools.smtp_sink import SmtpSink

REPORT_DAY = dt.date(2026, 11, 20)
NOW = dt.datetime(2026, 11, 21, 6, tzinfo=dt.UTC)  # every zone's 00:00 send hour has passed
ZONES = ["+08:00", "-05:00", "+05:45", "+00:00", "+03:00", None]  # None: sys_timezone UTC
OFFSET_MINUTES = [480, -300, 345, 0, 180, 0]


def generate(cur: db.Cursor, n: int) -> int:
    """N clients with two trunks each, and their local day's hourly traffic."""
    cur.execute("INSERT INTO system_parameter (sys_id, sys_timezone, fromemail, finance_email) "
                "VALUES (%s, %s, %s, %s)", (1, "+00:00", "billing@carrier.example",
                                            "finance@carrier.example"))
    cur.execute("INSERT INTO currency (currency_id, code) VALUES (%s, %s)", (1, "USD"))
    cur.execute("INSERT INTO mail_tmplate DEFAULT VALUES")
    cur.execute(
        "INSERT INTO client (client_id, name, company, status, is_auto_summary, "
        "auto_summary_hour, auto_send_zone, billing_email, allowed_credit, currency_id) "
        "SELECT i, 'client' || i, 'Company ' || i, true, true, 0, "
        "(%(zones)s::varchar[])[1 + i %% 6], 'billing' || i || '@client' || i || '.example', "
        "-100 * (i %% 5), 1 FROM generate_series(1, %(n)s) AS i", {"zones": ZONES, "n": n})
    cur.execute("INSERT INTO c4_client_balance (client_id, balance) "
                "SELECT i::text, 1000 - i %% 1500 + 0.25 FROM generate_series(1, %s) AS i", (n,))
    cur.execute("INSERT INTO resource (resource_id, client_id, alias, active, ingress, egress) "
                "SELECT 2 * i - 1, i, 'in-' || i, true, true, false "
                "FROM generate_series(1, %(n)s) AS i UNION ALL "
                "SELECT 2 * i, i, 'out-' || i, true, false, true "
                "FROM generate_series(1, %(n)s) AS i", {"n": n})
    for day in (REPORT_DAY - dt.timedelta(days=1), REPORT_DAY, REPORT_DAY + dt.timedelta(days=1)):
        db.ensure_cdr_partition(cur, day)
    cur.execute(
        """
        INSERT INTO cdr_report_detail (
            report_time, ingress_client_id, ingress_id, egress_client_id, egress_id,
            ingress_total_calls, ingress_success_calls, egress_total_calls,
            egress_success_calls, not_zero_calls, duration, ingress_bill_time,
            egress_bill_time, ingress_call_cost, egress_call_cost)
        SELECT st.start + h * interval '1 hour', i, 2 * i - 1, p, 2 * p,
               t, s, t, s, s, s * 61, s * 60, s * 60, s * 0.0125, s * 0.015
        FROM generate_series(1, %(n)s) AS i
        CROSS JOIN LATERAL (SELECT (%(day)s::timestamp AT TIME ZONE 'UTC')
            - (%(offsets)s::int[])[1 + i %% 6] * interval '1 minute' AS start) AS st
        CROSS JOIN generate_series(0, 23) AS h
        CROSS JOIN generate_series(1, 2) AS k
        CROSS JOIN LATERAL (SELECT (i - 1 + 7 * k) %% %(n)s + 1 AS p,
                                   5 + (i * 7 + h * 13 + k) %% 40 AS t) AS pt
        CROSS JOIN LATERAL (SELECT (t * 3) / 5 AS s) AS ss
        """,
        {"n": n, "day": REPORT_DAY, "offsets": OFFSET_MINUTES},
    )
    rows = cur.rowcount
    cur.execute("ANALYZE")
    return rows


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=20_000)
    parser.add_argument("--sink-in-process", action="store_true")
    args = parser.parse_args()
    n = args.n
    with provider_database("bench_usage") as (dsn, tmp):
        rows, _ = timed(f"generate {n:,} clients and traffic (set-based SQL)",
                        lambda: populate(dsn, lambda cur: generate(cur, n)))
        print(f"  cdr_report_detail rows: {rows:,}")

        with SmtpSink() if args.sink_in_process else RemoteSink() as sink:
            print(f"  SMTP sink: {'in this process' if args.sink_in_process else 'own process'}")
            settings = bench_settings(dsn, tmp, sink, smtp_from="alerts@carrier.example",
                                      delivery_batch=2000)
            database = db.Database(dsn)

            # The bare aggregation query, exactly as the sweep sends it, through psql.
            with database.transaction() as cur:
                due = daily_common.plan(cur, usage_summary.SPEC, NOW, settings, database,
                                        SweepResult("usage_summary"))
                text = cur.mogrify(usage_summary.QUERY,
                                   daily_common.windows_params(due)).decode()
            print(f"  due windows: {len(due):,}")
            show("bare aggregation query in psql (cold, warm)", *psql_seconds(dsn, [text] * 2))
            # A normal sweep sees only the clients whose send instant just passed: one
            # zone's clients here (a sixth).
            one_zone = [d for d in due if d.zone == due[0].zone]
            with database.transaction() as cur:
                text = cur.mogrify(usage_summary.QUERY,
                                   daily_common.windows_params(one_zone)).decode()
            show(f"same, one send instant ({len(one_zone):,} windows)",
                 *psql_seconds(dsn, [text] * 2))

            res, t_queue = timed("usage-summary sweep: queue all",
                                 lambda: usage_summary.sweep(database, NOW, settings))
            print(f"  queued {res.queued:,}, skipped {res.skipped:,}")
            res2, _ = timed("usage-summary sweep again (all queued)",
                            lambda: usage_summary.sweep(database, NOW, settings))
            print(f"  queued {res2.queued:,}, duplicates {res2.duplicates:,}")
            sent, t_deliver = timed(f"deliver all (SMTP_SESSIONS={settings.smtp_sessions})",
                                    lambda: drain(database, settings, NOW))
            print(f"  sent {sent:,} ({sent / t_deliver:,.0f} summaries/s delivery; "
                  f"{sent / (t_queue + t_deliver):,.0f} summaries/s queue + deliver); "
                  f"sink received {received(sink):,}")
            # The same delivery over one session, for comparison.
            requeue(database)
            sink.reset()
            one = replace(settings, smtp_sessions=1)
            sent1, t_one = timed("deliver all again (SMTP_SESSIONS=1)",
                                 lambda: drain(database, one, NOW))
            print(f"  sent {sent1:,} ({sent1 / t_one:,.0f} summaries/s delivery)")
            # The baseline: the same messages through a bare smtplib loop, same sink.
            messages = outbox_messages(database)
            sink.reset()
            _, t_bare = timed("bare smtplib loop, same messages, same sink",
                              lambda: bare_send(sink.host, sink.port, messages))
            print(f"  {len(messages) / t_bare:,.0f} messages/s; end to end (queue + deliver) "
                  f"is {t_bare / (t_queue + t_deliver):.2f}x the bare loop "
                  f"(delivery alone {t_bare / t_deliver:.2f}x; with one session "
                  f"{t_bare / (t_queue + t_one):.2f}x and {t_bare / t_one:.2f}x)")
            database.close()
    print(f"clients {n:,}")


def received(sink: SmtpSink | RemoteSink) -> int:
    return sink.count() if isinstance(sink, RemoteSink) else len(sink.messages)


def requeue(database: db.Database) -> None:
    """Every summary due again, as if never sent (email_log emptied too)."""
    with database.transaction() as cur:
        cur.execute("UPDATE dnl_ad.outbox SET status = 'pending', done_addrs = '{}', "
                    "failed_addrs = '{}', attempts = 0, finished_at = NULL, "
                    "last_attempt_at = NULL, next_attempt_at = created_at")
        cur.execute("DELETE FROM email_log")


if __name__ == "__main__":
    main()
