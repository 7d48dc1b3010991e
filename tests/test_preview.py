"""preview: the exact mail one client would get, picked from a dry-run sweep."""

from __future__ import annotations

import email
import email.policy

from dnl_ad import cli
from dnl_ad.devtools import demo_data

from .conftest import utc
from .test_daemon import write_ini
from .test_harness import snapshot

NOW = utc(2026, 11, 21, 9)


def _setup(conn, settings, tmp_path):
    with conn.cursor() as cur:
        demo_data.generate(cur, 60, NOW)
    return str(write_ini(tmp_path / "dnl_ad.ini", settings))


def test_preview_prints_one_clients_mail_and_writes_files(conn, settings, tmp_path,
                                                          capsys) -> None:
    ini = _setup(conn, settings, tmp_path)
    before = snapshot(conn)
    eml, html = tmp_path / "p.eml", tmp_path / "p.html"
    code = cli.main(["--config", ini, "preview", "low_balance", "--client", "10",
                     "--at", NOW.isoformat(), "--eml", str(eml), "--html", str(html)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "To: billing10@client10.example" in out
    assert "From: " in out and "Subject: " in out and "Message-ID: <low_balance.10." in out
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg["To"] == "billing10@client10.example"
    assert msg["Subject"] in out
    assert msg.get_body(("plain",)).get_content().strip().splitlines()[0] in out
    assert "<" in html.read_text() and msg.get_body(("html",)) is not None
    assert snapshot(conn) == before  # dry run: nothing written


def test_preview_trunk_notice_by_number_and_a_client_without_one(conn, settings, tmp_path,
                                                                 capsys) -> None:
    ini = _setup(conn, settings, tmp_path)
    assert cli.main(["--config", ini, "preview", "6", "--client", "20",
                     "--at", NOW.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "client000020-in" in out and "To: billing20@client20.example" in out
    assert "client000040" not in out  # only client 20's message
    assert cli.main(["--config", ini, "preview", "6", "--client", "21",
                     "--at", NOW.isoformat()]) == 1
    assert "client 21 would get no trunk_pending notice" in capsys.readouterr().out
    assert cli.main(["--config", ini, "preview", "nonsense", "--client", "1"]) == 2


def test_preview_quality_rule_by_client(conn, settings, tmp_path, capsys) -> None:
    ini = _setup(conn, settings, tmp_path)
    # the demo's rule watches the ingress trunks of clients 5 (id 9) and 10 (id 19)
    assert cli.main(["--config", ini, "preview", "11", "--client", "10",
                     "--at", NOW.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "client000010-in" in out and "Low ASR on key routes" in out
    assert "client000005-in" not in out
    assert "To: noc@carrier.example" in out   # trouble_ticket_sent_to 1: own NOC
    assert cli.main(["--config", ini, "preview", "quality_rule", "--client", "7",
                     "--at", NOW.isoformat()]) == 1


def test_preview_usage_limit_and_fraud_notices(conn, settings, tmp_path, capsys) -> None:
    ini = _setup(conn, settings, tmp_path)
    before = snapshot(conn)
    # client 50: 2.50 of its hourly limit of 2 in the running hour (demo data)
    assert cli.main(["--config", ini, "preview", "8", "--client", "50",
                     "--at", NOW.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "Subject: Hourly usage limit reached: trunks blocked until" in out
    assert "client000050-in" in out and "Cc: " not in out
    # the fraud mail is the trunk's: client 25's ingress trunk, to the switch's NOC
    assert cli.main(["--config", ini, "preview", "fraud_detection", "--client", "25",
                     "--at", NOW.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "To: noc@carrier.example" in out and "client000025-in" in out
    assert "client000050" not in out
    assert snapshot(conn) == before  # dry run: no block, no log row written
