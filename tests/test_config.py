"""Configuration: every key parsed, clear errors, env overrides, unknown keys warn."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnl_ad import cli
from dnl_ad.config import KEYS, ConfigError, load_settings

FULL_INI = """
[dnl_ad]
CONNECTION_STRING = host=db.example port=5433 dbname=class4_pr user=u password=secret
CDR_DOWNLOAD_URL = https://portal.example/cdr
PIDFILE = /var/run/dnl_ad.pid
LOGFILE = logs/dnl.log
LOGLEVEL = debug
LOG_MAX_BYTES = 2048
LOG_BACKUPS = 3
SYSLOG = yes
SMTP_HOST = smtp.example
SMTP_PORT = 2525
SMTP_USER = mailer
SMTP_PASSWORD = p@ss word
SMTP_SECURITY = STARTTLS
SMTP_FROM = noc@carrier.example
SMTP_VERIFY = off
SMTP_TIMEOUT_SECONDS = 12
BALANCE_CHECK_SECONDS = 30
DAILY_CHECK_SECONDS = 90
TRUNK_CHECK_SECONDS = 45
QUALITY_CHECK_SECONDS = 61
PERIOD_CHECK_SECONDS = 301
PERIOD_SETTLE_MINUTES = 30
TRAFFIC_CHECK_SECONDS = 299
TRAFFIC_SETTLE_MINUTES = 15
WATCH_CHECK_SECONDS = 601
DELIVERY_SECONDS = 2
DELIVERY_BATCH = 50
MAX_ATTEMPTS = 4
RETRY_BASE_SECONDS = 10
RETRY_MAX_SECONDS = 100
CATCHUP_HOURS = 6
SUSPEND_GRACE_MINUTES = 15
SUSPEND_MAX_OVERDUE_DAYS = 7
REPORT_SETTLE_MINUTES = 45
SWEEP_BATCH = 150
OUTBOX_RETENTION_DAYS = 30
DB_LOCK_TIMEOUT_SECONDS = 7
DB_STATEMENT_TIMEOUT_SECONDS = 120
DB_IDLE_IN_TRANSACTION_SECONDS = 90
USAGE_LIMIT_CHECK_SECONDS = 120
USAGE_LIMIT_UNIT = Minutes
USAGE_LIMIT_STEPS = 25, 75,100
USAGE_LIMIT_CARRY_OVER = yes
FRAUD_CHECK_SECONDS = 30
LOW_BALANCE_DISABLE = true
OWNER_BILLING_EMAIL = owner@carrier.example
DRY_RUN = true
DRY_RUN_DIR = /tmp/dry
OWN_SCHEMA = Alerts_Own
TEMPLATE_DIR = /opt/tpl
CDR_API_HOST = cdr.switch.example
CDR_API_TOKEN_PORT = 18887
CDR_API_EXPORT_PORT = 18889
CDR_API_URL = http://127.0.0.1:9000/api
CDR_API_USER = apiuser
CDR_API_PASSWORD = apipass
CDR_API_TIMEOUT_SECONDS = 40
CDR_API_POLL_SECONDS = 2
HA_STANDBY = on
HA_TAKEOVER_SECONDS = 45
METRICS_PORT = 9187
METRICS_ADDRESS = 0.0.0.0
DELIVERY_MAX_AGE_HOURS = 48
SMTP_BACKOFF_MAX_SECONDS = 120
SMTP_ALLOW_PLAIN_AUTH = true
SMTP_CA_FILE = /etc/ssl/private-ca.pem
SMTP_HELO_NAME = mail.carrier.example
MAX_RECIPIENTS = 20
REPLY_TO = noc@carrier.example
SMTP_SESSIONS = 8
SMTP_MAX_PER_SESSION = 100
SMTP_RATE_LIMIT = 5
ADMIN_EMAIL = ops@carrier.example; noc@carrier.example
ADMIN_ALERT_AFTER_MINUTES = 20
BALANCE_RESTORED_NOTICE = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dnl_ad.ini"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_key_parsed(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL_INI), env={})
    assert s.connection_string.startswith("host=db.example")
    assert s.cdr_download_url == "https://portal.example/cdr"
    assert s.pidfile == "/var/run/dnl_ad.pid"
    assert s.logfile == str(tmp_path / "logs/dnl.log")  # relative to the ini's folder
    assert s.loglevel == logging.DEBUG
    assert (s.log_max_bytes, s.log_backups, s.syslog) == (2048, 3, True)
    assert (s.smtp_host, s.smtp_port, s.smtp_user) == ("smtp.example", 2525, "mailer")
    assert s.smtp_password == "p@ss word"
    assert (s.smtp_security, s.smtp_from, s.smtp_verify) == ("starttls", "noc@carrier.example",
                                                             False)
    assert s.smtp_timeout_seconds == 12
    assert (s.balance_check_seconds, s.daily_check_seconds, s.trunk_check_seconds) == (30, 90, 45)
    assert (s.delivery_seconds, s.delivery_batch) == (2, 50)
    assert (s.max_attempts, s.retry_base_seconds, s.retry_max_seconds) == (4, 10, 100)
    assert (s.catchup_hours, s.suspend_grace_minutes) == (6, 15)
    assert (s.suspend_max_overdue_days, s.owner_billing_email) == (7, "owner@carrier.example")
    assert s.report_settle_minutes == 45
    assert (s.sweep_batch, s.db_lock_timeout_seconds, s.db_statement_timeout_seconds,
            s.db_idle_in_transaction_seconds) == (150, 7, 120, 90)
    assert s.outbox_retention_days == 30
    assert s.dry_run is True and s.dry_run_dir == "/tmp/dry"
    assert s.own_schema == "alerts_own"
    assert s.template_dir == "/opt/tpl"
    assert (s.cdr_api_url, s.cdr_api_user, s.cdr_api_password) == (
        "http://127.0.0.1:9000/api", "apiuser", "apipass")
    assert (s.cdr_api_timeout_seconds, s.cdr_api_poll_seconds) == (40, 2)
    assert (s.cdr_api_host, s.cdr_api_token_port, s.cdr_api_export_port) == (
        "cdr.switch.example", 18887, 18889)
    assert (s.ha_standby, s.ha_takeover_seconds) == (True, 45)
    assert (s.metrics_port, s.metrics_address) == (9187, "0.0.0.0")
    assert (s.delivery_max_age_hours, s.smtp_backoff_max_seconds, s.smtp_allow_plain_auth,
            s.smtp_ca_file, s.smtp_helo_name, s.max_recipients, s.reply_to) == (
        48, 120, True, "/etc/ssl/private-ca.pem", "mail.carrier.example", 20,
        "noc@carrier.example")
    assert (s.smtp_sessions, s.smtp_max_per_session, s.smtp_rate_limit) == (8, 100, 5.0)
    assert (s.usage_limit_check_seconds, s.usage_limit_unit, s.usage_limit_steps) == (
        120, "minutes", (25, 75, 100))
    assert s.usage_limit_carry_over is True and s.low_balance_disable is True
    assert s.fraud_check_seconds == 30
    assert (s.admin_email, s.admin_alert_after_minutes, s.balance_restored_notice) == (
        "ops@carrier.example; noc@carrier.example", 20, False)
    # The test above sets every key the parser knows: a new key must be added here too.
    set_keys = {line.split("=")[0].strip() for line in FULL_INI.splitlines() if "=" in line}
    assert set_keys == set(KEYS)


def test_defaults_are_safe(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "[dnl_ad]\n"), env={})
    assert (s.balance_check_seconds, s.daily_check_seconds, s.catchup_hours) == (60, 60, 24)
    assert (s.suspend_grace_minutes, s.dry_run, s.own_schema) == (0, False, "dnl_ad")
    assert s.smtp_verify is True
    assert s.loglevel == logging.INFO
    # blocking for money is opt-in; the ladder notifies at 50/90/100 % of an amount limit
    assert s.low_balance_disable is False and s.usage_limit_carry_over is False
    assert (s.usage_limit_unit, s.usage_limit_steps) == ("amount", (50, 90, 100))


def test_loglevel_number(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "[dnl_ad]\nLOGLEVEL = 30\n"), env={}).loglevel == 30


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("LOGLEVEL", "LOUD", "level name"),
        ("LOGLEVEL", "99", "level name"),
        ("BALANCE_CHECK_SECONDS", "often", "integer >= 1"),
        ("BALANCE_CHECK_SECONDS", "0", "integer >= 1"),
        ("SMTP_PORT", "70000", "<= 65535"),
        ("SMTP_SECURITY", "tls13", "'none', 'auto', 'starttls', 'ssl'"),
        ("DRY_RUN", "maybe", "a boolean"),
        ("CDR_DOWNLOAD_URL", "ftp://x", "http:// or https:// URL"),
        ("CONNECTION_STRING", "host=x = = y", "key=value"),
        ("CONNECTION_STRING", "mysql://x/y", "postgresql:// URI"),
        ("OWN_SCHEMA", "dnl; drop", "plain schema name"),
        ("CATCHUP_HOURS", "-1", "integer >= 0"),
        ("HA_TAKEOVER_SECONDS", "5", "integer >= 10 and <= 3600"),
        ("USAGE_LIMIT_UNIT", "seconds", "'amount', 'minutes'"),
        ("USAGE_LIMIT_STEPS", "50,90", "ending at 100"),
        ("USAGE_LIMIT_STEPS", "90,50,100", "ascending percentages"),
        ("USAGE_LIMIT_STEPS", "half,100", "ascending percentages"),
        ("LOW_BALANCE_DISABLE", "sometimes", "a boolean"),
    ],
)
def test_bad_value_names_key_value_and_expectation(tmp_path: Path, key: str, value: str,
                                                   expected: str) -> None:
    path = write(tmp_path, f"[dnl_ad]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    text = str(info.value)
    assert text.startswith(f"config error: {key}=")
    assert expected in text
    assert "\n" not in text
    if key != "CONNECTION_STRING":
        assert repr(value) in text


def test_secret_values_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "[dnl_ad]\nCONNECTION_STRING = password=hunter2 =broken\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "hunter2" not in str(info.value)


def test_retry_max_below_base_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[dnl_ad]\nRETRY_BASE_SECONDS = 100\nRETRY_MAX_SECONDS = 10\n")
    with pytest.raises(ConfigError, match="RETRY_MAX_SECONDS"):
        load_settings(path, env={})


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[dnl_ad]\nLOGLEVEL = INFO\nCATCHUP_HOURS = 5\n")
    s = load_settings(path, env={"DNL_AD_LOGLEVEL": "ERROR", "DNL_AD_DRY_RUN": "1"})
    assert s.loglevel == logging.ERROR
    assert s.dry_run is True
    assert s.catchup_hours == 5


def test_env_bad_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CATCHUP_HOURS='x'"):
        load_settings(write(tmp_path, "[dnl_ad]\n"), env={"DNL_AD_CATCHUP_HOURS": "x"})


def test_config_file_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, "[dnl_ad]\nCATCHUP_HOURS = 7\n")
    assert load_settings(None, env={"DNL_AD_CONFIG": str(path)}).catchup_hours == 7


def test_missing_named_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CONFIG"):
        load_settings(tmp_path / "nope.ini", env={})


def test_unknown_key_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "[dnl_ad]\nBALANCE_CHEK_SECONDS = 5\n")
    with caplog.at_level(logging.WARNING):
        s = load_settings(path, env={"DNL_AD_NOSUCH": "1"})
    assert s.balance_check_seconds == 60  # the misspelt key changed nothing
    assert "unknown key BALANCE_CHEK_SECONDS" in caplog.text
    assert "DNL_AD_NOSUCH" in caplog.text


def test_settings_frozen(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "[dnl_ad]\n"), env={})
    with pytest.raises(AttributeError):
        s.dry_run = True  # type: ignore[misc]


@pytest.mark.parametrize("command", [["migrate"], ["start"], ["check"], ["restart"], ["debug"],
                                     ["harness"], ["preview", "1", "--client", "1"]])
def test_every_command_refuses_bad_value_with_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    path = write(tmp_path, "[dnl_ad]\nSMTP_PORT = abc\n")
    monkeypatch.delenv("DNL_AD_CONFIG", raising=False)
    assert cli.main(["--config", str(path), *command]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["config error: SMTP_PORT='abc': expected an integer >= 1 and <= 65535"]


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "[dnl_ad]\nLOGLEVEL = LOUD\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNL_AD_")}
    proc = subprocess.run([sys.executable, "-m", "dnl_ad", "--config", str(path), "migrate"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("config error: LOGLEVEL='LOUD'")
