"""Alert 12, period-over-period alarms (CDR-Stats style), from dnl_ad's own `period_rule`
table (v5 has none; `dnl-ad rule add|list|remove` manage it).

A rule watches ASR or ACD of a scope of traffic (all of it, a client, a trunk, a
destination code name or a country; the ingress or egress leg) over a period (a UTC day,
an ISO week from Monday, a calendar month) and fires when the settled period's value is
below / above a value, or fell / rose by more than a value or a percentage against the
previous period (or, for days, the same weekday a week earlier). The percentage is the
change against the previous value: (current - previous) / previous x 100.

Each period is judged once, when it has settled (PERIOD_SETTLE_MINUTES after its end,
hourly rows arrive after their hour): the latest settled period of each rule not yet
judged (own table period_rule_run) is aggregated, for all due rules in one query. A
period with fewer than `min_calls` attempts (or, for a change, a previous period with
fewer) is not judged. CDR-Stats' known faults are avoided on purpose, and tested: "less
than" fires when the value is less; weekly and monthly rules run; the minimum sample.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from .. import db, migrations
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult

log = logging.getLogger(__name__)

KIND = "period_compare"
TEMPLATE = "period_compare"
METRICS = ("asr", "acd")
SCOPES = ("all", "client", "trunk", "code_name", "country")
PERIODS = ("day", "week", "month")
CONDITIONS = ("lt", "gt", "falls_by", "rises_by", "falls_by_pct", "rises_by_pct")
COMPARE = ("previous", "week_before")
CONDITION_TEXT = {"lt": "below", "gt": "above", "falls_by": "falls by more than",
                  "rises_by": "rises by more than", "falls_by_pct": "falls by more than",
                  "rises_by_pct": "rises by more than"}
CHANGES = {"falls_by", "rises_by", "falls_by_pct", "rises_by_pct"}


@dataclass(frozen=True)
class PeriodRule:
    id: int
    name: str
    metric: str
    scope: str
    scope_value: str
    side: int
    period: str
    condition: str
    value: Decimal
    compare_to: str
    min_calls: int
    recipients: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PeriodRule:
        return cls(row["id"], row["name"], row["metric"], row["scope"],
                   row["scope_value"] or "", int(row["side"]), row["period"],
                   row["condition"], Decimal(row["value"]), row["compare_to"],
                   int(row["min_calls"]), row["recipients"])

    @property
    def unit(self) -> str:
        return "%" if self.metric == "asr" else "s"

    def describe(self) -> str:
        pct = self.condition.endswith("_pct")
        unit = "%" if pct else self.unit
        what = f"{self.metric.upper()} {CONDITION_TEXT[self.condition]} {self.value:g}{unit}"
        if self.condition in CHANGES:
            what += (" against the previous " + self.period if self.compare_to == "previous"
                     else " against the same " + self.period + " a week earlier")
        return what

    def scope_text(self) -> str:
        leg = "ingress" if self.side == 1 else "egress"
        if self.scope == "all":
            return f"all {leg} traffic"
        return f"{leg} traffic of {self.scope.replace('_', ' ')} {self.scope_value}"


# --- periods (UTC) ----------------------------------------------------------------

def period_start(period: str, instant: dt.datetime) -> dt.datetime:
    """Start of the period that contains `instant`."""
    day = instant.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start(period: str, start: dt.datetime) -> dt.datetime:
    if period == "day":
        return start + dt.timedelta(days=1)
    if period == "week":
        return start + dt.timedelta(days=7)
    return (start + dt.timedelta(days=32)).replace(day=1)


def previous_start(period: str, start: dt.datetime) -> dt.datetime:
    if period == "day":
        return start - dt.timedelta(days=1)
    if period == "week":
        return start - dt.timedelta(days=7)
    return (start - dt.timedelta(days=1)).replace(day=1)


def settled_period(period: str, now: dt.datetime, settle: dt.timedelta
                   ) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the latest period that ended at least `settle` before `now`."""
    end = period_start(period, now - settle)
    return previous_start(period, end), end


def baseline(rule: PeriodRule, start: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The period the current one is compared with."""
    if rule.compare_to == "week_before":
        before = start - dt.timedelta(days=7)
        return before, before + (next_start(rule.period, start) - start)
    before = previous_start(rule.period, start)
    return before, start


def label(period: str, start: dt.datetime) -> str:
    if period == "day":
        return f"{start:%Y-%m-%d}"
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d} (from {start:%Y-%m-%d})"
    return f"{start:%Y-%m}"


# --- the decision -----------------------------------------------------------------

def value_of(metric: str, total: int, not_zero: int, duration: int) -> Decimal:
    if metric == "asr":
        return Decimal(not_zero) * 100 / Decimal(total) if total else Decimal(0)
    return Decimal(duration) / Decimal(not_zero) if not_zero else Decimal(0)


def fires(rule: PeriodRule, current: Decimal, previous: Decimal | None) -> bool:
    """The rule's condition: current against the value, or its change against the
    previous value (percentages of the previous value)."""
    if rule.condition == "lt":
        return current < rule.value
    if rule.condition == "gt":
        return current > rule.value
    if previous is None:
        return False
    change = current - previous
    if rule.condition == "falls_by":
        return -change > rule.value
    if rule.condition == "rises_by":
        return change > rule.value
    if previous == 0:
        return False  # no percentage of nothing
    pct = change * 100 / previous
    return -pct > rule.value if rule.condition == "falls_by_pct" else pct > rule.value


_SIDE = {  # (ingress, egress) column per measure
    "total": ("ingress_total_calls", "egress_total_calls"),
    "client": ("ingress_client_id", "egress_client_id"),
    "trunk": ("ingress_id", "egress_id"),
    "code_name": ("ingress_code_name", "egress_code_name"),
    "country": ("ingress_country", "egress_country"),
}


def _pick(measure: str) -> sql.Composable:
    ing, egr = _SIDE[measure]
    return sql.SQL("CASE w.side WHEN 1 THEN d.{} ELSE d.{} END").format(
        sql.Identifier(ing), sql.Identifier(egr))


_AGGREGATE = """
WITH w AS (
    SELECT * FROM unnest(%(rule_id)s::int[], %(which)s::text[], %(start_at)s::timestamptz[],
                         %(end_at)s::timestamptz[], %(side)s::int[], %(scope)s::text[],
                         %(scope_value)s::text[])
      AS w(rule_id, which, start_at, end_at, side, scope, scope_value)
)
SELECT w.rule_id, w.which, coalesce(sum({total}), 0)::bigint AS total,
       coalesce(sum(d.not_zero_calls), 0)::bigint AS not_zero,
       coalesce(sum(d.duration), 0)::bigint AS duration
FROM w
JOIN cdr_report_detail d ON d.report_time >= w.start_at AND d.report_time < w.end_at
WHERE w.scope = 'all'
   OR (w.scope = 'client' AND {client}::text = w.scope_value)
   OR (w.scope = 'trunk' AND {trunk}::text = w.scope_value)
   OR (w.scope = 'code_name' AND {code_name} = w.scope_value)
   OR (w.scope = 'country' AND {country} = w.scope_value)
GROUP BY w.rule_id, w.which
"""


def aggregate_query() -> sql.Composed:
    return sql.SQL(_AGGREGATE).format(total=_pick("total"), client=_pick("client"),
                                      trunk=_pick("trunk"), code_name=_pick("code_name"),
                                      country=_pick("country"))


@dataclass(frozen=True)
class Due:
    rule: PeriodRule
    start: dt.datetime
    end: dt.datetime
    base_start: dt.datetime
    base_end: dt.datetime


def _due(cur: db.Cursor, schema: str, now: dt.datetime, settle: dt.timedelta) -> list[Due]:
    """Every active rule with its latest settled period, when not judged yet."""
    cur.execute(sql.SQL("SELECT * FROM {} WHERE active ORDER BY id").format(
        migrations.own(schema, "period_rule")))
    rules = [PeriodRule.from_row(r) for r in cur.fetchall()]
    wanted = []
    for rule in rules:
        start, end = settled_period(rule.period, now, settle)
        wanted.append(Due(rule, start, end, *baseline(rule, start)))
    if not wanted:
        return []
    cur.execute(sql.SQL(
        "SELECT rule_id, period_start FROM {} WHERE (rule_id, period_start) IN "
        "(SELECT * FROM unnest(%s::int[], %s::timestamptz[]))").format(
            migrations.own(schema, "period_rule_run")),
        ([d.rule.id for d in wanted], [d.start for d in wanted]))
    done = {(r["rule_id"], r["period_start"]) for r in cur.fetchall()}
    return [d for d in wanted if (d.rule.id, d.start) not in done]


def measure(cur: db.Cursor, due: Sequence[Due]) -> dict[tuple[int, str], Mapping[str, Any]]:
    """(rule id, 'cur' | 'base') -> sums, for all due rules in one query."""
    arrays: dict[str, list[Any]] = {k: [] for k in ("rule_id", "which", "start_at", "end_at",
                                                     "side", "scope", "scope_value")}
    for d in due:
        windows = [("cur", d.start, d.end)]
        if d.rule.condition in CHANGES:
            windows.append(("base", d.base_start, d.base_end))
        for which, start, end in windows:
            arrays["rule_id"].append(d.rule.id)
            arrays["which"].append(which)
            arrays["start_at"].append(start)
            arrays["end_at"].append(end)
            arrays["side"].append(d.rule.side)
            arrays["scope"].append(d.rule.scope)
            arrays["scope_value"].append(d.rule.scope_value)
    cur.execute(aggregate_query(), arrays)
    return {(r["rule_id"], r["which"]): r for r in cur.fetchall()}


def _fmt(value: Decimal | None) -> str:
    return "" if value is None else f"{value:.2f}"


def context(d: Due, cur_sums: Mapping[str, Any], current: Decimal,
            base_sums: Mapping[str, Any] | None, previous: Decimal | None) -> dict[str, Any]:
    rule = d.rule
    change = (current - previous) if previous is not None else None
    pct = (change * 100 / previous) if (change is not None and previous) else None
    return {
        "rule_name": rule.name, "metric": rule.metric.upper(), "unit": rule.unit,
        "scope": rule.scope_text(), "period": rule.period, "condition": rule.describe(),
        "current_period": label(rule.period, d.start),
        "previous_period": label(rule.period, d.base_start) if previous is not None else "",
        "current_value": _fmt(current), "previous_value": _fmt(previous),
        "change": (f"{change:+.2f}" if change is not None else ""),
        "change_pct": (f"{pct:+.2f}" if pct is not None else ""),
        "current_calls": int(cur_sums["total"]),
        "previous_calls": int(base_sums["total"]) if base_sums else "",
        "client_name": "", "company_name": "",
    }


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Judge every active rule's latest settled period once (one aggregation query)."""
    result = SweepResult(KIND)
    settle = dt.timedelta(minutes=settings.period_settle_minutes)
    schema = settings.own_schema
    with db.unit_of_work(database, dry_run=settings.dry_run) as cur:
        due = _due(cur, schema, now, settle)
        if not due:
            return result
        sums = measure(cur, due)
        pipe: Pipeline | None = None
        empty = {"total": 0, "not_zero": 0, "duration": 0}
        for d in due:
            rule = d.rule
            cur_sums = sums.get((rule.id, "cur"), empty)
            base_sums = sums.get((rule.id, "base"), empty) if rule.condition in CHANGES \
                else None
            current = value_of(rule.metric, cur_sums["total"], cur_sums["not_zero"],
                               cur_sums["duration"])
            previous = (value_of(rule.metric, base_sums["total"], base_sums["not_zero"],
                                 base_sums["duration"]) if base_sums is not None else None)
            enough = cur_sums["total"] >= max(rule.min_calls, 1) and (
                base_sums is None or base_sums["total"] >= max(rule.min_calls, 1))
            hit = enough and fires(rule, current, previous)
            cur.execute(sql.SQL(
                "INSERT INTO {} (rule_id, period_start, evaluated_at, fired) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING rule_id").format(
                    migrations.own(schema, "period_rule_run")), (rule.id, d.start, now, hit))
            if cur.fetchone() is None:
                continue  # another daemon judged it
            if not enough:
                log.info("period_compare: rule %s %r %s %s: too few calls to judge (%s, "
                         "minimum %s)", rule.id, rule.name, rule.period,
                         label(rule.period, d.start), cur_sums["total"], rule.min_calls)
                continue
            if not hit:
                continue
            log.warning("period_compare: rule %s %r: %s %s is %s (previous %s): %s",
                        rule.id, rule.name, rule.metric.upper(), label(rule.period, d.start),
                        _fmt(current), _fmt(previous) or "-", rule.describe())
            pipe = pipe or Pipeline.open(cur, settings)
            client = int(rule.scope_value) if rule.scope == "client" and \
                rule.scope_value.isdigit() else None
            pipe.queue(cur, Notice(
                kind=KIND, dedupe_key=f"{KIND}:{rule.id}:{d.start:%Y%m%d}", template=TEMPLATE,
                client_id=client, recipients=rule.recipients,
                context=context(d, cur_sums, current, base_sums, previous), decided_at=now,
                alert_rule=f"{rule.name}: {rule.describe()}", meta={"rule_id": rule.id}))
        if pipe is not None:
            result.queued += pipe.queued
            result.duplicates += pipe.duplicates
            result.skipped += pipe.failed
            result.mails.extend(pipe.mails)
    return result
