"""Alert 8, usage limit: the 50/90/100 % ladder of client.daily_limit / hourly_limit.

The v5 UI stores a daily and an hourly limit per client (its "Fraud Detection" box) and
nothing in an open DNL install enforces them. The ladder (issue 12): tell the client at
each of USAGE_LIMIT_STEPS (50, 90, 100 %) of the limit, once per period; at 100 % block
every active ingress trunk of the client until the period ends, then unblock and tell it.

Periods: 'day' is the client's local day (its zone as for the daily reports:
auto_send_zone, daily_balance_send_time_zone, sys_timezone, UTC); 'hour' is the clock
hour (UTC). Usage is ingress (the client's traffic to us) in USAGE_LIMIT_UNIT: the cost
(`amount`, in the client's currency) or the billed minutes. It comes from
cdr_report_detail (hourly rows, written minutes after each hour) and, after the client's
last hour there, from qos_route_report (direction 0, per ingress trunk), which is fresher.

Carry-over (USAGE_LIMIT_CARRY_OVER, or per client in dnl_ad.usage_limit_client): today's
daily limit = base + what was left of yesterday's limit, capped at 2x base. It is fixed
at the day's first sweep (a state row with step 0) and kept for the day.

A sweep:
1. unblocks, in one statement, every block whose period has ended: it deletes exactly the
   resource_block rows dnl_ad recorded in dnl_ad.usage_limit_block (never an operator's),
   and queues one "reopened" notice per client and period;
2. lists the distinct zone texts of the clients with a daily limit (a handful) and works
   out each zone's local day in Python (zones are free text);
3. runs ONE query that decides in SQL for every client: its windows, usage, the period's
   limit (with carry-over), the highest step reached; it returns only the rows where a
   step was newly reached or a day's carried limit must be fixed;
4. per step, in a savepoint: claims the step (upsert guarded by `step < new`, so a
   restart or a second daemon never sends it twice), at 100 % writes the resource_block
   rows (action_type 3, update_by 'dnl_ad usage limit', unblock_at = epoch of the period's
   end), their record, an admin_alert row (type 1 daily, 2 hourly), and queues the
   notice; the operator's NOC is copied at 100 %.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, Decimal
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from .. import clock, db, migrations
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, recipients
from .trunk_common import format_local

log = logging.getLogger(__name__)

KIND = "usage_limit"
TEMPLATE = "usage_limit"           # no mail_tmplate column: the project's default template
BLOCKED_BY = "dnl_ad usage limit"  # resource_block.create_by / update_by
ACTION_FRAUD = 3                   # resource_block.action_type DNL's fraud daemon writes
ADMIN_ALERT_TYPE = {"day": 1, "hour": 2}  # admin_alert.type: daily / hourly limit exceeded
PERIOD_WORD = {"day": "daily", "hour": "hourly"}
STATE, BLOCKS, CLIENTS = "usage_limit_state", "usage_limit_block", "usage_limit_client"
KEEP_STATE = dt.timedelta(days=3)  # state rows of periods ended longer ago are pruned

# The zones of the clients with a daily limit: a handful of distinct texts, resolved in
# Python (free text: +08:00, +0800, GMT+8, IANA names ...); each client's day then comes
# from its zone's row, in SQL. No per-client work leaves the database.
_ZONES = """
SELECT z.auto_zone, z.daily_zone, z.first_client, sp.sys_timezone,
       EXISTS (SELECT 1 FROM {clients} u WHERE u.carry_over) AS some_carry
FROM (SELECT coalesce(c.auto_send_zone, '') AS auto_zone,
             coalesce(c.daily_balance_send_time_zone, '') AS daily_zone,
             min(c.client_id) AS first_client
      FROM client c WHERE c.status AND coalesce(c.daily_limit, 0) > 0
      GROUP BY 1, 2) z
LEFT JOIN (SELECT s.sys_timezone FROM system_parameter s ORDER BY s.sys_id LIMIT 1) sp
       ON true
"""

# Every period window of every client with a limit: its local day (from its zone's row of
# `z`) and the clock hour.
_WINDOWS = """
z AS (
    SELECT * FROM unnest(%(z_auto)s::text[], %(z_daily)s::text[], %(z_t0)s::timestamptz[],
                         %(z_t1)s::timestamptz[], %(z_p0)s::timestamptz[])
        AS z(auto_zone, daily_zone, t0, t1, p0)
), cl AS (
    SELECT c.client_id, c.daily_limit, c.hourly_limit,
           coalesce(c.auto_send_zone, '') AS auto_zone,
           coalesce(c.daily_balance_send_time_zone, '') AS daily_zone,
           coalesce(uc.carry_over, %(carry)s) AS carry
    FROM client c LEFT JOIN {clients} uc ON uc.client_id = c.client_id
    WHERE c.status AND (coalesce(c.daily_limit, 0) > 0 OR coalesce(c.hourly_limit, 0) > 0)
), w AS (
    SELECT cl.client_id, 'day'::text AS period, z.t0, z.t1,
           cl.daily_limit::numeric AS base, cl.carry, z.p0
    FROM cl JOIN z ON z.auto_zone = cl.auto_zone AND z.daily_zone = cl.daily_zone
    WHERE coalesce(cl.daily_limit, 0) > 0
    UNION ALL
    SELECT cl.client_id, 'hour', %(h0)s::timestamptz, %(h1)s::timestamptz,
           cl.hourly_limit::numeric, false, NULL::timestamptz
    FROM cl WHERE coalesce(cl.hourly_limit, 0) > 0
)"""

# Usage per span `s` (client, span name, [a, b)), all spans at once: the client's
# cdr_report_detail hours, then qos_route_report after the last hour cdr_report_detail
# has for it (fresher; never the same hour twice). Hash joins over the one report_time
# range %(lo)s..%(hi)s: one pass over the rows whatever the number of spans (an index
# probe per span was 10x slower at 40,000 spans: bench_limits).
_USAGE = """
c AS (
    SELECT s.client_id, s.span, sum({cdr}) AS v, max(d.report_time) AS last
    FROM s JOIN cdr_report_detail d ON d.ingress_client_id = s.client_id
    WHERE d.report_time >= s.a AND d.report_time < s.b
      AND d.report_time >= %(lo)s AND d.report_time < %(hi)s
    GROUP BY s.client_id, s.span
), qt AS (
    SELECT r.client_id, q.report_time, {qos} AS v
    FROM qos_route_report q JOIN resource r ON r.resource_id = q.resource_id
    WHERE r.ingress AND q.direction = 0 AND q.report_time >= %(lo)s
      AND q.report_time <= %(now)s
), q AS (
    SELECT s.client_id, s.span, sum(qt.v) AS v
    FROM s
    LEFT JOIN c ON c.client_id = s.client_id AND c.span = s.span
    JOIN qt ON qt.client_id = s.client_id AND qt.report_time < s.b
           AND qt.report_time >= greatest(s.a, coalesce(c.last + interval '1 hour', s.a))
    GROUP BY s.client_id, s.span
), usage AS (
    SELECT s.client_id, s.span, coalesce(c.v, 0) + coalesce(q.v, 0) AS v
    FROM s
    LEFT JOIN c ON c.client_id = s.client_id AND c.span = s.span
    LEFT JOIN q ON q.client_id = s.client_id AND q.span = s.span
)"""

# The decision: the period's state, limit (the client's limit as it is now, so that an
# operator's change counts at once, + the carried amount, fixed at the day's first sweep,
# capped at the limit), the highest step reached (width_bucket over the
# sorted steps); only rows with a new step, or a day whose carried limit must be fixed,
# come back (the OFFSET 0 fence joins client for those rows only).
_DECIDE = """
WITH {windows}, ws AS (
    SELECT w.*, st.step AS done_step, st.carried AS kept_carried,
           (st.client_id IS NOT NULL) AS has_state,
           (w.carry AND st.client_id IS NULL) AS need_prev,
           coalesce(sy.limit_value, w.base) AS plimit
    FROM w
    LEFT JOIN {state} st ON st.client_id = w.client_id AND st.period = w.period
                        AND st.period_start = w.t0
    LEFT JOIN {state} sy ON w.carry AND sy.client_id = w.client_id AND sy.period = 'day'
                        AND sy.period_start = w.p0
), s AS (
    SELECT ws.client_id, ws.period AS span, ws.t0 AS a, ws.t1 AS b FROM ws
    UNION ALL
    SELECT ws.client_id, 'prev', ws.p0, ws.t0 FROM ws WHERE ws.need_prev
), {usage}, d AS (
    SELECT ws.*, cu.v AS usage,
           coalesce(ws.kept_carried, CASE WHEN ws.need_prev
               THEN least(ws.base, greatest(0, ws.plimit - pu.v)) ELSE 0 END) AS carried
    FROM ws
    LEFT JOIN usage cu ON cu.client_id = ws.client_id AND cu.span = ws.period
    LEFT JOIN usage pu ON pu.client_id = ws.client_id AND pu.span = 'prev'
), r AS (
    SELECT d.*, d.base + least(d.carried, d.base) AS eff_limit FROM d
), due AS (
    SELECT r.*, coalesce((%(steps)s::int[])[width_bucket(r.usage * 100 / r.eff_limit,
                                                         %(steps)s::numeric[])], 0) AS reached
    FROM r
), picked AS (
    SELECT * FROM due
    WHERE due.reached > coalesce(due.done_step, 0) OR due.need_prev
    OFFSET 0
)
SELECT p.client_id, p.period, p.t0, p.t1, p.base, p.carried, p.eff_limit, p.usage,
       p.reached, coalesce(p.done_step, 0) AS done_step, p.has_state,
       c.name, c.company, c.billing_email, c.email, c.auto_send_zone,
       c.daily_balance_send_time_zone, cur.code AS currency
FROM picked p
JOIN client c ON c.client_id = p.client_id
LEFT JOIN currency cur ON cur.currency_id = c.currency_id
ORDER BY p.client_id, p.period
"""

_UNBLOCK = """
WITH due AS (
    DELETE FROM {blocks} b WHERE b.unblock_at <= %(now)s RETURNING b.*
), gone AS (
    DELETE FROM resource_block rb USING due
    WHERE rb.res_block_id = due.res_block_id AND rb.update_by = %(by)s
    RETURNING rb.res_block_id
)
SELECT due.client_id, due.period, due.period_start, due.unblock_at,
       string_agg(coalesce(r.alias, due.resource_id::text), ', '
                  ORDER BY coalesce(r.alias, due.resource_id::text)) AS trunks,
       count(gone.res_block_id) AS removed,
       c.name, c.company, c.billing_email, c.email, c.auto_send_zone,
       c.daily_balance_send_time_zone, cur.code AS currency,
       (SELECT s.sys_timezone FROM system_parameter s ORDER BY s.sys_id LIMIT 1)
           AS sys_timezone
FROM due
LEFT JOIN gone ON gone.res_block_id = due.res_block_id
LEFT JOIN resource r ON r.resource_id = due.resource_id
LEFT JOIN client c ON c.client_id = due.client_id
LEFT JOIN currency cur ON cur.currency_id = c.currency_id
GROUP BY due.client_id, due.period, due.period_start, due.unblock_at, c.name, c.company,
         c.billing_email, c.email, c.auto_send_zone, c.daily_balance_send_time_zone, cur.code
ORDER BY due.client_id, due.period
"""

_BLOCK = """
WITH t AS (
    SELECT r.resource_id, r.alias FROM resource r
    WHERE r.client_id = %(client)s AND r.ingress AND r.active
), rb AS (
    INSERT INTO resource_block (ingress_res_id, ingress_client_id, action_type, create_by,
                                update_by, create_time, block_at, unblock_at)
    SELECT t.resource_id, %(client)s, %(action)s, %(by)s, %(by)s, %(now)s, %(now_epoch)s,
           %(until_epoch)s FROM t
    RETURNING res_block_id, ingress_res_id
), mine AS (
    INSERT INTO {blocks} (res_block_id, client_id, resource_id, period, period_start,
                          unblock_at, blocked_at)
    SELECT rb.res_block_id, %(client)s, rb.ingress_res_id, %(period)s, %(t0)s, %(t1)s,
           %(now)s FROM rb
    RETURNING resource_id
)
SELECT t.alias FROM t JOIN mine ON mine.resource_id = t.resource_id ORDER BY t.alias
"""


def usage_expressions(unit: str) -> tuple[sql.Composable, sql.Composable]:
    """(cdr_report_detail value, qos_route_report value) of one row in USAGE_LIMIT_UNIT."""
    if unit == "minutes":
        return sql.SQL("d.ingress_bill_time / 60.0"), sql.SQL("q.bill_time / 60.0")
    return sql.SQL("d.ingress_call_cost"), sql.SQL("q.cost")


def windows_cte(schema: str) -> sql.Composed:
    return sql.SQL(_WINDOWS).format(clients=migrations.own(schema, CLIENTS))


def usage_cte(unit: str) -> sql.Composed:
    """The `c`..`usage` CTEs over a span relation `s`: usage in USAGE_LIMIT_UNIT."""
    cdr, qos = usage_expressions(unit)
    return sql.SQL(_USAGE).format(cdr=cdr, qos=qos)


def decide_query(schema: str, unit: str) -> sql.Composed:
    return sql.SQL(_DECIDE).format(windows=windows_cte(schema),
                                   state=migrations.own(schema, STATE),
                                   usage=usage_cte(unit))


def zones_query(schema: str) -> sql.Composed:
    return sql.SQL(_ZONES).format(clients=migrations.own(schema, CLIENTS))


def window_params(zone_rows: Sequence[Mapping[str, Any]], now: dt.datetime,
                  settings: Settings, resolver: clock.ZoneResolver | None = None
                  ) -> dict[str, Any]:
    """Bound parameters of the decision: each distinct zone's local day today and
    yesterday, the clock hour, the report_time range to read, the steps."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    z: dict[str, list[Any]] = {"z_auto": [], "z_daily": [], "z_t0": [], "z_t1": [], "z_p0": []}
    carry = settings.usage_limit_carry_over
    for row in zone_rows:
        zone = clock.client_zone(row["first_client"], row["auto_zone"] or None,
                                 row["daily_zone"] or None, row["sys_timezone"], resolver)
        today = clock.local_date(now, zone)
        t0, t1 = clock.day_window(today, zone)
        z["z_auto"].append(row["auto_zone"])
        z["z_daily"].append(row["daily_zone"])
        z["z_t0"].append(t0)
        z["z_t1"].append(t1)
        z["z_p0"].append(clock.day_window(today - dt.timedelta(days=1), zone)[0])
        carry = carry or row["some_carry"]
    starts = [hour, *z["z_t0"], *(z["z_p0"] if carry else [])]
    return {**z, "h0": hour, "h1": hour + dt.timedelta(hours=1),
            "carry": settings.usage_limit_carry_over, "lo": min(starts),
            "hi": max([hour + dt.timedelta(hours=1), *z["z_t1"]]), "now": now,
            "steps": list(settings.usage_limit_steps)}


def dedupe_key(client_id: int, period: str, start: dt.datetime, step: int | str) -> str:
    """`usage_limit:<client>:<day|hour>:<period start, UTC compact>:<step|reopened>`."""
    return (f"{KIND}:{client_id}:{period}:"
            f"{start.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}:{step}")


def epoch(instant: dt.datetime) -> int:
    return int(instant.timestamp())


def _unit_text(unit: str, currency: str) -> str:
    if unit == "minutes":
        return "billed minutes"
    return f"amount in {currency}" if currency else "amount"


def _quantity(value: Any, unit: str) -> Decimal | str:
    """Money stays a Decimal (the renderer adds the currency); minutes become text."""
    amount = Decimal(value or 0)
    if unit == "minutes":
        return f"{amount.quantize(Decimal('0.01'))} minutes"
    return amount


def _zone(row: Mapping[str, Any], system: Mapping[str, Any]) -> dt.tzinfo:
    return clock.client_zone(row["client_id"], row.get("auto_send_zone"),
                             row.get("daily_balance_send_time_zone"),
                             row.get("sys_timezone") or system.get("sys_timezone"))


def context(row: Mapping[str, Any], event: str, unit: str, zone: dt.tzinfo,
            trunks: str = "") -> dict[str, Any]:
    """Tags of the usage_limit template; `event` is step, blocked or reopened."""
    limit = Decimal(row.get("eff_limit") or row.get("base") or 0)
    usage = Decimal(row.get("usage") or 0)
    percent = (usage * 100 / limit).quantize(Decimal(1), ROUND_DOWN) if limit else Decimal(0)
    t0, t1 = row.get("t0") or row["period_start"], row.get("t1") or row["unblock_at"]
    return {
        "company_name": row["company"] or row["name"] or "",
        "client_name": row["name"] or "",
        "event": event,
        "period": PERIOD_WORD[row["period"]],
        "step": f"{row.get('reached', 100)} %",
        "percent": f"{percent} %",
        "usage": _quantity(usage, unit),
        "limit": _quantity(limit, unit),
        "base_limit": _quantity(row.get("base") or limit, unit),
        # empty when nothing was carried over: the templates then show no carry-over rows
        "carried": _quantity(row["carried"], unit) if row.get("carried") else "",
        "unit": _unit_text(unit, row.get("currency") or ""),
        "period_start": format_local(t0, zone),
        "period_end": format_local(t1, zone),
        "trunks": trunks,
        "reopen_at": format_local(t1, zone),
        "currency": row.get("currency") or "",
    }


class UsageLimitSweep:
    """One sweep at one `now` (see the module docstring for the steps)."""

    def __init__(self, database: db.Database, now: dt.datetime, settings: Settings,
                 resolver: clock.ZoneResolver | None = None) -> None:
        self.database = database
        self.now = clock.require_aware(now)
        self.settings = settings
        self.schema = settings.own_schema
        self.unit = settings.usage_limit_unit
        self.steps = tuple(settings.usage_limit_steps)
        self.resolver = resolver
        self.result = SweepResult(KIND)
        self._pipe: Pipeline | None = None

    def pipe(self, cur: db.Cursor) -> Pipeline:
        if self._pipe is None:
            self._pipe = Pipeline.open(cur, self.settings)
        return self._pipe

    def run(self) -> SweepResult:
        with db.unit_of_work(self.database, dry_run=self.settings.dry_run) as cur:
            self._unblock(cur)
            cur.execute(zones_query(self.schema))
            params = window_params(cur.fetchall(), self.now, self.settings, self.resolver)
            cur.execute(decide_query(self.schema, self.unit), params)
            rows = cur.fetchall()
            self._fix_limits(cur, [r for r in rows if r["reached"] <= r["done_step"]])
            for row in rows:
                if row["reached"] > row["done_step"]:
                    self._step(cur, row)
            cur.execute(sql.SQL("DELETE FROM {} WHERE period_end < %s").format(
                migrations.own(self.schema, STATE)), (self.now - KEEP_STATE,))
            if self._pipe is not None:
                self.result.queued += self._pipe.queued
                self.result.duplicates += self._pipe.duplicates
                self.result.skipped += self._pipe.failed
                self.result.mails.extend(self._pipe.mails)
        return self.result

    def _state_values(self, row: Mapping[str, Any], step: int) -> tuple[Any, ...]:
        return (row["client_id"], row["period"], row["t0"], row["t1"], row["base"],
                row["carried"], row["eff_limit"], step, row["usage"], self.now)

    def _fix_limits(self, cur: db.Cursor, rows: Sequence[Mapping[str, Any]]) -> None:
        """The day's limit with carry-over, fixed at its first sweep (step 0)."""
        if not rows:
            return
        execute_values(cur, sql.SQL(
            "INSERT INTO {} (client_id, period, period_start, period_end, base_limit, "
            "carried, limit_value, step, usage, updated_at) VALUES %s "
            "ON CONFLICT (client_id, period, period_start) DO NOTHING").format(
                migrations.own(self.schema, STATE)).as_string(cur),
            [self._state_values(r, 0) for r in rows])
        self.result.state_changes += len(rows)
        for r in rows:
            if r["carried"]:
                log.info("usage_limit: client %s (%s): %s limit %s today (%s + %s carried "
                         "over)", r["client_id"], r["name"], PERIOD_WORD[r["period"]],
                         r["eff_limit"], r["base"], r["carried"])

    def _claim(self, cur: db.Cursor, row: Mapping[str, Any]) -> bool:
        cur.execute(sql.SQL(
            "INSERT INTO {t} AS s (client_id, period, period_start, period_end, base_limit, "
            "carried, limit_value, step, usage, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (client_id, period, period_start) DO UPDATE SET "
            "step = EXCLUDED.step, usage = EXCLUDED.usage, updated_at = EXCLUDED.updated_at, "
            "base_limit = EXCLUDED.base_limit, limit_value = EXCLUDED.limit_value "
            "WHERE s.step < EXCLUDED.step RETURNING s.step").format(
                t=migrations.own(self.schema, STATE)),
            self._state_values(row, row["reached"]))
        return cur.fetchone() is not None

    def _block(self, cur: db.Cursor, row: Mapping[str, Any]) -> list[str]:
        """resource_block rows for the client's active ingress trunks, their record, and
        the operator's admin_alert row; the blocked trunks' names."""
        cur.execute(sql.SQL(_BLOCK).format(blocks=migrations.own(self.schema, BLOCKS)), {
            "client": row["client_id"], "action": ACTION_FRAUD, "by": BLOCKED_BY,
            "now": self.now, "now_epoch": epoch(self.now), "until_epoch": epoch(row["t1"]),
            "period": row["period"], "t0": row["t0"], "t1": row["t1"]})
        trunks = [r["alias"] for r in cur.fetchall()]
        word = PERIOD_WORD[row["period"]]
        subject = f"Carrier {word} usage limit exceeded: {row['name']}"[:100]
        content = (f"Client {row['name']} (id {row['client_id']}) used {row['usage']:.2f} "
                   f"({_unit_text(self.unit, row['currency'] or '')}) of its {word} limit "
                   f"{row['eff_limit']:.2f} in the period from {row['t0'].isoformat()}; "
                   f"dnl_ad blocked its ingress trunks ({', '.join(trunks) or 'none active'})"
                   f" until {row['t1'].isoformat()}.")
        cur.execute("INSERT INTO admin_alert (type, subject, content, is_view, create_time) "
                    "VALUES (%s, %s, %s, 0, %s)",
                    (ADMIN_ALERT_TYPE[row["period"]], subject, content, self.now))
        return trunks

    def _step(self, cur: db.Cursor, row: Mapping[str, Any]) -> None:
        cid, step = row["client_id"], row["reached"]
        pipe = self.pipe(cur)
        zone = _zone(row, pipe.system)
        blocking = step >= self.steps[-1]
        try:
            with db.savepoint(cur, "usage_limit_item"):
                if not self._claim(cur, row):
                    log.info("usage_limit: client %s: step %s %% already taken by another "
                             "sweep", cid, step)
                    self.result.duplicates += 1
                    return
                trunks = self._block(cur, row) if blocking else []
                extra = (str(pipe.system.get("noc_email") or "").strip(),) if blocking else ()
                pipe.queue(cur, Notice(
                    kind=KIND, dedupe_key=dedupe_key(cid, row["period"], row["t0"], step),
                    template=TEMPLATE, client_id=cid, recipients=recipients.partner(row),
                    context=context(row, "blocked" if blocking else "step", self.unit, zone,
                                    ", ".join(trunks)),
                    decided_at=self.now,
                    alert_rule=(f"{PERIOD_WORD[row['period']]} usage limit: {step} % "
                                f"({row['usage']:.2f} of {row['eff_limit']:.2f} {self.unit})"),
                    extra_recipients=tuple(e for e in extra if e),
                    meta={"period": row["period"], "step": step}))
        except db.CONNECTION_ERRORS:
            raise
        except Exception:
            self.result.skipped += 1
            log.exception("usage_limit: client %s (%s): step %s %% failed and was rolled back; "
                          "retried next sweep", cid, row["name"], step)
            return
        self.result.state_changes += 1
        if blocking:
            log.warning("usage_limit: %sclient %s (%s) reached 100 %% of its %s limit "
                        "(%.2f of %.2f %s): ingress trunks %s blocked until %s",
                        "[dry run] would have: " if self.settings.dry_run else "", cid,
                        row["name"], PERIOD_WORD[row["period"]], row["usage"],
                        row["eff_limit"], self.unit, ", ".join(trunks) or "(none active)",
                        row["t1"].isoformat())

    def _unblock(self, cur: db.Cursor) -> None:
        cur.execute(sql.SQL(_UNBLOCK).format(blocks=migrations.own(self.schema, BLOCKS)),
                    {"now": self.now, "by": BLOCKED_BY})
        groups = cur.fetchall()
        if not groups:
            return
        pipe = self.pipe(cur)
        for g in groups:
            row = {**g, "t0": g["period_start"], "t1": g["unblock_at"], "usage": None}
            self.result.state_changes += 1
            log.info("usage_limit: client %s (%s): %s period ended, %s block row(s) removed "
                     "(trunks %s)", g["client_id"], g["name"], PERIOD_WORD[g["period"]],
                     g["removed"], g["trunks"])
            if g["name"] is None:  # the client is gone: nobody to tell
                continue
            pipe.queue(cur, Notice(
                kind=KIND, dedupe_key=dedupe_key(g["client_id"], g["period"],
                                                 g["period_start"], "reopened"),
                template=TEMPLATE, client_id=g["client_id"],
                recipients=recipients.partner(g),
                context={**context(row, "reopened", self.unit, _zone(g, pipe.system),
                                   g["trunks"] or ""), "step": "", "percent": "",
                         "usage": "", "limit": "", "base_limit": "", "carried": ""},
                decided_at=self.now,
                alert_rule=f"{PERIOD_WORD[g['period']]} usage limit: period ended, reopened",
                meta={"period": g["period"], "step": "reopened"}))


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Run one usage-limit sweep at `now`."""
    return UsageLimitSweep(database, now, settings).run()


def check_line(cur: db.Cursor, settings: Settings) -> str:
    """For `dnl-ad check`: clients with limits, the unit and steps, blocks held now."""
    cur.execute("SELECT count(*) FILTER (WHERE coalesce(daily_limit, 0) > 0) AS daily, "
                "count(*) FILTER (WHERE coalesce(hourly_limit, 0) > 0) AS hourly "
                "FROM client WHERE status")
    n = cur.fetchone()
    cur.execute(sql.SQL("SELECT count(*) AS rows, count(DISTINCT client_id) AS clients "
                        "FROM {}").format(migrations.own(settings.own_schema, BLOCKS)))
    held = cur.fetchone()
    steps = ",".join(str(s) for s in settings.usage_limit_steps)
    return (f"{n['daily']} client(s) with a daily limit, {n['hourly']} with an hourly limit; "
            f"USAGE_LIMIT_UNIT={settings.usage_limit_unit}, USAGE_LIMIT_STEPS={steps}, "
            f"USAGE_LIMIT_CARRY_OVER={str(settings.usage_limit_carry_over).lower()}; "
            f"{held['rows']} trunk block(s) of {held['clients']} client(s) held now")
