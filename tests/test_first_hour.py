"""A new user's first hour: every ordinary mistake is one line naming the key or value
and what to do, exit status 1, no traceback, never a password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnl_ad import check
from dnl_ad.config import ConfigError, load_settings

from .test_daemon import REPO, write_ini

SECRET = "hunter2secret"


def run(ini: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DNL_AD_")}
    return subprocess.run([sys.executable, "-m", "dnl_ad", "--config", str(ini), *args],
                          cwd=REPO, env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    return lines[0]


@pytest.mark.parametrize(("dsn", "named", "advice"), [
    (f"host=127.0.0.1 dbnme=class4_pr password={SECRET}", "dbnme", "did you mean dbname"),
    (f"host=127.0.0.1 password=hunter {SECRET[6:]} dbname=x", "***", "must be quoted"),
    (f"postgresq://u:{SECRET}@127.0.0.1/class4_pr", "postgresq://", "postgresql://"),
    (f"postgresql://u:{SECRET}@127.0.0.1/class4_pr?sslmod=require", "sslmod",
     "did you mean sslmode"),
])
def test_a_dsn_typo_names_the_part_never_the_password(tmp_path, dsn, named, advice) -> None:
    ini = tmp_path / "dnl_ad.ini"
    ini.write_text(f"[dnl_ad]\nCONNECTION_STRING = {dsn}\n")
    for command in (["start"], ["run"], ["migrate"], ["check"]):
        line = one_line(run(ini, *command))
        assert line.startswith("config error: CONNECTION_STRING")
        assert named in line and advice in line
        assert "hunter" not in line and SECRET[6:] not in line


def test_an_unreachable_database_is_one_line_for_every_command(settings, tmp_path) -> None:
    unreachable = f"host=127.0.0.1 port=1 dbname=nowhere user=u password={SECRET}"
    ini = write_ini(tmp_path / "dnl_ad.ini", settings, CONNECTION_STRING=unreachable)
    for command in (["migrate"], ["preview", "1", "--client", "1"], ["run"]):
        line = one_line(run(ini, *command))
        assert "127.0.0.1" in line and "dbname=nowhere" in line, line
        assert "CONNECTION_STRING" in line or "did not start" in line
    proc = subprocess.run([sys.executable, "-m", "dnl_ad", "--config", str(ini), "harness"],
                          cwd=REPO, input="1\nq\n", capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("DNL_AD_")})
    assert "Traceback" not in proc.stdout + proc.stderr and SECRET not in proc.stdout
    assert "failed" in proc.stdout


def test_a_bad_value_or_an_unwritable_path_is_one_line(settings, tmp_path) -> None:
    ini = write_ini(tmp_path / "dnl_ad.ini", settings, DELIVERY_SECONDS="soon")
    line = one_line(run(ini, "start"))
    assert "DELIVERY_SECONDS='soon'" in line and "expected an integer" in line
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ini = write_ini(tmp_path / "dnl_ad.ini", settings, LOGFILE=str(blocker / "x.log"))
    for command in ("run", "start"):
        line = one_line(run(ini, command))
        assert str(blocker) in line, line
    ini = write_ini(tmp_path / "dnl_ad.ini", settings, PIDFILE=str(blocker / "x.pid"))
    assert str(blocker) in one_line(run(ini, "start"))


def test_check_flags_unknown_keys(settings, tmp_path) -> None:
    ini = write_ini(tmp_path / "dnl_ad.ini", settings, SMTP_PASWORD="x")
    loaded = load_settings(ini, env={"DNL_AD_DELIVERY_SECOND": "3"})
    assert loaded.unknown_keys == ("SMTP_PASWORD", "DNL_AD_DELIVERY_SECOND")
    rows = {r.check: r for r in check.run_checks(loaded)}
    row = rows["unknown keys"]
    assert row.status == check.FAIL
    assert "SMTP_PASWORD (did you mean SMTP_PASSWORD?)" in row.detail
    assert "DNL_AD_DELIVERY_SECOND (did you mean DNL_AD_DELIVERY_SECONDS?)" in row.detail
    assert "unknown keys" not in {r.check for r in check.run_checks(settings)}


def test_the_config_error_text_keeps_the_password_out(tmp_path) -> None:
    ini = tmp_path / "dnl_ad.ini"
    ini.write_text(f"[dnl_ad]\nCONNECTION_STRING = host=x password={SECRET} dbnme=y\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(ini, env={})
    assert SECRET not in str(caught.value) and "dbnme" in str(caught.value)
