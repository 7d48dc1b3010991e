"""`dnl-ad run` under systemd (Type=notify): readiness, watchdog, reload and stop
notices over a real $NOTIFY_SOCKET, and journal priority prefixes on stderr."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .test_daemon import REPO, daemon_env, wait_for, write_ini


class NotifySocket:
    """What systemd listens on: a unix datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(20)
        self.received: list[str] = []

    def wait_for(self, message: str, times: int = 1) -> list[str]:
        """Receive until `message` has arrived `times` times; every datagram so far."""
        while sum(message in m for m in self.received) < times:
            self.received.append(self.sock.recv(4096).decode())
        return self.received

    def close(self) -> None:
        self.sock.close()


def test_run_under_systemd_notifies_and_logs_with_priorities(settings, tmp_path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    journal = (tmp_path / "journal.txt").open("w+b")
    st = os.fstat(journal.fileno())
    env = {**daemon_env(settings, tmp_path), "NOTIFY_SOCKET": notify.path,
           "WATCHDOG_USEC": "1000000", "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
           "DNL_AD_SYSLOG": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "dnl_ad", "run"], cwd=REPO, env=env,
                            stderr=journal, stdout=subprocess.DEVNULL)
    try:
        seen = notify.wait_for("READY=1")
        assert seen[0].startswith("READY=1") and "STATUS=dnl_ad active" in seen[0]
        started = time.monotonic()
        # every WatchdogSec/2 = 0.5 s, from the loop, which wakes for it however idle
        notify.wait_for("WATCHDOG=1", times=3)
        assert time.monotonic() - started < 5
        proc.send_signal(signal.SIGHUP)
        seen = notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1", times=2)
        assert seen.index("RELOADING=1") < len(seen) - 1
        write_ini(Path(env["DNL_AD_CONFIG"]), settings, SMTP_PORT="abc")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in (tmp_path / "journal.txt").read_text(), 10,
                 "the refused reload in the journal")
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        journal.close()
    lines = (tmp_path / "journal.txt").read_text().splitlines()
    assert lines and all(line[:1] == "<" and line[2:3] == ">" for line in lines), lines[:5]
    assert any(line.startswith("<6>dnl_ad.daemon: dnl_ad ") and "started" in line
               for line in lines)
    assert any(line.startswith("<3>") and "reload refused" in line for line in lines)
    assert not Path(settings.logfile).exists()  # the journal, not LOGFILE
