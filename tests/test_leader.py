"""One active daemon per database: the session advisory lock (dnl_ad.leader)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from dnl_ad import leader
from dnl_ad.scheduler import Wakeup

from . import factories as f
from .test_daemon import alive, cli, daemon_env


@pytest.fixture
def env(settings, tmp_path) -> dict[str, str]:
    return daemon_env(settings, tmp_path)


def test_lock_is_exclusive_never_stacked_and_names_its_holder(dsn, conn) -> None:
    first, second = leader.LeaderLock(dsn), leader.LeaderLock(dsn)
    try:
        assert first.acquire()
        assert first.acquire()  # held already: not asked again (advisory locks stack)
        assert not second.acquire()
        holder = second.holder()
        assert holder is not None
        assert holder.application_name == leader.application_name()
        assert socket.gethostname() in holder.describe()
        first.release()  # one release frees it: it was taken once
        assert second.acquire() and second.still_held()
    finally:
        first.release()
        second.release()
    assert leader.LeaderLock(dsn).holder() is None


def test_a_terminated_backend_is_noticed_and_the_lock_can_be_retaken(dsn, conn) -> None:
    lock = leader.LeaderLock(dsn)
    lost: list[str] = []
    guard = leader.ActiveGuard(lock, on_lost=lost.append)
    try:
        assert lock.acquire() and guard()
        holder = lock.holder()
        assert holder is not None
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s, 5000)", (holder.backend_pid,))
        assert not lock.still_held()
        assert guard()  # nobody else took it: taken again on a new connection
        other = leader.LeaderLock(dsn)
        assert not other.acquire()
        with conn.cursor() as cur:  # now the server kills ours and another daemon wins
            cur.execute("SELECT pg_terminate_backend(%s, 5000)", (lock.holder().backend_pid,))
        assert other.acquire()
        assert not lock.still_held()  # what the heartbeat thread asks every few seconds
        assert not guard() and len(lost) == 1 and "took over" in lost[0]
        assert leader.application_name() in lost[0]
        other.release()
    finally:
        lock.release()


def test_only_an_ha_lock_session_has_an_idle_timeout(dsn) -> None:
    """HA: the server ends the session of a daemon that stopped confirming (a hang is
    taken over). Without HA nobody takes over: a quiet daemon must keep its lock."""
    for ha, expected in ((True, "5s"), (False, "0")):
        lock = leader.LeaderLock(dsn, leader.Timing(takeover=10), ha=ha)
        try:
            assert lock.acquire()
            with lock._connection().cursor() as cur:
                cur.execute("SHOW idle_session_timeout")
                assert cur.fetchone()["idle_session_timeout"] == expected
        finally:
            lock.release()


def test_the_heartbeat_wakes_a_sleeping_loop_when_the_lock_is_lost(dsn, conn) -> None:
    """An idle loop sleeps up to a minute; a lost lock must not wait for it: the
    heartbeat notices within one beat and wakes the loop (which then pauses its jobs)."""
    lock = leader.LeaderLock(dsn, leader.Timing(takeover=10))
    wakeup = Wakeup()
    beat = leader.Heartbeat(lock, on_lost=wakeup.wake)
    try:
        assert lock.acquire()
        beat.start()
        assert not wakeup.wait(0.1) and lock.confirmed_within(1)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s, 5000)", (lock.holder().backend_pid,))
        started = time.monotonic()
        wakeup.wait(30)
        assert time.monotonic() - started < 2 * lock.timing.heartbeat
        assert not lock.held
    finally:
        beat.stop()
        lock.release()
        wakeup.close()


def test_ha_timing_keeps_a_resumed_daemon_from_acting_on_a_stale_lock() -> None:
    """The freshness a daemon needs before it acts is shorter than the idle timeout after
    which the server ends a silent lock session, with a beat to spare; the heartbeat
    comes several times per idle timeout; a hung daemon is replaced within the take-over."""
    for takeover in (10, 30, 45, 3600):
        t = leader.Timing(takeover)
        assert t.fresh + t.heartbeat <= t.idle_timeout
        assert t.idle_timeout / t.heartbeat >= 3
        assert t.idle_timeout + t.poll < takeover


def test_keys_differ_per_database_and_fit_a_bigint() -> None:
    a, b = leader.lock_key("class4_pr"), leader.lock_key("class4_test")
    assert a != b and a == leader.lock_key("class4_pr")
    assert -(2 ** 63) <= a < 2 ** 63


def test_a_second_daemon_on_the_same_database_exits_naming_the_first(env, settings,
                                                                    tmp_path) -> None:
    started = cli(env, "start")
    assert started.returncode == 0, started.stderr
    pid = int(Path(settings.pidfile).read_text())
    other = {**env, "DNL_AD_PIDFILE": str(tmp_path / "other.pid"),
             "DNL_AD_LOGFILE": str(tmp_path / "other.log")}
    try:
        second = cli(other, "start")
        assert second.returncode == 1
        assert "another dnl_ad daemon is active" in second.stderr
        assert f"{socket.gethostname()} pid {pid}" in second.stderr  # names the holder
        assert not (tmp_path / "other.pid").exists()
        foreground = cli(other, "run")
        assert foreground.returncode == 1
        assert f"pid {pid}" in (tmp_path / "other.log").read_text()
        assert alive(pid) and cli(env, "status").returncode == 0
        # without HA_STANDBY nothing takes over a hang: no heartbeat thread wakes the
        # idle daemon (the loop confirms the lock when it works) and the lock session
        # has no idle timeout (a silent daemon keeps its lock)
        assert [t.name for t in Path(f"/proc/{pid}/task").iterdir()] == [str(pid)]
    finally:
        assert cli(env, "stop").returncode == 0
    # once the first is gone, the second may start
    assert cli(other, "start").returncode == 0
    cli(other, "stop")


def test_check_says_which_daemon_is_active(dsn, settings, conn) -> None:
    from dnl_ad import check

    f.system(conn)
    rows = {r.check: r for r in check.run_checks(settings)}
    assert rows["active daemon"].status == check.OK
    assert "no daemon" in rows["active daemon"].detail
    lock = leader.LeaderLock(dsn)
    try:
        assert lock.acquire()
        rows = {r.check: r for r in check.run_checks(settings)}
        assert leader.application_name() in rows["active daemon"].detail
    finally:
        lock.release()


def test_a_reload_keeps_the_database_whose_lock_is_held(dsn, settings, database,
                                                        caplog) -> None:
    from dnl_ad.scheduler import Loop

    lock = leader.LeaderLock(dsn)
    try:
        assert lock.acquire()
        moved = settings.replace(connection_string="host=elsewhere dbname=other",
                                 delivery_batch=7)
        loop = Loop(settings, database, guard=leader.ActiveGuard(lock),
                    reload=lambda: moved, jobs=lambda loop: [])
        assert loop.reload()
        assert loop.settings.delivery_batch == 7
        assert loop.settings.connection_string == dsn and loop.database is database
        assert "CONNECTION_STRING change needs a restart" in caplog.text
    finally:
        lock.release()
