"""check: a readable table, exit 0 on the demo database, 1 naming what is wrong."""

from __future__ import annotations

from dnl_ad import cli
from dnl_ad.devtools import demo_data
from dnl_ad.devtools.smtp_sink import free_port

from . import factories as f
from .conftest import utc
from .test_daemon import write_ini

NOW = utc(2026, 11, 21, 9)


def _run(capsys, ini, *extra: str) -> tuple[int, str]:
    code = cli.main(["--config", str(ini), *extra, "check"])
    return code, capsys.readouterr().out


def _line(out: str, check: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(check + " "))


def test_check_passes_on_the_demo_database(conn, settings, smtp, tmp_path, capsys) -> None:
    with conn.cursor() as cur:
        demo_data.generate(cur, 30, NOW)
    code, out = _run(capsys, write_ini(tmp_path / "dnl_ad.ini", settings))
    assert code == 0, out
    assert "all checks passed" in out
    for check in ("configuration", "database", "contract columns", "own schema", "smtp",
                  "template lowbalance", "template no_download_rate"):
        assert " OK " in _line(out, check), out
    assert f"127.0.0.1:{smtp.port}" in _line(out, "smtp")


def test_check_names_a_missing_contract_column(conn, settings, tmp_path, capsys) -> None:
    with conn.cursor() as cur:
        demo_data.generate(cur, 5, NOW)
        cur.execute("ALTER TABLE client DROP COLUMN zero_balance_notice_time")
    code, out = _run(capsys, write_ini(tmp_path / "dnl_ad.ini", settings))
    assert code == 1
    assert " FAIL " in _line(out, "contract columns")
    assert "client: zero_balance_notice_time" in out
    assert "1 check(s) failed: contract columns" in out


def test_check_reports_schema_smtp_and_templates(conn, settings, tmp_path, capsys) -> None:
    f.system(conn)
    f.update(conn, "mail_tmplate", {"id": 1},
             lowbalance_subject="Low {balance} for {compnay_name}",
             lowbalance_content="<p>{% for x in %}</p>",
             zerobalance_subject="Zero {balance}", zerobalance_content="<p>{balance}</p>")
    with conn.cursor() as cur:
        cur.execute("DELETE FROM dnl_ad.schema_version WHERE version = 3")
    ini = write_ini(tmp_path / "dnl_ad.ini", settings.replace(smtp_port=free_port()))
    code, out = _run(capsys, ini)
    assert code == 1
    assert " FAIL " in _line(out, "own schema") and "own_003" in _line(out, "own schema")
    assert " FAIL " in _line(out, "smtp") and "cannot connect" in _line(out, "smtp")
    assert " FAIL " in _line(out, "template lowbalance")
    assert " OK " in _line(out, "template zerobalance")


def test_check_lists_unknown_tags_and_survives_no_database(settings, conn, smtp, tmp_path,
                                                           capsys) -> None:
    f.system(conn)
    f.update(conn, "mail_tmplate", {"id": 1}, zerobalance_subject="Zero {balance} {shoe_size}",
             zerobalance_content="<p>{balance}</p>")
    code, out = _run(capsys, write_ini(tmp_path / "dnl_ad.ini", settings))
    assert code == 0, out
    assert " WARN " in _line(out, "template zerobalance") and "{shoe_size}" in out
    down = write_ini(tmp_path / "down.ini", settings.replace(
        connection_string="host=127.0.0.1 port=1 dbname=x user=u password=topsecret1"))
    code, out = _run(capsys, down)
    assert code == 1 and " FAIL " in _line(out, "database") and "topsecret1" not in out
    assert " SKIP " in _line(out, "smtp")


def test_check_lists_unknown_tags_of_subject_and_content_together(settings, conn, smtp,
                                                                  tmp_path, capsys) -> None:
    f.system(conn)
    f.update(conn, "mail_tmplate", {"id": 1}, zerobalance_subject="Zero {shoe_size}",
             zerobalance_content="<p>{balance} {hat_size}</p>")
    code, out = _run(capsys, write_ini(tmp_path / "dnl_ad.ini", settings))
    line = _line(out, "template zerobalance")
    assert code == 0 and " WARN " in line
    assert "zerobalance_subject: {shoe_size}" in line and "zerobalance_content: {hat_size}" in line
