"""systemd integration for `dnl-ad run` (Type=notify): a few lines of the sd_notify
protocol over $NOTIFY_SOCKET, the watchdog, and whether stderr is the journal.

- READY=1 after the loop's first successful tick (a job ran and succeeded; a standby:
  its first tick), so `systemctl start` returns once dnl_ad really works; STATUS= says
  the role;
- WATCHDOG=1 every WatchdogSec/2 from the loop itself, so a hung loop gets restarted
  (WatchdogSec must exceed the longest sweep);
- RELOADING=1 / READY=1 around a SIGHUP reload, STOPPING=1 on the way out.
Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .scheduler import Loop

log = logging.getLogger(__name__)


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify datagram; False when not under systemd or it failed."""
    env = os.environ if env is None else env
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", message, exc)
        return False
    return True


def watchdog_seconds(env: Mapping[str, str] | None = None) -> float | None:
    """How often to ping the watchdog (half of WatchdogSec), or None when it is off."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


def stderr_is_journal(stream: TextIO | None = None,
                      env: Mapping[str, str] | None = None) -> bool:
    """True when stderr is connected to the journal (JOURNAL_STREAM names its device
    and inode): lines may then carry <N> syslog priority prefixes."""
    env = os.environ if env is None else env
    expected = env.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class Notifier:
    """The loop's tick hook under systemd: readiness once, then the watchdog."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.ready = False
        self.interval = watchdog_seconds(self.env)
        self._last_ping = 0.0

    @property
    def active(self) -> bool:
        return bool(self.env.get("NOTIFY_SOCKET"))

    def after_tick(self, loop: Loop, ran: list[str]) -> None:
        role = getattr(loop.guard, "role", "active")
        succeeded = any(job.name in ran and not job.failures for job in loop.registry.jobs)
        if not self.ready and (succeeded or role != "active"):
            notify(f"READY=1\nSTATUS=dnl_ad {role}", self.env)
            self.ready = True
        if self.interval is not None:
            # the loop must wake often enough to ping in time, however idle it is
            loop.wake_at_least_every = min(loop.wake_at_least_every, self.interval / 2)
            now = time.monotonic()
            if now - self._last_ping >= self.interval:
                notify("WATCHDOG=1", self.env)
                self._last_ping = now

    def reloading(self) -> None:
        notify("RELOADING=1", self.env)

    def reloaded(self) -> None:
        notify("READY=1", self.env)

    def stopping(self) -> None:
        notify("STOPPING=1", self.env)
