""""Balance restored" (issue 14, item 4) on the REAL DNL v5 schema: one notice when a
payment closes a notified low/zero-balance episode; none for a never-notified one, none
when BALANCE_RESTORED_NOTICE is off, none when a setting change closes the episode."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from typing import Any

from dnl_ad import delivery, preview
from dnl_ad.alerts import balance_restored, low_balance, zero_balance

from . import factories as f
from .conftest import utc
from .test_v5_alerts import body, seed_system, ui_client

T0 = utc(2026, 11, 21, 4, 0)
PAID = T0 + dt.timedelta(hours=2)
LATER = T0 + dt.timedelta(hours=3)
LOW = {"value_type": 0, "actual_notify_balance": 50, "send_to": 1}


def _client(conn, name: str = "acme", balance: float = 10.0, **values: Any) -> dict[str, Any]:
    return ui_client(conn, name, balance=balance, is_daily_balance_notification=True,
                     low_config=LOW, **values)


def _pay(conn, client_id: int, amount: float, at: dt.datetime = PAID, *,
         payment_type: int = 5, balance: float | None = None) -> None:
    f.insert(conn, "client_payment", client_id=client_id, payment_time=at, amount=amount,
             result=True, payment_type=payment_type, approved=True)
    if balance is not None:
        f.set_balance(conn, client_id, balance)


def _restored(conn) -> list[dict[str, Any]]:
    return f.rows(conn, "SELECT dedupe_key, client_id, email_type, to_addrs, subject "
                  "FROM dnl_ad.outbox WHERE kind = 'balance_restored' ORDER BY id")


def _episodes(conn) -> int:
    return f.rows(conn, "SELECT count(*) AS n FROM dnl_ad.balance_episode")[0]["n"]


def test_a_payment_closing_a_notified_episode_sends_one_notice(v5_conn, v5_database,
                                                               v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = _client(v5_conn)
    assert low_balance.sweep(v5_database, T0, v5_settings).queued == 1
    assert delivery.deliver(v5_database, v5_settings, now=T0).sent == 1
    _pay(v5_conn, c["client_id"], 300, balance=310.0)
    result = low_balance.sweep(v5_database, LATER, v5_settings)
    assert result.queued == 1 and _episodes(v5_conn) == 0
    rows = _restored(v5_conn)
    assert [(r["dedupe_key"], r["email_type"], r["to_addrs"]) for r in rows] == [
        (f"balance_restored:{c['client_id']}:20261121T040000Z", 21, ["billing@acme.example"])]
    # again: nothing more (the episode is closed, the key is taken)
    assert low_balance.sweep(v5_database, LATER + dt.timedelta(minutes=1),
                             v5_settings).queued == 0
    assert delivery.deliver(v5_database, v5_settings, now=LATER).sent == 1
    mail = smtp.messages[-1]
    assert mail.message["Subject"] == "Balance restored for Acme Ltd: balance 310.00 USD"
    text = body(mail)
    assert "payment of 300.00 USD on 2026-11-21 14:00:00" in text  # the client's zone, +08:00
    assert "back above the alert threshold of 50.00 USD" in text
    log = f.rows(v5_conn, "SELECT type, status FROM email_log WHERE client_id = %s "
                 "ORDER BY id", (c["client_id"],))
    assert log == [{"type": 1, "status": 0}, {"type": 21, "status": 0}]
    # a new drop opens a new episode; its own payment earns its own notice
    f.set_balance(v5_conn, c["client_id"], 5.0)
    day2 = T0 + dt.timedelta(days=1)
    assert low_balance.sweep(v5_database, day2, v5_settings).queued == 1
    _pay(v5_conn, c["client_id"], 100, day2 + dt.timedelta(hours=1), balance=105.0)
    assert low_balance.sweep(v5_database, day2 + dt.timedelta(hours=2),
                             v5_settings).queued == 1
    assert len(_restored(v5_conn)) == 2


def test_zero_then_low_closing_on_one_payment_sends_one(v5_conn, v5_database, v5_settings,
                                                        smtp) -> None:
    """Both episodes open (zero supersedes low); one payment closes both: one notice.
    A payment that lifts the balance above zero only restores nothing yet."""
    seed_system(v5_conn)
    c = _client(v5_conn, balance=20.0, zero_balance_notice=True)
    assert low_balance.sweep(v5_database, T0, v5_settings).queued == 1
    f.set_balance(v5_conn, c["client_id"], -5.0)
    t1 = T0 + dt.timedelta(minutes=10)
    assert zero_balance.sweep(v5_database, t1, v5_settings).queued == 1
    _pay(v5_conn, c["client_id"], 30, t1 + dt.timedelta(minutes=5), balance=25.0)
    t2 = t1 + dt.timedelta(minutes=10)
    low_balance.sweep(v5_database, t2, v5_settings)
    zero_balance.sweep(v5_database, t2, v5_settings)
    assert _restored(v5_conn) == [] and _episodes(v5_conn) == 1  # still low
    _pay(v5_conn, c["client_id"], 100, t2 + dt.timedelta(minutes=5), balance=125.0)
    t3 = t2 + dt.timedelta(minutes=10)
    assert low_balance.sweep(v5_database, t3, v5_settings).queued == 1
    assert zero_balance.sweep(v5_database, t3, v5_settings).queued == 0
    assert [r["dedupe_key"] for r in _restored(v5_conn)] == [
        f"balance_restored:{c['client_id']}:20261121T040000Z"]


def test_none_for_a_never_notified_episode(v5_conn, v5_database, v5_settings, smtp,
                                           caplog) -> None:
    """The episode's low notice was refused for good (550): the client never got one."""
    seed_system(v5_conn)
    c = _client(v5_conn)
    smtp.reply_for("billing@acme.example", "550 5.1.1 no such user")
    low_balance.sweep(v5_database, T0, v5_settings)
    assert delivery.deliver(v5_database, v5_settings, now=T0).failed == 1
    _pay(v5_conn, c["client_id"], 300, balance=310.0)
    caplog.set_level("INFO")
    assert low_balance.sweep(v5_database, LATER, v5_settings).queued == 0
    assert _restored(v5_conn) == [] and _episodes(v5_conn) == 0
    assert "got no low balance notice in the episode" in caplog.text


def test_none_when_the_flag_is_off(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = _client(v5_conn)
    low_balance.sweep(v5_database, T0, v5_settings)
    _pay(v5_conn, c["client_id"], 300, balance=310.0)
    off = v5_settings.replace(balance_restored_notice=False)
    assert low_balance.sweep(v5_database, LATER, off).queued == 0
    assert _restored(v5_conn) == [] and _episodes(v5_conn) == 0


def test_none_when_a_setting_change_closes_the_episode(v5_conn, v5_database, v5_settings,
                                                       smtp) -> None:
    """Flag turned off, client deactivated, unlimited credit, threshold lowered without a
    payment, or a payment of a kind that is not money received: no notice (even with a
    payment in the episode for the setting changes)."""
    seed_system(v5_conn)
    changes = {
        "flag": lambda cid: f.update(v5_conn, "client", {"client_id": cid},
                                     is_daily_balance_notification=False),
        "inactive": lambda cid: f.update(v5_conn, "client", {"client_id": cid}, status=False),
        "unlimited": lambda cid: f.update(v5_conn, "client", {"client_id": cid},
                                          unlimited_credit=True),
    }
    ids = {}
    for name in [*changes, "threshold", "creditnote"]:
        ids[name] = _client(v5_conn, name)["client_id"]
    assert low_balance.sweep(v5_database, T0, v5_settings).queued == 5
    for name, change in changes.items():
        _pay(v5_conn, ids[name], 1)  # a payment, but the balance stays low
        change(ids[name])
    f.update(v5_conn, "client_low_balance_config", {"client_id": ids["threshold"]},
             actual_notify_balance=5)
    _pay(v5_conn, ids["creditnote"], 300, payment_type=8, balance=310.0)
    assert low_balance.sweep(v5_database, LATER, v5_settings).queued == 0
    assert _episodes(v5_conn) == 0 and _restored(v5_conn) == []


def test_dry_run_and_preview_show_it(v5_conn, v5_database, v5_settings, smtp) -> None:
    seed_system(v5_conn)
    c = _client(v5_conn)
    low_balance.sweep(v5_database, T0, v5_settings)
    _pay(v5_conn, c["client_id"], 300, balance=310.0)
    dry = v5_settings.replace(dry_run=True)
    result = low_balance.sweep(v5_database, LATER, dry)
    assert [m.subject for m in result.mails] == ["Balance restored for Acme Ltd: "
                                                 "balance 310.00 USD"]
    assert _episodes(v5_conn) == 1 and _restored(v5_conn) == []  # nothing written
    out = io.StringIO()
    assert preview.main(v5_settings, "15", client_id=c["client_id"], at=LATER, out=out) == 0
    assert "Subject: Balance restored for Acme Ltd" in out.getvalue()
    out = io.StringIO()
    assert preview.main(v5_settings, "1", client_id=c["client_id"], at=LATER, out=out) == 1


def test_closed_by_payment_needs_every_condition() -> None:
    row = {"action": "close", "started_at": T0, "status": True, "enabled": True,
           "unlimited_credit": False, "balance_usable": True, "threshold": Decimal(50),
           "balance": Decimal(60), "paid_at": PAID}
    assert balance_restored.closed_by_payment(row)
    for key, value in [("status", False), ("enabled", False), ("unlimited_credit", True),
                       ("paid_at", None), ("balance", Decimal(50)), ("started_at", None)]:
        assert not balance_restored.closed_by_payment({**row, key: value}), key
