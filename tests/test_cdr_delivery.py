"""Alert 5, daily CDR delivery: real PostgreSQL, a real HTTP API on loopback, explicit `now`."""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
from urllib.parse import parse_qs, urlparse

import pytest

from dnl_ad.alerts import cdr_delivery
from dnl_ad.smtp_sink import free_port

from . import factories as f
from .conftest import utc
from .daily_support import FakeCdrApi, keys, outbox, tags_of, use_tag_template

START, END = utc(2026, 11, 19, 16), utc(2026, 11, 20, 16)  # local 2026-11-20 at +08:00
NOW = utc(2026, 11, 20, 16, 5)  # 00:05 on the 21st, local


def _setup(conn):
    f.system(conn, finance_email="finance@carrier.example; audit@carrier.example")
    use_tag_template(conn, "auto_cdr", "cdr_delivery")
    c = f.client(conn, name="acme", company="Acme", daily_cdr_generation=True,
                 auto_send_zone="+08:00", auto_summary_hour=0,
                 daily_cdr_generation_zone="+08:00", daily_cdr_generation_type=2,
                 auto_daily_balance_recipient=2, billing_email="noc@acme.example")
    cid = c["client_id"]
    t1 = f.trunk(conn, cid, alias="acme-in")
    t2 = f.trunk(conn, cid, alias="acme-out", ingress=False, egress=True)
    t3 = f.trunk(conn, cid, alias="acme-off", active=False)
    t4 = f.trunk(conn, cid, alias="acme-zero")
    mid = START.replace(hour=20)
    f.traffic(conn, report_time=mid, ingress_id=t1["resource_id"], ingress_client_id=cid,
              ingress_total_calls=10, not_zero_calls=3)
    f.traffic(conn, report_time=START - dt.timedelta(hours=1),
              ingress_id=t1["resource_id"], ingress_client_id=cid, ingress_total_calls=500,
              not_zero_calls=500)  # the hour before the window: not counted
    f.traffic(conn, report_time=END.replace(hour=15), egress_id=t2["resource_id"],
              egress_client_id=cid, egress_total_calls=5, not_zero_calls=1)
    f.traffic(conn, report_time=mid, ingress_id=t3["resource_id"], ingress_client_id=cid,
              ingress_total_calls=50, not_zero_calls=50)  # inactive trunk
    f.traffic(conn, report_time=mid, ingress_id=t4["resource_id"], ingress_client_id=cid,
              ingress_total_calls=7, not_zero_calls=0)  # attempts only
    return c, t1, t2


def _key(client) -> str:
    return f"cdr_delivery:{client['client_id']}:2026-11-20"


def _hrefs(tags: dict[str, str]) -> list[str]:
    return [html.unescape(u) for u in re.findall(r'href="([^"]+)"', tags["download_link"])]


def _assert_static(url: str, trunk_id: int) -> None:
    q = parse_qs(urlparse(url).query)
    assert url.startswith("https://portal.carrier.example/cdr/?")
    assert q["start"] == [str(int(START.timestamp()))] and q["end"] == [str(int(END.timestamp()))]
    assert q["i"] == [str(trunk_id)] and q["format"] == ["plain"] and q["field"][0]


def test_static_links_for_active_trunks_with_billed_calls(conn, database, settings) -> None:
    c, t1, t2 = _setup(conn)
    assert cdr_delivery.sweep(database, NOW, settings).queued == 1
    t = tags_of(conn, _key(c))
    links = _hrefs(t)
    assert len(links) == 2
    _assert_static(links[0], t1["resource_id"])
    _assert_static(links[1], t2["resource_id"])
    assert t["cdr_count"] == "15"  # 10 + 5: window only, listed trunks only
    assert t["trunk_name"] == "acme-in,acme-out"
    assert t["file_name"] == "acme-in_20261120.csv, acme-out_20261120.csv"
    assert html.unescape(t["share_link"]) == links[0]
    assert t["current_day"] == "2026-11-20" and t["customer_gmt"] == "GMT+08:00"
    assert (t["begin_time"], t["end_time"]) == ("2026-11-20 00:00:00", "2026-11-20 23:59:59")
    (row,) = outbox(conn)
    assert row["to_addrs"] == ["noc@acme.example", "finance@carrier.example",
                               "audit@carrier.example"]
    assert cdr_delivery.sweep(database, NOW, settings).queued == 0  # once


def test_no_trunk_with_traffic_no_mail(conn, database, settings) -> None:
    f.system(conn)
    c = f.client(conn, name="idle", daily_cdr_generation=True, auto_send_zone="+08:00",
                 daily_cdr_generation_zone="+08:00")
    t = f.trunk(conn, c["client_id"])
    f.traffic(conn, report_time=START, ingress_id=t["resource_id"],
              ingress_client_id=c["client_id"], ingress_total_calls=9, not_zero_calls=0)
    assert cdr_delivery.sweep(database, NOW, settings).queued == 0
    assert keys(conn) == set()


def test_api_links_when_the_api_answers(conn, database, settings) -> None:
    c, t1, t2 = _setup(conn)
    slept: list[float] = []
    with FakeCdrApi("ok", pending_polls=1) as api:
        s = settings.replace(cdr_api_url=api.url, cdr_api_user="ops", cdr_api_password="pw",
                             cdr_api_poll_seconds=3)
        assert cdr_delivery.sweep(database, NOW, s, sleep=slept.append).queued == 1
    assert _hrefs(tags_of(conn, _key(c))) == [
        f"https://cdr.carrier.example/files/req-{t1['resource_id']}.csv",
        f"https://cdr.carrier.example/files/req-{t2['resource_id']}.csv"]
    bodies = [r["body"] for r in api.requests if r["path"] == "/api/cdr/export"]
    assert [b["trunk_id"] for b in bodies] == [t1["resource_id"], t2["resource_id"]]
    assert bodies[0]["start"] == int(START.timestamp()) and bodies[0]["end"] == int(
        END.timestamp())
    assert slept == [3, 3]  # one pending answer per trunk, no real waiting


@pytest.mark.parametrize(("mode", "why"), [("slow", "timed out"), ("error", "HTTP 500"),
                                           ("garbage", "not JSON"), ("down", "failed")])
def test_api_trouble_falls_back_to_the_static_link(conn, database, settings, caplog, mode,
                                                   why) -> None:
    c, t1, t2 = _setup(conn)
    caplog.set_level(logging.WARNING)
    with FakeCdrApi("ok" if mode == "down" else mode) as api:
        url = f"http://127.0.0.1:{free_port()}/api" if mode == "down" else api.url
        s = settings.replace(cdr_api_url=url, cdr_api_timeout_seconds=1)
        assert cdr_delivery.sweep(database, NOW, s, sleep=lambda _: None).queued == 1
    links = _hrefs(tags_of(conn, _key(c)))
    _assert_static(links[0], t1["resource_id"])
    _assert_static(links[1], t2["resource_id"])
    lines = [r.getMessage() for r in caplog.records if "CDR API" in r.getMessage()]
    assert any(why in line and f"client {c['client_id']} trunk {t1['resource_id']}" in line
               for line in lines), lines
    assert all("static" in line for line in lines)


def test_dry_run_starts_no_export_and_writes_nothing(conn, database, settings) -> None:
    _, t1, _ = _setup(conn)
    with FakeCdrApi("ok") as api:
        s = settings.replace(cdr_api_url=api.url, dry_run=True)
        result = cdr_delivery.sweep(database, NOW, s, sleep=lambda _: None)
    assert api.requests == []
    assert result.queued == 1 and keys(conn) == set()
    (mail,) = result.mails
    assert mail.to == ["noc@acme.example", "finance@carrier.example", "audit@carrier.example"]
    assert f"i={t1['resource_id']}" in mail.html and "portal.carrier.example/cdr" in mail.html


def test_api_down_without_static_url_retries_next_sweep(conn, database, settings,
                                                        caplog) -> None:
    # No CDR_DOWNLOAD_URL: a transient API outage gives no link. The day's CDRs must not be
    # given up for good: a later sweep (the API back) sends the mail, once.
    c, t1, t2 = _setup(conn)
    caplog.set_level(logging.WARNING)
    down = settings.replace(cdr_download_url="",
                            cdr_api_url=f"http://127.0.0.1:{free_port()}/api")
    first = cdr_delivery.sweep(database, NOW, down, sleep=lambda _: None)
    assert first.queued == 0 and keys(conn) == set()
    assert "CDR_DOWNLOAD_URL is empty" in caplog.text
    with FakeCdrApi("ok", pending_polls=0) as api:
        up = settings.replace(cdr_download_url="", cdr_api_url=api.url)
        later = NOW + dt.timedelta(minutes=5)
        assert cdr_delivery.sweep(database, later, up, sleep=lambda _: None).queued == 1
        assert cdr_delivery.sweep(database, later, up, sleep=lambda _: None).queued == 0
    assert keys(conn) == {_key(c)}
    assert _hrefs(tags_of(conn, _key(c))) == [
        f"https://cdr.carrier.example/files/req-{t1['resource_id']}.csv",
        f"https://cdr.carrier.example/files/req-{t2['resource_id']}.csv"]
