"""Scaffolding the bench scripts share, so each script reads as what it measures.

The scripts run as `.venv/bin/python bench/<name>.py`; Python then puts bench/ first on
sys.path, so `import _support` works with no path handling (bench is not a package), and
dnl_ad comes from the editable install in .venv.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import re
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from dnl_ad import db, delivery
from dnl_ad.config import REPO_ROOT, Settings
from dnl_ad.devtools.embedded_pg import EmbeddedPostgres, build_provider_database, build_v5_database
from dnl_ad.devtools.smtp_sink import SmtpSink

T = TypeVar("T")

LABEL_WIDTH = 52  # every figure line pads its label to this, so the numbers line up


@contextmanager
def provider_database(name: str, *, v5: bool = False) -> Iterator[tuple[str, Path]]:
    """A throwaway embedded PostgreSQL holding provider database `name` (the project's
    subset, or with `v5` the real v5 schema of ../shared/dnl_v5): yields its DSN and a
    scratch directory; the server is stopped and every file removed on exit, even on error.
    """
    build = build_v5_database if v5 else build_provider_database
    with tempfile.TemporaryDirectory(prefix="dnl_ad_bench_") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            yield build(server.admin_dsn, name), Path(tmp)
        finally:
            server.cleanup()


def populate(dsn: str, fill: Callable[[db.Cursor], T]) -> T:
    """Run `fill` on one cursor in one transaction, committed; the connection is closed."""
    conn = db.connect(dsn)
    try:
        with conn.cursor() as cur:
            out = fill(cur)
        conn.commit()
        return out
    finally:
        conn.close()


def stopwatch(work: Callable[[], T]) -> tuple[T, float]:
    """`work()`'s result and the wall-clock seconds it took (perf_counter)."""
    started = time.perf_counter()
    out = work()
    return out, time.perf_counter() - started


def show(label: str, *seconds: float, unit: str = "s") -> None:
    """Print one figure line: the label, then each time in `unit` ("s" or "ms")."""
    values = [f"{s * 1000:.1f} ms" if unit == "ms" else f"{s:.2f} s" for s in seconds]
    print(f"{label:<{LABEL_WIDTH}} {values[0]:>12}" + "".join(f", {v}" for v in values[1:]))


def timed(label: str, work: Callable[[], T], *, unit: str = "s") -> tuple[T, float]:
    """Run `work`, print how long it took under `label`; its result and the seconds."""
    out, seconds = stopwatch(work)
    show(label, seconds, unit=unit)
    return out, seconds


def bench_settings(dsn: str, scratch: Path, sink: SmtpSink | RemoteSink | None = None,
                   **overrides: Any) -> Settings:
    """Settings for the database at `dsn` with the repo's templates, dry-run mail kept in
    `scratch`, and (given a sink) plain SMTP to it; `overrides` sets any other field."""
    fields: dict[str, Any] = {"connection_string": dsn,
                              "template_dir": str(REPO_ROOT / "templates"),
                              "dry_run_dir": str(scratch / "eml")}
    if sink is not None:
        fields.update(smtp_host=sink.host, smtp_port=sink.port, smtp_security="none")
    return Settings(**(fields | overrides))


def drain(database: db.Database, settings: Settings, now: dt.datetime) -> int:
    """Deliver batch after batch until nothing is due at `now`; how many notices were sent."""
    sent = 0
    while True:
        result = delivery.deliver(database, settings, now=now)
        if result.total == 0:
            return sent
        sent += result.sent


def psql_seconds(dsn: str, queries: Sequence[str]) -> list[float]:
    """Each query run in turn in one psql session (pgserver ships psql); the server round
    trip `\\timing` printed for each, in seconds. Rows are discarded."""
    from pgserver._commands import POSTGRES_BIN_PATH

    script = "\\timing on\n" + "".join(f"{query};\n" for query in queries)
    out = subprocess.run([str(Path(POSTGRES_BIN_PATH) / "psql"), "-X", "-q", "-d", dsn,
                          "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"],
                         input=script, capture_output=True, text=True, check=True).stdout
    times = [float(ms) / 1000 for ms in re.findall(r"Time: ([0-9.]+) ms", out)]
    if len(times) != len(queries):
        raise RuntimeError(f"psql printed {len(times)} timings for {len(queries)} queries")
    return times


def outbox_messages(database: db.Database) -> list[tuple[str, list[str], bytes]]:
    """Every message in the outbox as (from, to + cc, raw bytes), for a bare smtplib loop."""
    with database.transaction() as cur:
        cur.execute("SELECT from_addr, to_addrs, cc_addrs, message FROM dnl_ad.outbox "
                    "ORDER BY id")
        return [(r["from_addr"], list(r["to_addrs"]) + list(r["cc_addrs"] or []),
                 bytes(r["message"])) for r in cur.fetchall()]


def bare_send(host: str, port: int, messages: Sequence[tuple[str, list[str], bytes]]) -> None:
    """The baseline: one smtplib connection, MAIL/RCPT/DATA per message, nothing else."""
    with smtplib.SMTP(host, port, local_hostname="bench") as smtp:
        for from_addr, to, raw in messages:
            smtp.sendmail(from_addr, to, raw)


def _serve_sink(latency: float, commands: Any, answers: Any) -> None:
    """The sink in its own process (as a relay is): the sender's threads do not share
    its interpreter lock. Commands: 'reset', 'count', 'stop'."""
    with SmtpSink() as sink:
        sink.set_latency(latency)
        answers.put((sink.host, sink.port))
        while (command := commands.get()) != "stop":
            if command == "reset":
                sink.reset()
                sink.set_latency(latency)
                answers.put(0)
            else:
                answers.put(len(sink.messages))


class RemoteSink:
    """The loopback SMTP sink (dnl_ad.devtools.smtp_sink) in a process of its own, as a
    mail relay is: in the benchmark's own process the sink's parsing would compete with
    the sender for one interpreter lock, and the figures would measure that contention.
    Use as a context manager; `count()` is how many messages it has accepted."""

    def __init__(self, latency: float = 0.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.commands, self.answers = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=_serve_sink,
                                   args=(latency, self.commands, self.answers))
        self.process.start()
        self.host, self.port = self.answers.get(timeout=60)

    def ask(self, command: str) -> int:
        self.commands.put(command)
        return self.answers.get(timeout=60)

    def count(self) -> int:
        return self.ask("count")

    def reset(self) -> None:
        self.ask("reset")

    def stop(self) -> None:
        self.commands.put("stop")
        self.process.join(30)

    def __enter__(self) -> RemoteSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
