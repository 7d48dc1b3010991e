"""The loop: a `schedule` registry of the alert sweeps and the delivery step.

One thread runs everything, so jobs never overlap: a long job delays the others and
never runs twice at once. At each tick the loop runs the jobs that are due, each with
`now` read from the clock when that job starts (the only clock read in the daemon;
tests inject their own); between ticks it sleeps until the next job is due (between one
and IDLE_WAIT_SECONDS). Jobs keep to a common grid (the registry's anchor plus whole
periods), so the sweeps of one cadence run in one tick and an idle daemon wakes once
for all of them; delivery, when nothing is waiting, sleeps until the next message is due
(a retry), a sweep queues mail, or IDLE_DELIVERY_SECONDS pass. A job that raises is
logged with its traceback and backs off (period x 2^failures, capped); the loop and
the other jobs go on. All jobs share one db.Database, so an outage is logged once when
it starts and once when it ends (Database keeps that bookkeeping); a job that fails
only because the database is away backs off quietly.

Stop and reload requests come from signal handlers through Wakeup, a self-pipe: the
handler only sets a flag and writes one byte, which is safe in a signal handler and
wakes the loop (and any backoff sleep) at once.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import math
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import schedule

from . import db, logs, retention
from .alerts import ALERTS, AlertSpec
from .config import ConfigError, Settings

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
TICK_SECONDS = 1.0                   # the shortest sleep between two ticks
IDLE_WAIT_SECONDS = 60.0             # the longest: the loop sleeps until the next job is due
IDLE_DELIVERY_SECONDS = 60           # an idle outbox is looked at this often (at least)
BACKOFF_CAP_SECONDS = 300.0          # a failing job is retried at least this often
OUTAGE_BACKOFF_CAP_SECONDS = 30.0    # ...and sooner when only the database was away
OUTBOX_METRICS_SECONDS = 15          # outbox depth for /metrics (when METRICS_PORT is set)


def utc_now() -> dt.datetime:
    """The daemon's clock: aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


class Wakeup:
    """Signal-safe stop/reload requests plus an interruptible sleep (a self-pipe)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        for fd in (self._r, self._w):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.stop_requested = False
        self.reload_requested = False
        self.reason = ""

    @property
    def fds(self) -> tuple[int, int]:
        return self._r, self._w

    def wake(self) -> None:
        """Cut the current (or next) wait short: another thread has news (a lost lock)."""
        self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop is awake already

    def attach_to_signals(self) -> None:
        """Make every signal wake `wait()` at once (signal.set_wakeup_fd on the pipe).

        Why: the kernel may deliver SIGTERM to any thread (an HTTP call's, the heartbeat's,
        an SMTP session's); Python then runs the handler in the main thread only when that
        thread next wakes, and a main thread sleeping in select() (a 30 s CDR poll) would
        not wake: the stop would wait out the sleep. The wakeup fd wakes it whichever
        thread took the signal. Only the main thread may call this; elsewhere it is a no-op.
        """
        try:
            signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread (tests driving a loop from a thread)
            pass

    def request_stop(self, reason: str = "stop requested") -> None:
        if not self.stop_requested:
            self.reason = reason
        self.stop_requested = True
        self._poke()

    def request_reload(self) -> None:
        self.reload_requested = True
        self._poke()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` s, less if a request arrives; True when stop is requested."""
        if not self.stop_requested and timeout > 0:
            try:
                select.select([self._r], [], [], timeout)
            except InterruptedError:
                pass
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        return self.stop_requested

    def sleep(self, seconds: float) -> None:
        """For db.Database's reconnect backoff: a stop request cuts it short."""
        self.wait(seconds)

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class _Job(schedule.Job):
    """A schedule.Job that reads the registry's clock, passes `now` to its function,
    and turns an exception into a logged, backed-off failure instead of a crash."""

    scheduler: Registry

    def __init__(self, interval: int, scheduler: Registry) -> None:
        super().__init__(interval, scheduler)
        self.name = ""
        self.failures = 0
        # when the current run of failures began and what the last one said (the
        # operator alerts read them: dnl_ad.operator_alerts)
        self.failing_since: dt.datetime | None = None
        self.last_error = ""
        # after a successful run: (result, end) -> the next run, None for the grid's
        self.reschedule: Callable[[Any, dt.datetime], dt.datetime | None] | None = None
        # did a run queue mail (then delivery runs in the same tick: Loop._deliver_soon)?
        self.queued: Callable[[Any], bool] | None = None

    @property
    def period(self) -> float:
        return float(self.interval)

    @property
    def should_run(self) -> bool:
        return self.next_run is not None and self.scheduler.clock() >= self.next_run

    def _schedule_next_run(self) -> None:
        self.next_run = self.scheduler.clock() + dt.timedelta(seconds=self.period)

    def next_slot(self, end: dt.datetime) -> dt.datetime:
        """The first point of this job's grid at least half a period after `end`: a run
        on time is followed by the next grid point, one that overran rests at least half
        a period, and missed runs are not replayed."""
        return self.scheduler.grid_after(end + dt.timedelta(seconds=self.period / 2),
                                         self.period)

    def backoff(self, outage: bool) -> float:
        cap = OUTAGE_BACKOFF_CAP_SECONDS if outage else BACKOFF_CAP_SECONDS
        # the exponent is bounded: 2^1024 no longer converts to float (OverflowError),
        # which a long outage (1,000+ failures in a row) would otherwise reach
        return min(self.period * 2 ** min(self.failures, 32), max(self.period, cap))

    def run(self) -> Any:
        now = self.scheduler.clock()
        started = time.monotonic()
        delay = self.period
        result = None
        ok = False
        try:
            result = self.job_func(now)
            ok = True
        except Exception as exc:
            self.failures += 1
            if self.failing_since is None:
                self.failing_since = now
            self.last_error = (db.scrub(f"{type(exc).__name__}: {exc}").strip()
                               .splitlines() or [type(exc).__name__])[0][:500]
            if db.is_connection_error(exc):
                delay = self.backoff(outage=True)
                # Database logged the outage itself (once); one line per job would be noise.
                log.debug("job %s: database unavailable (%s); next try in %.0f s", self.name,
                          db.scrub(str(exc)).strip().splitlines()[0] if str(exc).strip()
                          else exc, delay)
            else:  # a bug, bad data, or an error on a live connection (statement timeout)
                delay = self.backoff(outage=False)
                log.exception("job %s failed (%d in a row); next try in %.0f s", self.name,
                              self.failures, delay)
        else:
            if self.failures:
                log.warning("job %s works again after %d failed runs", self.name, self.failures)
            self.failures = 0
            self.failing_since, self.last_error = None, ""
            log.debug("job %s done in %.2f s", self.name, time.monotonic() - started)
        self.last_run = self.scheduler.clock()
        if ok:
            wanted = self.reschedule(result, self.last_run) if self.reschedule else None
            self.next_run = wanted or self.next_slot(self.last_run)
        else:
            self.next_run = self.last_run + dt.timedelta(seconds=delay)
        seconds = time.monotonic() - started
        if self.scheduler.on_run is not None:
            self.scheduler.on_run(self.name, ok, seconds, result)
        for hook in self.scheduler.run_hooks:
            hook(self.name, ok, seconds, result)
        return result


class Registry(schedule.Scheduler):
    """schedule.Scheduler with an injectable clock (aware UTC) and named jobs."""

    def __init__(self, clock: Clock = utc_now) -> None:
        super().__init__()
        self.clock = clock
        self.jobs: list[_Job] = []  # type: ignore[assignment]
        # called after every run: (job name, succeeded, seconds, result) -> metrics and
        # the operator alerts
        self.on_run: Callable[[str, bool, float, Any], None] | None = None
        self.run_hooks: list[Callable[[str, bool, float, Any], None]] = []
        # the grid every job keeps to: the time the first job was added
        self.anchor: dt.datetime | None = None

    def clear(self, tag: Any = None) -> None:
        super().clear(tag)
        if not self.jobs:
            self.anchor = None

    def grid_after(self, moment: dt.datetime, period: float) -> dt.datetime:
        """The first point of the grid anchor + k * period at or after `moment`."""
        anchor = self.anchor or moment
        if period <= 0:
            return moment
        steps = max(0, math.ceil((moment - anchor).total_seconds() / period))
        return anchor + dt.timedelta(seconds=steps * period)

    def every(self, interval: int = 1) -> _Job:  # type: ignore[override]
        return _Job(interval, self)

    def add(self, name: str, period: int, func: Callable[[dt.datetime], Any]) -> _Job:
        """Register `func(now)` every `period` seconds; its first run is due at once."""
        job = self.every(period).seconds.do(func)
        job.name = name
        job.tag(name)
        job.next_run = self.clock()
        if self.anchor is None:
            self.anchor = job.next_run
        return job

    def find(self, name: str) -> _Job | None:
        return next((j for j in self.jobs if j.name == name), None)

    def job(self, name: str) -> _Job:
        found = self.find(name)
        if found is None:
            raise KeyError(name)
        return found

    def run_pending(self, stop: Callable[[], bool] = lambda: False) -> list[str]:
        """Run every due job, earliest first; returns their names. Stops early on request.
        A job made due by another's run (delivery, after a sweep queued mail) runs in the
        same tick."""
        ran: list[str] = []
        while True:
            due = sorted(j for j in self.jobs if j.should_run and j.name not in ran)
            if not due:
                return ran
            for job in due:
                if stop():
                    return ran
                self._run_job(job)
                ran.append(job.name)


@dataclass
class JobDef:
    name: str
    period: int
    func: Callable[[dt.datetime], Any]
    # after a successful run: (result, end) -> the next run (None: the next grid point)
    reschedule: Callable[[Any, dt.datetime], dt.datetime | None] | None = None
    # did a run queue mail (then delivery runs in the same tick)?
    queued: Callable[[Any], bool] | None = None


class Loop:
    """The daemon's main loop around one Registry, one Database and one Wakeup."""

    def __init__(self, settings: Settings, database: db.Database, *,
                 clock: Clock = utc_now, wakeup: Wakeup | None = None,
                 jobs: Callable[[Loop], list[JobDef]] | None = None,
                 reload: Callable[[], Settings] | None = None,
                 on_reload: Callable[[Settings], None] | None = None,
                 guard: Callable[[], bool] | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        # asked before each tick: may the jobs run (dnl_ad.leader.ActiveGuard)
        self.guard = guard
        self.conditions = logs.Conditions(log, logging.WARNING)
        self.metrics = metrics
        # called after every tick with the names of the jobs that ran (systemd.Notifier)
        self.tick_hooks: list[Callable[[Loop, list[str]], None]] = []
        self.database = database
        self.wakeup = wakeup or Wakeup()
        self.registry = Registry(clock)
        if metrics is not None:
            self.registry.on_run = metrics.observe
        from .operator_alerts import Monitor

        self.operator = Monitor()
        self.registry.run_hooks.append(self.operator.observe)
        self.registry.run_hooks.append(self._deliver_soon)
        # the longest the loop may sleep (the systemd watchdog adds its own)
        self.wake_at_least_every = IDLE_WAIT_SECONDS
        self._jobs = jobs or standard_jobs
        self._reload, self._on_reload = reload, on_reload
        self._build()

    def _build(self) -> None:
        self.registry.clear()
        for job in self._jobs(self):
            added = self.registry.add(job.name, job.period, job.func)
            added.reschedule, added.queued = job.reschedule, job.queued

    def _deliver_soon(self, name: str, ok: bool, seconds: float, result: Any) -> None:
        """A job queued mail: delivery runs in the same tick, however idle it was."""
        ran, delivery = self.registry.find(name), self.registry.find("delivery")
        if ok and ran is not None and ran.queued is not None and delivery is not None \
                and ran.queued(result):
            now = self.registry.clock()
            if delivery.next_run is None or delivery.next_run > now:
                delivery.next_run = now

    def should_stop(self) -> bool:
        """Between jobs and between messages: a stop request, or an active-daemon lock
        not confirmed recently (this process may have been stopped and replaced)."""
        if self.wakeup.stop_requested:
            return True
        confirmed = getattr(self.guard, "confirmed", None)
        return confirmed is not None and not confirmed()

    def tick(self) -> list[str]:
        """Run what is due now; the loop calls this when a job is due, tests call it directly."""
        may_run = self.guard is None or self.guard()
        ran = self.registry.run_pending(self.should_stop) if may_run else []
        if self.metrics is not None:
            self.metrics.tick(active=getattr(self.guard, "role", "active") == "active",
                              database_up=self.database.down_since is None)
        for hook in self.tick_hooks:
            hook(self, ran)
        return ran

    def reload(self) -> bool:
        """Re-read the configuration; keep the running one if the new one is bad."""
        self.wakeup.reload_requested = False
        if self._reload is None:
            return False
        # Any failure (a bad value, an ini that is not UTF-8, a LOGFILE that cannot be
        # opened) keeps the running configuration: a SIGHUP must never end the daemon.
        # The new settings take effect only once on_reload (logging) has accepted them.
        try:
            new = self._reload()
            if self._on_reload is not None:
                self._on_reload(new)
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            return False
        except Exception as exc:
            log.error("reload refused, the running configuration stays: %s: %s",
                      type(exc).__name__, db.scrub(str(exc)))
            return False
        if new.connection_string != self.settings.connection_string and self.guard is not None:
            # the active-daemon lock is held on the running database: moving only the
            # jobs would leave it behind (and let another daemon be active there)
            log.warning("reload: a CONNECTION_STRING change needs a restart; the running "
                        "database stays, the rest is reloaded")
            new = new.replace(connection_string=self.settings.connection_string)
        if new.connection_string != self.settings.connection_string:
            self.database.close()
            from . import migrations

            self.database = migrations.open_database(new, sleep=self.wakeup.sleep)
        self.settings = new
        self._build()
        log.info("configuration reloaded from %s; templates are read afresh; all jobs run now",
                 new.config_path or "defaults and DNL_AD_* environment")
        return True

    def wait_seconds(self) -> float:
        """How long to sleep after a tick: until the next job is due, at least a second
        (a due job the guard holds back does not spin the loop), at most
        wake_at_least_every, nor longer than a lock poll while not active (stop and
        reload requests, and a lock lost while active, wake the loop at once anyway).
        An idle daemon with the default cadences wakes once a minute."""
        cap = self.wake_at_least_every
        timing = getattr(getattr(self.guard, "lock", None), "timing", None)
        if timing is not None and not self._active():
            cap = min(cap, timing.poll)
        runs = [job.next_run for job in self.registry.jobs if job.next_run is not None]
        if not runs:
            return cap
        due_in = (min(runs) - self.registry.clock()).total_seconds() + 0.01
        return min(cap, max(TICK_SECONDS, due_in))

    def _active(self) -> bool:
        """The active daemon at work (or no lock at all): not standing by nor paused."""
        return bool(getattr(self.guard, "working", True))

    def run_forever(self) -> None:
        """Tick whenever a job is due until a stop request; reload between ticks on
        request."""
        while not self.wakeup.stop_requested:
            if self.wakeup.reload_requested:
                self.reload()
            self.tick()
            self.wakeup.wait(self.wait_seconds())
        log.info("%s: finishing: the work in hand is done, leaving the loop",
                 self.wakeup.reason or "stop requested")


# --- the standard jobs ------------------------------------------------------------------

def _sweep_job(loop: Loop, spec: AlertSpec) -> Callable[[dt.datetime], Any]:
    """One alert's sweep. Its summary line is INFO when the sweep did something, unless
    it says exactly what the previous one said (a dry run decides the same notices each
    sweep); clients skipped sweep after sweep (bad data, reasons logged once per client)
    are a condition: said when it starts, when the count changes, and when it ends."""
    last = [""]

    def run(now: dt.datetime) -> Any:
        started = time.monotonic()
        # a sweep that waits on outside services (the CDR API) wakes on SIGTERM
        extra = {"stop": loop.wakeup} if spec.stoppable else {}
        result = spec.sweep_function()(loop.database, now, loop.settings, **extra)
        summary = (f"{spec.kind}: {result.queued} queued, {result.duplicates} already "
                   f"queued, {result.skipped} skipped, {result.state_changes} state changes")
        busy = (result.queued or result.state_changes) and summary != last[0]
        log.log(logging.INFO if busy else logging.DEBUG, "%s (%.2f s)", summary,
                time.monotonic() - started)
        last[0] = summary
        if result.skipped:
            loop.conditions.holds(("skipped", spec.kind), "%s: %d client(s) skipped each "
                                  "sweep until their data is fixed (reasons logged once each)",
                                  spec.kind, result.skipped)
        else:
            loop.conditions.ends(("skipped", spec.kind), "%s: no client skipped any more",
                                 spec.kind)
        return result
    return run


def _delivery_job(loop: Loop) -> Callable[[dt.datetime], Any]:
    def run(now: dt.datetime) -> Any:
        from . import delivery

        result = delivery.deliver(loop.database, loop.settings, now=now,
                                  should_stop=loop.should_stop)
        log.debug("delivery: %s", result)
        return result
    return run


def standard_jobs(loop: Loop) -> list[JobDef]:
    """The sweeps at their configured cadences, the hourly outbox purge, then delivery
    (same-instant ties run in this order, so a notice queued in a tick goes out in the
    same tick)."""
    jobs = [JobDef(spec.kind, int(getattr(loop.settings, spec.cadence_setting)),
                   _sweep_job(loop, spec), queued=_sweep_queued) for spec in ALERTS.values()]
    jobs.append(JobDef("outbox_purge", retention.PERIOD_SECONDS, _purge_job(loop)))
    jobs.append(JobDef("delivery", loop.settings.delivery_seconds, _delivery_job(loop),
                       reschedule=_delivery_reschedule(loop)))
    if loop.metrics is not None and not loop.settings.dry_run:
        jobs.append(JobDef("outbox_metrics", OUTBOX_METRICS_SECONDS, _outbox_metrics_job(loop)))
    jobs.append(operator_job(loop))
    return jobs


def _sweep_queued(result: Any) -> bool:
    return bool(getattr(result, "queued", 0))


def _delivery_reschedule(loop: Loop) -> Callable[[Any, dt.datetime], dt.datetime | None]:
    """Delivery that found nothing to do sleeps until the first waiting message is due
    (a retry, a lease running out) or the next IDLE_DELIVERY_SECONDS grid point,
    whichever comes first; a sweep that queues mail wakes it at once (Loop._deliver_soon).
    While mail waits it runs again DELIVERY_SECONDS after the end of each run (off the
    grid: a burst goes out at full pace)."""
    def reschedule(result: Any, end: dt.datetime) -> dt.datetime | None:
        if not getattr(result, "idle", False):
            return end + dt.timedelta(seconds=loop.settings.delivery_seconds)
        period = max(IDLE_DELIVERY_SECONDS, loop.settings.delivery_seconds)
        idle = loop.registry.grid_after(end + dt.timedelta(milliseconds=1), period)
        due = result.next_due
        return idle if due is None else max(min(idle, due), end)
    return reschedule


def _purge_job(loop: Loop) -> Callable[[dt.datetime], Any]:
    def run(now: dt.datetime) -> Any:
        return retention.purge(loop.database, loop.settings, now)
    return run
def operator_job(loop: Loop) -> JobDef:
    """The operator alerts' check (dnl_ad.operator_alerts), after the other jobs."""
    from . import operator_alerts

    return JobDef(operator_alerts.JOB_NAME, operator_alerts.CHECK_SECONDS,
                  operator_alerts.job(loop), queued=bool)


def _outbox_metrics_job(loop: Loop) -> Callable[[dt.datetime], Any]:
    def run(now: dt.datetime) -> Any:
        assert loop.metrics is not None
        metrics, schema = loop.metrics, loop.settings.own_schema
        return loop.database.run(lambda cur: metrics.read_outbox(cur, schema, now))
    return run
