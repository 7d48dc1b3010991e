"""Before `migrate`: dry runs, preview and the harness work read-only without dnl_ad's
schema, and `migrate --dry-run` only says what it would apply."""

from __future__ import annotations

import io

from dnl_ad import cli, daemon, harness, migrations
from dnl_ad.alerts import ALERTS
from dnl_ad.devtools import demo_data
from dnl_ad.scheduler import Loop

from .conftest import utc
from .test_daemon import write_ini
from .test_harness import snapshot

NOW = utc(2026, 11, 21, 9)


def _without_own_schema(conn) -> None:
    with conn.cursor() as cur:
        demo_data.generate(cur, 60, NOW)
        cur.execute("DROP SCHEMA dnl_ad CASCADE")


def _own_schema_exists(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regnamespace('dnl_ad') IS NOT NULL AS yes")
        return cur.fetchone()["yes"]


def test_migrate_dry_run_applies_nothing(conn, settings, tmp_path, capsys) -> None:
    _without_own_schema(conn)
    ini = str(write_ini(tmp_path / "dnl_ad.ini", settings))
    assert cli.main(["--config", ini, "migrate", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would apply" in out and migrations.available()[0][1] in out
    assert not _own_schema_exists(conn)
    assert cli.main(["--config", ini, "migrate"]) == 0
    assert "applied" in capsys.readouterr().out and _own_schema_exists(conn)
    assert cli.main(["--config", ini, "--dry-run", "migrate"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_preview_works_without_the_own_schema(conn, settings, tmp_path, capsys) -> None:
    _without_own_schema(conn)
    before = snapshot(conn)
    ini = str(write_ini(tmp_path / "dnl_ad.ini", settings))
    code = cli.main(["--config", ini, "preview", "low_balance", "--client", "10",
                     "--at", NOW.isoformat()])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "To: billing10@client10.example" in out
    assert snapshot(conn) == before and not _own_schema_exists(conn)


def test_harness_dry_run_works_and_send_refuses_without_the_own_schema(conn, settings) -> None:
    _without_own_schema(conn)
    before = snapshot(conn)
    out = io.StringIO()
    keys = "".join(f"{n}\n" for n in ALERTS) + "q\n"
    assert harness.main(settings, at=NOW, stdin=io.StringIO(keys), out=out) == 0
    text = out.getvalue()
    assert "failed" not in text, text
    assert text.count("Subject: ") >= len(ALERTS)
    assert snapshot(conn) == before and not _own_schema_exists(conn)
    out = io.StringIO()
    assert harness.main(settings, send=True, stdin=io.StringIO("1\nq\n"), out=out) == 1
    assert "dnl-ad migrate" in out.getvalue()
    assert not _own_schema_exists(conn)


def test_the_daemon_loop_in_dry_run_works_without_the_own_schema(conn, settings) -> None:
    _without_own_schema(conn)
    before = snapshot(conn)
    dry = settings.replace(dry_run=True)
    database = migrations.open_database(dry)
    try:
        daemon.startup(database, dry, NOW)
        loop = Loop(dry, database, clock=lambda: NOW)
        ran = loop.tick()
        assert set(ran) >= {spec.kind for spec in ALERTS.values()}
        assert all(job.failures == 0 for job in loop.registry.jobs)
    finally:
        database.close()
    assert snapshot(conn) == before and not _own_schema_exists(conn)
