"""Alert 5, daily CDR delivery: real PostgreSQL, a real HTTP API on loopback, explicit `now`."""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
import threading
import time
from urllib.parse import parse_qs, urlparse

import pytest

from dnl_ad.alerts import ALERTS, cdr_delivery
from dnl_ad.devtools.smtp_sink import free_port
from dnl_ad.scheduler import JobDef, Loop, _sweep_job

from . import factories as f
from .cdr_api_server import CdrApiServer
from .conftest import utc
from .daily_support import keys, outbox, tags_of, use_tag_template

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


class NoWait:
    """A stop source that is never set and whose pauses between polls take no time."""

    def __init__(self) -> None:
        self.waited: list[float] = []

    def wait(self, seconds: float) -> bool:
        if seconds > 0:
            self.waited.append(seconds)
        return False


def _fields(conn) -> None:
    """The UI's "Auto CDR Generation Format": ids out of order, a portal field (type 2)."""
    for fid, typ, name, label in [(12, 0, "call_duration", "Duration"), (3, 0, "ani", "ANI"),
                                  (7, 1, "egress_cost", "Cost"), (5, 1, "dnis", "DNIS"),
                                  (9, 2, "portal_only", "Portal")]:
        f.insert(conn, "daily_cdr_fields", id=fid, type=typ, field=name, label=label)


def _api_settings(server: CdrApiServer, settings, **changes):
    return server.settings(settings, **{"cdr_download_url": "", "cdr_api_poll_seconds": 3,
                                        **changes})


def test_api_links_fields_and_counts(conn, database, settings) -> None:
    c, t1, t2 = _setup(conn)
    _fields(conn)
    i1, e2 = t1["resource_id"], t2["resource_id"]
    wait = NoWait()
    with CdrApiServer(processing_polls=1, counts={i1: 1234, e2: 56}) as api:
        s = _api_settings(api, settings)
        assert cdr_delivery.sweep(database, NOW, s, stop=wait).queued == 1
    t = tags_of(conn, _key(c))
    assert _hrefs(t) == [api.link("ingress", i1), api.link("egress", e2)]
    assert t["cdr_count"] == "1290"  # the API's counts, not the traffic table's calls
    ingress, egress = (e["form"] for e in api.exports())
    window = {"start_time": str(int(START.timestamp())), "end_time": str(int(END.timestamp())),
              "keep_longer": "1", "non_zero": "1", "human_readable": "1"}
    assert ingress == {**window, "ingress_id": str(i1), "field": "3,12"}  # type 0, id order
    assert egress == {**window, "egress_id": str(e2), "field": "5,7"}     # type 1, id order
    assert {e["auth"] for e in api.exports()} == {"Token tok-1"}
    assert wait.waited == [3, 3]  # one Processing answer per trunk, no real waiting


def test_static_link_uses_the_field_labels(conn, database, settings) -> None:
    c, _, _ = _setup(conn)
    _fields(conn)
    assert cdr_delivery.sweep(database, NOW, settings).queued == 1
    first, second = (parse_qs(urlparse(u).query) for u in _hrefs(tags_of(conn, _key(c))))
    assert first["field"] == ["ANI,Duration"] and second["field"] == ["DNIS,Cost"]


@pytest.mark.parametrize(("knob", "why"), [("hang", "timed out"), ("fail", "code 503"),
                                           ("garbage", "not JSON"), ("down", "failed")])
def test_api_trouble_falls_back_to_the_static_link(conn, database, settings, caplog, knob,
                                                   why) -> None:
    c, t1, t2 = _setup(conn)
    caplog.set_level(logging.WARNING)
    with CdrApiServer() as api:
        api.hang = "poll" if knob == "hang" else ""
        api.fail_exports = 5 if knob == "fail" else 0
        api.garbage_polls = knob == "garbage"
        s = api.settings(settings, cdr_api_timeout_seconds=1)
        if knob == "down":
            s = s.replace(cdr_api_token_port=free_port())
        assert cdr_delivery.sweep(database, NOW, s, stop=NoWait()).queued == 1
    links = _hrefs(tags_of(conn, _key(c)))
    _assert_static(links[0], t1["resource_id"])
    _assert_static(links[1], t2["resource_id"])
    lines = [r.getMessage() for r in caplog.records if "CDR API" in r.getMessage()]
    assert any(why in line and f"client {c['client_id']} ingress trunk {t1['resource_id']}"
               in line for line in lines), lines
    assert all("static" in line for line in lines)


def test_dry_run_starts_no_export_and_writes_nothing(conn, database, settings) -> None:
    _, t1, _ = _setup(conn)
    with CdrApiServer() as api:
        s = api.settings(settings, dry_run=True)
        result = cdr_delivery.sweep(database, NOW, s, stop=NoWait())
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
    down = settings.replace(cdr_download_url="", cdr_api_host="127.0.0.1",
                            cdr_api_token_port=free_port(), cdr_api_export_port=free_port())
    first = cdr_delivery.sweep(database, NOW, down, stop=NoWait())
    assert first.queued == 0 and keys(conn) == set()
    assert "CDR_DOWNLOAD_URL is empty" in caplog.text
    with CdrApiServer() as api:
        up = _api_settings(api, settings)
        later = NOW + dt.timedelta(minutes=5)
        assert cdr_delivery.sweep(database, later, up, stop=NoWait()).queued == 1
        assert cdr_delivery.sweep(database, later, up, stop=NoWait()).queued == 0
    assert keys(conn) == {_key(c)}
    assert _hrefs(tags_of(conn, _key(c))) == [api.link("ingress", t1["resource_id"]),
                                              api.link("egress", t2["resource_id"])]


def test_one_trunk_failing_holds_the_mail_and_is_retried_alone(conn, database, settings,
                                                               caplog) -> None:
    # Before: the failed trunk was dropped and the mail went out without it, for good.
    c, t1, t2 = _setup(conn)
    caplog.set_level(logging.INFO)
    i1, e2 = t1["resource_id"], t2["resource_id"]
    with CdrApiServer() as api:
        s = _api_settings(api, settings)
        api.refuse_trunks = {e2}
        first = cdr_delivery.sweep(database, NOW, s, stop=NoWait())
        assert first.queued == 0 and keys(conn) == set()
        again = cdr_delivery.sweep(database, NOW + dt.timedelta(minutes=1), s, stop=NoWait())
        assert again.queued == 0
        api.refuse_trunks = set()
        later = NOW + dt.timedelta(minutes=2)
        assert cdr_delivery.sweep(database, later, s, stop=NoWait()).queued == 1
        assert cdr_delivery.sweep(database, later, s, stop=NoWait()).queued == 0
    assert _hrefs(tags_of(conn, _key(c))) == [api.link("ingress", i1), api.link("egress", e2)]
    # trunk 1's link was obtained once and kept; only trunk 2 was asked again
    assert [e["form"].get("ingress_id") or e["form"]["egress_id"] for e in api.exports()] == [
        str(i1), str(e2), str(e2), str(e2)]
    messages = [r.getMessage() for r in caplog.records]
    failing = [m for m in messages if f"egress trunk {e2}" in m and "no link" in m]
    held = [m for m in messages if "held until every trunk has its link" in m]
    assert len(failing) == 1 and len(held) == 1  # once when it starts, not every sweep
    assert any("obtained after earlier failures" in m for m in messages)


def test_at_the_end_of_catchup_the_mail_goes_with_the_links_it_has(conn, database, settings,
                                                                   caplog) -> None:
    c, t1, t2 = _setup(conn)
    caplog.set_level(logging.WARNING)
    e2 = t2["resource_id"]
    with CdrApiServer() as api:
        s = _api_settings(api, settings, catchup_hours=6, daily_check_seconds=60)
        api.refuse_trunks = {e2}
        assert cdr_delivery.sweep(database, NOW, s, stop=NoWait()).queued == 0
        last = END + dt.timedelta(hours=6, minutes=-1)  # due at END (hour 0 local)
        assert cdr_delivery.sweep(database, last, s, stop=NoWait()).queued == 1
    assert _hrefs(tags_of(conn, _key(c))) == [api.link("ingress", t1["resource_id"])]
    assert "sent with 1 of 2 links" in caplog.text and f"egress trunk {e2}" in caplog.text


def test_stop_mid_poll_returns_at_once_and_the_mail_is_sent_next_start(conn, database,
                                                                        settings) -> None:
    c, _, _ = _setup(conn)
    stop = threading.Event()
    with CdrApiServer(processing_polls=1000) as api:
        s = _api_settings(api, settings, cdr_api_poll_seconds=3, cdr_api_timeout_seconds=10)
        threading.Thread(target=lambda: api.polled.wait(10) and stop.set(), daemon=True).start()
        started = time.monotonic()
        result = cdr_delivery.sweep(database, NOW, s, stop=stop)
        elapsed = time.monotonic() - started
        assert elapsed < 2  # the 3 s pause between polls woke on the stop
        assert result.queued == 0 and keys(conn) == set()
        assert len(api.exports()) == 1  # the second trunk was not started
        api.processing_polls = 0  # next start: the API is quick
        assert cdr_delivery.sweep(database, NOW + dt.timedelta(minutes=1), s,
                                  stop=threading.Event()).queued == 1
    assert keys(conn) == {_key(c)}


def test_sigterm_path_the_loop_wakeup_ends_the_cdr_sweep(conn, database, settings) -> None:
    # The daemon's SIGTERM handler calls Wakeup.request_stop: the CDR sweep, run as the
    # scheduler runs it, sees it while polling and the tick ends well within STOP_TIMEOUT.
    _setup(conn)
    with CdrApiServer(processing_polls=1000) as api:
        s = _api_settings(api, settings, cdr_api_poll_seconds=3, cdr_api_timeout_seconds=10)
        loop = Loop(s, database, clock=lambda: NOW,
                    jobs=lambda lp: [JobDef("cdr_delivery", 60, _sweep_job(lp, ALERTS[5]))])
        threading.Thread(target=lambda: api.polled.wait(10) and loop.wakeup.request_stop(
            "SIGTERM received"), daemon=True).start()
        started = time.monotonic()
        assert loop.tick() == ["cdr_delivery"]
        elapsed = time.monotonic() - started
    assert elapsed < 2
    assert keys(conn) == set()


def test_sigterm_to_the_daemon_mid_export_then_restart_sends_the_mail_once(
        conn, settings, smtp, tmp_path) -> None:
    # The real daemon (subprocess, real clock): a CDR export that stays Processing with
    # 30 s between polls; SIGTERM ends the daemon at once; the next start sends the mail.
    import os
    import signal
    from pathlib import Path

    from .test_daemon import alive, cli, wait_for, write_ini

    f.system(conn)
    c = f.client(conn, name="acme", daily_cdr_generation=True, auto_send_zone="+00:00",
                 auto_summary_hour=0, billing_email="noc@acme.example")
    t = f.trunk(conn, c["client_id"], alias="acme-in")
    yesterday = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0) \
        - dt.timedelta(days=1)
    f.traffic(conn, report_time=yesterday, ingress_id=t["resource_id"],
              ingress_client_id=c["client_id"], ingress_total_calls=4, not_zero_calls=2)
    with CdrApiServer(processing_polls=10_000, counts={t["resource_id"]: 2}) as api:
        ini = write_ini(tmp_path / "cdr.ini", settings, CDR_API_HOST="127.0.0.1",
                        CDR_API_TOKEN_PORT=str(api.token_port),
                        CDR_API_EXPORT_PORT=str(api.export_port),
                        CDR_API_POLL_SECONDS="30", CDR_API_TIMEOUT_SECONDS="600",
                        DAILY_CHECK_SECONDS="2", DELIVERY_SECONDS="1")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("DNL_AD_")},
               "DNL_AD_CONFIG": str(ini)}
        assert cli(env, "start").returncode == 0
        pid = int(Path(settings.pidfile).read_text())
        try:
            assert api.polled.wait(30), "the daemon never polled the export"
            os.kill(pid, signal.SIGTERM)
            signalled = time.monotonic()
            wait_for(lambda: not alive(pid), 15, "the daemon to exit after SIGTERM")
            assert time.monotonic() - signalled < 3  # STOP_TIMEOUT is 15 s
            assert keys(conn) == set() and smtp.messages == []

            api.processing_polls = 0  # the API is quick now
            assert cli(env, "start").returncode == 0
            wait_for(lambda: len(smtp.messages) >= 1, 30, "the CDR mail after restart")
        finally:
            cli(env, "stop")
    assert keys(conn) == {f"cdr_delivery:{c['client_id']}:{yesterday.date().isoformat()}"}
    (mail,) = smtp.messages
    text = mail.message.get_body(("plain",)).get_content()
    assert api.link("ingress", t["resource_id"]) in text
    log_text = Path(settings.logfile).read_text()
    assert "SIGTERM received" in log_text and "export for client" in log_text
