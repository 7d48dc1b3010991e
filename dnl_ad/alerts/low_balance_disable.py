"""Alert 10: deactivate a client's ingress trunks after N days of low balance.

The v5 UI's low-balance settings have "Disable ingress trunks after [N] days"
(`client_low_balance_config.disable_trunks_days`, default 5; 0/NULL: never) and nothing in
an open DNL install acts on it. Blocking a carrier's customer for money is the carrier's
decision: nothing is disabled unless LOW_BALANCE_DISABLE=true.

When: the client's low-balance episode (alert 1, dnl_ad.balance_episode) has been open for
N days (its start + N x 24 h <= now). Then, like the trunk suspension, in one savepoint:
the client's active ingress trunks get `active=false, disable_by_alert=true,
update_by='dnl_ad'`, a modif_log row each (module 'Trunk', type 4, rollback re-activating
it, run by the UI as is), dnl_ad's record of exactly those trunks, and the notice. Once
per episode: an operator who re-activates a trunk (the rollback button) wins.

When the episode closes (the low-balance sweep closes it when a payment lifts the
balance above the threshold, or the notification is turned off), the trunks dnl_ad
deactivated and that are still deactivated by an alert are re-activated (never any other
trunk), their modif_log rows are marked rolled back (rollback_flg 1, so the UI offers no
stale rollback), and the client is told. This runs whatever LOW_BALANCE_DISABLE says, so
turning the setting off never leaves a trunk off.

One query finds both kinds of client (`disable`, `enable`); clients with nothing to do
never leave the database.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from .. import clock, db, migrations
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, recipients
from .balance_common import EPISODE_TABLE
from .low_balance import THRESHOLD
from .trunk_common import format_local
from .trunk_suspended import MODIF_TRUNK_DISABLED, ROLLBACK_AS_IS, rollback_statement

log = logging.getLogger(__name__)

KIND = "low_balance_disable"
TEMPLATE = "low_balance_disable"  # no mail_tmplate column: the project's default template
DISABLED, TRUNKS = "low_balance_disable", "low_balance_disabled_trunk"
ROLLED_BACK = 1                   # modif_log.rollback_flg: done

_DECIDE = """
WITH cand AS (
    SELECT 'disable' AS action, e.client_id, e.started_at AS episode_start
    FROM {episodes} e
    JOIN client_low_balance_config g ON g.client_id = e.client_id
    JOIN client c ON c.client_id = e.client_id
    LEFT JOIN {disabled} d ON d.client_id = e.client_id
    WHERE %(enabled)s AND e.kind = 'low_balance' AND c.status
      AND coalesce(g.disable_trunks_days, 0) > 0
      AND e.started_at + make_interval(days => g.disable_trunks_days) <= %(now)s
      AND d.client_id IS NULL
    UNION ALL
    SELECT 'enable', d.client_id, d.episode_start
    FROM {disabled} d
    LEFT JOIN {episodes} e ON e.kind = 'low_balance' AND e.client_id = d.client_id
                          AND e.started_at = d.episode_start
    WHERE e.client_id IS NULL
)
SELECT cand.*, cl.name, cl.company, cl.billing_email, cl.email, cl.auto_send_zone,
       cl.daily_balance_send_time_zone, cfg.send_to, cfg.disable_trunks_days,
       cur.code AS currency, b.balance::numeric AS balance,
       ({threshold})::numeric AS threshold, sp.sys_timezone, sp.finance_email
FROM cand
JOIN client cl ON cl.client_id = cand.client_id
LEFT JOIN client_low_balance_config cfg ON cfg.client_id = cl.client_id
LEFT JOIN currency cur ON cur.currency_id = cl.currency_id
LEFT JOIN c4_client_balance b ON b.client_id = cl.client_id::text
LEFT JOIN (SELECT s.sys_timezone, s.finance_email FROM system_parameter s
           ORDER BY s.sys_id LIMIT 1) sp ON true
ORDER BY cand.action, cand.client_id
"""


def dedupe_key(client_id: int, episode_start: dt.datetime, event: str) -> str:
    """`low_balance_disable:<client>:<episode start, UTC compact>:<disabled|enabled>`."""
    return (f"{KIND}:{client_id}:{episode_start.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}:"
            f"{event}")


def context(row: Mapping[str, Any], event: str, trunks: list[str], now: dt.datetime,
            zone: dt.tzinfo) -> dict[str, Any]:
    """Tags of the low_balance_disable template; `event` is disabled or enabled."""
    return {
        "company_name": row["company"] or row["name"] or "",
        "client_name": row["name"] or "",
        "event": event,
        "balance": Decimal(row["balance"]) if row["balance"] is not None else "unknown",
        "notify_balance": (Decimal(row["threshold"]) if row["threshold"] is not None
                           else "unknown"),
        "days": int(row["disable_trunks_days"] or 0),
        "since": format_local(row["episode_start"], zone),
        "trunks": ", ".join(trunks),
        "now": format_local(now, zone),
        "currency": row["currency"] or "",
    }


class LowBalanceDisableSweep:
    """One sweep at one `now` (see the module docstring)."""

    def __init__(self, database: db.Database, now: dt.datetime, settings: Settings) -> None:
        self.database = database
        self.now = clock.require_aware(now)
        self.settings = settings
        schema = settings.own_schema
        self.episodes = migrations.own(schema, EPISODE_TABLE)
        self.disabled = migrations.own(schema, DISABLED)
        self.trunks = migrations.own(schema, TRUNKS)
        self.result = SweepResult(KIND)

    def run(self) -> SweepResult:
        with db.unit_of_work(self.database, dry_run=self.settings.dry_run) as cur:
            cur.execute(sql.SQL(_DECIDE).format(episodes=self.episodes, disabled=self.disabled,
                                                threshold=THRESHOLD),
                        {"enabled": self.settings.low_balance_disable, "now": self.now})
            rows = cur.fetchall()
            if rows:
                pipe = Pipeline.open(cur, self.settings)
                for row in rows:
                    self._one(cur, pipe, row)
                self.result.queued += pipe.queued
                self.result.duplicates += pipe.duplicates
                self.result.skipped += pipe.failed
                self.result.mails.extend(pipe.mails)
        return self.result

    def _one(self, cur: db.Cursor, pipe: Pipeline, row: Mapping[str, Any]) -> None:
        action, cid = row["action"], row["client_id"]
        try:
            with db.savepoint(cur, "low_balance_disable_item"):
                trunks = (self._disable(cur, row) if action == "disable"
                          else self._enable(cur, row))
                if trunks is None:  # another sweep got there first
                    self.result.duplicates += 1
                    return
                if trunks:
                    self._notify(cur, pipe, row, trunks)
        except db.CONNECTION_ERRORS:
            raise
        except Exception:
            self.result.skipped += 1
            log.exception("low_balance_disable: client %s (%s): %s failed and was rolled "
                          "back whole; retried next sweep", cid, row["name"], action)
            return
        self.result.state_changes += 1
        dry = "[dry run] would have: " if self.settings.dry_run else ""
        if action == "disable":
            log.warning("low_balance_disable: %sclient %s (%s): low balance since %s (%s "
                        "days allowed): ingress trunks deactivated: %s", dry, cid,
                        row["name"], row["episode_start"].isoformat(),
                        row["disable_trunks_days"], ", ".join(trunks) or "(none active)")
        else:
            log.warning("low_balance_disable: %sclient %s (%s): low-balance episode closed: "
                        "trunks re-activated: %s", dry, cid, row["name"],
                        ", ".join(trunks) or "(none: re-activated or changed by hand)")

    def _disable(self, cur: db.Cursor, row: Mapping[str, Any]) -> list[str] | None:
        """The flip (own row), the trunks, their modif_log rows and record."""
        cid = row["client_id"]
        cur.execute(sql.SQL("INSERT INTO {} (client_id, episode_start, disabled_at) "
                            "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING client_id")
                    .format(self.disabled), (cid, row["episode_start"], self.now))
        if cur.fetchone() is None:
            return None
        cur.execute("UPDATE resource SET active = false, disable_by_alert = true, "
                    "update_by = 'dnl_ad', update_at = %s WHERE client_id = %s AND ingress "
                    "AND active RETURNING resource_id, alias", (self.now, cid))
        done = sorted(cur.fetchall(), key=lambda r: r["resource_id"])
        if not done:
            return []
        modif = []
        for trunk in done:
            detail = (f"Trunk {trunk['alias']} (id {trunk['resource_id']}) of client "
                      f"{row['name']} (id {cid}) disabled by dnl_ad: low balance since "
                      f"{row['episode_start'].isoformat()}, more than "
                      f"{row['disable_trunks_days']} day(s)")
            modif.append((self.now, MODIF_TRUNK_DISABLED, detail,
                          rollback_statement(cur, trunk["resource_id"]),
                          f"Re-activate trunk id {trunk['resource_id']} disabled by dnl_ad "
                          "for low balance", ROLLBACK_AS_IS))
        ids = execute_values(cur, "INSERT INTO modif_log (time, module, type, name, detail, "
                             "rollback, rollback_msg, rollback_extra_info) VALUES %s "
                             "RETURNING id", modif,
                             template="(%s, 'Trunk', %s, 'dnl_ad', %s, %s, %s, %s)",
                             fetch=True)
        execute_values(cur, sql.SQL("INSERT INTO {} (client_id, resource_id, modif_log_id) "
                                    "VALUES %s").format(self.trunks).as_string(cur),
                       [(cid, t["resource_id"], m["id"]) for t, m in zip(done, ids,
                                                                          strict=True)])
        return [t["alias"] for t in done]

    def _enable(self, cur: db.Cursor, row: Mapping[str, Any]) -> list[str] | None:
        """Re-activate exactly the trunks dnl_ad deactivated and that an alert still
        holds; an operator's change to one of them wins."""
        cid = row["client_id"]
        cur.execute(sql.SQL("DELETE FROM {} WHERE client_id = %s AND episode_start = %s "
                            "RETURNING client_id").format(self.disabled),
                    (cid, row["episode_start"]))
        if cur.fetchone() is None:
            return None
        cur.execute(sql.SQL(
            "WITH mine AS (DELETE FROM {t} WHERE client_id = %(c)s "
            "RETURNING resource_id, modif_log_id), "
            "back AS (UPDATE resource r SET active = true, disable_by_alert = false, "
            "update_by = 'dnl_ad', update_at = %(now)s FROM mine "
            "WHERE r.resource_id = mine.resource_id AND NOT r.active AND r.disable_by_alert "
            "RETURNING r.resource_id, r.alias, mine.modif_log_id), "
            "flagged AS (UPDATE modif_log m SET rollback_flg = %(done)s FROM back "
            "WHERE m.id = back.modif_log_id AND m.rollback_flg IS NULL RETURNING m.id) "
            "SELECT back.alias, (SELECT count(*) FROM flagged) AS flagged FROM back "
            "ORDER BY back.resource_id").format(t=self.trunks),
            {"c": cid, "now": self.now, "done": ROLLED_BACK})
        return [r["alias"] for r in cur.fetchall()]

    def _notify(self, cur: db.Cursor, pipe: Pipeline, row: Mapping[str, Any],
                trunks: list[str]) -> None:
        event = "disabled" if row["action"] == "disable" else "enabled"
        audience = recipients.low_balance_audience(row["send_to"])
        if audience == recipients.OWNER:  # the client is always told
            audience = recipients.BOTH
        to, extra = recipients.addresses(audience, row, {"finance_email": row["finance_email"]},
                                         self.settings)
        zone = clock.client_zone(row["client_id"], row["auto_send_zone"],
                                 row["daily_balance_send_time_zone"], row["sys_timezone"])
        pipe.queue(cur, Notice(
            kind=KIND, dedupe_key=dedupe_key(row["client_id"], row["episode_start"], event),
            template=TEMPLATE, client_id=row["client_id"], recipients=to,
            extra_recipients=extra, context=context(row, event, trunks, self.now, zone),
            decided_at=self.now,
            alert_rule=(f"low balance for {row['disable_trunks_days']} day(s): ingress trunks "
                        "disabled" if event == "disabled"
                        else "low-balance episode closed: ingress trunks re-activated"),
            meta={"episode_start": row["episode_start"], "event": event}))


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Run one sweep at `now`."""
    return LowBalanceDisableSweep(database, now, settings).run()


def check_line(cur: db.Cursor, settings: Settings) -> str:
    """For `dnl-ad check`: the setting, clients it applies to, trunks held now."""
    cur.execute("SELECT count(*) AS n FROM client_low_balance_config g JOIN client c "
                "ON c.client_id = g.client_id WHERE c.status "
                "AND coalesce(g.disable_trunks_days, 0) > 0")
    days = cur.fetchone()["n"]
    cur.execute(sql.SQL("SELECT count(*) AS n, count(DISTINCT client_id) AS clients FROM {}")
                .format(migrations.own(settings.own_schema, TRUNKS)))
    held = cur.fetchone()
    state = "true" if settings.low_balance_disable else "false (off: nothing is disabled)"
    return (f"LOW_BALANCE_DISABLE={state}; {days} active client(s) with disable_trunks_days "
            f"> 0; {held['n']} trunk(s) of {held['clients']} client(s) disabled by dnl_ad now")
