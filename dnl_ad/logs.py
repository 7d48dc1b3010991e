"""Logging setup: a size-rotated, gzipped log file, or syslog, or the console (debug).

Every handler formats through ScrubbingFormatter, which removes passwords (db.scrub),
the configured secrets (SMTP and CDR API passwords) and the full connection string
from the final text, tracebacks included: a secret that slips into a message or an
exception still never reaches a log.
"""

from __future__ import annotations

import gzip
import logging
import logging.handlers
import os
import shutil
import socket
import sys
from pathlib import Path

from . import db, systemd
from .config import Settings

ROOT = "dnl_ad"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "dnl_ad[%(process)d]: %(levelname)s %(name)s: %(message)s"
SYSLOG_SOCKET = "/dev/log"  # the local syslog socket (a module setting so tests can move it)
_MARK = "_dnl_ad_handler"  # attribute on the handlers we install, so setup() can replace them


class ScrubbingFormatter(logging.Formatter):
    """A Formatter whose output never contains a password, token or full DSN."""

    def __init__(self, fmt: str, secrets: dict[str, str] | None = None) -> None:
        super().__init__(fmt)
        # longest first, so a DSN is replaced before a password inside it
        self._secrets = sorted((secrets or {}).items(), key=lambda kv: -len(kv[0]))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret, shown in self._secrets:
            text = text.replace(secret, shown)
        return db.scrub(text)


JOURNAL_FORMAT = "%(name)s: %(message)s"  # the journal adds time, unit and pid


def syslog_priority(level: int) -> int:
    """A logging level as a syslog priority (sd-daemon's <N> prefixes)."""
    if level >= logging.CRITICAL:
        return 2
    if level >= logging.ERROR:
        return 3
    if level >= logging.WARNING:
        return 4
    if level >= logging.INFO:
        return 6
    return 7


class JournalFormatter(ScrubbingFormatter):
    """Every line (tracebacks too) prefixed with <N>, which journald reads as the
    entry's priority, so `journalctl -p warning` shows warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def secrets_of(settings: Settings) -> dict[str, str]:
    """secret text -> what the log shows instead."""
    found = {settings.connection_string: db.mask_dsn(settings.connection_string)}
    for value in (settings.smtp_password, settings.cdr_api_password):
        if value and len(value) >= 3:  # a one-letter "password" would mangle every line
            found[value] = "***"
    return {k: v for k, v in found.items() if k}


def gzip_namer(name: str) -> str:
    return name + ".gz"


def gzip_rotator(source: str, dest: str) -> None:
    """Compress the file being rotated out; the live log starts afresh."""
    with open(source, "rb") as src, gzip.open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(source)


def file_handler(path: str, max_bytes: int, backups: int) -> logging.Handler:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.namer = gzip_namer
    handler.rotator = gzip_rotator
    return handler


def syslog_handler(path: str | None = None) -> logging.Handler:
    """The local syslog socket; OSError when there is none (no /dev/log in a container).

    SysLogHandler itself ignores a failed connect and then drops every line, so the
    socket is tried first, datagram then stream, as the handler would.
    """
    path = path or SYSLOG_SOCKET
    failure: OSError | None = None
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        probe = socket.socket(socket.AF_UNIX, kind)
        try:
            probe.connect(path)
        except OSError as exc:
            failure = exc
            continue
        finally:
            probe.close()
        return logging.handlers.SysLogHandler(
            address=path, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    assert failure is not None
    raise failure


def setup(settings: Settings, *, console: bool = False, level: int | None = None,
          detached: bool = False) -> None:
    """(Re)configure logging for the daemon; safe to call again on SIGHUP.

    console=True logs to stderr only (`debug`); otherwise to SYSLOG or LOGFILE. SYSLOG
    under systemd (stderr is the journal) writes to stderr with priority prefixes. When
    SYSLOG is on but there is no syslog socket, lines would be lost in silence: the
    first line says so and the rest go to stderr (the journal under systemd), or to
    LOGFILE for a detached daemon, whose stderr is /dev/null.
    """
    level = settings.loglevel if level is None else level
    secrets = secrets_of(settings)
    handler: logging.Handler | None = None
    fallback = ""
    if console:
        handler, fmt = logging.StreamHandler(sys.stderr), CONSOLE_FORMAT
    elif settings.syslog and systemd.stderr_is_journal():
        # run by systemd: stderr is the journal, which takes priorities as <N> prefixes
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter(JOURNAL_FORMAT, secrets))
        fmt = ""
    elif settings.syslog:
        try:
            handler, fmt = syslog_handler(), SYSLOG_FORMAT
        except OSError as exc:
            fallback = (f"SYSLOG=true but the syslog socket {SYSLOG_SOCKET} cannot be used "
                        f"({exc.strerror or exc}); logging to "
                        + (settings.logfile if detached else "stderr") + " instead")
            if not detached:
                handler, fmt = logging.StreamHandler(sys.stderr), CONSOLE_FORMAT
    if handler is None:
        handler = file_handler(settings.logfile, settings.log_max_bytes, settings.log_backups)
        fmt = FILE_FORMAT
    if fmt:
        handler.setFormatter(ScrubbingFormatter(fmt, secrets))
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        # our own previous handler, or the CLI's basicConfig stderr handler
        if getattr(old, _MARK, False) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # third-party chatter (mail.log of aiosmtpd, schedule's per-run debug lines) stays quiet
    logging.getLogger("schedule").setLevel(max(level, logging.INFO))
    if fallback:
        logging.getLogger(__name__).warning("%s", fallback)


def shutdown() -> None:
    """Flush and close our handlers (on exit)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            handler.flush()


class Conditions:
    """Conditions that hold across sweeps, each said when it starts and when it ends.

    A sweep reports every time whether a condition holds (`holds`) or not (`ends`); the
    log gets one line when it starts (or its text changes, e.g. a count) and one when
    it ends, never one per sweep. Keys name the condition (a job, a client, ...).
    """

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING) -> None:
        self.logger, self.level = logger, level
        self._said: dict[object, str] = {}

    def holding(self, key: object) -> bool:
        return key in self._said

    def holds(self, key: object, message: str, *args: object) -> bool:
        """The condition holds now; True when that was logged (new or changed)."""
        text = message % args if args else message
        if self._said.get(key) == text:
            return False
        self._said[key] = text
        self.logger.log(self.level, "%s", text)
        return True

    def ends(self, key: object, message: str, *args: object) -> bool:
        """The condition no longer holds; True when its end was logged (it was holding)."""
        if self._said.pop(key, None) is None:
            return False
        self.logger.info(message, *args)
        return True

