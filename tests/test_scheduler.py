"""The loop: cadences, no overlap, failure isolation with backoff, outages, stop, reload.

The loop's clock is injected (FakeClock), so every test steps time explicitly; nothing
waits for a real clock.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from dnl_ad import db
from dnl_ad.alerts import ALERTS
from dnl_ad.config import ConfigError
from dnl_ad.devtools import demo_data
from dnl_ad.devtools.embedded_pg import EmbeddedPostgres, build_provider_database, drop_database
from dnl_ad.scheduler import BACKOFF_CAP_SECONDS, JobDef, Loop, Wakeup, standard_jobs

from . import factories as f
from .conftest import utc
from .mail_helpers import notice, queue

T0 = utc(2026, 11, 21, 9)


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _loop(settings, database, clock, jobs):
    return Loop(settings, database, clock=clock, jobs=lambda loop: jobs)


def test_failing_job_backs_off_and_others_keep_running(settings, database, caplog) -> None:
    clock = FakeClock(T0)
    boom_runs: list[dt.datetime] = []
    count_runs: list[dt.datetime] = []
    healthy = {"now": False}

    def boom(now: dt.datetime) -> None:
        boom_runs.append(now)
        if not healthy["now"]:
            raise RuntimeError("template store exploded")

    loop = _loop(settings, database, clock, [JobDef("boom", 10, boom),
                                             JobDef("count", 10, count_runs.append)])
    caplog.set_level(logging.INFO)
    for _ in range(71):  # 0 .. 700 s, one tick every 10 s
        loop.tick()
        clock.advance(10)
    offsets = [int((t - T0).total_seconds()) for t in boom_runs]
    # period x 2^failures: 20, 40, 80, 160, then capped at BACKOFF_CAP_SECONDS
    assert offsets == [0, 20, 60, 140, 300, 600]
    assert BACKOFF_CAP_SECONDS == 300
    assert len(count_runs) == 71  # the healthy job ran at every tick regardless
    failures = [r for r in caplog.records if "job boom failed" in r.getMessage()]
    assert len(failures) == 6
    assert all(r.exc_info and "template store exploded" in str(r.exc_info[1]) for r in failures)
    assert "6 in a row" in failures[-1].getMessage()

    healthy["now"] = True
    clock.now = T0 + dt.timedelta(seconds=900)
    assert sorted(loop.tick()) == ["boom", "count"]
    assert "job boom works again after 6 failed runs" in caplog.text
    clock.advance(10)
    assert sorted(loop.tick()) == ["boom", "count"]  # back to its own cadence


def test_jobs_never_overlap_and_missed_runs_are_not_replayed(settings, database) -> None:
    clock = FakeClock(T0)
    busy: list[str] = []
    runs: list[tuple[str, dt.datetime]] = []

    def job(name: str, takes: float):
        def run(now: dt.datetime) -> None:
            assert not busy, f"{name} started while {busy} was running"
            busy.append(name)
            runs.append((name, now))
            clock.advance(takes)  # a long job: the clock moves on while it works
            busy.remove(name)
        return run

    loop = _loop(settings, database, clock, [JobDef("slow", 10, job("slow", 25)),
                                             JobDef("fast", 10, job("fast", 0))])
    assert loop.tick() == ["slow", "fast"]
    # fast was delayed by slow and saw the clock as it was when it started
    assert runs == [("slow", T0), ("fast", T0 + dt.timedelta(seconds=25))]
    # the runs due at 10 and 20 s are not replayed; both rest at least half a period
    # after the overrun and meet again on their grid (T0 + 10 k)
    assert loop.registry.job("slow").next_run == T0 + dt.timedelta(seconds=30)
    assert loop.registry.job("fast").next_run == T0 + dt.timedelta(seconds=30)
    clock.now = T0 + dt.timedelta(seconds=29)
    assert loop.tick() == []
    clock.now = T0 + dt.timedelta(seconds=30)
    assert loop.tick() == ["slow", "fast"]
    assert len(runs) == 4


def test_each_job_gets_aware_utc_now_from_the_clock(settings, database) -> None:
    seen: list[dt.datetime] = []
    clock = FakeClock(T0)
    loop = _loop(settings, database, clock, [JobDef("a", 5, seen.append)])
    loop.tick()
    clock.advance(7)
    loop.tick()
    assert seen == [T0, T0 + dt.timedelta(seconds=7)]
    assert all(t.utcoffset() == dt.timedelta(0) for t in seen)


def test_standard_jobs_use_configured_cadences(settings, database) -> None:
    settings = settings.replace(balance_check_seconds=11, daily_check_seconds=22,
                                trunk_check_seconds=33, delivery_seconds=4)
    loop = Loop(settings, database, clock=lambda: T0)
    periods = {job.name: job.period for job in loop.registry.jobs}
    expected = {spec.kind: getattr(settings, spec.cadence_setting) for spec in ALERTS.values()}
    assert periods == {**expected, "outbox_purge": 3600, "delivery": 4, "operator_alerts": 60}
    assert expected["low_balance"] == 11 and expected["usage_summary"] == 22
    assert expected["trunk_suspended"] == 33
    # all due at once on start, sweeps before delivery, the operator alerts' check last
    assert [j.name for j in sorted(loop.registry.jobs) if j.should_run][-2:] == [
        "delivery", "operator_alerts"]
    assert len(standard_jobs(loop)) == len(ALERTS) + 3


def test_stop_request_ends_the_loop_between_jobs(settings, database) -> None:
    ran: list[str] = []

    def first(now: dt.datetime) -> None:
        ran.append("first")
        loop.wakeup.request_stop("SIGTERM received")

    loop = _loop(settings, database, lambda: T0, [JobDef("first", 5, first),
                                                  JobDef("second", 5, lambda now: ran.append("2"))])
    loop.run_forever()  # returns without waiting: the stop came during the first tick
    assert ran == ["first"]


def test_wakeup_cuts_a_sleep_short() -> None:
    wakeup = Wakeup()
    wakeup.request_stop("test")
    assert wakeup.wait(30) is True  # returns at once, not after 30 s
    assert wakeup.reason == "test"
    wakeup.close()


def test_reload_applies_new_cadences_and_keeps_old_on_error(settings, database, caplog) -> None:
    new = settings.replace(delivery_seconds=42)
    answers: list[object] = [new, ConfigError("DELIVERY_SECONDS", "x", "an integer >= 1")]
    applied: list[object] = []

    def reload():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    loop = Loop(settings, database, clock=lambda: T0, reload=reload, on_reload=applied.append)
    assert loop.registry.job("delivery").period == settings.delivery_seconds
    assert loop.reload() is True
    assert loop.registry.job("delivery").period == 42 and applied == [new]
    caplog.set_level(logging.ERROR)
    assert loop.reload() is False
    assert loop.settings is new and "reload refused" in caplog.text
    assert "DELIVERY_SECONDS" in caplog.text


@pytest.fixture
def own_server(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg")
    yield server
    server.cleanup()


def test_postgres_restart_logs_one_outage_and_work_resumes(own_server, settings, smtp,
                                                           caplog) -> None:
    """The real seven sweeps and delivery on a private server that restarts mid-run."""
    dsn = build_provider_database(own_server.admin_dsn, "loop_restart")
    conn = db.connect(dsn, autocommit=True)
    with conn.cursor() as cur:
        demo_data.generate(cur, 40, T0)
    database = db.Database(dsn, min_backoff=0.05, max_backoff=0.2)
    clock = FakeClock(T0)
    fast = settings.replace(connection_string=dsn, balance_check_seconds=5,
                            daily_check_seconds=5, trunk_check_seconds=5, delivery_seconds=5)
    loop = Loop(fast, database, clock=clock)
    caplog.set_level(logging.INFO)
    loop.tick()
    before = len(smtp.messages)

    def low_balance_to_client_2(messages) -> list:
        return [m for m in messages if m.rcpt_tos == ["billing2@client2.example"]
                and m.message["X-DNL-AD-Kind"] == "low_balance"]

    assert before > 0 and not low_balance_to_client_2(smtp.messages)
    own_server.restart()
    # Client 2 (low-balance alert at 100) drops to 5 while the daemon's connection is dead.
    conn = db.connect(dsn, autocommit=True)
    f.set_balance(conn, 2, 5)
    conn.close()
    for _ in range(12):
        clock.advance(5)
        loop.tick()
    assert caplog.text.count("unreachable") == 1
    assert caplog.text.count("is back") == 1
    assert " failed (" not in caplog.text  # an outage is not a traceback per job
    assert len(low_balance_to_client_2(smtp.messages[before:])) == 1  # work resumed
    assert len(smtp.messages) == before + 1  # and nothing went out twice
    database.close()
    drop_database(own_server.admin_dsn, "loop_restart")


def test_a_job_failing_for_days_keeps_backing_off_and_the_loop_lives(settings, database,
                                                                      caplog) -> None:
    """period x 2^failures must not overflow: after ~1,000 failures in a row (a
    PostgreSQL outage of some hours at the 30 s cap) the loop still ticks."""
    clock = FakeClock(T0)
    runs: list[dt.datetime] = []

    def down(now: dt.datetime) -> None:
        runs.append(now)
        raise db.CONNECTION_ERRORS[0]("server closed the connection unexpectedly")

    def broken(now: dt.datetime) -> None:
        raise RuntimeError("column does not exist")

    loop = _loop(settings, database, clock, [JobDef("down", 5, down),
                                             JobDef("broken", 5, broken)])
    loop.registry.job("down").failures = 1100
    loop.registry.job("broken").failures = 1100
    caplog.set_level(logging.ERROR)
    assert sorted(loop.tick()) == ["broken", "down"]  # neither raises out of the loop
    down_job, broken_job = loop.registry.job("down"), loop.registry.job("broken")
    assert down_job.failures == broken_job.failures == 1101
    assert down_job.next_run == T0 + dt.timedelta(seconds=30)     # outage cap
    assert broken_job.next_run == T0 + dt.timedelta(seconds=BACKOFF_CAP_SECONDS)
    clock.advance(30)
    assert loop.tick() == ["down"]
    assert len(runs) == 2


def test_reload_failing_in_any_way_keeps_the_loop_and_the_running_configuration(
        settings, database, caplog) -> None:
    """SIGHUP after a bad edit (an ini that is not UTF-8, a LOGFILE that cannot be
    opened) must not end the daemon: the running configuration stays in force."""
    new = settings.replace(delivery_seconds=42)

    def unreadable() -> object:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    def cannot_log(applied) -> None:
        raise PermissionError(13, "Permission denied", "/var/log/dnl_ad/dnl_ad.log")

    caplog.set_level(logging.ERROR)
    loop = Loop(settings, database, clock=lambda: T0, reload=unreadable)
    assert loop.reload() is False
    assert loop.settings is settings and "reload refused" in caplog.text

    caplog.clear()
    loop = Loop(settings, database, clock=lambda: T0, reload=lambda: new,
                on_reload=cannot_log)
    assert loop.reload() is False
    assert loop.settings is settings and loop.database is database
    assert loop.registry.job("delivery").period == settings.delivery_seconds
    assert "reload refused" in caplog.text and "Permission denied" in caplog.text

    # and through the real loop: a reload request that fails, then a stop
    ran: list[str] = []

    def job(now: dt.datetime) -> None:
        ran.append("job")
        if len(ran) == 1:
            loop.wakeup.request_reload()
        else:
            loop.wakeup.request_stop("test")

    loop = Loop(settings, database, clock=lambda: T0, reload=unreadable,
                jobs=lambda lp: [JobDef("job", 0, job)])
    loop.run_forever()
    assert ran == ["job", "job"]


def test_a_statement_timeout_is_a_job_failure_not_an_outage(settings, database, caplog) -> None:
    """A query cancelled on a live connection is reported with its traceback; it is not a
    database outage ("unreachable"/"back"), and the connection is kept."""
    clock = FakeClock(T0)

    def slow(now: dt.datetime) -> None:
        with database.transaction() as cur:
            cur.execute("SET LOCAL statement_timeout = '50ms'")
            cur.execute("SELECT pg_sleep(2)")

    loop = _loop(settings, database, clock, [JobDef("slow", 10, slow)])
    caplog.set_level(logging.DEBUG)
    with database.transaction() as cur:
        cur.execute("SELECT pg_backend_pid() AS pid")
        pid = cur.fetchone()["pid"]
    loop.tick()
    failures = [r for r in caplog.records if "job slow failed" in r.getMessage()]
    assert len(failures) == 1 and "statement timeout" in str(failures[0].exc_info[1])
    assert "unreachable" not in caplog.text and database.down_since is None
    with database.transaction() as cur:
        cur.execute("SELECT pg_backend_pid() AS pid")
        assert cur.fetchone()["pid"] == pid


def test_a_condition_is_logged_when_it_starts_and_ends_not_every_sweep(
        settings, database, conn, caplog) -> None:
    """Found by running the loop on the demo data: a client without a threshold made every
    balance sweep log the same INFO summary, 60 lines an hour."""
    with conn.cursor() as cur:
        demo_data.generate(cur, 40, T0)  # client 31 has no client_low_balance_config row
    clock = FakeClock(T0)
    caplog.set_level(logging.INFO)
    loop = Loop(settings, database, clock=clock)
    for _ in range(10):
        loop.tick()
        clock.advance(61)
    lines = [r.getMessage() for r in caplog.records
             if r.levelno >= logging.INFO and r.name.startswith("dnl_ad")]
    repeated = {line for line in lines if lines.count(line) > 1}
    assert not repeated, repeated
    assert sum("low_balance: 1 client(s) skipped" in line for line in lines) == 1
    f.insert(conn, "client_low_balance_config", client_id=31, value_type=0,
             actual_notify_balance=100)
    caplog.clear()
    for _ in range(3):
        loop.tick()
        clock.advance(61)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert lines.count("low_balance: no client skipped any more") == 1


def test_a_signal_taken_by_another_thread_wakes_the_main_threads_wait() -> None:
    """The kernel may hand SIGTERM to any thread (an HTTP call's, the heartbeat's); the
    main thread sleeping in Wakeup.wait (a 30 s CDR poll) must wake at once, not when its
    sleep ends (a CI run saw a daemon take over 15 s to stop). SIGUSR1 stands in."""
    import signal
    import threading

    wakeup = Wakeup()
    old_handler = signal.signal(signal.SIGUSR1, lambda *_: wakeup.request_stop("test"))
    old_fd = signal.set_wakeup_fd(-1)
    try:
        wakeup.attach_to_signals()
        other = threading.Thread(target=lambda: (time.sleep(0.2), signal.pthread_kill(
            threading.get_ident(), signal.SIGUSR1)))
        other.start()
        started = time.monotonic()
        assert wakeup.wait(10) is True
        assert time.monotonic() - started < 3
        other.join()
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGUSR1, old_handler)
        wakeup.close()


def test_an_idle_daemon_wakes_once_a_minute_for_all_its_jobs(settings, database) -> None:
    """The standard jobs keep to one grid: sweeps that take time do not drift apart, and
    delivery with an empty outbox sleeps to the same minute, so the loop's next wait is
    the whole minute and one tick runs them all."""
    clock = FakeClock(T0)
    loop = Loop(settings, database, clock=clock)
    loop.registry.run_hooks.append(lambda *run: clock.advance(0.4))  # each job takes time
    first = loop.tick()
    assert "delivery" in first and clock.now > T0 + dt.timedelta(seconds=5)
    minutely = {j.name for j in loop.registry.jobs if 60 % j.period == 0}
    assert {"low_balance", "usage_summary", "trunk_suspended"} <= minutely
    assert loop.registry.job("delivery").period == 5  # DELIVERY_SECONDS, while mail waits
    nexts = {j.name: j.next_run for j in loop.registry.jobs}
    assert {nexts[name] for name in minutely | {"delivery"}} == {T0 + dt.timedelta(seconds=60)}
    assert nexts["outbox_purge"] == T0 + dt.timedelta(hours=1)
    assert 50 < loop.wait_seconds() <= 60  # not every DELIVERY_SECONDS
    clock.now = T0 + dt.timedelta(seconds=60)
    assert set(loop.tick()) == minutely | {"delivery"}
    clock.advance(30)
    assert loop.tick() == []


def test_idle_delivery_wakes_for_a_retry_and_at_once_for_new_mail(conn, settings, database,
                                                                   smtp) -> None:
    """Delivery with nothing due sleeps until the waiting notice's next attempt (not the
    idle minute); a sweep off that grid (every 45 s) that queues mail has it sent in the
    same tick, not at the next minute."""
    f.system(conn)
    clock = FakeClock(T0)
    loop = Loop(settings.replace(balance_check_seconds=45), database, clock=clock)
    loop.tick()
    delivery_job = loop.registry.job("delivery")
    assert delivery_job.next_run == T0 + dt.timedelta(seconds=60)  # idle: the minute
    retry_at = T0 + dt.timedelta(seconds=20)
    queue(database, settings, [notice("waiting", recipients="later@client.example")])
    with conn.cursor() as cur:
        cur.execute("UPDATE dnl_ad.outbox SET next_attempt_at = %s, created_at = %s",
                    (retry_at, T0))
    clock.now = T0 + dt.timedelta(seconds=10)
    delivery_job.next_run = clock.now  # as if it had looked just now
    assert loop.tick() == ["delivery"] and smtp.messages == []
    assert delivery_job.next_run == retry_at
    clock.now = retry_at
    assert loop.tick() == ["delivery"]
    assert [m.rcpt_tos for m in smtp.messages] == [["later@client.example"]]
    assert delivery_job.next_run == retry_at + dt.timedelta(seconds=5)  # after work: 5 s
    clock.now = delivery_job.next_run
    assert loop.tick() == ["delivery"]
    assert delivery_job.next_run == T0 + dt.timedelta(seconds=60)  # idle again

    f.client(conn, balance=10.0, low_config={"value_type": 0, "actual_notify_balance": 50},
             mode=1, is_daily_balance_notification=True, billing_email="low@client.example")
    clock.now = T0 + dt.timedelta(seconds=45)
    ran = loop.tick()
    assert "low_balance" in ran and ran[-1] == "delivery"
    assert [m.rcpt_tos for m in smtp.messages][-1] == ["low@client.example"]
