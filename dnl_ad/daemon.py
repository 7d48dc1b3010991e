"""Running the loop as a well-behaved Unix daemon: pidfile, detaching, signals, startup.

The pidfile is locked with flock(2) for the whole life of the daemon (our own small
PidFile class rather than python-daemon's lockfile-based one: lockfile cannot tell a
live owner from a stale file, while a kernel lock dies with its process). So:
- a live daemon is exactly "someone holds the lock"; pid reuse cannot fool us;
- a stale pidfile (crash, kill -9) never blocks a start: its lock is gone;
- `zap` removes a stale file and refuses while a daemon holds it.

`start` forks a child that enters python-daemon's DaemonContext (double fork, setsid,
closed files, /dev/null streams, our signal map) and reports back through a pipe once
the pidfile is locked and the database migrated, so `start` prints either the new pid
or the reason it failed, and exits 0 or 1 accordingly.

Signals: SIGTERM/SIGINT ask the loop to finish the job in hand (delivery stops after
the message being sent) and leave; SIGHUP reloads configuration and templates.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, db, leader, logs, migrations
from .config import Settings
from .scheduler import Loop, Wakeup

if TYPE_CHECKING:
    from .metrics import Metrics
    from .metrics import Server as MetricsServer

log = logging.getLogger(__name__)

PROGRAM = "dnl_ad"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


class AlreadyRunning(RuntimeError):
    def __init__(self, path: Path, pid: int | None) -> None:
        self.path, self.pid = path, pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"dnl_ad is already running ({who} holds the pidfile {path})")


class PidFile:
    """A pidfile held under an exclusive flock while the daemon lives.

    Usable as python-daemon's `pidfile` (a context manager entered after detaching).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def read_pid(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def holder(self) -> int | None:
        """The pid of the live daemon holding the lock, -1 if its pid is unreadable, or
        None when nobody holds it (no file, or a stale one)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.read_pid() or -1
        finally:
            os.close(fd)  # closing also drops our shared lock
        return None

    def acquire(self, *, attempts: int = 10) -> None:
        """Lock the file and write our pid; AlreadyRunning when a live daemon holds it.

        A few short retries cover a concurrent `status` holding a shared lock for an
        instant; the inode check covers a previous daemon unlinking the file meanwhile.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if attempt == attempts - 1:
                    raise AlreadyRunning(self.path, self.read_pid()) from None
                time.sleep(0.05)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            os.fsync(fd)
            self._fd = fd
            return
        raise AlreadyRunning(self.path, self.read_pid())

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- startup --------------------------------------------------------------------------

def build_date() -> str:
    """The package's build date: when its files were installed or last changed."""
    stamp = Path(__file__).resolve().parent.joinpath("__init__.py").stat().st_mtime
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).strftime("%Y-%m-%d")


def upsert_version(cur: db.Cursor, now: dt.datetime) -> None:
    """version_information: update the dnl_ad row, or insert it the first time."""
    major, _, minor = __version__.partition(".")
    values = (major, minor or "0", build_date(), now)
    cur.execute(
        "UPDATE version_information SET major_ver = %s, minor_ver = %s, build_date = %s, "
        "start_time = %s WHERE program_name = %s", (*values, PROGRAM))
    if cur.rowcount == 0:
        cur.execute(
            "INSERT INTO version_information (major_ver, minor_ver, build_date, start_time, "
            "program_name) VALUES (%s, %s, %s, %s, %s)", (*values, PROGRAM))


def startup(database: db.Database, settings: Settings, now: dt.datetime) -> None:
    """Migrate the own schema and record our version; dry run writes neither."""
    with database.transaction() as cur:
        if settings.dry_run:
            missing = migrations.missing_line(cur, settings.own_schema)
            if missing:
                log.warning("dry run: %s; until then each dry-run transaction creates it "
                            "and rolls it back", missing)
            return
        for name in migrations.migrate(cur, settings.own_schema):
            log.info("startup: applied migration %s", name)
        upsert_version(cur, now)


def _smtp_summary(settings: Settings) -> str:
    if not settings.smtp_host:
        return "SMTP from system_parameter"
    return f"SMTP {settings.smtp_host}:{settings.smtp_port or 'default'}"


def _start_metrics(settings: Settings) -> tuple[Metrics | None, MetricsServer | None]:
    """(Metrics, Server) when METRICS_PORT is set, else (None, None). A port that
    cannot be bound is logged; the daemon runs on without /metrics."""
    if not settings.metrics_port:
        return None, None
    from . import metrics

    collected = metrics.Metrics()
    period = max(settings.balance_check_seconds, settings.daily_check_seconds,
                 settings.trunk_check_seconds, settings.delivery_seconds)
    try:
        server = metrics.Server(
            collected, lambda: metrics.health(collected, settings.connection_string, period),
            settings.metrics_address, settings.metrics_port).start()
    except OSError as exc:
        log.error("metrics: cannot listen on %s:%d (%s); running without /metrics",
                  settings.metrics_address, settings.metrics_port, exc.strerror or exc)
        return collected, None
    log.info("metrics: /metrics and /healthz on http://%s:%d", settings.metrics_address,
             server.port)
    return collected, server


def serve(settings: Settings, *, reload_settings: Callable[[], Settings], wakeup: Wakeup,
          ready: Callable[[str], None] = lambda message: None,
          on_reload: Callable[[Settings], None] | None = None,
          tick_hooks: Sequence[Callable[[Loop, list[str]], None]] = ()) -> int:
    """Take the active-daemon lock (or stand by), start up, run the loop until a stop
    request, shut down. Returns the exit status: 1 when another daemon is (or becomes)
    the active one and HA_STANDBY is off.

    `ready` gets "ok active", "ok standby" or "error <reason>" (for `start`).
    """
    wakeup.attach_to_signals()
    database = migrations.open_database(settings, sleep=wakeup.sleep)
    # A dry run writes nothing and sends nothing, so it needs no lock (and must not keep
    # the real daemon from starting).
    lock = None if settings.dry_run else leader.LeaderLock(
        settings.connection_string, leader.Timing(settings.ha_takeover_seconds),
        ha=settings.ha_standby)
    started = [False]

    def activate() -> None:
        """Startup (migrations, version row), once, when this daemon first is active; and,
        each time it becomes the active one, the leases of dead deliverers released."""
        if not started[0]:
            startup(database, settings, dt.datetime.now(dt.timezone.utc))
            started[0] = True
        if not settings.dry_run:
            # only the active daemon (advisory lock holder) may do this: no other deliverer
            # lives, so the leases of one that died (kill -9) are released at once, not
            # after 300 s
            from .delivery import release_dead_leases

            release_dead_leases(database, settings)

    def fail(reason: str) -> int:
        log.error("%s", reason)
        ready("error " + reason)
        database.close()
        if lock is not None:
            lock.release()
        return 1

    try:
        active = lock is None or lock.acquire()
        if not active and not settings.ha_standby:
            return fail(f"another dnl_ad daemon is active on database {database.safe_name}: "
                        f"{leader.describe_holder(lock)}; this one exits "
                        "(HA_STANDBY=true stands by instead)")
        if active:
            activate()
    except Exception as exc:
        first = db.scrub(str(exc)).strip().splitlines()
        return fail(f"startup failed on database {database.safe_name}: "
                    f"{first[0] if first else type(exc).__name__}")
    role = leader.ACTIVE if active else leader.STANDBY
    log.info("dnl_ad %s started: pid %d, database %s, %s, %s%s", __version__, os.getpid(),
             database.safe_name, _smtp_summary(settings), role,
             ", DRY RUN" if settings.dry_run else "")
    if not active:
        assert lock is not None
        log.warning("standing by: %s is the active daemon; taking over within %d s of its "
                    "end", leader.describe_holder(lock), settings.ha_takeover_seconds)
    metrics, server = _start_metrics(settings)
    ready(f"ok {role}")
    taken_over: list[str] = []

    def on_lost(reason: str) -> None:
        taken_over.append(reason)
        log.error("%s; this one stops", reason)
        wakeup.request_stop("the active-daemon lock was taken by another daemon")

    guard = heartbeat = None
    if lock is not None:
        guard = leader.ActiveGuard(lock, standby=settings.ha_standby, on_lost=on_lost,
                                   on_active=activate, active=active)
        if settings.ha_standby:  # without HA the loop confirms the lock when it works
            heartbeat = leader.Heartbeat(lock, on_lost=wakeup.wake)
            heartbeat.start()
    loop = Loop(settings, database, wakeup=wakeup, reload=reload_settings, on_reload=on_reload,
                guard=guard, metrics=metrics)
    loop.tick_hooks.extend(tick_hooks)
    try:
        loop.run_forever()
    finally:
        if server is not None:
            server.stop()
        if heartbeat is not None:
            heartbeat.stop()
        loop.database.close()
        if lock is not None:
            lock.release()
        log.info("dnl_ad stopped (pid %d)", os.getpid())
    return 1 if taken_over else 0


def _handlers(wakeup: Wakeup) -> dict[int, Callable[..., None]]:
    def on_stop(signum: int, frame: object) -> None:
        wakeup.request_stop(f"{signal.Signals(signum).name} received")

    def on_hup(signum: int, frame: object) -> None:
        wakeup.request_reload()

    return {signal.SIGTERM: on_stop, signal.SIGINT: on_stop, signal.SIGHUP: on_hup}


# --- foreground: `run` (systemd) and `debug` -------------------------------------------

def run_foreground(settings: Settings, reload_settings: Callable[[], Settings], *,
                   debug: bool = False) -> int:
    """`run` (systemd: Type=notify readiness, watchdog, journal priorities) and `debug`."""
    from . import systemd

    logs.setup(settings, console=debug, level=logging.DEBUG if debug else None)
    pidfile = PidFile(settings.pidfile)
    try:
        pidfile.acquire()
    except AlreadyRunning as exc:
        log.error("%s", exc)
        print(str(exc), file=sys.stderr)
        return 1
    wakeup = Wakeup()
    for signum, handler in _handlers(wakeup).items():
        signal.signal(signum, handler)

    def ready(message: str) -> None:
        # `debug` logs on the console already; `run` logs elsewhere: say why it stopped
        if message.startswith("error ") and not debug:
            print(f"dnl_ad did not start: {message.removeprefix('error ')}", file=sys.stderr)

    notifier = systemd.Notifier()

    def on_reload(new: Settings) -> None:
        notifier.reloading()
        try:
            logs.setup(new, console=debug, level=logging.DEBUG if debug else None)
        finally:
            notifier.reloaded()

    try:
        return serve(settings, reload_settings=reload_settings, wakeup=wakeup, ready=ready,
                     on_reload=on_reload,
                     tick_hooks=[notifier.after_tick] if notifier.active else [])
    finally:
        notifier.stopping()
        pidfile.release()
        wakeup.close()


# --- background: `start` ---------------------------------------------------------------

def _read_report(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    chunks = b""
    while b"\n" not in chunks:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        data = os.read(fd, 4096)
        if not data:
            break
        chunks += data
    return chunks.decode("utf-8", "replace").strip()


def _daemon_child(settings: Settings, reload_settings: Callable[[], Settings],
                  report_fd: int) -> int:
    import daemon  # python-daemon

    def report(message: str) -> None:
        try:
            os.write(report_fd, (message + "\n").encode("utf-8"))
        except OSError:
            pass

    wakeup = Wakeup()
    context = daemon.DaemonContext(
        working_directory="/", umask=0o022, detach_process=True,
        pidfile=PidFile(settings.pidfile),
        files_preserve=[report_fd, *wakeup.fds],
        signal_map=_handlers(wakeup),
    )
    try:
        context.open()
    except AlreadyRunning as exc:
        report(f"error {exc}")
        return 1
    except OSError as exc:  # the pidfile's folder cannot be made or written
        report(f"error cannot write the pidfile {settings.pidfile}: {exc.strerror or exc}")
        return 1
    try:
        logs.setup(settings, detached=True)
        return serve(settings, reload_settings=reload_settings, wakeup=wakeup, ready=report,
                     on_reload=lambda new: logs.setup(new, detached=True))
    except Exception as exc:
        log.exception("daemon failed")
        report(f"error {db.scrub(str(exc))}")
        return 1
    finally:
        logs.shutdown()
        context.close()


def where_logs_go(settings: Settings) -> str:
    return "syslog" if settings.syslog else settings.logfile


def start(settings: Settings, reload_settings: Callable[[], Settings]) -> int:
    """Detach a daemon; print its pid, or why it could not start. Exit status 0 or 1."""
    pidfile = PidFile(settings.pidfile)
    holder = pidfile.holder()
    if holder is not None:
        print(str(AlreadyRunning(pidfile.path, holder if holder > 0 else None)), file=sys.stderr)
        return 1
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        os.close(read_fd)
        code = 1
        try:
            code = _daemon_child(settings, reload_settings, write_fd)
        finally:
            os._exit(code)
    os.close(write_fd)
    os.waitpid(child, 0)  # the intermediate process exits as soon as the daemon detached
    try:
        report = _read_report(read_fd, START_TIMEOUT_SECONDS)
    finally:
        os.close(read_fd)
    if report.startswith("ok"):
        role = report.removeprefix("ok").strip()
        print(f"dnl_ad started (pid {pidfile.read_pid()})" + (f" as {role}" if role else "")
              + f", logging to {where_logs_go(settings)}")
        return 0
    reason = report.removeprefix("error ").strip() or \
        f"no word from the daemon; see {where_logs_go(settings)}"
    print(f"dnl_ad did not start: {reason}", file=sys.stderr)
    return 1


# --- control: stop, status, zap ----------------------------------------------------------

def stop(settings: Settings, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """SIGTERM the daemon and wait until its pidfile lock is released."""
    pidfile = PidFile(settings.pidfile)
    pid = pidfile.holder()
    if pid is None:
        print("dnl_ad is not running")
        return 0
    if pid < 0:
        print(f"dnl_ad is running but {pidfile.path} holds no pid; stop it by hand",
              file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        print(f"not allowed to signal pid {pid}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pidfile.holder() is None:
            print(f"dnl_ad stopped (pid {pid})")
            return 0
        time.sleep(0.05)
    print(f"dnl_ad (pid {pid}) did not stop within {timeout:.0f} s", file=sys.stderr)
    return 1


def role_of(settings: Settings, pid: int) -> str:
    """'active' or 'standby (...)' as the database sees it: the active daemon is the
    one whose lock session names this host and pid."""
    try:
        holder = leader.LeaderLock(settings.connection_string).holder()
    except Exception as exc:
        first = db.scrub(str(exc)).strip().splitlines()
        return f"role unknown: database {db.mask_dsn(settings.connection_string)}: " \
               f"{first[0] if first else type(exc).__name__}"
    mine = f"{leader.LOCK_WORD} {socket.gethostname()} pid {pid}"
    if holder is not None and holder.application_name == mine[:63]:
        return "active"
    return "standby (active: " + (holder.describe() if holder else "none yet") + ")"


def status(settings: Settings, *, ask_database: bool = True) -> int:
    """LSB: 0 running, 1 dead but the pidfile remains, 3 not running. With the database
    at hand, a running daemon's role (active or standby) too."""
    pidfile = PidFile(settings.pidfile)
    pid = pidfile.holder()
    if pid is not None:
        if pid < 0:
            print("dnl_ad is running")
            return 0
        role = f", {role_of(settings, pid)}" if ask_database and not settings.dry_run else ""
        print(f"dnl_ad is running (pid {pid}){role}")
        return 0
    if pidfile.path.exists():
        stale = pidfile.read_pid()
        print(f"dnl_ad is not running; stale pidfile {pidfile.path}"
              + (f" names pid {stale}" if stale else "") + " (`zap` removes it)")
        return 1
    print("dnl_ad is not running")
    return 3


def zap(settings: Settings) -> int:
    """Remove a stale pidfile; refuse while a live daemon holds it."""
    pidfile = PidFile(settings.pidfile)
    pid = pidfile.holder()
    if pid is not None:
        print(f"dnl_ad is running (pid {pid}); use stop, not zap", file=sys.stderr)
        return 1
    try:
        pidfile.path.unlink()
    except FileNotFoundError:
        print(f"no pidfile at {pidfile.path}")
        return 0
    except OSError as exc:
        if exc.errno == errno.EACCES:
            print(f"not allowed to remove {pidfile.path}", file=sys.stderr)
            return 1
        raise
    print(f"removed pidfile {pidfile.path}")
    return 0
