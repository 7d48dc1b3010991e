"""`dnl-ad rule add|list|remove`: dnl_ad's own period-over-period rules (alert 12), kept in
its schema because v5 has no table for them. Values are checked here, with messages that
name the option, so a rule in the table is always one the sweep can judge."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from psycopg2 import sql

from . import db, migrations
from .alerts import period_compare as pc
from .config import Settings
from .mail.message import split_addresses, valid_address


class RuleError(ValueError):
    """A rule option that cannot be used; str() names the option and what was expected."""


def parse_scope(text: str) -> tuple[str, str]:
    """'all', 'client:42', 'trunk:7', 'code_name:UK Mobile', 'country:Nigeria'."""
    kind, _, value = text.partition(":")
    kind, value = kind.strip().lower(), value.strip()
    if kind == "all" and not value:
        return "all", ""
    if kind not in pc.SCOPES or not value:
        raise RuleError(f"--scope {text!r}: expected all, client:ID, trunk:ID, "
                        "code_name:NAME or country:NAME")
    if kind in ("client", "trunk") and not value.isdigit():
        raise RuleError(f"--scope {text!r}: a {kind} is given by its id")
    return kind, value


def validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """The rule row to insert, or RuleError."""
    out = dict(values)
    for key, options in (("metric", pc.METRICS), ("period", pc.PERIODS),
                         ("condition", pc.CONDITIONS), ("compare_to", pc.COMPARE)):
        if out[key] not in options:
            raise RuleError(f"--{key.replace('_', '-')} {out[key]!r}: expected one of "
                            + ", ".join(options))
    if out["compare_to"] == "week_before" and out["period"] == "month":
        raise RuleError("--compare week_before: only for a day or a week period")
    try:
        value = Decimal(str(out["value"]))
    except InvalidOperation:
        raise RuleError(f"--value {out['value']!r}: expected a number") from None
    if not value.is_finite() or (out["condition"] in pc.CHANGES and value < 0):
        raise RuleError(f"--value {out['value']!r}: expected a finite number"
                        + (" >= 0 for a change" if out["condition"] in pc.CHANGES else ""))
    out["value"] = value
    if int(out["min_calls"]) < 0:
        raise RuleError(f"--min-calls {out['min_calls']}: expected 0 or more")
    bad = [a for a in split_addresses(out["recipients"]) if not valid_address(a)]
    if bad or not split_addresses(out["recipients"]):
        raise RuleError(f"--to {out['recipients']!r}: expected one or more addresses "
                        f"separated by ; or ,{' (invalid: ' + ', '.join(bad) + ')' if bad else ''}")
    return out


def add_rule(cur: db.Cursor, schema: str, **values: Any) -> int:
    row = validate(values)
    cols = list(row)
    cur.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        migrations.own(schema, "period_rule"), sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(sql.Placeholder() * len(cols))), [row[c] for c in cols])
    return int(cur.fetchone()["id"])


def list_rules(cur: db.Cursor, schema: str) -> list[pc.PeriodRule]:
    cur.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(
        migrations.own(schema, "period_rule")))
    return [pc.PeriodRule.from_row(r) for r in cur.fetchall()]


def remove_rule(cur: db.Cursor, schema: str, rule_id: int) -> bool:
    cur.execute(sql.SQL("DELETE FROM {} WHERE id = %s RETURNING id").format(
        migrations.own(schema, "period_rule")), (rule_id,))
    return cur.fetchone() is not None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rule_command", required=True)
    p = sub.add_parser("add", help="add a period-over-period rule")
    p.add_argument("--name", required=True)
    p.add_argument("--metric", required=True, help="asr or acd")
    p.add_argument("--scope", default="all",
                   help="all, client:ID, trunk:ID, code_name:NAME or country:NAME")
    p.add_argument("--side", choices=("ingress", "egress"), default="ingress",
                   help="which leg's calls (default ingress)")
    p.add_argument("--period", required=True, help="day, week or month (UTC)")
    p.add_argument("--condition", required=True, help=", ".join(pc.CONDITIONS))
    p.add_argument("--value", required=True, help="the limit (a percentage for *_pct)")
    p.add_argument("--compare", default="previous", help="previous or week_before")
    p.add_argument("--min-calls", type=int, default=0,
                   help="periods with fewer attempts are not judged")
    p.add_argument("--to", required=True, help="recipients, separated by ; or ,")
    sub.add_parser("list", help="list the rules")
    p = sub.add_parser("remove", help="remove a rule")
    p.add_argument("id", type=int)


def main(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout

    def work(cur: db.Cursor, schema: str) -> int:
        if args.rule_command == "add":
            scope, scope_value = parse_scope(args.scope)
            rule_id = add_rule(
                cur, schema, name=args.name, metric=args.metric.lower(), scope=scope,
                scope_value=scope_value, side=1 if args.side == "ingress" else 2,
                period=args.period.lower(), condition=args.condition.lower(),
                value=args.value, compare_to=args.compare.lower(),
                min_calls=args.min_calls, recipients=args.to)
            print(f"rule {rule_id} added", file=out)
        elif args.rule_command == "list":
            rules = list_rules(cur, schema)
            for r in rules:
                print(f"{r.id:>4}  {r.name}: {r.describe()}; {r.scope_text()}; per "
                      f"{r.period}; min {r.min_calls} calls; to {r.recipients}", file=out)
            if not rules:
                print("no rules", file=out)
        elif not remove_rule(cur, schema, args.id):
            print(f"no rule {args.id}", file=sys.stderr)
            return 1
        else:
            print(f"rule {args.id} removed", file=out)
        return 0

    return migrations.run_command(settings, work, (RuleError,))
