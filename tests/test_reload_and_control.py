"""status and stop work from the pidfile alone; SIGHUP keeps the running configuration
when the ini is gone, and finds a relative --config after the daemon's chdir /."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dnl_ad import cli, config
from dnl_ad.config import ConfigError

from .test_daemon import REPO, alive, daemon_env, wait_for, write_ini


@pytest.fixture
def env(settings, tmp_path) -> dict[str, str]:
    return daemon_env(settings, tmp_path)


def test_status_and_stop_work_with_a_typo_in_the_ini(env, settings) -> None:
    ini = Path(env["DNL_AD_CONFIG"])
    started = subprocess.run([sys.executable, "-m", "dnl_ad", "start"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    pid = int(Path(settings.pidfile).read_text())
    try:
        write_ini(ini, settings, SMTP_PORT="abc")
        status = subprocess.run([sys.executable, "-m", "dnl_ad", "status"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and f"running (pid {pid})" in status.stdout
        assert "SMTP_PORT" in status.stderr  # said, not fatal
        restart = subprocess.run([sys.executable, "-m", "dnl_ad", "restart"], cwd=REPO,
                                 env=env, capture_output=True, text=True, timeout=60)
        assert restart.returncode == 1 and alive(pid)  # refused before stopping anything
    finally:
        stop = subprocess.run([sys.executable, "-m", "dnl_ad", "stop"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    wait_for(lambda: not alive(pid), 10, "the daemon to stop")
    status = subprocess.run([sys.executable, "-m", "dnl_ad", "status"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 3


def test_reload_needs_the_file_the_daemon_started_with(settings, tmp_path,
                                                       monkeypatch) -> None:
    ini = write_ini(tmp_path / "dnl_ad.ini", settings, DELIVERY_BATCH="7")
    monkeypatch.setattr(config, "DEFAULT_CONFIG", ini)  # no --config, no DNL_AD_CONFIG
    for name in [k for k in os.environ if k.startswith("DNL_AD_")]:
        monkeypatch.delenv(name)
    args = cli.build_parser().parse_args(["run"])
    running = cli.load(args)
    reload = cli._reloader(args, running)
    assert running.delivery_batch == 7 and reload().delivery_batch == 7
    ini.unlink()
    with pytest.raises(ConfigError, match="existing ini file"):
        reload()  # not the defaults: the daemon keeps its running configuration


def test_sighup_with_a_relative_config_after_chdir(settings, tmp_path) -> None:
    ini = write_ini(tmp_path / "dnl_ad.ini", settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNL_AD_")}
    env["PYTHONPATH"] = str(REPO)
    started = subprocess.run([sys.executable, "-m", "dnl_ad", "--config", "dnl_ad.ini",
                              "start"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 0, started.stderr
    pid = int(Path(settings.pidfile).read_text())
    log = Path(settings.logfile)
    try:
        write_ini(ini, settings, DELIVERY_BATCH="9")
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "configuration reloaded from" in log.read_text(), 10, "a reload")
        assert f"configuration reloaded from {ini}" in log.read_text()
        ini.unlink()
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(), 10, "a refused reload")
        assert "existing ini file" in log.read_text() and alive(pid)
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), 10, "the daemon to stop")
