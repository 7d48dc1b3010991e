"""The demo end to end: embedded PostgreSQL, SMTP sink, the daemon's real loop on the real
clock, at least one .eml of each alert kind, a summary, and a clean teardown."""

from __future__ import annotations

import email
import email.policy
import io
import logging

from dnl_ad.alerts import ALERTS
from dnl_ad.devtools import demo


def test_demo_sends_every_kind(tmp_path) -> None:
    out_dir = tmp_path / "demo-mail"
    out_dir.mkdir()
    (out_dir / "stale.eml").write_bytes(b"Subject: left over\r\n\r\nold\r\n")
    handlers_before = logging.getLogger().handlers[:]
    stream = io.StringIO()
    code = demo.main(clients=40, timeout=60, out_dir=out_dir, out=stream)
    text = stream.getvalue()
    assert code == 0, text
    kinds: dict[str, int] = {}
    for path in out_dir.glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        kinds[str(msg["X-DNL-AD-Kind"])] = kinds.get(str(msg["X-DNL-AD-Kind"]), 0) + 1
        assert msg["To"] and msg["Subject"] and msg["Message-ID"]
    assert set(kinds) == {spec.kind for spec in ALERTS.values()}  # the stale file is gone
    for spec in ALERTS.values():
        row = next(line for line in text.splitlines() if f" {spec.kind} " in line)
        assert row.split()[2] == str(kinds[spec.kind])  # the summary counts what was written
    assert str(out_dir) in text and "kinds sent; cleaning up" in text and "NOT all" not in text
    assert (out_dir / "dnl_ad-demo.log").read_text().count("dnl_ad.delivery") > 0
    assert logging.getLogger().handlers == handlers_before  # logging restored
