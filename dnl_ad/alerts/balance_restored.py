""""Balance restored": one notice when a low- or zero-balance episode closes because the
client paid.

Not an alert with a sweep of its own: the low- and zero-balance sweeps decide it when
they close an episode (dnl_ad.alerts.balance_common, `_close_one`), in the same
transaction as the close, so it is decided exactly once per closed episode. It goes when

- BALANCE_RESTORED_NOTICE is on (the default);
- the episode closed because the balance is back above the threshold, and
  `client_payment` shows a payment received (PAYMENT_TYPES, successful, not refused,
  amount > 0) since the episode began: never for an episode closed by a setting change
  (notice flag off, client inactive, unlimited credit) nor by a threshold lowered without
  a payment;
- the client got a low or zero notice in that episode (one in the outbox since its start
  that did not fail; or the episode taken over from the original daemon, which told the
  client itself);
- no other balance episode of the client stays open (a zero-balance episode closing while
  the balance is still under the low threshold restores nothing yet; when both close on
  one payment, the last to close tells, once).

Dedupe key `balance_restored:<client>:<episode start>`; email_log type 21 ("Payment
Received" in the v5 UI). Recipients: the closing alert's. Template: the default
templates/balance_restored.*.j2 (the UI's mail_tmplate has no column for it).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from psycopg2 import sql

from .. import clock, db, migrations
from ..config import Settings
from ..notice import Notice

if TYPE_CHECKING:
    from ..pipeline import Pipeline
    from .balance_common import BalanceRule

log = logging.getLogger(__name__)

KIND = "balance_restored"
TEMPLATE = "balance_restored"
# client_payment.payment_type values that are money received from the client
# (PROVIDER_DB.md: 4 invoice payment received, 5 prepay received)
PAYMENT_TYPES = (4, 5)
BALANCE_KINDS = ("low_balance", "zero_balance")


def closed_by_payment(row: Mapping[str, Any]) -> bool:
    """The sweep row of a closing episode: closed because the balance is above the
    threshold (not a setting change) and a payment arrived since the episode began."""
    return bool(row["action"] == "close" and row["started_at"] is not None
                and row["status"] and row["enabled"] and not row["unlimited_credit"]
                and row["balance_usable"] and row["threshold"] is not None
                and row["balance"] > row["threshold"] and row["paid_at"] is not None)


def dedupe_key(client_id: int, started_at: dt.datetime) -> str:
    start = started_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{KIND}:{client_id}:{start}"


def _told_and_alone(cur: db.Cursor, schema: str, kind: str, client_id: int,
                    closed: Mapping[str, Any]) -> tuple[bool, bool]:
    """(the client got a low/zero notice in the episode, no other episode is open)."""
    cur.execute(sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM {outbox} o WHERE o.client_id = %(client)s"
        "   AND o.kind = ANY(%(kinds)s) AND o.created_at >= %(start)s"
        "   AND o.status <> 'failed') AS told,"
        " EXISTS (SELECT 1 FROM {episode} e WHERE e.client_id = %(client)s"
        "   AND e.kind <> %(kind)s) AS other_open").format(
            outbox=migrations.own(schema, "outbox"),
            episode=migrations.own(schema, "balance_episode")),
        {"client": client_id, "kinds": list(BALANCE_KINDS), "start": closed["started_at"],
         "kind": kind})
    got = cur.fetchone()
    told = got["told"] or (closed["adopted"] and closed["notices"] >= 1)
    return bool(told), not got["other_open"]


def decide(cur: db.Cursor, pipe: Pipeline, settings: Settings, rule: BalanceRule,
           row: Mapping[str, Any], closed: Mapping[str, Any], now: dt.datetime,
           zone: dt.tzinfo, recipients: Sequence[str]) -> bool:
    """Queue the notice for the episode just closed (in the caller's transaction) when it
    is due; True when newly queued."""
    from .balance_common import context as balance_context

    client_id = row["client_id"]
    told, alone = _told_and_alone(cur, settings.own_schema, rule.kind, client_id, closed)
    if not told:
        log.info("%s: client %s (%s): balance restored by a payment; no notice, it got no "
                 "%s notice in the episode", KIND, client_id, row["name"], rule.title)
        return False
    if not alone:
        log.debug("%s: client %s: another balance episode is still open", KIND, client_id)
        return False
    if not recipients:
        log.info("%s: client %s (%s): no valid address, no notice", KIND, client_id,
                 row["name"])
        return False
    paid_at: dt.datetime = row["paid_at"]
    context = {**balance_context(row, now, zone),
               "payment_amount": row["paid_amount"],
               "payment_time": clock.require_aware(paid_at).astimezone(zone)
               .strftime("%Y-%m-%d %H:%M:%S")}
    notice = Notice(
        kind=KIND, dedupe_key=dedupe_key(client_id, closed["started_at"]), template=TEMPLATE,
        client_id=client_id, recipients="; ".join(recipients), context=context,
        decided_at=now,
        alert_rule=(f"balance restored: {rule.title} episode since "
                    f"{closed['started_at'].astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC closed by "
                    f"a payment of {row['paid_amount']:.2f}; balance {row['balance']:.2f} > "
                    f"{row['threshold']:.2f}"),
        meta={"episode_start": closed["started_at"]})
    return pipe.queue(cur, notice)
