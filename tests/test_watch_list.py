"""Alert 14, destination watch lists, on the REAL v5 schema with explicit `now`: a call to
a blacklisted prefix is one alert a day; whitelist first (a whitelisted prefix that is
also blacklisted is fine); outside a client's whitelist is an alert; a country entry
matches ingress_country or egress_country; the `dnl-ad watch` commands."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from dnl_ad import cli, delivery
from dnl_ad.alerts import watch_list
from dnl_ad.own_watch import WatchError, add_entry

from . import factories as f
from .conftest import utc
from .test_daemon import write_ini
from .test_v5_alerts import email_log, seed_system, ui_client

NOW = utc(2026, 11, 21, 12, 0)


def caller(conn, name: str = "dialer", **values: Any) -> dict[str, Any]:
    c = ui_client(conn, name, noc_email=f"noc@{name}.example", **values)
    c["trunk"] = f.trunk(conn, c["client_id"], alias=f"{name}-in")["resource_id"]
    return c


def calls(conn, c: dict[str, Any], code: str, *, at: dt.datetime = NOW - dt.timedelta(hours=2),
          n: int = 10, in_country: str | None = None, eg_country: str | None = None) -> None:
    f.traffic(conn, report_time=at, ingress_client_id=c["client_id"], ingress_id=c["trunk"],
              ingress_total_calls=n, not_zero_calls=n, duration=n * 60,
              ingress_bill_time=n * 60, ingress_call_cost=Decimal("0.25") * n,
              ingress_code=code, ingress_country=in_country, egress_country=eg_country)


def entry(conn, list_name: str, **values: Any) -> int:
    with conn.cursor() as cur:
        return add_entry(cur, "dnl_ad", list_name=list_name, **values)


def sweep(v5_database, v5_settings, now=NOW):
    return watch_list.sweep(v5_database, now, v5_settings)


def test_a_blacklisted_prefix_is_one_alert_a_day(v5_conn, v5_database, v5_settings,
                                                 smtp) -> None:
    seed_system(v5_conn)
    c = caller(v5_conn)
    entry(v5_conn, "black", prefix="53")
    calls(v5_conn, c, "5351234")
    calls(v5_conn, c, "5399", at=NOW - dt.timedelta(hours=1))
    calls(v5_conn, c, "4420")                                   # not listed
    assert sweep(v5_database, v5_settings).queued == 1
    calls(v5_conn, c, "5351234", at=NOW)                        # more the same day
    assert sweep(v5_database, v5_settings, NOW + dt.timedelta(hours=1)).queued == 0
    delivery.deliver(v5_database, v5_settings, now=NOW)
    [mail] = smtp.messages
    assert mail.rcpt_tos == ["noc@carrier.example"]            # operator only
    text = next(p.get_content() for p in mail.message.walk()
                if p.get_content_type() == "text/plain")
    assert "prefix 53, which is blacklisted" in text
    assert "Calls: 20" in text and "Billed minutes: 20.00" in text and "5.00 USD" in text
    assert [(r["type"], r["status"]) for r in email_log(v5_conn)] == [(33, 0)]
    # the next day is a new alert
    calls(v5_conn, c, "5351234", at=NOW + dt.timedelta(days=1))
    assert sweep(v5_database, v5_settings, NOW + dt.timedelta(days=1, hours=2)).queued == 1


def test_whitelist_first_then_blacklist(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    c = caller(v5_conn)
    entry(v5_conn, "black", prefix="53")
    entry(v5_conn, "white", prefix="5399", client_id=c["client_id"])
    calls(v5_conn, c, "539912")         # whitelisted and blacklisted: fine
    calls(v5_conn, c, "4420")           # outside the client's whitelist
    result = sweep(v5_database, v5_settings.replace(dry_run=True))
    assert result.queued == 1
    assert "outside the whitelist" in result.mails[0].subject
    assert "code 4420" in result.mails[0].subject


def test_a_whitelisted_prefix_also_blacklisted_yields_nothing(v5_conn, v5_database,
                                                              v5_settings) -> None:
    seed_system(v5_conn)
    c = caller(v5_conn)
    entry(v5_conn, "black", prefix="53")
    entry(v5_conn, "white", prefix="53")
    calls(v5_conn, c, "5351234")
    assert sweep(v5_database, v5_settings).queued == 0


@pytest.mark.parametrize(("in_country", "eg_country"), [("Cuba", None), (None, "CUBA")])
def test_a_country_entry_matches_either_country_column(v5_conn, v5_database, v5_settings,
                                                       in_country, eg_country) -> None:
    seed_system(v5_conn)
    c = caller(v5_conn)
    entry(v5_conn, "black", country="Cuba")
    calls(v5_conn, c, "5351", in_country=in_country, eg_country=eg_country)
    calls(v5_conn, c, "4420", in_country="United Kingdom", eg_country="United Kingdom")
    result = sweep(v5_database, v5_settings.replace(dry_run=True))
    assert result.queued == 1 and "country Cuba" in result.mails[0].subject


def test_client_entries_apply_to_that_client_and_may_notify_it(v5_conn, v5_database,
                                                               v5_settings, smtp) -> None:
    seed_system(v5_conn)
    watched, other = caller(v5_conn, "watched"), caller(v5_conn, "other")
    entry(v5_conn, "black", prefix="882", client_id=watched["client_id"], notify_client=True)
    for c in (watched, other):
        calls(v5_conn, c, "88213")
    assert sweep(v5_database, v5_settings).queued == 1
    delivery.deliver(v5_database, v5_settings, now=NOW)
    [mail] = smtp.messages
    assert sorted(mail.rcpt_tos) == ["noc@carrier.example", "noc@watched.example"]


def test_yesterdays_late_rows_count_and_older_days_do_not(v5_conn, v5_database,
                                                          v5_settings) -> None:
    seed_system(v5_conn)
    c = caller(v5_conn)
    entry(v5_conn, "black", prefix="53")
    calls(v5_conn, c, "5351", at=utc(2026, 11, 20, 23))    # yesterday: counted
    calls(v5_conn, c, "5352", at=utc(2026, 11, 19, 23))    # the day before: not
    result = sweep(v5_database, v5_settings.replace(dry_run=True))
    assert result.queued == 1 and "2026-11-20" in result.mails[0].subject


def test_bad_entries_are_refused(v5_conn) -> None:
    for values, text in (({"prefix": "53a"}, "--prefix"), ({}, "exactly one"),
                         ({"country": "Cuba", "notify_client": True}, "--client")):
        with pytest.raises(WatchError, match=text):
            entry(v5_conn, "black", **values)
    entry(v5_conn, "black", prefix="+53")
    with pytest.raises(WatchError, match="already has prefix '53'"):
        entry(v5_conn, "black", prefix="53")


def test_watch_commands(v5_conn, v5_settings, tmp_path, capsys) -> None:
    ini = str(write_ini(tmp_path / "dnl_ad.ini", v5_settings))
    assert cli.main(["--config", ini, "watch", "add", "--list", "black", "--country",
                     "Cuba", "--note", "fraud"]) == 0
    assert cli.main(["--config", ini, "watch", "add", "--list", "white", "--prefix", "44",
                     "--client", "7", "--notify-client"]) == 0
    capsys.readouterr()
    assert cli.main(["--config", ini, "watch", "list"]) == 0
    out = capsys.readouterr().out
    assert "blacklist  country Cuba  every client  fraud" in out
    assert "whitelist  prefix 44  client 7  (client notified)" in out
    assert cli.main(["--config", ini, "watch", "add", "--list", "grey", "--prefix",
                     "1"]) == 2
    assert cli.main(["--config", ini, "watch", "remove", "1"]) == 0
    assert cli.main(["--config", ini, "watch", "remove", "1"]) == 1


def test_check_counts_own_rules_and_entries(v5_conn, v5_settings) -> None:
    from dnl_ad import check

    from .test_period_compare import rule

    seed_system(v5_conn)
    entry(v5_conn, "black", prefix="53")
    entry(v5_conn, "white", country="France")
    rule(v5_conn)
    rows = {r.check: r for r in check.run_checks(v5_settings, NOW)}
    assert rows["watch lists"].detail.startswith("1 blacklist and 1 whitelist entries")
    assert rows["period rules"].detail.startswith("1 active of 1")
