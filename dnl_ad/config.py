"""Configuration: dnl_ad.ini plus DNL_AD_<KEY> environment overrides -> one frozen Settings.

Operators already have ini files with CONNECTION_STRING, CDR_DOWNLOAD_URL, PIDFILE,
LOGFILE and LOGLEVEL in a [dnl_ad] section; those keys keep their meaning. Every
other key has a safe default, so an old file still starts the daemon.

A bad value is refused with one line naming the key, the value and what was expected
(ConfigError); the CLI turns that into exit status 1. An unknown key is a warning, not
an error, so a typo never takes a running carrier's alerts down on restart.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import importlib.resources
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

SECTION = "dnl_ad"
ENV_PREFIX = "DNL_AD_"
CONFIG_ENV = "DNL_AD_CONFIG"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "dnl_ad.ini"


def default_template_dir() -> str:
    """The mail templates shipped with dnl_ad: the package data dnl_ad/templates of an
    installed wheel, else the checkout's top-level templates/ (source tree, editable
    install). TEMPLATE_DIR overrides it."""
    packaged = importlib.resources.files("dnl_ad").joinpath("templates")
    if isinstance(packaged, Path) and packaged.is_dir():
        return str(packaged)
    return str(REPO_ROOT / "templates")


class ConfigError(ValueError):
    """A configuration value that cannot be used; str() is the one line an operator reads."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        shown = "***" if _is_secret(key) else repr(value)
        super().__init__(f"config error: {key}={shown}: expected {expected}")


def _is_secret(key: str) -> bool:
    return "PASSWORD" in key or "TOKEN" in key or key == "CONNECTION_STRING"


# --- value parsers: each takes the raw string and returns the typed value or raises
#     ValueError with the "expected ..." text.

def _str(raw: str) -> str:
    return raw.strip()


def _int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        expected = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(expected) from None
        if value < lo or (hi is not None and value > hi):
            raise ValueError(expected)
        return value

    return parse


def _bool(raw: str) -> bool:
    v = raw.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off"}:
        return False
    raise ValueError("a boolean (true/false, yes/no, on/off, 1/0)")


def _loglevel(raw: str) -> int:
    v = raw.strip()
    if v.lstrip("-").isdigit():
        n = int(v)
        if 0 <= n <= 50:
            return n
    else:
        level = logging.getLevelName(v.upper())
        if isinstance(level, int):
            return level
    raise ValueError("a level name (DEBUG, INFO, WARNING, ERROR, CRITICAL) or a number 0-50")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        v = raw.strip().lower()
        if v not in options:
            raise ValueError("one of " + ", ".join(repr(o) for o in options))
        return v

    return parse


def _url(raw: str) -> str:
    v = raw.strip()
    if not v:
        return ""
    parsed = urlparse(v)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ValueError("an http:// or https:// URL (or empty)")
    return v


# libpq's connection keywords (PostgreSQL 17), for "did you mean" on a misspelt one.
LIBPQ_KEYWORDS = (
    "host hostaddr port dbname user password passfile require_auth channel_binding "
    "connect_timeout client_encoding options application_name fallback_application_name "
    "keepalives keepalives_idle keepalives_interval keepalives_count tcp_user_timeout "
    "replication gssencmode sslmode sslnegotiation sslcompression sslcert sslkey "
    "sslcertmode sslpassword sslrootcert sslcrl sslcrldir sslsni requirepeer "
    "ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation "
    "service target_session_attrs load_balance_hosts requiressl").split()
_DSN_EXPECTED = "libpq key=value pairs such as 'host=127.0.0.1 dbname=class4_pr' " \
                "or a postgresql:// URI"


def _password_words(text: str) -> list[str]:
    """Every piece of text that may belong to a password in a (possibly broken) DSN:
    the URI's password, and the words after `password=` up to the next key=value."""
    words: list[str] = []
    if "://" in text:
        try:
            secret = urlparse(text).password
        except ValueError:
            secret = None
        if secret:
            words.append(secret)
        return words
    tail = re.split(r"password\s*=\s*", text, flags=re.I)[1:]
    for part in tail:
        for word in part.split():
            if "=" in word and words:
                break
            words.append(word.strip("'"))
    return [w for w in words if w]


def dsn_problem(text: str) -> str:
    """What is wrong with a connection string, naming the part but never the password.

    Empty when libpq accepts it."""
    from psycopg2.extensions import parse_dsn

    if "://" in text and urlparse(text).scheme not in {"postgres", "postgresql"}:
        return f"the scheme {urlparse(text).scheme + '://'!r} is not postgresql://"
    try:
        parse_dsn(text)
    except Exception as exc:
        message = str(exc).strip().removeprefix("invalid dsn: ")
    else:
        return ""
    secret = set(_password_words(text))
    # libpq quotes the part it stumbled on: hide it when it is (part of) the password
    masked = re.sub(r'"([^"]*)"', lambda m: '"***"' if m.group(1) in secret else m.group(0),
                    message)
    if masked != message:
        return masked + " (a password with spaces or quotes must be quoted: password='...')"
    option = re.search(r'(?:connection option|query parameter:) "([^"]+)"', message)
    if option:
        close = difflib.get_close_matches(option.group(1), LIBPQ_KEYWORDS, n=1)
        if close:
            masked += f" (did you mean {close[0]}?)"
    return masked


def _dsn(raw: str) -> str:
    v = raw.strip()
    if not v:
        raise ValueError(_DSN_EXPECTED)
    problem = dsn_problem(v)
    if problem:
        raise ValueError(f"{_DSN_EXPECTED}; here: {problem}")
    return v


def _host(raw: str) -> str:
    """A host name or IP address alone: the CDR API's ports are fixed by its protocol."""
    v = raw.strip()
    if not v:
        return ""
    expected = "a host name or IP address without scheme, port or path (e.g. 10.0.0.5)"
    if any(c in v for c in "/@ ?#") or "://" in v:
        raise ValueError(expected)
    if ":" in v:  # only an IPv6 address may hold colons
        import ipaddress

        try:
            ipaddress.IPv6Address(v.strip("[]"))
        except ValueError:
            raise ValueError(expected) from None
        return v.strip("[]")
    return v


def _port(raw: str) -> int:
    v = raw.strip()
    if not v:
        return 0
    return _int_range(1, 65535)(v)


def _steps(raw: str) -> tuple[int, ...]:
    """USAGE_LIMIT_STEPS: ascending percentages 1-100 ending at 100 (the block step)."""
    expected = ("a comma-separated list of ascending percentages 1-100 ending at 100 "
                "(e.g. 50,90,100)")
    try:
        steps = tuple(int(p) for p in raw.replace(" ", "").split(",") if p)
    except ValueError:
        raise ValueError(expected) from None
    if (not steps or steps[-1] != 100 or any(not 1 <= s <= 100 for s in steps)
            or list(steps) != sorted(set(steps))):
        raise ValueError(expected)
    return steps


@dataclass(frozen=True)
class Settings:
    """Everything the daemon reads from configuration, typed and validated."""

    connection_string: str = "dbname=class4_pr"
    cdr_download_url: str = ""
    pidfile: str = "run/dnl_ad.pid"
    logfile: str = "log/dnl_ad.log"
    loglevel: int = logging.INFO
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 10
    syslog: bool = False
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_security: str = ""
    smtp_from: str = ""
    smtp_verify: bool = True
    smtp_timeout_seconds: int = 30
    balance_check_seconds: int = 60
    daily_check_seconds: int = 60
    trunk_check_seconds: int = 60
    quality_check_seconds: int = 60
    period_check_seconds: int = 300
    period_settle_minutes: int = 60
    traffic_check_seconds: int = 300
    traffic_settle_minutes: int = 10
    watch_check_seconds: int = 600
    delivery_seconds: int = 5
    delivery_batch: int = 500
    max_attempts: int = 8
    retry_base_seconds: int = 60
    retry_max_seconds: int = 3600
    catchup_hours: int = 24
    suspend_grace_minutes: int = 0
    suspend_max_overdue_days: int = 3
    report_settle_minutes: int = 30
    sweep_batch: int = 200
    outbox_retention_days: int = 90
    db_lock_timeout_seconds: int = 5
    db_statement_timeout_seconds: int = 300
    db_idle_in_transaction_seconds: int = 600
    # --- usage limits, fraud rules, disabling for low balance (issue 12)
    usage_limit_check_seconds: int = 60
    usage_limit_unit: str = "amount"
    usage_limit_steps: tuple[int, ...] = (50, 90, 100)
    usage_limit_carry_over: bool = False
    fraud_check_seconds: int = 60
    low_balance_disable: bool = False
    owner_billing_email: str = ""
    dry_run: bool = False
    dry_run_dir: str = "dry-run-mail"
    own_schema: str = "dnl_ad"
    template_dir: str = default_template_dir()
    # --- DNL CDR API (PROVIDER_DB.md section 5); CDR_API_URL/USER/PASSWORD are the old keys
    cdr_api_host: str = ""
    cdr_api_token_port: int = 8887
    cdr_api_export_port: int = 8889
    cdr_api_url: str = ""
    cdr_api_user: str = ""
    cdr_api_password: str = ""
    cdr_api_timeout_seconds: int = 120
    cdr_api_poll_seconds: int = 5
    # high availability (dnl_ad.leader): stand by instead of exiting when another daemon
    # is active; take over within this many seconds of its end
    ha_standby: bool = False
    ha_takeover_seconds: int = 30
    # Prometheus /metrics and /healthz (dnl_ad.metrics); port 0: off
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    config_path: str = ""
    # keys of the ini file and DNL_AD_* variables that were ignored as unknown (check FAILs)
    unknown_keys: tuple[str, ...] = ()
    # --- delivery and SMTP (issue 16) ---
    delivery_max_age_hours: int = 72
    smtp_backoff_max_seconds: int = 300
    smtp_allow_plain_auth: bool = False
    smtp_ca_file: str = ""
    smtp_helo_name: str = ""
    max_recipients: int = 50
    reply_to: str = ""
    smtp_sessions: int = 4
    smtp_max_per_session: int = 0
    smtp_rate_limit: float = 0.0
    # --- operator alerts and balance restored (issue 14) ---
    admin_email: str = ""
    admin_alert_after_minutes: int = 15
    balance_restored_notice: bool = True

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and --dry-run use this)."""
        return dataclasses.replace(self, **changes)


def _schema_name(raw: str) -> str:
    v = raw.strip()
    if not v or not (v[0].isalpha() or v[0] == "_") or not all(c.isalnum() or c == "_" for c in v):
        raise ValueError("a plain schema name (letters, digits, underscore)")
    return v.lower()


def _rate(raw: str) -> float:
    expected = "messages per second, a number >= 0 (0: no limit)"
    try:
        value = float(raw.strip() or "0")
    except ValueError:
        raise ValueError(expected) from None
    if not 0 <= value <= 100_000 or value != value:
        raise ValueError(expected)
    return value


def _addresses(raw: str) -> str:
    """Mail addresses separated by ';' or ',' (empty allowed)."""
    import email.utils

    v = raw.strip()
    for part in re.split(r"[;,]", v):
        addr = email.utils.parseaddr(part.strip())[1] if part.strip() else ""
        if part.strip() and ("@" not in addr or addr.startswith("@") or addr.endswith("@")):
            raise ValueError("mail addresses separated by ';' (e.g. noc@carrier.example)")
    return v


def _helo_name(raw: str) -> str:
    v = raw.strip()
    if v and not all(c.isalnum() or c in ".-[]:" for c in v):
        raise ValueError("a host name such as mail.carrier.example (or empty: this host's "
                         "fully qualified name)")
    return v


# key -> (field name, parser). One place lists every key; README and dnl_ad.ini document them.
KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "CONNECTION_STRING": ("connection_string", _dsn),
    "CDR_DOWNLOAD_URL": ("cdr_download_url", _url),
    "PIDFILE": ("pidfile", _str),
    "LOGFILE": ("logfile", _str),
    "LOGLEVEL": ("loglevel", _loglevel),
    "LOG_MAX_BYTES": ("log_max_bytes", _int_range(1024)),
    "LOG_BACKUPS": ("log_backups", _int_range(0, 1000)),
    "SYSLOG": ("syslog", _bool),
    "SMTP_HOST": ("smtp_host", _str),
    "SMTP_PORT": ("smtp_port", _port),
    "SMTP_USER": ("smtp_user", _str),
    "SMTP_PASSWORD": ("smtp_password", lambda raw: raw),
    "SMTP_SECURITY": ("smtp_security", lambda raw: "" if not raw.strip()
                      else _choice("none", "auto", "starttls", "ssl")(raw)),
    "SMTP_FROM": ("smtp_from", _str),
    "SMTP_VERIFY": ("smtp_verify", _bool),
    "SMTP_TIMEOUT_SECONDS": ("smtp_timeout_seconds", _int_range(1, 600)),
    "BALANCE_CHECK_SECONDS": ("balance_check_seconds", _int_range(1, 86400)),
    "DAILY_CHECK_SECONDS": ("daily_check_seconds", _int_range(1, 86400)),
    "TRUNK_CHECK_SECONDS": ("trunk_check_seconds", _int_range(1, 86400)),
    "QUALITY_CHECK_SECONDS": ("quality_check_seconds", _int_range(1, 86400)),
    "PERIOD_CHECK_SECONDS": ("period_check_seconds", _int_range(1, 86400)),
    "PERIOD_SETTLE_MINUTES": ("period_settle_minutes", _int_range(0, 7 * 24 * 60)),
    "TRAFFIC_CHECK_SECONDS": ("traffic_check_seconds", _int_range(1, 86400)),
    "TRAFFIC_SETTLE_MINUTES": ("traffic_settle_minutes", _int_range(0, 59)),
    "WATCH_CHECK_SECONDS": ("watch_check_seconds", _int_range(1, 86400)),
    "DELIVERY_SECONDS": ("delivery_seconds", _int_range(1, 3600)),
    "DELIVERY_BATCH": ("delivery_batch", _int_range(1, 100000)),
    "MAX_ATTEMPTS": ("max_attempts", _int_range(1, 100)),
    "RETRY_BASE_SECONDS": ("retry_base_seconds", _int_range(1, 86400)),
    "RETRY_MAX_SECONDS": ("retry_max_seconds", _int_range(1, 7 * 86400)),
    "CATCHUP_HOURS": ("catchup_hours", _int_range(0, 24 * 31)),
    "SUSPEND_GRACE_MINUTES": ("suspend_grace_minutes", _int_range(0, 7 * 24 * 60)),
    "SUSPEND_MAX_OVERDUE_DAYS": ("suspend_max_overdue_days", _int_range(0, 3650)),
    "REPORT_SETTLE_MINUTES": ("report_settle_minutes", _int_range(0, 24 * 60)),
    "SWEEP_BATCH": ("sweep_batch", _int_range(1, 10000)),
    "OUTBOX_RETENTION_DAYS": ("outbox_retention_days", _int_range(2, 3650)),
    "DB_LOCK_TIMEOUT_SECONDS": ("db_lock_timeout_seconds", _int_range(0, 3600)),
    "DB_STATEMENT_TIMEOUT_SECONDS": ("db_statement_timeout_seconds", _int_range(0, 86400)),
    "DB_IDLE_IN_TRANSACTION_SECONDS": ("db_idle_in_transaction_seconds",
                                       _int_range(0, 86400)),
    "USAGE_LIMIT_CHECK_SECONDS": ("usage_limit_check_seconds", _int_range(1, 3600)),
    "USAGE_LIMIT_UNIT": ("usage_limit_unit", _choice("amount", "minutes")),
    "USAGE_LIMIT_STEPS": ("usage_limit_steps", _steps),
    "USAGE_LIMIT_CARRY_OVER": ("usage_limit_carry_over", _bool),
    "FRAUD_CHECK_SECONDS": ("fraud_check_seconds", _int_range(1, 3600)),
    "LOW_BALANCE_DISABLE": ("low_balance_disable", _bool),
    "OWNER_BILLING_EMAIL": ("owner_billing_email", _str),
    "DRY_RUN": ("dry_run", _bool),
    "DRY_RUN_DIR": ("dry_run_dir", _str),
    "OWN_SCHEMA": ("own_schema", _schema_name),
    "TEMPLATE_DIR": ("template_dir", lambda raw: raw.strip() or default_template_dir()),
    "CDR_API_HOST": ("cdr_api_host", _host),
    "CDR_API_TOKEN_PORT": ("cdr_api_token_port", _int_range(1, 65535)),
    "CDR_API_EXPORT_PORT": ("cdr_api_export_port", _int_range(1, 65535)),
    "CDR_API_URL": ("cdr_api_url", _url),
    "CDR_API_USER": ("cdr_api_user", _str),
    "CDR_API_PASSWORD": ("cdr_api_password", lambda raw: raw),
    "CDR_API_TIMEOUT_SECONDS": ("cdr_api_timeout_seconds", _int_range(1, 3600)),
    "CDR_API_POLL_SECONDS": ("cdr_api_poll_seconds", _int_range(1, 600)),
    "HA_STANDBY": ("ha_standby", _bool),
    "HA_TAKEOVER_SECONDS": ("ha_takeover_seconds", _int_range(10, 3600)),
    "METRICS_PORT": ("metrics_port", lambda raw: _int_range(0, 65535)(raw or "0")),
    "METRICS_ADDRESS": ("metrics_address", lambda raw: raw.strip() or "127.0.0.1"),
    # --- delivery and SMTP (issue 16) ---
    "DELIVERY_MAX_AGE_HOURS": ("delivery_max_age_hours", _int_range(1, 24 * 31)),
    "SMTP_BACKOFF_MAX_SECONDS": ("smtp_backoff_max_seconds", _int_range(1, 86400)),
    "SMTP_ALLOW_PLAIN_AUTH": ("smtp_allow_plain_auth", _bool),
    "SMTP_CA_FILE": ("smtp_ca_file", _str),
    "SMTP_HELO_NAME": ("smtp_helo_name", _helo_name),
    "MAX_RECIPIENTS": ("max_recipients", _int_range(1, 1000)),
    "REPLY_TO": ("reply_to", _str),
    "SMTP_SESSIONS": ("smtp_sessions", _int_range(1, 32)),
    "SMTP_MAX_PER_SESSION": ("smtp_max_per_session", _int_range(0, 1_000_000)),
    "SMTP_RATE_LIMIT": ("smtp_rate_limit", _rate),
    # --- operator alerts and balance restored (issue 14) ---
    "ADMIN_EMAIL": ("admin_email", _addresses),
    "ADMIN_ALERT_AFTER_MINUTES": ("admin_alert_after_minutes", _int_range(1, 7 * 24 * 60)),
    "BALANCE_RESTORED_NOTICE": ("balance_restored_notice", _bool),
}

_PATH_FIELDS = {"pidfile", "logfile", "dry_run_dir", "template_dir", "smtp_ca_file"}


# Keys of the invented CDR API protocol the first versions spoke: still read, no longer needed.
OLD_CDR_KEYS = ("CDR_API_URL", "CDR_API_USER", "CDR_API_PASSWORD")


def cdr_api_host(settings: Settings) -> str:
    """The CDR API host: CDR_API_HOST, else the host of the old CDR_API_URL, else ''."""
    if settings.cdr_api_host:
        return settings.cdr_api_host
    return (urlparse(settings.cdr_api_url).hostname or "") if settings.cdr_api_url else ""


def old_cdr_keys_note(settings: Settings) -> str:
    """One sentence for the log and `check` when the old CDR keys are set; '' otherwise."""
    used = [k for k in OLD_CDR_KEYS if getattr(settings, k.lower())]
    if not used:
        return ""
    where = (f"its host {cdr_api_host(settings)!r} is used as CDR_API_HOST"
             if settings.cdr_api_url and not settings.cdr_api_host
             else "CDR_API_HOST is used")
    return (f"{', '.join(used)} {'is' if len(used) == 1 else 'are'} deprecated (the real CDR "
            f"API takes a host, ports 8887/8889): {where}; set CDR_API_HOST instead")


def did_you_mean(key: str, prefix: str = "") -> str:
    """' (did you mean X?)' for a misspelt key, else ''."""
    close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.75)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def config_path(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """--config wins, then DNL_AD_CONFIG, then dnl_ad.ini beside the package."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return DEFAULT_CONFIG


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                  *, require_file: bool = False) -> Settings:
    """Read the ini file (if any), apply DNL_AD_* overrides, validate, return Settings.

    Relative paths (PIDFILE, LOGFILE, ...) are taken relative to the ini file's folder so
    the daemon behaves the same whatever directory it is started from.
    """
    env = os.environ if env is None else env
    cfg_file = config_path(str(path) if path else None, env)
    raw: dict[str, str] = {}
    unknown: list[str] = []
    if cfg_file.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str.upper  # type: ignore[assignment,method-assign]
        try:
            parser.read(cfg_file, encoding="utf-8")
        except configparser.Error as exc:
            raise ConfigError("CONFIG", str(cfg_file), f"a readable ini file ({exc})") from None
        if not parser.has_section(SECTION):
            raise ConfigError("CONFIG", str(cfg_file), f"an ini file with a [{SECTION}] section")
        for key, value in parser.items(SECTION):
            if key not in KEYS:
                log.warning("config: unknown key %s in %s [%s] is ignored%s", key, cfg_file,
                            SECTION, did_you_mean(key))
                unknown.append(key)
                continue
            raw[key] = value
    elif require_file or path is not None or env.get(CONFIG_ENV):
        raise ConfigError("CONFIG", str(cfg_file), "an existing ini file")

    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = name[len(ENV_PREFIX):]
        if key.startswith("TEST_") or key == "V5_SCHEMA":
            continue  # DNL_AD_TEST_DSN, DNL_AD_V5_SCHEMA and friends belong to the test rig
        if key not in KEYS:
            log.warning("config: unknown environment variable %s is ignored%s", name,
                        did_you_mean(key, ENV_PREFIX))
            unknown.append(name)
            continue
        raw[key] = value

    base = cfg_file.resolve().parent if cfg_file.is_file() else Path.cwd()
    # absolute: the daemon chdirs to / and re-reads this very file on SIGHUP
    values: dict[str, Any] = {"config_path": str(cfg_file.resolve()) if cfg_file.is_file()
                              else "",
                              "unknown_keys": tuple(unknown)}
    for key, value in raw.items():
        field, parse = KEYS[key]
        try:
            parsed = parse(value)
        except ValueError as exc:
            raise ConfigError(key, value, str(exc)) from None
        if field in _PATH_FIELDS and parsed and not Path(parsed).is_absolute():
            parsed = str(base / parsed)
        values[field] = parsed
    for field in _PATH_FIELDS - values.keys():
        default = getattr(Settings, field)
        if default and not Path(default).is_absolute():
            values[field] = str(base / default)
    settings = Settings(**values)
    if settings.outbox_retention_days * 24 <= settings.catchup_hours + 24:
        raise ConfigError("OUTBOX_RETENTION_DAYS", str(settings.outbox_retention_days),
                          f"more days than CATCHUP_HOURS ({settings.catchup_hours}) covers "
                          "plus one: a purged dedupe key could be queued again")
    if settings.retry_max_seconds < settings.retry_base_seconds:
        raise ConfigError("RETRY_MAX_SECONDS", str(settings.retry_max_seconds),
                          f"a value >= RETRY_BASE_SECONDS ({settings.retry_base_seconds})")
    return settings


def load_pidfile_only(path: str | Path | None = None,
                      env: Mapping[str, str] | None = None) -> Settings:
    """Defaults plus PIDFILE alone, for `status` and `stop` when the full configuration
    is refused: a typo elsewhere in the ini must not keep an operator from stopping the
    daemon. Raises ConfigError only when not even PIDFILE can be read."""
    env = os.environ if env is None else env
    cfg_file = config_path(str(path) if path else None, env)
    pidfile = Settings.pidfile
    if cfg_file.is_file():
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str.upper  # type: ignore[assignment,method-assign]
        try:
            parser.read(cfg_file, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigError("CONFIG", str(cfg_file), f"a readable ini file ({exc})") from None
        pidfile = parser.get(SECTION, "PIDFILE", fallback=pidfile).strip() or pidfile
    pidfile = env.get(ENV_PREFIX + "PIDFILE", pidfile).strip() or pidfile
    base = cfg_file.resolve().parent if cfg_file.is_file() else Path.cwd()
    if not Path(pidfile).is_absolute():
        pidfile = str(base / pidfile)
    return Settings(pidfile=pidfile)
