"""`./run.sh demo`: every alert's notices in about a minute, with nothing to set up.

1. Start an embedded PostgreSQL (pgserver) in a temporary directory and load the
   provider subset, dnl_ad's schema and demo data generated around the real current
   time, so that the loop's real clock finds every alert due (daily reports included:
   their clients' local send hour is now).
2. Start an SMTP sink on 127.0.0.1 that writes every accepted message as an .eml file.
3. Run the daemon's real loop (scheduler.Loop: every sweep and delivery, short
   cadences) in a thread until a message of each kind has arrived, or the
   time limit passes.
4. Print a summary table, stop everything, delete the database.

The demo never touches a real database or mail server; its log is written beside the
.eml files.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .. import daemon, db, logs
from ..alerts import ALERTS
from ..config import Settings, default_template_dir
from ..scheduler import Loop
from . import demo_data

log = logging.getLogger(__name__)

DEMO_DB = "dnl_ad_demo"


@dataclass
class KindSummary:
    count: int = 0
    example_to: str = ""
    example_subject: str = ""
    files: list[str] = field(default_factory=list)


def summarize(eml_dir: Path) -> dict[str, KindSummary]:
    """kind -> how many .eml files, an example recipient and subject (from the files)."""
    found: dict[str, KindSummary] = {spec.kind: KindSummary() for spec in ALERTS.values()}
    for path in sorted(eml_dir.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        kind = str(msg.get("X-DNL-AD-Kind", "")).strip()
        entry = found.setdefault(kind, KindSummary())
        entry.count += 1
        entry.files.append(path.name)
        if not entry.example_to:
            entry.example_to = " ".join(str(msg.get("To", "")).split())
            entry.example_subject = " ".join(str(msg.get("Subject", "")).split())
    return found


def table(summary: dict[str, KindSummary], eml_dir: Path) -> str:
    rows = [("#", "alert", "notices", "example recipient", "example subject")]
    for number, spec in ALERTS.items():
        s = summary.get(spec.kind, KindSummary())
        subject = s.example_subject if len(s.example_subject) <= 60 \
            else s.example_subject[:57] + "..."
        to = s.example_to if len(s.example_to) <= 36 else s.example_to[:33] + "..."
        rows.append((str(number), spec.kind, str(s.count), to or "-", subject or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"\n.eml files: {eml_dir}/  (open them with any mail program)")
    return "\n".join(lines)


def _kinds_received(sink: object) -> set[str]:
    return {str(m.message.get("X-DNL-AD-Kind", "")).strip()
            for m in list(sink.messages)}  # type: ignore[attr-defined]


def demo_settings(dsn: str, smtp_host: str, smtp_port: int, work: Path, eml_dir: Path) -> Settings:
    """Short cadences so the whole tour takes seconds; everything else as in production."""
    return Settings(
        connection_string=dsn, smtp_host=smtp_host, smtp_port=smtp_port,
        smtp_security="none", smtp_from="alerts@carrier.example",
        pidfile=str(work / "dnl_ad.pid"), logfile=str(eml_dir / "dnl_ad-demo.log"),
        dry_run_dir=str(work / "dry-run"), template_dir=default_template_dir(),
        balance_check_seconds=2, daily_check_seconds=2, trunk_check_seconds=2,
        quality_check_seconds=2, period_check_seconds=2, traffic_check_seconds=2,
        watch_check_seconds=2,
        usage_limit_check_seconds=2, fraud_check_seconds=2,
        low_balance_disable=True,  # the demo opts in to show alert 10
        delivery_seconds=1, retry_base_seconds=1, retry_max_seconds=4,
        cdr_download_url="https://portal.carrier.example/cdr",
    )


def main(*, clients: int = 40, timeout: float = 90.0, out_dir: str | Path = "demo-mail",
         out: object = None) -> int:
    from .embedded_pg import EmbeddedPostgres, build_provider_database
    from .smtp_sink import SmtpSink

    stream = out or sys.stdout
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # pgserver's platformdirs
    eml_dir = Path(out_dir).resolve()
    if eml_dir.exists():
        for old in eml_dir.glob("*.eml"):
            old.unlink()
    eml_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {text}", file=stream, flush=True)

    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level)
    work = Path(tempfile.mkdtemp(prefix="dnl_ad_demo_"))
    server = None
    try:
        # Everything the daemon and its helpers say goes to the demo's log file; the
        # console shows the demo's own progress lines and the summary.
        logs.setup(demo_settings("dbname=dnl_ad_demo", "127.0.0.1", 0, work, eml_dir))
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        say("starting an embedded PostgreSQL ...")
        server = EmbeddedPostgres(work / "pgdata")
        dsn = build_provider_database(server.admin_dsn, DEMO_DB)
        now = dt.datetime.now(dt.timezone.utc)
        conn = db.connect(dsn)
        try:
            with conn.cursor() as cur:
                made = demo_data.generate(cur, clients, now)
            conn.commit()
        finally:
            conn.close()
        say(f"demo data: {made.clients} clients, {made.trunks} trunks, "
            f"{made.traffic_rows} hourly traffic rows, around {now:%Y-%m-%d %H:%M} UTC")
        with SmtpSink(eml_dir=eml_dir) as sink:
            settings = demo_settings(dsn, sink.host, sink.port, work, eml_dir)
            say(f"SMTP sink on {sink.host}:{sink.port} writing to {eml_dir}/")
            database = db.Database(dsn, sleep=lambda s: time.sleep(min(s, 0.5)))
            daemon.startup(database, settings, now)
            loop = Loop(settings, database)
            thread = threading.Thread(target=loop.run_forever, name="dnl_ad-loop", daemon=True)
            say(f"running the daemon's loop ({len(ALERTS)} sweeps + delivery) ...")
            thread.start()
            want = {spec.kind for spec in ALERTS.values()}
            deadline = time.monotonic() + timeout
            try:
                while time.monotonic() < deadline and not want <= _kinds_received(sink):
                    time.sleep(0.2)
            except KeyboardInterrupt:
                say("interrupted")
            loop.wakeup.request_stop("demo finished")
            thread.join(timeout=30)
            loop.database.close()
            missing = want - _kinds_received(sink)
        summary = summarize(eml_dir)
        print("", file=stream)
        print(table(summary, eml_dir), file=stream)
        print(f"daemon log: {settings.logfile}", file=stream)
        if missing:
            say(f"NOT all {len(want)} kinds went out within {timeout:.0f} s; missing: "
                f"{', '.join(sorted(missing))} (see the log)")
            return 1
        say(f"all {len(want)} kinds sent; cleaning up")
        return 0
    finally:
        for handler in root.handlers[:]:
            if handler not in saved_logging[0]:
                root.removeHandler(handler)
                handler.close()
        for handler in saved_logging[0]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved_logging[1])
        if server is not None:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
