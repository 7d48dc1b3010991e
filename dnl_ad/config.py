"""Configuration: dnl_ad.ini plus DNL_AD_<KEY> environment overrides -> one frozen Settings.

Operators already have ini files with CONNECTION_STRING, CDR_DOWNLOAD_URL, PIDFILE,
LOGFILE and LOGLEVEL in a [dnl_ad] section; those keys keep their meaning. Every
other key has a safe default, so an old file still starts the daemon.

A bad value is refused with one line naming the key, the value and what was expected
(ConfigError); the CLI turns that into exit status 2. An unknown key is a warning, not
an error, so a typo never takes a running carrier's alerts down on restart.
"""

from __future__ import annotations

import configparser
import dataclasses
import logging
import os
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


def _dsn(raw: str) -> str:
    v = raw.strip()
    if not v:
        raise ValueError("a libpq connection string (key=value pairs or a postgresql:// URI)")
    if "://" in v:
        if urlparse(v).scheme not in {"postgres", "postgresql"}:
            raise ValueError("a postgresql:// URI or libpq key=value pairs")
        return v
    from psycopg2.extensions import parse_dsn

    try:
        parse_dsn(v)
    except Exception:
        raise ValueError(
            "libpq key=value pairs such as 'host=127.0.0.1 dbname=class4_pr'") from None
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
    delivery_seconds: int = 5
    delivery_batch: int = 500
    max_attempts: int = 8
    retry_base_seconds: int = 60
    retry_max_seconds: int = 3600
    catchup_hours: int = 24
    suspend_grace_minutes: int = 0
    suspend_max_overdue_days: int = 3
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
    template_dir: str = str(REPO_ROOT / "templates")
    # --- DNL CDR API (PROVIDER_DB.md section 5); CDR_API_URL/USER/PASSWORD are the old keys
    cdr_api_host: str = ""
    cdr_api_token_port: int = 8887
    cdr_api_export_port: int = 8889
    cdr_api_url: str = ""
    cdr_api_user: str = ""
    cdr_api_password: str = ""
    cdr_api_timeout_seconds: int = 120
    cdr_api_poll_seconds: int = 5
    config_path: str = ""

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and --dry-run use this)."""
        return dataclasses.replace(self, **changes)


def _schema_name(raw: str) -> str:
    v = raw.strip()
    if not v or not (v[0].isalpha() or v[0] == "_") or not all(c.isalnum() or c == "_" for c in v):
        raise ValueError("a plain schema name (letters, digits, underscore)")
    return v.lower()


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
                      else _choice("none", "starttls", "ssl")(raw)),
    "SMTP_FROM": ("smtp_from", _str),
    "SMTP_VERIFY": ("smtp_verify", _bool),
    "SMTP_TIMEOUT_SECONDS": ("smtp_timeout_seconds", _int_range(1, 600)),
    "BALANCE_CHECK_SECONDS": ("balance_check_seconds", _int_range(1, 86400)),
    "DAILY_CHECK_SECONDS": ("daily_check_seconds", _int_range(1, 86400)),
    "TRUNK_CHECK_SECONDS": ("trunk_check_seconds", _int_range(1, 86400)),
    "DELIVERY_SECONDS": ("delivery_seconds", _int_range(1, 3600)),
    "DELIVERY_BATCH": ("delivery_batch", _int_range(1, 100000)),
    "MAX_ATTEMPTS": ("max_attempts", _int_range(1, 100)),
    "RETRY_BASE_SECONDS": ("retry_base_seconds", _int_range(1, 86400)),
    "RETRY_MAX_SECONDS": ("retry_max_seconds", _int_range(1, 7 * 86400)),
    "CATCHUP_HOURS": ("catchup_hours", _int_range(0, 24 * 31)),
    "SUSPEND_GRACE_MINUTES": ("suspend_grace_minutes", _int_range(0, 7 * 24 * 60)),
    "SUSPEND_MAX_OVERDUE_DAYS": ("suspend_max_overdue_days", _int_range(0, 3650)),
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
    "TEMPLATE_DIR": ("template_dir", _str),
    "CDR_API_HOST": ("cdr_api_host", _host),
    "CDR_API_TOKEN_PORT": ("cdr_api_token_port", _int_range(1, 65535)),
    "CDR_API_EXPORT_PORT": ("cdr_api_export_port", _int_range(1, 65535)),
    "CDR_API_URL": ("cdr_api_url", _url),
    "CDR_API_USER": ("cdr_api_user", _str),
    "CDR_API_PASSWORD": ("cdr_api_password", lambda raw: raw),
    "CDR_API_TIMEOUT_SECONDS": ("cdr_api_timeout_seconds", _int_range(1, 3600)),
    "CDR_API_POLL_SECONDS": ("cdr_api_poll_seconds", _int_range(1, 600)),
}

_PATH_FIELDS = {"pidfile", "logfile", "dry_run_dir", "template_dir"}


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
                log.warning("config: unknown key %s in %s [%s] is ignored", key, cfg_file, SECTION)
                continue
            raw[key] = value
    elif require_file or path is not None or env.get(CONFIG_ENV):
        raise ConfigError("CONFIG", str(cfg_file), "an existing ini file")

    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = name[len(ENV_PREFIX):]
        if key.startswith("TEST_"):
            continue  # DNL_AD_TEST_DSN and friends belong to the test suite
        if key not in KEYS:
            log.warning("config: unknown environment variable %s is ignored", name)
            continue
        raw[key] = value

    base = cfg_file.resolve().parent if cfg_file.is_file() else Path.cwd()
    values: dict[str, Any] = {"config_path": str(cfg_file) if cfg_file.is_file() else ""}
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
        if not Path(default).is_absolute():
            values[field] = str(base / default)
    settings = Settings(**values)
    if settings.retry_max_seconds < settings.retry_base_seconds:
        raise ConfigError("RETRY_MAX_SECONDS", str(settings.retry_max_seconds),
                          f"a value >= RETRY_BASE_SECONDS ({settings.retry_base_seconds})")
    return settings
