"""Alert 11, quality rules: the v5 UI's "Alert Rules" (`alert_rules`), which no open
DNL install evaluates. PROVIDER_DB.md section 7 has the columns and the definitions.

When a rule runs (its `execution_schedule`: every `specific_minutes`, daily at
`daily_time`, weekly on `weekly_value` (0 = Sunday) at `weekly_time`; hours are GMT,
inferred), every group of its trunks (`trunk_type` 1 ingress / 2 egress; `all_trunk` or
the `res_id` list) is measured over the rule's window, and a group with at least
`min_call_attempt` calls for which ALL the set conditions hold (`'<'`, `'>'`, `'='`;
`'1'` ignores a metric) is a match.

Window and source. `sample_size` minutes (NULL/0: 60). From an hour up, the last
complete hours of `cdr_report_detail` (ceil(sample_size / 60) hours ending at the top of
the current hour: hourly rows arrive after their hour). Under an hour, the last
`sample_size` minutes of `qos_route_report` (the trunk's rows, both directions: the
table's direction code is not documented).

Groups (`monitor_by`): 0 trunk, 5 trunk + destination code name, 6 trunk + country,
7 trunk + code. Not computable from aggregates, so skipped (and listed by `dnl-ad check`):
1-4 (DNIS / ANI: only CDRs have them); 5 and 6 under an hour (qos_route_report has no
code name or country); revenue or profitability conditions under an hour (it has one
leg's cost only); a rule with no condition set or no trunk selected.

A match opens an episode (own table quality_episode): one mail per rule and group until
it clears (a run finds the group no longer matching) or `unblock_after_min` passes. When
it opens, in one transaction: an `alert_rules_log` row for the run, an
`alert_rules_log_detail` row per group (its values, `valid_to`), the trouble-ticket mail
to whom `trouble_ticket_sent_to` says (`is_email`), and where `is_block` a
`resource_block` row (action_type 1, `unblock_at` = now + unblock_after_min, epoch s)
recorded in quality_block, so that the unblock (every sweep) deletes exactly those rows.
The rule's `last_run_time` and `next_run_time` are written back for the UI.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from .. import db, migrations
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult
from . import quality_common as qc

log = logging.getLogger(__name__)

KIND = "quality_rule"
ACTION_ALERT_RULE = 1          # resource_block.action_type written by alert rules
LOG_STATUS_OVER_LIMIT = 1      # alert_rules_log.status (as fraud_detection_log: 1 over limit)
EMAIL_TYPE_RULE = 22           # email_log type "rule alert" (also alert_rules_log_detail)
SCHEDULE_MINUTES, SCHEDULE_DAILY, SCHEDULE_WEEKLY = 1, 2, 3
MONITOR_TEXT = {0: "trunk", 1: "trunk + DNIS", 2: "trunk + ANI", 3: "DNIS", 4: "ANI",
                5: "trunk + destination", 6: "trunk + country", 7: "trunk + code"}
GROUP_TEXT = {5: "code_name", 6: "country", 7: "code"}
_CODE_COLUMN = {5: "code_name", 6: "country", 7: "code"}

_SKIPPED_LOGGED: set[tuple[str, int, str]] = set()


@dataclass(frozen=True)
class Rule:
    """One alert_rules row, typed."""

    id: int
    name: str
    side: int                  # trunk_type: 1 ingress, 2 egress
    all_trunk: bool
    res_ids: tuple[int, ...]
    monitor_by: int
    min_calls: int
    sample_minutes: int
    schedule: int
    specific_minutes: int
    daily_time: int
    weekly_time: int
    weekly_value: int
    last_run: dt.datetime | None
    next_run: dt.datetime | None
    is_block: bool
    is_email: bool
    unblock_after: int         # minutes; 0 = never unblocked by dnl_ad
    sent_to: int
    sent_from: int | None
    subject: str | None
    content: str | None
    ops: Mapping[str, tuple[str, float]]
    row: Mapping[str, Any]

    @property
    def source(self) -> str:
        return "cdr" if self.sample_minutes >= 60 else "qos"

    @property
    def template(self) -> str:
        return f"alert_rules:{self.id}"

    def window(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) of the sample (see the module docstring)."""
        if self.source == "cdr":
            end = qc.floor_hour(now)
            return end - dt.timedelta(hours=math.ceil(self.sample_minutes / 60)), end
        return now - dt.timedelta(minutes=self.sample_minutes), now


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse_res_ids(text: Any) -> tuple[int, ...]:
    """alert_rules.res_id, a text list of trunk ids ('12,13' or '{12,13}'), as ints."""
    return tuple(dict.fromkeys(int(x) for x in re.findall(r"\d+", str(text or ""))))


def rule_from_row(row: Mapping[str, Any]) -> Rule:
    ops = {}
    for metric in qc.METRICS:
        op = qc.op_code(row.get(metric))
        if op != qc.IGNORE:
            value = row.get(f"{metric}_value")
            ops[metric] = (op, float(value) if value is not None else 0.0)
    return Rule(
        id=row["id"], name=row.get("rule_name") or f"rule {row['id']}",
        side=_int(row.get("trunk_type"), 1), all_trunk=bool(row.get("all_trunk")),
        res_ids=parse_res_ids(row.get("res_id")), monitor_by=_int(row.get("monitor_by")),
        min_calls=max(_int(row.get("min_call_attempt")), 0),
        sample_minutes=_int(row.get("sample_size")) or 60,
        schedule=_int(row.get("execution_schedule")),
        specific_minutes=_int(row.get("specific_minutes")),
        daily_time=_int(row.get("daily_time")) % 24,
        weekly_time=_int(row.get("weekly_time")) % 24,
        weekly_value=_int(row.get("weekly_value")) % 7,
        last_run=row.get("last_run_time"), next_run=row.get("next_run_time"),
        is_block=bool(row.get("is_block")), is_email=bool(row.get("is_email")),
        unblock_after=max(_int(row.get("unblock_after_min")), 0),
        sent_to=_int(row.get("trouble_ticket_sent_to"), 1),
        sent_from=row.get("trouble_ticket_sent_from"),
        subject=row.get("trouble_ticket_subject"), content=row.get("trouble_ticket_content"),
        ops=ops, row=row,
    )


def not_computable(rule: Rule) -> str:
    """Why this rule cannot be judged from the aggregate tables ('' when it can)."""
    if rule.monitor_by in (1, 2, 3, 4):
        return (f"monitor_by {rule.monitor_by} ({MONITOR_TEXT[rule.monitor_by]}) needs "
                "per-call CDRs; the aggregate tables have no DNIS/ANI")
    if rule.monitor_by not in (0, 5, 6, 7):
        return f"unknown monitor_by {rule.monitor_by}"
    if rule.side not in (1, 2):
        return f"unknown trunk_type {rule.side} (1 ingress, 2 egress)"
    if not rule.ops:
        return "no condition set (every metric is '1' = ignore)"
    if not rule.all_trunk and not rule.res_ids:
        return "no trunk selected (all_trunk false and res_id empty)"
    if rule.source == "qos":
        if rule.monitor_by in (5, 6):
            return (f"sample_size {rule.sample_minutes} min reads qos_route_report, which "
                    f"has no {GROUP_TEXT[rule.monitor_by]} (monitor_by {rule.monitor_by})")
        money = [m for m in ("revenue", "profitability") if m in rule.ops]
        if money:
            return (f"sample_size {rule.sample_minutes} min reads qos_route_report, which "
                    f"has one leg's cost only: {', '.join(money)} cannot be computed")
    if rule.schedule == SCHEDULE_MINUTES and rule.specific_minutes <= 0:
        return "execution_schedule 1 without specific_minutes"
    return ""


# --- schedule ---------------------------------------------------------------------

def _ui_weekday(day: dt.date) -> int:
    """0 = Sunday ... 6 = Saturday, as weekly_value counts."""
    return (day.weekday() + 1) % 7


def last_slot(rule: Rule, now: dt.datetime) -> dt.datetime | None:
    """The latest scheduled instant at or before `now` (daily/weekly), GMT."""
    now = now.astimezone(dt.UTC)
    if rule.schedule == SCHEDULE_DAILY:
        slot = now.replace(hour=rule.daily_time, minute=0, second=0, microsecond=0)
        return slot if slot <= now else slot - dt.timedelta(days=1)
    if rule.schedule == SCHEDULE_WEEKLY:
        back = (_ui_weekday(now.date()) - rule.weekly_value) % 7
        slot = (now - dt.timedelta(days=back)).replace(hour=rule.weekly_time, minute=0,
                                                         second=0, microsecond=0)
        return slot if slot <= now else slot - dt.timedelta(days=7)
    return None


def next_slot(rule: Rule, now: dt.datetime) -> dt.datetime | None:
    """The next run after `now` (written to next_run_time)."""
    if rule.schedule == SCHEDULE_MINUTES:
        return now + dt.timedelta(minutes=max(rule.specific_minutes, 1))
    last = last_slot(rule, now)
    if last is None:
        return None
    return last + (dt.timedelta(days=1) if rule.schedule == SCHEDULE_DAILY
                   else dt.timedelta(days=7))


def is_due(rule: Rule, now: dt.datetime) -> bool:
    """Due when next_run_time has come (the UI's or ours), else by the schedule since the
    last run. execution_schedule 0 (never) or unknown: never."""
    if rule.schedule not in (SCHEDULE_MINUTES, SCHEDULE_DAILY, SCHEDULE_WEEKLY):
        return False
    if rule.next_run is not None:
        return rule.next_run <= now
    if rule.last_run is None:
        return True
    if rule.schedule == SCHEDULE_MINUTES:
        return rule.last_run + dt.timedelta(minutes=max(rule.specific_minutes, 1)) <= now
    slot = last_slot(rule, now)
    return slot is not None and rule.last_run < slot


# --- the one evaluation query -----------------------------------------------------

def _condition(metric: str, column: str) -> sql.Composable:
    op, val, m = (sql.Identifier("r", f"{metric}_op"), sql.Identifier("r", f"{metric}_val"),
                  sql.Identifier("m", column))
    return sql.SQL(
        "({op} = '1' OR ({op} = '<' AND {m} < {val}) OR ({op} = '>' AND {m} > {val}) "
        "OR ({op} = '=' AND round({m}::numeric, 2) = round({val}::numeric, 2)))"
    ).format(op=op, val=val, m=m)


_METRIC_COLUMN = {"asr": "asr", "abr": "asr", "acd": "acd", "pdd": "pdd_ms",
                  "profitability": "profitability", "revenue": "revenue"}

# The measures of cdr_report_detail per leg: (trunk, attempts, group key by monitor_by).
_LEG = {1: ("ingress_id", "ingress_total_calls",
            {5: "ingress_code_name", 6: "ingress_country", 7: "ingress_code"}),
        2: ("egress_id", "egress_total_calls",
            {5: "egress_code_name", 6: "egress_country", 7: "egress_code"})}

# One aggregation per (leg, grouping) kind, over every window of that kind (w: one row per
# distinct window, `combo`); the column names are fixed per kind, so each is the plain
# GROUP BY a hand-written query would be, and a kind no rule uses joins no row. A window
# whose rules all list their trunks (no all_trunk rule) reads only those trunks (wp: one
# row per window and listed trunk, hash-joined); groups under the smallest
# min_call_attempt of the window's rules are dropped before any rule sees them.
_SUMS = """
           coalesce(sum(d.{total}), 0)::bigint AS total,
           coalesce(sum(d.not_zero_calls), 0)::bigint AS not_zero,
           coalesce(sum(d.duration), 0)::bigint AS duration,
           coalesce(sum(d.pdd), 0)::bigint AS pdd,
           coalesce(sum(d.ingress_call_cost), 0) AS in_cost,
           coalesce(sum(d.egress_call_cost), 0) AS out_cost"""

_CDR_KIND = """
    SELECT w.combo, a.* FROM w CROSS JOIN LATERAL (
        SELECT d.{trunk} AS trunk, {gkey} AS gkey, {sums}
        FROM cdr_report_detail d
        WHERE d.report_time >= w.start_at AND d.report_time < w.end_at
          AND d.{trunk} IS NOT NULL
        GROUP BY 1, 2
        HAVING coalesce(sum(d.{total}), 0) >= w.min_calls) a
    WHERE w.src = 'cdr' AND w.side = {side} AND w.grp = {grp} AND w.all_trunks
    UNION ALL
    SELECT wp.combo, d.{trunk} AS trunk, {gkey} AS gkey, {sums}
    FROM wp
    JOIN cdr_report_detail d ON d.{trunk} = wp.trunk AND d.report_time >= wp.start_at
                            AND d.report_time < wp.end_at
    WHERE wp.src = 'cdr' AND wp.side = {side} AND wp.grp = {grp}
    GROUP BY 1, 2, 3
    HAVING coalesce(sum(d.{total}), 0) >= max(wp.min_calls)"""

_QOS_KIND = """
    SELECT w.combo, a.* FROM w CROSS JOIN LATERAL (
        SELECT q.resource_id AS trunk, {gkey} AS gkey,
               coalesce(sum(q.total_calls), 0)::bigint,
               coalesce(sum(q.not_zero_calls), 0)::bigint,
               coalesce(sum(q.call_duration), 0)::bigint, coalesce(sum(q.pdd), 0)::bigint,
               0::numeric, 0::numeric
        FROM qos_route_report q
        WHERE q.report_time >= w.start_at AND q.report_time < w.end_at
          AND q.resource_id IS NOT NULL
        GROUP BY 1, 2
        HAVING coalesce(sum(q.total_calls), 0) >= w.min_calls) a
    WHERE w.src = 'qos' AND w.grp = {grp}"""

_EVALUATE = """
WITH w AS (
    SELECT * FROM unnest(%(w_combo)s::int[], %(w_src)s::text[], %(w_side)s::int[],
                         %(w_grp)s::int[], %(w_start)s::timestamptz[], %(w_end)s::timestamptz[],
                         %(w_all)s::boolean[], %(w_min)s::int[])
      AS w(combo, src, side, grp, start_at, end_at, all_trunks, min_calls)
), wp AS (
    SELECT DISTINCT w.*, x.trunk
    FROM unnest(%(p_combo)s::int[], %(p_trunk)s::int[]) AS x(combo, trunk)
    JOIN w ON w.combo = x.combo AND NOT w.all_trunks
), r AS (
    SELECT * FROM unnest(
        %(rule_id)s::int[], %(combo)s::int[], %(all_trunk)s::boolean[], %(min_calls)s::int[],
        %(asr_op)s::text[], %(asr_val)s::float8[], %(abr_op)s::text[], %(abr_val)s::float8[],
        %(acd_op)s::text[], %(acd_val)s::float8[], %(pdd_op)s::text[], %(pdd_val)s::float8[],
        %(profitability_op)s::text[], %(profitability_val)s::float8[],
        %(revenue_op)s::text[], %(revenue_val)s::float8[])
      AS r(rule_id, combo, all_trunk, min_calls, asr_op, asr_val, abr_op, abr_val,
           acd_op, acd_val, pdd_op, pdd_val, profitability_op, profitability_val,
           revenue_op, revenue_val)
), p AS (
    SELECT * FROM unnest(%(p_rule)s::int[], %(p_trunk)s::int[]) AS p(rule_id, trunk)
), agg AS ({kinds}
), m AS (
    SELECT agg.*,
           CASE WHEN total > 0 THEN not_zero::float8 * 100 / total ELSE 0 END AS asr,
           CASE WHEN not_zero > 0 THEN duration::float8 / not_zero ELSE 0 END AS acd,
           CASE WHEN total > 0 THEN pdd::float8 / total ELSE 0 END AS pdd_ms,
           (in_cost - out_cost)::float8 AS revenue,
           CASE WHEN in_cost <> 0 THEN ((in_cost - out_cost) * 100 / in_cost)::float8
                ELSE 0 END AS profitability
    FROM agg WHERE total > 0
), hit AS (
    SELECT r.rule_id, m.* FROM r JOIN m ON m.combo = r.combo
    WHERE r.all_trunk AND m.total >= r.min_calls AND {conditions}
    UNION ALL
    SELECT r.rule_id, m.* FROM p JOIN r ON r.rule_id = p.rule_id
    JOIN m ON m.combo = r.combo AND m.trunk = p.trunk
    WHERE NOT r.all_trunk AND m.total >= r.min_calls AND {conditions}
)
SELECT hit.rule_id, hit.trunk, hit.gkey, hit.total, hit.not_zero, hit.duration, hit.pdd,
       hit.in_cost, hit.out_cost, hit.asr::float8 AS asr, hit.acd::float8 AS acd,
       hit.pdd_ms::float8 AS pdd_ms, hit.revenue::float8 AS revenue,
       hit.profitability::float8 AS profitability,
       res.alias, res.client_id, c.name AS client_name, c.company, c.noc_email
FROM hit
LEFT JOIN resource res ON res.resource_id = hit.trunk
LEFT JOIN client c ON c.client_id = res.client_id
ORDER BY hit.rule_id, hit.trunk, hit.gkey
"""


def _kinds() -> sql.Composable:
    parts = []
    for side, (trunk, total, groups) in _LEG.items():
        for grp in (0, 5, 6, 7):
            gkey = (sql.SQL("coalesce(d.{}, '')").format(sql.Identifier(groups[grp]))
                    if grp in groups else sql.SQL("''::text"))
            parts.append(sql.SQL(_CDR_KIND).format(
                trunk=sql.Identifier(trunk), total=sql.Identifier(total), gkey=gkey,
                side=sql.Literal(side), grp=sql.Literal(grp),
                sums=sql.SQL(_SUMS).format(total=sql.Identifier(total))))
    for grp, gkey in ((0, sql.SQL("''::text")), (7, sql.SQL("coalesce(q.code, '')::text"))):
        parts.append(sql.SQL(_QOS_KIND).format(gkey=gkey, grp=sql.Literal(grp)))
    return sql.SQL("\n    UNION ALL").join(parts)


def evaluate_query() -> sql.Composed:
    conditions = sql.SQL(" AND ").join(_condition(metric, _METRIC_COLUMN[metric])
                                       for metric in qc.METRICS)
    return sql.SQL(_EVALUATE).format(kinds=_kinds(), conditions=conditions)


def evaluate_params(rules: Sequence[Rule], now: dt.datetime) -> dict[str, list[Any]]:
    """The windows, the rules and their listed trunks as parallel arrays (unnest rows):
    no SQL is built from data."""
    params: dict[str, list[Any]] = {k: [] for k in (
        "w_combo", "w_src", "w_side", "w_grp", "w_start", "w_end", "w_all", "w_min",
        "rule_id", "combo", "all_trunk", "min_calls", "p_rule", "p_trunk", "p_combo")}
    for metric in qc.METRICS:
        params[f"{metric}_op"] = []
        params[f"{metric}_val"] = []
    combos: dict[tuple[Any, ...], int] = {}
    for rule in rules:
        start, end = rule.window(now)
        # qos_route_report has no leg of its own: its windows are shared by both legs
        key = (rule.source, rule.side if rule.source == "cdr" else 0, rule.monitor_by,
               start, end)
        if key not in combos:
            combos[key] = len(combos) + 1
            for name, value in zip(("w_combo", "w_src", "w_side", "w_grp", "w_start", "w_end"),
                                   (combos[key], *key), strict=True):
                params[name].append(value)
            params["w_all"].append(False)
            params["w_min"].append(max(rule.min_calls, 1))
        index = combos[key] - 1
        params["w_all"][index] = params["w_all"][index] or rule.all_trunk
        params["w_min"][index] = min(params["w_min"][index], max(rule.min_calls, 1))
        params["rule_id"].append(rule.id)
        params["combo"].append(combos[key])
        params["all_trunk"].append(rule.all_trunk)
        params["min_calls"].append(rule.min_calls)
        if not rule.all_trunk:
            params["p_rule"].extend([rule.id] * len(rule.res_ids))
            params["p_trunk"].extend(rule.res_ids)
            params["p_combo"].extend([combos[key]] * len(rule.res_ids))
        for metric in qc.METRICS:
            op, value = rule.ops.get(metric, (qc.IGNORE, 0.0))
            params[f"{metric}_op"].append(op)
            params[f"{metric}_val"].append(value)
    return params


def evaluate(cur: db.Cursor, rules: Sequence[Rule], now: dt.datetime
             ) -> dict[int, list[dict[str, Any]]]:
    """rule id -> its matching groups (one query for all the rules)."""
    found: dict[int, list[dict[str, Any]]] = {rule.id: [] for rule in rules}
    if not rules:
        return found
    cur.execute(evaluate_query(), evaluate_params(rules, now))
    for row in cur.fetchall():
        found[row["rule_id"]].append(dict(row))
    return found


# --- rules, skips, blocks -----------------------------------------------------------

def load_rules(cur: db.Cursor) -> list[Rule]:
    """Every active rule; [] when the provider has no alert_rules table."""
    cur.execute("SELECT to_regclass('alert_rules') IS NOT NULL AS present")
    if not cur.fetchone()["present"]:
        return []
    cur.execute("SELECT * FROM alert_rules WHERE coalesce(active, false) ORDER BY id")
    return [rule_from_row(row) for row in cur.fetchall()]


def unblock(cur: db.Cursor, schema: str, now: dt.datetime) -> list[Mapping[str, Any]]:
    """Delete the resource_block rows dnl_ad wrote whose unblock time has come, and only
    those (recorded in quality_block); an operator's block is never touched."""
    cur.execute(sql.SQL(
        "WITH gone AS (DELETE FROM {rec} q WHERE q.unblock_at IS NOT NULL "
        "AND q.unblock_at <= %(now)s RETURNING q.res_block_id, q.rule_id, q.resource_id, "
        "q.group_key) "
        "SELECT gone.*, (SELECT count(*) FROM resource_block b "
        "WHERE b.res_block_id = gone.res_block_id) AS present FROM gone"
    ).format(rec=migrations.own(schema, "quality_block")), {"now": now})
    gone = [dict(r) for r in cur.fetchall()]
    if gone:
        cur.execute("DELETE FROM resource_block WHERE res_block_id = ANY(%s) "
                    "AND action_type = %s AND create_by = 'dnl_ad'",
                    ([g["res_block_id"] for g in gone], ACTION_ALERT_RULE))
    return gone


def _block(cur: db.Cursor, schema: str, rule: Rule, match: Mapping[str, Any],
           now: dt.datetime, until: dt.datetime | None) -> int:
    """One resource_block row for the group (trunk; its code, code name or country) and
    its record in quality_block. Returns res_block_id."""
    trunk_col = "ingress_res_id" if rule.side == 1 else "engress_res_id"
    client_col = "ingress_client_id" if rule.side == 1 else "egress_client_id"
    code = match["gkey"] if rule.monitor_by == 7 else ""
    code_name = match["gkey"] if rule.monitor_by == 5 else None
    country = match["gkey"] if rule.monitor_by == 6 else None
    cur.execute(sql.SQL(
        "INSERT INTO resource_block ({trunk}, {client}, digit, action_type, code_name, "
        "country, create_by, update_by, create_time, unblock_at, block_at, unblock_after) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'dnl_ad', 'dnl_ad', %s, %s, %s, %s) "
        "RETURNING res_block_id").format(trunk=sql.Identifier(trunk_col),
                                         client=sql.Identifier(client_col)),
        (match["trunk"], match["client_id"], code, ACTION_ALERT_RULE, code_name, country,
         now, qc.epoch(until) if until else None, qc.epoch(now),
         rule.unblock_after * 60 if rule.unblock_after else None))
    block_id = cur.fetchone()["res_block_id"]
    cur.execute(sql.SQL(
        "INSERT INTO {} (res_block_id, rule_id, resource_id, group_key, created_at, "
        "unblock_at) VALUES (%s, %s, %s, %s, %s, %s)").format(
            migrations.own(schema, "quality_block")),
        (block_id, rule.id, match["trunk"], match["gkey"], now, until))
    return block_id


def _claim(cur: db.Cursor, schema: str, rule: Rule, match: Mapping[str, Any],
           now: dt.datetime, renew: dt.datetime | None) -> bool:
    """Open (or reopen, once renew_at has passed) the group's episode. False when it is
    open already: the group was told and stays quiet until it clears."""
    cur.execute(sql.SQL(
        "INSERT INTO {t} AS e (rule_id, resource_id, group_key, opened_at, renew_at, "
        "last_seen_at) VALUES (%(rule)s, %(trunk)s, %(gkey)s, %(now)s, %(renew)s, %(now)s) "
        "ON CONFLICT (rule_id, resource_id, group_key) DO UPDATE SET "
        "opened_at = EXCLUDED.opened_at, renew_at = EXCLUDED.renew_at, "
        "last_seen_at = EXCLUDED.last_seen_at "
        "WHERE e.renew_at IS NOT NULL AND e.renew_at <= %(now)s RETURNING e.opened_at"
    ).format(t=migrations.own(schema, "quality_episode")),
        {"rule": rule.id, "trunk": match["trunk"], "gkey": match["gkey"], "now": now,
         "renew": renew})
    if cur.fetchone() is not None:
        return True
    cur.execute(sql.SQL("UPDATE {} SET last_seen_at = %s WHERE rule_id = %s AND "
                        "resource_id = %s AND group_key = %s").format(
        migrations.own(schema, "quality_episode")),
        (now, rule.id, match["trunk"], match["gkey"]))
    return False


def _clear(cur: db.Cursor, schema: str, rule: Rule, matches: Sequence[Mapping[str, Any]]
           ) -> list[Mapping[str, Any]]:
    """Close the rule's episodes whose group no longer matches."""
    cur.execute(sql.SQL(
        "DELETE FROM {} e WHERE e.rule_id = %s AND NOT EXISTS (SELECT 1 FROM "
        "unnest(%s::int[], %s::text[]) AS m(trunk, gkey) WHERE m.trunk = e.resource_id "
        "AND m.gkey = e.group_key) RETURNING e.resource_id, e.group_key").format(
            migrations.own(schema, "quality_episode")),
        (rule.id, [m["trunk"] for m in matches], [m["gkey"] for m in matches]))
    return [dict(r) for r in cur.fetchall()]


# --- the notice ---------------------------------------------------------------------

def _fmt(value: float) -> str:
    return f"{value:.2f}"


def context(rule: Rule, match: Mapping[str, Any], start: dt.datetime, end: dt.datetime,
            blocked: bool, until: dt.datetime | None) -> dict[str, Any]:
    gkey = match["gkey"]
    return {
        "rule_name": rule.name,
        "trunk_name": match.get("alias") or f"trunk {match['trunk']}",
        "trunk_id": match["trunk"],
        "trunk_type": "ingress" if rule.side == 1 else "egress",
        "client_name": match.get("client_name") or "",
        "company_name": match.get("company") or match.get("client_name") or "",
        "monitor_by": MONITOR_TEXT.get(rule.monitor_by, str(rule.monitor_by)),
        "group": gkey,
        "code": gkey if rule.monitor_by == 7 else "",
        "code_name": gkey if rule.monitor_by == 5 else "",
        "country": gkey if rule.monitor_by == 6 else "",
        "conditions": qc.describe_conditions(rule.row),
        "calls": int(match["total"]),
        "not_zero_calls": int(match["not_zero"]),
        "min_call_attempt": rule.min_calls,
        "asr": _fmt(match["asr"]), "abr": _fmt(match["asr"]), "acd": _fmt(match["acd"]),
        "pdd": _fmt(match["pdd_ms"]), "revenue": _fmt(match["revenue"]),
        "profitability": _fmt(match["profitability"]),
        "start_time": f"{start:%Y-%m-%d %H:%M:%S} GMT",
        "end_time": f"{end:%Y-%m-%d %H:%M:%S} GMT",
        "sample_size": rule.sample_minutes,
        "blocked": "yes" if blocked else "no",
        "unblock_at": f"{until:%Y-%m-%d %H:%M:%S} GMT" if (blocked and until) else "",
    }


def recipients(rule: Rule, match: Mapping[str, Any], system: Mapping[str, Any]
               ) -> tuple[str, str]:
    """(own NOC, partner NOC) per trouble_ticket_sent_to: 1 own, 2 partner, 3 both."""
    own = str(system.get("noc_email") or "").strip() if rule.sent_to in (1, 3) else ""
    partner = str(match.get("noc_email") or "").strip() if rule.sent_to in (2, 3) else ""
    return own, partner


def dedupe_key(rule_id: int, trunk: int, gkey: str, opened: dt.datetime) -> str:
    return (f"{KIND}:{rule_id}:{trunk}:{gkey}:"
            f"{opened.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}")


# --- the sweep ----------------------------------------------------------------------

def _report_skips(database: db.Database, rules: Iterable[Rule]) -> None:
    for rule in rules:
        why = not_computable(rule)
        key = (database.safe_name, rule.id, why)
        if why and key not in _SKIPPED_LOGGED:
            _SKIPPED_LOGGED.add(key)
            log.warning("quality_rule: rule %s %r is not evaluated: %s", rule.id, rule.name,
                        why)


def _log_run(cur: db.Cursor, rule: Rule, now: dt.datetime) -> int:
    row = rule.row
    cur.execute(
        "INSERT INTO alert_rules_log (alert_rules_id, create_on, status, finish_time, "
        "limit_acd_value, limit_asr_value, limit_abr_value, limit_pdd_value, "
        "limit_profitability_value, limit_revenue_value, limit_asr, limit_abr, limit_acd, "
        "limit_pdd, limit_profitability, limit_revenue, \"time\", call_attempt) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "RETURNING id",
        (rule.id, now, LOG_STATUS_OVER_LIMIT, now, row.get("acd_value"),
         row.get("asr_value"), row.get("abr_value"), row.get("pdd_value"),
         row.get("profitability_value"), row.get("revenue_value"),
         qc.op_code(row.get("asr")), qc.op_code(row.get("abr")), qc.op_code(row.get("acd")),
         qc.op_code(row.get("pdd")), qc.op_code(row.get("profitability")),
         qc.op_code(row.get("revenue")), qc.epoch(now), rule.min_calls))
    return cur.fetchone()["id"]


def _detail(cur: db.Cursor, log_id: int, rule: Rule, match: Mapping[str, Any],
            now: dt.datetime, own: str, partner: str, block_id: int | None,
            until: dt.datetime | None) -> None:
    gkey = match["gkey"]
    cur.execute(
        "INSERT INTO alert_rules_log_detail (update_at, alert_rules_log_id, resource_id, "
        "code, asr, abr, acd, pdd, profitability, revenue, system_email_address, "
        "partner_email_address, is_email, is_block, resource_block_id, email_type, "
        "valid_to, trunk_type, monitor_by, \"time\", country, code_name) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "%s, %s, %s, %s)",
        (now, log_id, match["trunk"], gkey[:50] if rule.monitor_by == 7 else None,
         match["asr"], match["asr"], match["acd"], match["pdd_ms"], match["profitability"],
         match["revenue"], own[:100] or None, partner[:100] or None, rule.is_email,
         block_id is not None, block_id, EMAIL_TYPE_RULE,
         qc.epoch(until) if until else None, rule.side, rule.monitor_by, qc.epoch(now),
         gkey[:100] if rule.monitor_by == 6 else None,
         gkey[:100] if rule.monitor_by == 5 else None))


class _Run:
    """One sweep: unblock, then each due rule in its own savepoint."""

    def __init__(self, database: db.Database, now: dt.datetime, settings: Settings) -> None:
        self.database, self.now, self.settings = database, now, settings
        self.schema = settings.own_schema
        self.result = SweepResult(KIND)

    def run(self) -> SweepResult:
        with db.unit_of_work(self.database, dry_run=self.settings.dry_run) as cur:
            for gone in unblock(cur, self.schema, self.now):
                self.result.state_changes += 1
                log.warning("quality_rule: rule %s trunk %s%s: block %s lifted "
                            "(unblock_after_min passed)", gone["rule_id"], gone["resource_id"],
                            f" {gone['group_key']!r}" if gone["group_key"] else "",
                            gone["res_block_id"])
            rules = load_rules(cur)
            _report_skips(self.database, rules)
            due = [r for r in rules if is_due(r, self.now) and not not_computable(r)]
            if not due:
                return self.result
            matches = evaluate(cur, due, self.now)
            pipe = Pipeline.open(cur, self.settings)
            for rule in due:
                try:
                    with db.savepoint(cur, "quality_rule_item"):
                        self._rule(cur, pipe, rule, matches[rule.id])
                except db.CONNECTION_ERRORS:
                    raise
                except Exception:
                    self.result.skipped += 1
                    log.exception("quality_rule: rule %s %r failed and was rolled back; it "
                                  "runs again at the next sweep", rule.id, rule.name)
            self.result.queued += pipe.queued
            self.result.duplicates += pipe.duplicates
            self.result.skipped += pipe.failed
            self.result.mails.extend(pipe.mails)
        return self.result

    def _rule(self, cur: db.Cursor, pipe: Pipeline, rule: Rule,
              matches: list[dict[str, Any]]) -> None:
        now = self.now
        for cleared in _clear(cur, self.schema, rule, matches):
            log.info("quality_rule: rule %s %r trunk %s%s: back within the rule", rule.id,
                     rule.name, cleared["resource_id"],
                     f" {cleared['group_key']!r}" if cleared["group_key"] else "")
        renew = now + dt.timedelta(minutes=rule.unblock_after) if rule.unblock_after else None
        fresh = [m for m in matches if _claim(cur, self.schema, rule, m, now, renew)]
        if fresh:
            start, end = rule.window(now)
            log_id = _log_run(cur, rule, now)
            if rule.is_email:
                pipe.mail_config.add_template(rule.template, subject=rule.subject,
                                              content=rule.content, sender=(
                                                  str(rule.sent_from)
                                                  if rule.sent_from is not None else None))
            for match in fresh:
                self._alert(cur, pipe, rule, match, log_id, start, end, renew)
        cur.execute("UPDATE alert_rules SET last_run_time = %s, next_run_time = %s "
                    "WHERE id = %s", (now, next_slot(rule, now), rule.id))

    def _alert(self, cur: db.Cursor, pipe: Pipeline, rule: Rule, match: Mapping[str, Any],
               log_id: int, start: dt.datetime, end: dt.datetime,
               until: dt.datetime | None) -> None:
        now = self.now
        own, partner = recipients(rule, match, pipe.system)
        block_id = _block(cur, self.schema, rule, match, now, until) if rule.is_block else None
        _detail(cur, log_id, rule, match, now, own, partner, block_id, until)
        if block_id is not None:
            self.result.state_changes += 1
        log.warning("quality_rule: %srule %s %r: trunk %s %r%s breaks %s over %s calls "
                    "(ASR %.2f%%, ACD %.2f s)%s",
                    "[dry run] " if self.settings.dry_run else "", rule.id, rule.name,
                    match["trunk"], match.get("alias"),
                    f" {match['gkey']!r}" if match["gkey"] else "",
                    qc.describe_conditions(rule.row), match["total"], match["asr"],
                    match["acd"], f"; blocked (resource_block {block_id})" if block_id else "")
        if not rule.is_email:
            return
        pipe.queue(cur, Notice(
            kind=KIND, dedupe_key=dedupe_key(rule.id, match["trunk"], match["gkey"], now),
            template=rule.template, client_id=match.get("client_id"),
            recipients=own or partner, extra_recipients=(partner,) if own and partner else (),
            context=context(rule, match, start, end, block_id is not None, until),
            decided_at=now, alert_rule=f"{rule.name}: {qc.describe_conditions(rule.row)}",
            resource_id=match["trunk"], meta={"rule_id": rule.id},
        ))


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Lift expired blocks, then run every due, computable rule (one evaluation query)."""
    return _Run(database, now, settings).run()
