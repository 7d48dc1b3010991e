"""Alert 2, zero balance: conditions, the provider counter, episodes, bad rows, delivery."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from dnl_ad import clock
from dnl_ad.alerts import balance_common, zero_balance

from . import factories as f
from .conftest import utc

NOW = utc(2026, 11, 21, 10, 0)


def sweep(database, settings, now: dt.datetime = NOW):
    return zero_balance.sweep(database, now, settings, resolver=clock.ZoneResolver(),
                              complaints=balance_common.Complaints())


def queued(conn, client_id: int) -> list[dict[str, Any]]:
    return f.rows(conn, "SELECT * FROM dnl_ad.outbox WHERE kind = 'zero_balance' "
                  "AND client_id = %s ORDER BY id", (client_id,))


def provider(conn, client_id: int) -> tuple[int, dt.datetime | None]:
    r = f.rows(conn, "SELECT zero_balance_notice_time AS n, zero_balance_notice_last_sent AS t "
               "FROM client WHERE client_id = %s", (client_id,))[0]
    return r["n"], r["t"]


PREPAY = {"mode": 1, "zero_balance_notice": True}
POSTPAY = {"mode": 2, "zero_balance_notice": True, "allowed_credit": -300}

# (case id, client columns, balance, expected "queued" | "none" | "skipped", log text)
CASES = [
    ("prepay, zero", PREPAY, 0.0, "queued", None),
    ("prepay, negative", PREPAY, -5.0, "queued", None),
    ("prepay, a cent left", PREPAY, 0.01, "none", None),
    ("postpay, exactly at credit limit", POSTPAY, -300.0, "queued", None),
    ("postpay, beyond credit limit", POSTPAY, -300.5, "queued", None),
    ("postpay, inside credit", POSTPAY, -299.99, "none", None),
    ("postpay, zero balance is not zero credit", POSTPAY, 0.0, "none", None),
    ("unlimited credit never", {**POSTPAY, "unlimited_credit": True}, -10000.0, "none", None),
    ("inactive", {**PREPAY, "status": False}, -5.0, "none", None),
    ("notice flag off", {**PREPAY, "zero_balance_notice": False}, -5.0, "none", None),
    ("low-balance flag alone is not enough",
     {"mode": 1, "low_balance_notice": True}, -5.0, "none", None),
    ("no balance row", PREPAY, None, "skipped", "no c4_client_balance row"),
    ("unknown mode", {**PREPAY, "mode": 3}, -5.0, "skipped", "unknown client.mode 3"),
    ("NULL billing_email", {**PREPAY, "billing_email": None}, -5.0, "skipped",
     "no recipient address"),
    ("invalid billing_email", {**PREPAY, "billing_email": "billing@"}, -5.0, "skipped",
     "holds no valid address"),
]


@pytest.mark.parametrize("columns, balance, expected, log_text", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_case_table(conn, database, settings, caplog, columns, balance, expected,
                    log_text) -> None:
    f.system(conn)
    c = f.client(conn, balance=balance, **columns)
    caplog.set_level(logging.INFO)
    result = sweep(database, settings)
    rows = queued(conn, c["client_id"])
    if expected == "queued":
        assert len(rows) == 1 and result.queued == 1
        assert rows[0]["dedupe_key"] == f"zero_balance:{c['client_id']}:20261121T100000Z:1"
        assert provider(conn, c["client_id"]) == (1, NOW)
    else:
        assert rows == [] and result.queued == 0
        assert provider(conn, c["client_id"]) == (0, None)
    if expected == "skipped":
        assert result.skipped == 1
        assert any(log_text in r.getMessage() and f"client {c['client_id']}" in r.getMessage()
                   and "zero_balance" in r.getMessage() for r in caplog.records)


def test_counter_counts_the_episode_and_resets_on_payment(conn, database, settings) -> None:
    f.system(conn, sys_timezone="+08:00")
    c = f.client(conn, balance=-1.0, auto_send_zone=None, **PREPAY)
    cid = c["client_id"]
    days = [utc(2026, 11, 21, 10), utc(2026, 11, 21, 15), utc(2026, 11, 21, 16),
            utc(2026, 11, 22, 16)]
    assert [sweep(database, settings, t).queued for t in days] == [1, 0, 1, 1]
    assert provider(conn, cid) == (3, utc(2026, 11, 22, 16))
    f.set_balance(conn, cid, 25.0)
    assert sweep(database, settings, utc(2026, 11, 23, 1)).state_changes == 1
    assert provider(conn, cid) == (0, None)
    f.set_balance(conn, cid, 0.0)
    assert sweep(database, settings, utc(2026, 11, 23, 2)).queued == 1
    assert provider(conn, cid) == (1, utc(2026, 11, 23, 2))
    assert queued(conn, cid)[-1]["dedupe_key"] == f"zero_balance:{cid}:20261123T020000Z:1"


def test_duplicate_days_limits_zero_notices_too(conn, database, settings) -> None:
    f.system(conn)
    c = f.client(conn, balance=-1.0, low_config={"duplicate_days": 3}, **PREPAY)
    sent = [sweep(database, settings, utc(2026, 11, 21 + d, 12)).queued for d in range(5)]
    assert sent == [1, 1, 1, 0, 0]
    assert provider(conn, c["client_id"])[0] == 3


def test_zero_balance_supersedes_low_balance(conn, database, settings) -> None:
    """A client under both thresholds gets only the zero-balance notice (it says more);
    once back above zero but still low, the low-balance one goes; closing one leaves the
    other."""
    from dnl_ad.alerts import low_balance

    f.system(conn)
    c = f.client(conn, balance=-1.0, low_config={"actual_notify_balance": 50},
                 is_daily_balance_notification=True, **PREPAY)
    kw = {"resolver": clock.ZoneResolver(), "complaints": balance_common.Complaints()}
    assert zero_balance.sweep(database, NOW, settings, **kw).queued == 1
    assert low_balance.sweep(database, NOW, settings, **kw).queued == 0
    assert low_balance.sweep(database, NOW + dt.timedelta(days=1), settings, **kw).queued == 0
    f.set_balance(conn, c["client_id"], 10.0)  # above zero, still low
    later = NOW + dt.timedelta(days=1, hours=1)
    assert zero_balance.sweep(database, later, settings, **kw).state_changes == 1
    assert low_balance.sweep(database, later, settings, **kw).queued == 1
    kinds = {r["kind"] for r in f.rows(conn, "SELECT kind FROM dnl_ad.balance_episode")}
    assert kinds == {"low_balance"}
    # without the zero-balance flag, nothing supersedes the low-balance notice
    f.update(conn, "client", {"client_id": c["client_id"]}, zero_balance_notice=False)
    f.set_balance(conn, c["client_id"], -5.0)
    assert low_balance.sweep(database, NOW + dt.timedelta(days=2), settings,
                             **kw).queued == 1


def test_two_sweeps_at_the_same_now_queue_one_notice(conn, database, settings) -> None:
    f.system(conn)
    c = f.client(conn, balance=-1.0, **PREPAY)
    assert [sweep(database, settings).queued for _ in range(2)] == [1, 0]
    assert len(queued(conn, c["client_id"])) == 1
    assert provider(conn, c["client_id"]) == (1, NOW)


def test_episode_step_taken_by_another_daemon_is_not_repeated(conn, database, settings,
                                                              dsn) -> None:
    """A second daemon whose query ran before the first committed claims nothing."""
    from dnl_ad import db

    f.system(conn)
    c = f.client(conn, balance=-1.0, **PREPAY)
    other = db.Database(dsn)
    try:
        with other.transaction() as cur:
            cur.execute(balance_common.sweep_query(zero_balance.RULE, "dnl_ad"),
                        {"kind": "zero_balance", "now": NOW, "today": NOW.date()})
            stale = cur.fetchone()
        assert sweep(database, settings).queued == 1
        # the other daemon acts on its stale row: the claim finds the episode taken
        with other.transaction() as cur:
            got = balance_common._claim_many(cur, "dnl_ad", "zero_balance", [stale],
                                             NOW + dt.timedelta(seconds=1),
                                             {stale["client_id"]: NOW})
        assert got == {stale["client_id"]: None}
    finally:
        other.close()
    assert len(queued(conn, c["client_id"])) == 1


def test_null_credit_limit_counts_as_no_credit(conn, database, settings, caplog) -> None:
    """The contract's column is NOT NULL, but a live database may hold NULL: that client is
    served as having no credit (zero at balance 0), not skipped with a traceback."""
    f.system(conn)
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE client ALTER COLUMN allowed_credit DROP NOT NULL")
    owing = f.client(conn, balance=-1.0, **{**POSTPAY, "allowed_credit": None})
    fine = f.client(conn, balance=3.0, **{**POSTPAY, "allowed_credit": None})
    caplog.set_level(logging.WARNING)
    result = sweep(database, settings)
    assert result.queued == 1 and result.skipped == 0
    assert len(queued(conn, owing["client_id"])) == 1 and queued(conn, fine["client_id"]) == []
    assert "Traceback" not in caplog.text and "unknown client.mode" not in caplog.text


def test_a_batch_takes_its_episode_steps_together_and_gives_back_a_failed_ones(
        conn, database, settings, caplog) -> None:
    """Episode steps are taken for a whole batch at once (opening and repeating together);
    when one client's write fails, the batch is redone one client at a time and only that
    client's step is given back: it is served at the next sweep, the others once."""
    f.system(conn)
    a, b = (f.client(conn, balance=-1.0, **PREPAY) for _ in range(2))
    assert sweep(database, settings).queued == 2
    c, d = (f.client(conn, balance=-1.0, **PREPAY) for _ in range(2))
    with conn.cursor() as cur:  # the switch refuses writes to d's row for now
        cur.execute("CREATE TABLE frozen (client_id integer PRIMARY KEY)")
        cur.execute("INSERT INTO frozen VALUES (%s)", (d["client_id"],))
        cur.execute("CREATE FUNCTION refuse_frozen() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF EXISTS (SELECT 1 FROM frozen WHERE client_id = NEW.client_id) "
                    "THEN RAISE EXCEPTION 'client is frozen'; END IF; RETURN NEW; END $$")
        cur.execute("CREATE TRIGGER refuse_d BEFORE UPDATE ON client FOR EACH ROW "
                    "EXECUTE PROCEDURE refuse_frozen()")
    later = NOW + dt.timedelta(days=1)
    result = sweep(database, settings, later)
    assert result.queued == 3 and result.skipped == 1          # a, b repeat; c opens
    assert [len(queued(conn, x["client_id"])) for x in (a, b, c, d)] == [2, 2, 1, 0]
    steps = {r["client_id"]: r["notices"] for r in f.rows(
        conn, "SELECT client_id, notices FROM dnl_ad.balance_episode "
              "WHERE kind = 'zero_balance'")}
    assert steps == {a["client_id"]: 2, b["client_id"]: 2, c["client_id"]: 1}  # d: none
    with conn.cursor() as cur:
        cur.execute("DROP TRIGGER refuse_d ON client")
    assert sweep(database, settings, later + dt.timedelta(minutes=1)).queued == 1  # d now
    assert len(queued(conn, d["client_id"])) == 1
