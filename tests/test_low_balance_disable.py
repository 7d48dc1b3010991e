"""Alert 10, "Disable ingress trunks after N days" of low balance, on the REAL v5 schema
(explicit `now`): deactivated with rollback rows after N days, re-activated (exactly those)
by a payment, off unless LOW_BALANCE_DISABLE=true."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from dnl_ad import delivery
from dnl_ad.alerts import low_balance, low_balance_disable

from . import factories as f
from .conftest import utc
from .test_v5_alerts import body, records, seed_system, ui_client

T0 = utc(2026, 11, 21, 4, 0)


def low_client(conn, name: str, days: int | None = 3) -> tuple[dict[str, Any], dict[str, Any]]:
    """A client under its low-balance threshold with disable_trunks_days = `days`, two
    active ingress trunks, an egress trunk, and an ingress trunk an operator turned off."""
    c = ui_client(conn, name, balance=10.0, is_daily_balance_notification=True,
                  low_config={"value_type": 0, "actual_notify_balance": 50, "send_to": 1,
                              "disable_trunks_days": days})
    trunks = {
        "in1": f.trunk(conn, c["client_id"], alias=f"{name}-in1"),
        "in2": f.trunk(conn, c["client_id"], alias=f"{name}-in2"),
        "out": f.trunk(conn, c["client_id"], alias=f"{name}-out", ingress=False, egress=True),
        "off": f.trunk(conn, c["client_id"], alias=f"{name}-off", active=False),
    }
    return c, trunks


def states(conn, trunks: dict[str, dict[str, Any]]) -> dict[str, tuple[bool, bool]]:
    found = {r["resource_id"]: (r["active"], r["disable_by_alert"]) for r in f.rows(
        conn, "SELECT resource_id, active, disable_by_alert FROM resource")}
    return {k: found[t["resource_id"]] for k, t in trunks.items()}


def run(database, settings, now):
    """What the daemon does at `now`: the low-balance sweep, then this one."""
    low_balance.sweep(database, now, settings)
    return low_balance_disable.sweep(database, now, settings)


def test_disabled_after_n_days_and_re_activated_by_a_payment(v5_conn, v5_database,
                                                             v5_settings, smtp) -> None:
    seed_system(v5_conn)
    settings = v5_settings.replace(low_balance_disable=True)
    c, trunks = low_client(v5_conn, "late")
    assert run(v5_database, settings, T0).state_changes == 0         # the episode opens
    assert run(v5_database, settings, T0 + dt.timedelta(days=2, hours=23)).state_changes == 0
    before = records(v5_conn, "resource_record")

    day3 = T0 + dt.timedelta(days=3)
    result = run(v5_database, settings, day3)
    assert (result.state_changes, result.queued) == (1, 1)
    assert states(v5_conn, trunks) == {"in1": (False, True), "in2": (False, True),
                                       "out": (True, False), "off": (False, False)}
    assert records(v5_conn, "resource_record") > before  # the engine's change feed saw it
    modif = f.rows(v5_conn, "SELECT module, type, name, rollback, rollback_extra_info, "
                   "rollback_flg FROM modif_log ORDER BY id")
    assert [(m["module"], m["type"], m["name"], m["rollback_flg"]) for m in modif] == [
        ("Trunk", 4, "dnl_ad", None)] * 2
    for m, k in zip(modif, ("in1", "in2"), strict=True):
        assert m["rollback"].startswith("UPDATE resource SET active = true, disable_by_alert")
        assert m["rollback"].endswith(f"WHERE resource_id = {trunks[k]['resource_id']}")
    assert run(v5_database, settings, day3 + dt.timedelta(minutes=1)).state_changes == 0
    delivery.deliver(v5_database, settings, now=day3)
    [mail] = [m for m in smtp.messages if m.message["X-DNL-AD-Kind"] == "low_balance_disable"]
    assert mail.rcpt_tos == ["billing@late.example"]
    text = body(mail)
    assert "late-in1, late-in2" in text and "DEACTIVATED" in text and "10.00 USD" in text
    assert "2026-11-21 12:00:00 GMT+08:00" in text       # the episode's start, local
    assert f.rows(v5_conn, "SELECT type FROM email_log WHERE subject LIKE 'Trunks%%'") == [
        {"type": 1}]

    # a payment: DNL records it and lifts the balance; the episode closes; exactly the
    # trunks dnl_ad deactivated come back, and the client is told
    smtp.messages.clear()
    paid = day3 + dt.timedelta(days=1)
    f.insert(v5_conn, "client_payment", payment_time=paid, amount=Decimal(100), result=True,
             client_id=c["client_id"], payment_type=5, current_balance=Decimal(110))
    f.set_balance(v5_conn, c["client_id"], 110.0)
    result = run(v5_database, settings, paid)
    assert (result.state_changes, result.queued) == (1, 1)
    assert states(v5_conn, trunks) == {"in1": (True, False), "in2": (True, False),
                                       "out": (True, False), "off": (False, False)}
    assert [m["rollback_flg"] for m in f.rows(v5_conn, "SELECT rollback_flg FROM modif_log")] \
        == [1, 1]  # the UI offers no stale rollback
    delivery.deliver(v5_database, settings, now=paid)
    # the trunks' mail; the payment also closed the notified episode: "balance restored"
    kinds = {m.message["X-DNL-AD-Kind"]: m for m in smtp.messages}
    assert set(kinds) == {"low_balance_disable", "balance_restored"}
    mail = kinds["low_balance_disable"]
    assert "ACTIVE AGAIN" in body(mail) and "110.00 USD" in body(mail)
    assert run(v5_database, settings, paid + dt.timedelta(minutes=1)).state_changes == 0


def test_off_by_default(v5_conn, v5_database, v5_settings) -> None:
    seed_system(v5_conn)
    assert v5_settings.low_balance_disable is False
    _, trunks = low_client(v5_conn, "spared")
    run(v5_database, v5_settings, T0)
    assert run(v5_database, v5_settings, T0 + dt.timedelta(days=10)).state_changes == 0
    assert states(v5_conn, trunks)["in1"] == (True, False)
    assert f.rows(v5_conn, "SELECT count(*) AS n FROM modif_log")[0]["n"] == 0


def test_zero_or_null_days_never_and_an_operators_rollback_wins(v5_conn, v5_database,
                                                                v5_settings) -> None:
    seed_system(v5_conn)
    settings = v5_settings.replace(low_balance_disable=True)
    _, zero = low_client(v5_conn, "zero", days=0)
    _, null = low_client(v5_conn, "null", days=None)
    c, kept = low_client(v5_conn, "kept", days=1)
    run(v5_database, settings, T0)
    assert run(v5_database, settings, T0 + dt.timedelta(days=1)).state_changes == 1
    assert states(v5_conn, zero)["in1"] == states(v5_conn, null)["in1"] == (True, False)
    # the operator presses rollback on one trunk: dnl_ad never disables it again for this
    # episode, and the payment re-activates only the other one
    [modif] = f.rows(v5_conn, "SELECT rollback FROM modif_log WHERE detail LIKE %s",
                     (f"%{kept['in1']['alias']}%",))
    with v5_conn.cursor() as cur:
        cur.execute(modif["rollback"])
    assert run(v5_database, settings, T0 + dt.timedelta(days=2)).state_changes == 0
    assert states(v5_conn, kept)["in1"] == (True, False)
    f.set_balance(v5_conn, c["client_id"], 500.0)
    result = run(v5_database, settings, T0 + dt.timedelta(days=3))
    assert result.state_changes == 1
    assert states(v5_conn, kept)["in2"] == (True, False)
    [enabled] = f.rows(v5_conn, "SELECT text_body FROM dnl_ad.outbox WHERE dedupe_key "
                       "LIKE %s", (f"low_balance_disable:{c['client_id']}:%:enabled",))
    assert "kept-in2" in enabled["text_body"] and "kept-in1" not in enabled["text_body"]


def test_check_lists_the_setting(v5_conn, v5_database, v5_settings) -> None:
    from dnl_ad import check

    seed_system(v5_conn)
    low_client(v5_conn, "listed", days=5)
    with v5_database.transaction() as cur:
        rows = {r.check: r for r in check.check_settings(cur, v5_settings, T0)}
    assert rows["low balance disable"].detail == (
        "LOW_BALANCE_DISABLE=false (off: nothing is disabled); 1 active client(s) with "
        "disable_trunks_days > 0; 0 trunk(s) of 0 client(s) disabled by dnl_ad now")
