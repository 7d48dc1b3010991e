"""Alert 13, v5 traffic_alert rows, on the REAL v5 schema with explicit `now`: a quiet
listed carrier that surges gets one mail from the row's own template; unlisted carriers,
a busy previous hour, a small current hour or another code name get none."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dnl_ad import delivery
from dnl_ad.alerts import traffic_alert

from . import factories as f
from .conftest import utc
from .test_v5_alerts import email_log, seed_system, ui_client

NOW = utc(2026, 11, 21, 10, 15)       # judges 09:00-10:00 against 08:00-09:00
PREV, CUR = utc(2026, 11, 21, 8), utc(2026, 11, 21, 9)


def attempts(conn, client: dict[str, Any], hour: dt.datetime, calls: int,
             code_name: str = "Cuba Mobile") -> None:
    f.traffic(conn, report_time=hour, ingress_client_id=client["client_id"],
              ingress_id=client["trunk"], ingress_total_calls=calls, not_zero_calls=0,
              ingress_code_name=code_name)


def carrier(conn, name: str) -> dict[str, Any]:
    c = ui_client(conn, name)
    c["trunk"] = f.trunk(conn, c["client_id"], alias=f"{name}-in")["resource_id"]
    return c


def alert(conn, listed: list[dict[str, Any]], **values: Any) -> dict[str, Any]:
    base = {"less_hour": 10, "greater_hour": 400, "email": "fraud@carrier.example",
            "carriers": ",".join(str(c["client_id"]) for c in listed), "code_name": "",
            "mail_from": "traffic@carrier.example", "active": True,
            "mail_subject": "Surge: {carrier} {current_hour_calls} after {previous_hour_calls}",
            "mail_content": "<p>{carrier} to {code_name}</p>"}
    return f.insert(conn, "traffic_alert", **{**base, **values})


def test_a_listed_carrier_that_surges_gets_one_mail(v5_conn, v5_database, v5_settings,
                                                    smtp) -> None:
    seed_system(v5_conn)
    listed, other = carrier(v5_conn, "listed"), carrier(v5_conn, "other")
    alert(v5_conn, [listed])
    for c in (listed, other):
        attempts(v5_conn, c, PREV, 5)
        attempts(v5_conn, c, CUR, 500)
    assert traffic_alert.sweep(v5_database, NOW, v5_settings).queued == 1
    again = traffic_alert.sweep(v5_database, NOW + dt.timedelta(minutes=5), v5_settings)
    assert (again.queued, again.duplicates) == (0, 1)
    delivery.deliver(v5_database, v5_settings, now=NOW)
    [mail] = smtp.messages
    assert mail.rcpt_tos == ["fraud@carrier.example"]    # email is char(255): padded
    assert str(mail.message["Subject"]) == "Surge: listed 500 after 5"
    assert "traffic@carrier.example" in str(mail.message["From"])
    assert [(r["client_id"], r["type"], r["status"]) for r in email_log(v5_conn)] == [
        (listed["client_id"], 22, 0)]


def test_no_row_in_the_previous_hour_counts_as_zero(v5_conn, v5_database,
                                                    v5_settings) -> None:
    seed_system(v5_conn)
    c = carrier(v5_conn, "fresh")
    alert(v5_conn, [c], mail_subject=None, mail_content=None)   # default template
    attempts(v5_conn, c, CUR, 401)
    result = traffic_alert.sweep(v5_database, NOW, v5_settings.replace(dry_run=True))
    assert result.queued == 1
    assert "401 attempts after 0" in result.mails[0].subject


def test_both_hour_limits_are_strict_and_each_must_hold(v5_conn, v5_database,
                                                        v5_settings) -> None:
    seed_system(v5_conn)
    busy, small, edge = carrier(v5_conn, "busy"), carrier(v5_conn, "small"), \
        carrier(v5_conn, "edge")
    alert(v5_conn, [busy, small, edge])
    attempts(v5_conn, busy, PREV, 50)      # previous hour not quiet
    attempts(v5_conn, busy, CUR, 500)
    attempts(v5_conn, small, PREV, 5)
    attempts(v5_conn, small, CUR, 300)     # current hour not big
    attempts(v5_conn, edge, PREV, 10)      # not less than 10
    attempts(v5_conn, edge, CUR, 500)
    assert traffic_alert.sweep(v5_database, NOW, v5_settings).queued == 0


def test_code_names_are_judged_one_by_one(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    c = carrier(v5_conn, "dest")
    alert(v5_conn, [c], code_name="Cuba Mobile, Latvia Premium")
    attempts(v5_conn, c, CUR, 500, code_name="France Fixed")   # not listed
    assert traffic_alert.sweep(v5_database, NOW, v5_settings).queued == 0
    attempts(v5_conn, c, CUR, 450, code_name="Latvia Premium")
    result = traffic_alert.sweep(v5_database, NOW, v5_settings.replace(dry_run=True))
    assert result.queued == 1 and "Latvia Premium" in result.mails[0].html


def test_an_hour_is_judged_once_it_has_settled(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    c = carrier(v5_conn, "late")
    alert(v5_conn, [c])
    attempts(v5_conn, c, CUR, 500)
    # at 10:09 the last settled hour is 08:00-09:00
    assert traffic_alert.sweep(v5_database, utc(2026, 11, 21, 10, 9), v5_settings).queued == 0
    assert traffic_alert.sweep(v5_database, utc(2026, 11, 21, 10, 10), v5_settings).queued == 1


def test_inactive_and_unusable_rows_are_left_out(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    c = carrier(v5_conn, "quiet")
    alert(v5_conn, [c], active=False)
    alert(v5_conn, [c], carriers="acme corp")
    attempts(v5_conn, c, CUR, 500)
    assert traffic_alert.sweep(v5_database, NOW, v5_settings).queued == 0
    assert "not a list of client ids" in traffic_alert.problem({"less_hour": 1,
                                                                "greater_hour": 2,
                                                                "carriers": "acme"})


def test_check_lists_traffic_alerts(v5_conn, v5_settings) -> None:
    from dnl_ad import check

    seed_system(v5_conn)
    c = carrier(v5_conn, "checked")
    alert(v5_conn, [c])
    alert(v5_conn, [c], carriers="acme corp")
    rows = {r.check: r for r in check.run_checks(v5_settings, NOW)}
    assert rows["traffic alerts"].status == "WARN"
    assert "2 active" in rows["traffic alerts"].detail
    assert "row 2: carriers 'acme corp' is not a list of client ids" in \
        rows["traffic alerts"].detail
