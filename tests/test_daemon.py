"""The daemon as an operator meets it: the real CLI in subprocesses against the test
database and SMTP sink (configuration through an ini file plus DNL_AD_* variables)."""

from __future__ import annotations

import gzip
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnl_ad import logs
from dnl_ad.config import Settings

from . import factories as f

REPO = Path(__file__).resolve().parent.parent


def write_ini(path: Path, settings: Settings, **extra: str) -> Path:
    keys = {
        "CONNECTION_STRING": settings.connection_string,
        "PIDFILE": settings.pidfile,
        "LOGFILE": settings.logfile,
        "LOGLEVEL": "INFO",
        "SMTP_HOST": settings.smtp_host,
        "SMTP_PORT": str(settings.smtp_port),
        "SMTP_SECURITY": "none",
        "SMTP_FROM": settings.smtp_from,
        "TEMPLATE_DIR": settings.template_dir,
        "DRY_RUN_DIR": settings.dry_run_dir,
        "RETRY_BASE_SECONDS": "1",
        "RETRY_MAX_SECONDS": "4",
        **extra,
    }
    # '%' is fine: the configuration is read without interpolation
    path.write_text("[dnl_ad]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()),
                    encoding="utf-8")
    return path


def daemon_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI subprocess: an ini for this test, short cadences."""
    ini = write_ini(tmp_path / "dnl_ad.ini", settings)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DNL_AD_")}
    return {**clean, "DNL_AD_CONFIG": str(ini), "DNL_AD_DELIVERY_SECONDS": "1",
            "DNL_AD_BALANCE_CHECK_SECONDS": "2", "DNL_AD_DAILY_CHECK_SECONDS": "2",
            "DNL_AD_TRUNK_CHECK_SECONDS": "2"}


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return daemon_env(settings, tmp_path)


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dnl_ad", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by init counts as gone)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def wait_for(condition, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll a condition on another process (not a clock): fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_start_status_refuse_stop_restart(env, settings, conn) -> None:
    pidfile = Path(settings.pidfile)
    f.insert(conn, "version_information", program_name="dnl_ad", major_ver="0",
             minor_ver="9", build_date="2020-01-01")
    started = cli(env, "start")
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        assert f"started (pid {pid})" in started.stdout and alive(pid)
        status = cli(env, "status")
        assert status.returncode == 0 and f"running (pid {pid})" in status.stdout

        again = cli(env, "start")
        assert again.returncode == 1
        assert "already running" in again.stderr and str(pid) in again.stderr
        assert int(pidfile.read_text()) == pid and alive(pid)

        zap = cli(env, "zap")
        assert zap.returncode == 1 and pidfile.exists()  # zap never removes a live one

        stopped = cli(env, "stop")
        assert stopped.returncode == 0, stopped.stderr
        wait_for(lambda: not alive(pid), 5, "the daemon to exit")
        assert not pidfile.exists()
        assert cli(env, "status").returncode == 3

        assert cli(env, "start").returncode == 0
        first = int(pidfile.read_text())
        restarted = cli(env, "restart")
        assert restarted.returncode == 0, restarted.stderr
        second = int(pidfile.read_text())
        assert second != first and alive(second)
        wait_for(lambda: not alive(first), 5, "the first daemon to be gone")
        pid = second
    finally:
        cli(env, "stop")
    rows = f.rows(conn, "SELECT * FROM version_information WHERE program_name = 'dnl_ad'")
    assert len(rows) == 1  # updated in place, not inserted per start
    assert (rows[0]["major_ver"], rows[0]["minor_ver"]) == ("1", "0.0")
    assert rows[0]["start_time"] is not None and rows[0]["build_date"] != "2020-01-01"
    log_text = Path(settings.logfile).read_text()
    assert log_text.count("started: pid") == 3 and "SIGTERM received: finishing" in log_text
    assert log_text.count("dnl_ad stopped") == 3


def test_stale_pidfile_does_not_block_start_and_zap_removes_it(env, settings) -> None:
    pidfile = Path(settings.pidfile)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    stale = dead_pid()
    pidfile.write_text(f"{stale}\n")
    status = cli(env, "status")
    assert status.returncode == 1 and "stale pidfile" in status.stdout
    started = cli(env, "start")
    try:
        assert started.returncode == 0, started.stderr
        pid = int(pidfile.read_text())
        assert pid != stale and alive(pid)
    finally:
        assert cli(env, "stop").returncode == 0
    pidfile.write_text(f"{stale}\n")
    zap = cli(env, "zap")
    assert zap.returncode == 0 and "removed" in zap.stdout
    assert not pidfile.exists()
    assert cli(env, "status").returncode == 3


def test_start_reports_an_unreachable_database(env, settings, tmp_path) -> None:
    env = {**env, "DNL_AD_CONNECTION_STRING":
           "host=127.0.0.1 port=1 dbname=nowhere user=u password=hunter2secret"}
    started = cli(env, "start")
    assert started.returncode == 1
    assert "did not start" in started.stderr and "127.0.0.1" in started.stderr
    assert "hunter2secret" not in started.stderr
    assert "hunter2secret" not in Path(settings.logfile).read_text()
    assert cli(env, "status").returncode == 3


def test_bad_configuration_exits_1(env) -> None:
    result = cli({**env, "DNL_AD_DELIVERY_SECONDS": "soon"}, "start")
    assert result.returncode == 1 and "DELIVERY_SECONDS" in result.stderr


def test_debug_runs_in_foreground_with_debug_logs_and_sighup_reloads(env, settings,
                                                                     tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "dnl_ad", "debug"], cwd=REPO, env=env,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        def saw(text: str) -> bool:
            while not any(text in line for line in lines):
                line = proc.stderr.readline()
                if not line:
                    return False
                lines.append(line)
            return True

        assert saw("started: pid")
        assert saw(" DEBUG ")  # debug level on the console
        assert Path(settings.pidfile).read_text().strip() == str(proc.pid)
        write_ini(Path(env["DNL_AD_CONFIG"]), settings, DELIVERY_BATCH="7")
        proc.send_signal(signal.SIGHUP)
        assert saw("configuration reloaded from")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert saw("dnl_ad stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not Path(settings.pidfile).exists()


# --- logging ---------------------------------------------------------------------------

def test_rotated_logs_are_gzipped(tmp_path) -> None:
    handler = logs.file_handler(str(tmp_path / "log" / "d.log"), max_bytes=2048, backups=2)
    logger = logging.getLogger("dnl_ad.test_rotation")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(200):
            logger.warning("line %04d %s", i, "x" * 40)
    finally:
        logger.removeHandler(handler)
        handler.close()
    rotated = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert rotated == ["d.log", "d.log.1.gz", "d.log.2.gz"]
    newest = gzip.decompress((tmp_path / "log" / "d.log.1.gz").read_bytes()).decode()
    assert "line 0" in newest and newest.count("\n") > 10


def test_log_lines_never_carry_secrets(settings) -> None:
    dsn = "host=db.example port=5432 dbname=class4_pr user=class4 password=pgsecret99"
    s = settings.replace(connection_string=dsn, smtp_password="smtpsecret77",
                         cdr_api_password="apisecret55")
    formatter = logs.ScrubbingFormatter("%(message)s", logs.secrets_of(s))
    try:
        raise RuntimeError(f"connect failed for {dsn} with smtpsecret77")
    except RuntimeError:
        record = logging.LogRecord("dnl_ad", logging.ERROR, __file__, 1,
                                   "login %s / token %s at postgresql://u:uri-pass@h/d",
                                   ("smtpsecret77", "apisecret55"), sys.exc_info())
    text = formatter.format(record)
    for secret in ("pgsecret99", "smtpsecret77", "apisecret55", "uri-pass"):
        assert secret not in text
    assert "host=db.example" in text and "Traceback" in text


# --- SIGTERM in the middle of a big delivery ------------------------------------------

def queue_notices(settings: Settings, n: int) -> None:
    """n low-balance notices in the outbox, due now, enqueued by the real outbox.

    The message is rendered and built once by the real mail code; each copy gets its own
    Message-ID (building 1,000 MIME messages would only slow the test down).
    """
    import dataclasses
    import datetime as dt

    from dnl_ad import db, outbox
    from dnl_ad.mail import message, render
    from dnl_ad.notice import Notice

    decided = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    one_transaction = db.connect(settings.connection_string)
    with one_transaction, one_transaction.cursor() as cur:
        config = render.MailConfig.load(cur, settings)
        mail = None
        for i in range(n):
            notice = Notice(
                kind="low_balance", dedupe_key=f"low_balance:{i}:test:1", template="lowbalance",
                client_id=i, recipients="billing@client.example",
                context={"company_name": "Client Co", "balance": 5, "notify_balance": 10},
                decided_at=decided)
            if mail is None:
                mail = message.build(notice, render.render_notice(notice, config), config)
            mid = message.message_id(notice.dedupe_key, mail.from_addr)
            copy = dataclasses.replace(mail, message_id=mid, raw=mail.raw.replace(
                mail.message_id.encode(), mid.encode()))
            assert outbox.enqueue(cur, settings.own_schema, notice, copy)
    one_transaction.close()


def test_sigterm_during_delivery_exits_fast_and_restart_sends_each_once(
        env, settings, conn, smtp) -> None:
    n = 1000
    f.system(conn)
    queue_notices(settings, n)
    env = {**env, "DNL_AD_DELIVERY_BATCH": str(n)}
    pidfile = Path(settings.pidfile)
    assert cli(env, "start").returncode == 0
    pid = int(pidfile.read_text())
    try:
        wait_for(lambda: len(smtp.messages) >= 100, 30, "delivery to be under way")
        os.kill(pid, signal.SIGTERM)
        signalled = time.monotonic()
        wait_for(lambda: not alive(pid), 10, "the daemon to exit after SIGTERM")
        took = time.monotonic() - signalled
        interrupted = len(smtp.messages)
        assert took < 10
        assert interrupted < n  # it really stopped mid-batch
        sent_rows = f.rows(conn, "SELECT count(*) AS n FROM dnl_ad.outbox WHERE status = 'sent'")
        assert sent_rows[0]["n"] == interrupted  # the message in hand was finished and recorded

        assert cli(env, "start").returncode == 0
        wait_for(lambda: f.rows(conn, "SELECT count(*) AS n FROM dnl_ad.outbox "
                                      "WHERE status = 'pending'")[0]["n"] == 0,
                 60, "the rest to be delivered")
    finally:
        cli(env, "stop")
    ids = [m.message["Message-ID"] for m in smtp.messages]
    assert len(ids) == n and len(set(ids)) == n  # every notice delivered, none twice
    logged = f.rows(conn, "SELECT count(*) AS n FROM email_log WHERE status = 0")
    assert logged[0]["n"] == n
    assert "SIGTERM received: finishing" in Path(settings.logfile).read_text()
