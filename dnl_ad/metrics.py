"""Prometheus metrics and a health check over HTTP (METRICS_PORT; off by default).

Carriers watch dnl_ad as they watch the rest of their stack. The loop reports each job
run to Metrics.observe (from the loop's one thread); an "outbox_metrics" job reads the
outbox depth; a small threaded HTTP server (its own thread) serves

- /metrics: the registry in Prometheus' text format (prometheus_client);
- /healthz: 200 "ok" when the loop finished a tick within 3 loop periods (the longest
  job cadence) and the database answers a `SELECT 1`, else 503 with the reason.

Each daemon has its own CollectorRegistry, so tests and reloads never collide. The
per-job label is `sweep` (the seven alerts, delivery, outbox_metrics): `job` belongs to
Prometheus' own scrape target.
"""

from __future__ import annotations

import datetime as dt
import http.server
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest
from psycopg2 import sql

from . import db
from .db import Cursor
from .migrations import own

log = logging.getLogger(__name__)

HEALTH_PERIODS = 3


class Metrics:
    """The daemon's metrics; `observe` is the scheduler's per-run hook."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.last_success = Gauge("dnl_ad_sweep_last_success_timestamp_seconds",
                                  "Unix time of the last successful run, per job",
                                  ["sweep"], registry=r)
        self.duration = Gauge("dnl_ad_sweep_duration_seconds",
                              "Duration of the last run, per job", ["sweep"], registry=r)
        self.queued = Counter("dnl_ad_notices_queued", "Notices newly queued, per alert",
                              ["alert"], registry=r)
        self.failures = Counter("dnl_ad_job_failures", "Runs that raised, per job",
                                ["sweep"], registry=r)
        self.sent = Counter("dnl_ad_delivery_sent", "Notices delivered", registry=r)
        self.deferred = Counter("dnl_ad_delivery_deferred",
                                "Delivery attempts deferred for a retry", registry=r)
        self.failed = Counter("dnl_ad_delivery_failed", "Notices failed for good",
                              registry=r)
        self.outbox_pending = Gauge("dnl_ad_outbox_pending", "Notices waiting in the outbox",
                                    registry=r)
        self.outbox_oldest = Gauge("dnl_ad_outbox_oldest_pending_age_seconds",
                                   "Age of the oldest pending notice (0: none)", registry=r)
        self.active = Gauge("dnl_ad_active", "1 on the active daemon, 0 on a standby",
                            registry=r)
        self.database_up = Gauge("dnl_ad_database_up",
                                 "1 while the loop's database connection works", registry=r)
        self.last_tick = Gauge("dnl_ad_loop_last_tick_timestamp_seconds",
                               "Unix time of the loop's last finished tick", registry=r)
        self.active.set(1)
        self.database_up.set(1)
        self.last_tick_monotonic: float | None = None

    def observe(self, job: str, ok: bool, seconds: float, result: Any) -> None:
        """One job run (called by the scheduler after every run)."""
        self.duration.labels(job).set(seconds)
        if not ok:
            self.failures.labels(job).inc()
            return
        self.last_success.labels(job).set(time.time())
        queued = getattr(result, "queued", None)
        if isinstance(queued, int) and not hasattr(result, "sent"):
            self.queued.labels(job).inc(queued)
        if hasattr(result, "sent"):
            self.sent.inc(result.sent)
            self.deferred.inc(getattr(result, "retry", 0))
            self.failed.inc(getattr(result, "failed", 0))

    def tick(self, *, active: bool, database_up: bool) -> None:
        """The loop finished a tick."""
        self.last_tick_monotonic = time.monotonic()
        self.last_tick.set(time.time())
        self.active.set(1 if active else 0)
        self.database_up.set(1 if database_up else 0)

    def read_outbox(self, cur: Cursor, schema: str, now: dt.datetime) -> None:
        """Outbox depth and the age of its oldest pending notice (one indexed query)."""
        cur.execute(sql.SQL("SELECT count(*) AS n, min(created_at) AS oldest FROM {} "
                               "WHERE status = 'pending'").format(own(schema, "outbox")))
        row = cur.fetchone()
        self.outbox_pending.set(row["n"])
        oldest = row["oldest"]
        self.outbox_oldest.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def health(metrics: Metrics, dsn: str, period: float) -> tuple[bool, str]:
    """Healthy: a tick finished within HEALTH_PERIODS loop periods and the database
    answers. Returns (healthy, the reason in words)."""
    last = metrics.last_tick_monotonic
    if last is None:
        return False, "the loop has not finished a tick yet"
    age = time.monotonic() - last
    if age > HEALTH_PERIODS * period:
        return False, f"the loop's last tick was {age:.0f} s ago (limit " \
                      f"{HEALTH_PERIODS * period:.0f} s)"
    try:
        conn = db.connect(dsn, autocommit=True, connect_timeout=3)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            conn.close()
    except Exception as exc:
        first = db.scrub(str(exc)).strip().splitlines()
        return False, f"database: {first[0] if first else type(exc).__name__}"
    return True, "ok"


class Server:
    """/metrics and /healthz on a ThreadingHTTPServer in a daemon thread."""

    def __init__(self, metrics: Metrics, check: Callable[[], tuple[bool, str]],
                 address: str, port: int) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    outer._answer(self, 200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok, why = outer.check()
                    outer._answer(self, 200 if ok else 503, (why + "\n").encode(),
                                  "text/plain; charset=utf-8")
                else:
                    outer._answer(self, 404, b"try /metrics or /healthz\n",
                                  "text/plain; charset=utf-8")

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        self.metrics, self.check = metrics, check
        self.httpd = http.server.ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        name="dnl_ad-metrics", daemon=True)

    @staticmethod
    def _answer(handler: http.server.BaseHTTPRequestHandler, code: int, body: bytes,
                content_type: str) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
