"""Idle cost of the daemon: CPU seconds and peak RSS over 60 s with 100,000 clients.

Run: .venv/bin/python bench/bench_idle.py [--clients 100000] [--seconds 60]

1. An embedded PostgreSQL gets the provider subset and demo_data for N clients.
2. The data is settled so that nothing is due, while every alert stays enabled: all
   balances are healthy, every rate deck is downloaded, the demo's usage limits, fraud,
   quality, period, traffic and watch-list triggers are out of reach (settle()), and
   CATCHUP_HOURS=0 keeps the daily reports of the day that just ended from being sent.
   The sweeps still run their queries over all N clients at the default cadences (60 s;
   delivery every 5 s while mail waits, else when a waiting notice falls due or once a
   minute). `--ha` runs it with HA_STANDBY=true (its heartbeat: 20 more wake-ups a minute).
3. The real daemon (`python -m dnl_ad run`, its own process) starts; once it has logged
   its start, its CPU time (utime + stime from /proc) is sampled, after a first window
   (start-up: every sweep's first run, which reads every client once) and after a second
   one (steady: what a daemon sitting beside a switch costs, minute after minute); peak
   RSS is VmHWM from /proc/<pid>/status.
4. The baseline, measured in the same windows: a bare Python process with the daemon's
   imports and one database connection, running `SELECT 1` every second.

The database server's own CPU is not counted: this is the daemon's footprint.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

from _support import populate, provider_database

from dnl_ad import db
from dnl_ad.config import REPO_ROOT
from dnl_ad.devtools import demo_data
from dnl_ad.devtools.smtp_sink import SmtpSink

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def thread_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid`: the main thread (the loop and every job) and
    the others by thread id (the HA heartbeat, SMTP sessions, the metrics server)."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = "main" if task.name == str(pid) else f"thread {task.name}"
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        found[name] = found.get(name, 0.0) + seconds
    return found


def switches(pid: int) -> int:
    """Voluntary context switches of every thread of `pid`: how often it went to sleep,
    i.e. its wake-ups (a sleep until the next job, a wait for the server's answer)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += status_kb_of(task / "status", "voluntary_ctxt_switches")
        except OSError:
            continue
    return total


def status_kb_of(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


BARE = """
import sys, time
import psycopg2
import dnl_ad.daemon, dnl_ad.delivery, dnl_ad.scheduler, dnl_ad.pipeline  # noqa: F401
conn = psycopg2.connect(sys.argv[1])
conn.autocommit = True
while True:
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    time.sleep(1)
"""


UNREACHABLE = 1_000_000_000


def settle(cur: db.Cursor) -> None:
    """Nothing due, everything enabled (set-based statements, bound values only): the
    demo data's triggers for alerts 8-14 get limits their traffic never reaches, so
    every sweep still reads its rules and traffic and finds nothing to send."""
    cur.execute("UPDATE c4_client_balance SET balance = %s", (1_000_000,))
    cur.execute("UPDATE rate_send_log_detail SET download_date = %s",
                (dt.datetime.now(dt.timezone.utc),))
    cur.execute("UPDATE client SET hourly_limit = %s, daily_limit = %s "            # 8
                "WHERE hourly_limit IS NOT NULL OR daily_limit IS NOT NULL",
                (UNREACHABLE, UNREACHABLE))
    cur.execute("UPDATE fraud_detection SET hourly_revenue = %s "                  # 9
                "WHERE hourly_revenue > 0", (UNREACHABLE,))
    cur.execute("UPDATE alert_rules SET min_call_attempt = %s", (UNREACHABLE,))    # 11
    cur.execute("UPDATE dnl_ad.period_rule SET min_calls = %s", (UNREACHABLE,))   # 12
    cur.execute("UPDATE traffic_alert SET greater_hour = %s", (UNREACHABLE,))      # 13
    cur.execute("DELETE FROM cdr_report_detail WHERE ingress_code = %s",           # 14
                ("5351234",))
    cur.execute("ANALYZE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--ha", action="store_true", help="HA_STANDBY=true (heartbeat)")
    args = parser.parse_args()

    with provider_database("bench_idle") as (dsn, work):
        started = time.monotonic()
        made = populate(dsn, lambda cur: demo_data.generate(cur, args.clients,
                                                            dt.datetime.now(dt.timezone.utc)))
        populate(dsn, settle)
        print(f"data: {made.clients} clients, {made.trunks} trunks, "
              f"{made.traffic_rows} traffic rows in {time.monotonic() - started:.1f} s")
        with SmtpSink() as sink:
            env = {k: v for k, v in os.environ.items() if not k.startswith("DNL_AD_")}
            env.update({
                "DNL_AD_CONFIG": str(work / "none.ini"),
                "DNL_AD_CONNECTION_STRING": dsn,
                "DNL_AD_SMTP_HOST": sink.host, "DNL_AD_SMTP_PORT": str(sink.port),
                "DNL_AD_SMTP_SECURITY": "none",
                "DNL_AD_PIDFILE": str(work / "dnl_ad.pid"),
                "DNL_AD_LOGFILE": str(work / "dnl_ad.log"),
                "DNL_AD_CATCHUP_HOURS": "0",
                "DNL_AD_CDR_DOWNLOAD_URL": "https://portal.carrier.example/cdr",
                "DNL_AD_HA_STANDBY": "true" if args.ha else "false",
            })
            (work / "none.ini").write_text("[dnl_ad]\n", encoding="utf-8")
            proc = subprocess.Popen([sys.executable, "-m", "dnl_ad", "run"], cwd=REPO_ROOT,
                                    env=env)
            log = work / "dnl_ad.log"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                    not log.exists() or "started: pid" not in log.read_text()):
                time.sleep(0.1)
            bare = subprocess.Popen([sys.executable, "-c", BARE, dsn], cwd=REPO_ROOT, env=env)
            procs = (proc, bare)
            quiet_from = dt.datetime.now(dt.timezone.utc)
            cpu0, t0 = [cpu_seconds(p.pid) for p in procs], time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = [cpu_seconds(p.pid) for p in procs], time.monotonic()
            threads1 = thread_seconds(proc.pid)
            wakes1 = [switches(p.pid) for p in procs]
            time.sleep(args.seconds)
            cpu2, t2 = [cpu_seconds(p.pid) for p in procs], time.monotonic()
            threads2 = thread_seconds(proc.pid)
            wakes2 = [switches(p.pid) for p in procs]
            peak_kb = [status_kb(p.pid, "VmHWM") for p in procs]
            rss_kb = [status_kb(p.pid, "VmRSS") for p in procs]
            bare.kill()
            bare.wait(timeout=30)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            mails = len(sink.messages)
            kinds = Counter(m.message.get("X-DNL-AD-Kind", "?") for m in sink.messages)
        text = log.read_text()
        errors = [line for line in text.splitlines() if " ERROR " in line]
        per_job = jobs_cpu(dsn, quiet_from)
    print(f"windows: 2 x {args.seconds:.0f} s idle with {args.clients} clients, HA "
          f"{'on' if args.ha else 'off (the default)'} "
          f"(sweeps every 60 s; delivery every 5 s while mail waits)")
    for label, a, b, t in (("start-up window (first run of every sweep)", cpu0, cpu1,
                            t1 - t0),
                           ("steady window", cpu1, cpu2, t2 - t1)):
        print(f"{label}:")
        print(f"  daemon CPU: {b[0] - a[0]:.2f} s ({100 * (b[0] - a[0]) / t:.2f} % of one core)"
              f"; bare baseline {b[1] - a[1]:.2f} s ({100 * (b[1] - a[1]) / t:.2f} %)")
    print(f"  wake-ups (voluntary context switches) a minute: daemon "
          f"{(wakes2[0] - wakes1[0]) * 60 / (t2 - t1):.0f}, bare baseline "
          f"{(wakes2[1] - wakes1[1]) * 60 / (t2 - t1):.0f}")
    print("  daemon CPU by thread, steady window: " + ", ".join(
        f"{name} {threads2[name] - threads1.get(name, 0.0):.2f} s" for name in sorted(
            threads2, key=lambda k: threads1.get(k, 0.0) - threads2[k])))
    print(f"daemon peak RSS: {peak_kb[0] / 1024:.1f} MiB (RSS at the end "
          f"{rss_kb[0] / 1024:.1f} MiB); bare baseline peak {peak_kb[1] / 1024:.1f} MiB")
    print(f"mails sent during the run: {mails} (expected 0: nothing is due)"
          + (f": {dict(kinds)}" if mails else ""))
    print(f"errors in the daemon log: {len(errors)}; exit status after SIGTERM: {code}")
    for line in errors[:5]:
        print(f"  {line[:300]}")
    print("the jobs' own CPU in steady state, run in this process on the same data (less "
          "sensitive to a busy host than the windows above: no wake-ups, no other threads):")
    total = 0.0
    for name, (ms, period) in sorted(per_job.items(), key=lambda kv: -kv[1][0] * 60 /
                                     kv[1][1]):
        total += ms * 60 / period
        print(f"  {name:<22}{ms:7.1f} ms a run, every {period:>4} s: "
              f"{ms * 60 / period:6.1f} ms a minute")
    print(f"  all jobs: {total:.0f} ms a minute = {total / 600:.3f} % of one core")
    return 0


def jobs_cpu(dsn: str, quiet_from: dt.datetime,
             rounds: int = 4) -> dict[str, tuple[float, int]]:
    """Each standard job's CPU time per run (the median of the runs after the first, which
    reads every client once) and its period, with the daemon's defaults. The runs are at
    instants the daemon's windows covered from `quiet_from` (it sent nothing then), so no
    daily report falls due here that the windows did not have."""
    import logging

    from dnl_ad import scheduler
    from dnl_ad.config import Settings

    logging.disable(logging.WARNING)  # the first run's lines were in the daemon's log

    settings = Settings(connection_string=dsn, catchup_hours=0, smtp_host="127.0.0.1",
                        smtp_security="none",
                        cdr_download_url="https://portal.carrier.example/cdr")
    database = db.Database(dsn)
    jobs = scheduler.standard_jobs(scheduler.Loop(settings, database))
    seen: dict[str, list[float]] = {job.name: [] for job in jobs}
    for n in range(rounds):
        for job in jobs:
            started = time.thread_time()
            job.func(quiet_from + dt.timedelta(seconds=30 * n))
            seen[job.name].append(1000 * (time.thread_time() - started))
    database.close()
    # idle, delivery runs once a minute, not every DELIVERY_SECONDS (it had nothing due)
    period = {"delivery": max(scheduler.IDLE_DELIVERY_SECONDS, settings.delivery_seconds)}
    return {job.name: (sorted(seen[job.name][1:])[(rounds - 1) // 2],
                       period.get(job.name, job.period)) for job in jobs}


if __name__ == "__main__":
    sys.exit(main())
