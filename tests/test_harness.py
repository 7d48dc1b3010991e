"""The harness fed 1..7 and q on standard input: each alert's dry-run result, no writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dnl_ad.alerts import ALERTS
from dnl_ad.devtools import demo_data

from . import factories as f
from .conftest import utc
from .test_daemon import REPO, write_ini

NOW = utc(2026, 11, 21, 9)


def snapshot(conn) -> dict[str, tuple[int, str]]:
    """Row count and content digest of every table in the provider and own schemas."""
    from psycopg2 import sql

    with conn.cursor() as cur:
        cur.execute("SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema IN ('public', 'dnl_ad') AND table_type = 'BASE TABLE'")
        tables = [(r["table_schema"], r["table_name"]) for r in cur.fetchall()]
        found = {}
        for schema, table in tables:
            cur.execute(sql.SQL("SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' "
                                "ORDER BY t::text), '')) AS h FROM {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table)))
            row = cur.fetchone()
            found[f"{schema}.{table}"] = (row["n"], row["h"])
    return found


def test_harness_keys_1_to_7_dry_run_writes_nothing(conn, settings, tmp_path) -> None:
    with conn.cursor() as cur:
        demo_data.generate(cur, 40, NOW)
    before = snapshot(conn)
    assert before["public.client"][0] == 40
    ini = write_ini(tmp_path / "dnl_ad.ini", settings,
                    CDR_DOWNLOAD_URL=settings.cdr_download_url, LOW_BALANCE_DISABLE="true")
    proc = subprocess.run(
        [sys.executable, "-m", "dnl_ad", "--config", str(ini), "harness",
         "--at", NOW.isoformat()],
        input="".join(f"{n}\n" for n in ALERTS) + "q\n", cwd=REPO, capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    sections = out.split("\n[")[1:]
    assert [s.split("]")[0] for s in sections] == [str(n) for n in ALERTS]
    for number, section in zip(ALERTS, sections, strict=True):
        spec = ALERTS[number]
        assert f"{spec.title} ({spec.kind}) - dry run" in section
        assert "Subject: " in section and "- To: " in section, section  # something to show
        assert "notice(s): queued 0" not in section
    assert out.rstrip().endswith("bye")
    # nothing written to either database: every table has the same rows as before
    assert snapshot(conn) == before
    emls = list(Path(settings.dry_run_dir).glob("*.eml"))
    kinds = {p.read_text(errors="replace").split("X-DNL-AD-Kind: ")[1].split()[0]
             for p in emls}
    assert kinds == {spec.kind for spec in ALERTS.values()}


def test_keys_read_alert_numbers_of_two_digits() -> None:
    import io

    from dnl_ad import harness

    assert list(harness.keys(io.StringIO("1\n11\n6\nx\nq\n"))) == ["1", "11", "6", "x", "q"]


def test_harness_quits_on_q_and_reports_unknown_keys(conn, settings, tmp_path) -> None:
    ini = write_ini(tmp_path / "dnl_ad.ini", settings)
    proc = subprocess.run(
        [sys.executable, "-m", "dnl_ad", "--config", str(ini), "harness"],
        input="x\nq\n1\n", cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "unknown key 'x'" in proc.stdout
    assert "[1]" not in proc.stdout  # keys after q are not read


def test_harness_send_queues_and_delivers(conn, settings, smtp) -> None:
    import io

    from dnl_ad import harness

    with conn.cursor() as cur:
        demo_data.generate(cur, 40, NOW)
    out = io.StringIO()
    assert harness.main(settings, send=True, at=NOW, stdin=io.StringIO("6\nq\n"), out=out) == 0
    text = out.getvalue()
    assert "SENDING for real" in text and "Trunk pending suspension (trunk_pending) - SENT" in text
    queued = f.rows(conn, "SELECT kind, status FROM dnl_ad.outbox")
    assert queued and {r["kind"] for r in queued} == {"trunk_pending"}
    assert {r["status"] for r in queued} == {"sent"}
    assert f"delivered now: {len(queued)} sent" in text
    assert len(smtp.messages) == len(queued)
    assert {m.message["X-DNL-AD-Kind"] for m in smtp.messages} == {"trunk_pending"}


def test_harness_refuses_send_with_a_pretended_instant(settings, tmp_path) -> None:
    ini = write_ini(tmp_path / "dnl_ad.ini", settings)
    proc = subprocess.run([sys.executable, "-m", "dnl_ad", "--config", str(ini), "harness",
                           "--send", "--at", "2026-11-21T10:00:00"], input="q\n",
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2
    assert "--send cannot be combined with --at" in proc.stderr
