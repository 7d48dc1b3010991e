"""Benchmark: alert 11, quality rules: 200 rules over 5,000 trunks and 1,000,000 hourly
cdr_report_detail rows (the last 4 hours), on an embedded PostgreSQL.

    .venv/bin/python bench/bench_quality.py [ROWS] [RULES]

Side by side in the same run:
- the bare aggregation queries: for each distinct (leg, grouping, window) the rules
  need, the plain GROUP BY over the window (trunk; trunk + code name / country / code),
  counted on the server (no rows sent back), best of 3, summed;
- one evaluation of all the rules: quality_rule.evaluate, the sweep's one query (the same
  aggregations joined to the rules' trunks, minimum samples and conditions), best of 3;
  a tenth of the rules watch all trunks, the rest 25 listed trunks each (a window whose
  rules all list their trunks aggregates only those); then the worst case, the same rules
  all set to all trunks;
- the whole sweep once (rules loaded, evaluation, logs, blocks, trouble tickets rendered
  and queued, last/next_run_time written).
The issue's target: the evaluation within 2x the bare aggregations.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import sys
from collections.abc import Sequence

from _support import bench_settings, populate, provider_database, show, stopwatch
from psycopg2 import sql

from dnl_ad import db
from dnl_ad.alerts import quality_common, quality_rule

NOW = dt.datetime(2026, 11, 21, 10, 5, tzinfo=dt.UTC)
HOURS = 4
TRUNKS = 5000            # 1..2500 ingress, 2501..5000 egress
CLIENTS = 500
DEGRADED = 500           # every 500th trunk answers 10 % of its calls, the others 60 %


def load(cur: db.Cursor, rows: int) -> None:
    """Clients, trunks and `rows` hourly rows spread over the last HOURS hours."""
    cur.execute("INSERT INTO currency (currency_id, code) VALUES (1, 'USD')")
    cur.execute("INSERT INTO system_parameter (sys_id, sys_timezone, fromemail, noc_email) "
                "VALUES (1, '+0000', 'billing@carrier.example', 'noc@carrier.example')")
    cur.execute("INSERT INTO mail_tmplate DEFAULT VALUES")
    cur.execute("INSERT INTO client (client_id, name, status, mode, currency_id, noc_email) "
                "SELECT c, 'client' || c, true, 1, 1, 'noc' || c || '@client.example' "
                "FROM generate_series(1, %s) c", (CLIENTS,))
    cur.execute("INSERT INTO resource (resource_id, client_id, alias, active, ingress, egress) "
                "SELECT t, 1 + t %% %s, 'trunk' || t, true, t <= %s, t > %s "
                "FROM generate_series(1, %s) t", (CLIENTS, TRUNKS // 2, TRUNKS // 2, TRUNKS))
    db.ensure_cdr_partition(cur, NOW.date())
    start = quality_common.floor_hour(NOW) - dt.timedelta(hours=HOURS)
    per_hour = rows // HOURS
    half = TRUNKS // 2
    cur.execute(
        """
        INSERT INTO cdr_report_detail (
            report_time, ingress_client_id, ingress_id, egress_client_id, egress_id,
            ingress_total_calls, egress_total_calls, not_zero_calls, duration, pdd,
            ingress_call_cost, egress_call_cost, ingress_code, egress_code,
            ingress_code_name, egress_code_name, ingress_country, egress_country)
        SELECT %(start)s::timestamptz + h * interval '1 hour', 1 + it %% %(clients)s, it,
               1 + et %% %(clients)s, et, calls, calls,
               CASE WHEN it %% %(degraded)s = 0 OR et %% %(degraded)s = 0
                    THEN calls / 10 ELSE calls * 6 / 10 END,
               CASE WHEN it %% %(degraded)s = 0 OR et %% %(degraded)s = 0
                    THEN calls / 10 * 30 ELSE calls * 6 / 10 * 60 END,
               calls * 1800, calls * 0.012, calls * 0.010,
               '44' || (i %% 100), '44' || (i %% 100), 'Dest ' || (i %% 100),
               'Dest ' || (i %% 100), 'Country ' || (i %% 40), 'Country ' || (i %% 40)
        FROM generate_series(0, %(hours)s - 1) h
        CROSS JOIN generate_series(1, %(per_hour)s) i
        CROSS JOIN LATERAL (SELECT 1 + i %% %(half)s AS it,
                                   %(half)s + 1 + (i * 7) %% %(half)s AS et,
                                   10 + i %% 30 AS calls) x
        """, {"start": start, "clients": CLIENTS, "degraded": DEGRADED, "hours": HOURS,
              "per_hour": per_hour, "half": half})
    cur.execute("ANALYZE")


def rule_rows(n: int) -> list[dict[str, object]]:
    """`n` rules as the UI saves them: both legs, the four groupings, 1-3 hour windows,
    a tenth on all trunks and the rest on 25 listed trunks each."""
    half = TRUNKS // 2
    out = []
    for k in range(n):
        side = 1 + k % 2
        base = 0 if side == 1 else half
        trunks = [base + 1 + (k * 37 + j * 101) % half for j in range(25)]
        out.append({
            "id": k + 1, "rule_name": f"rule {k + 1}", "trunk_type": side,
            "all_trunk": k % 10 == 0, "res_id": ",".join(map(str, trunks)),
            "monitor_by": (0, 5, 6, 7)[(k // 2) % 4], "sample_size": (60, 120, 180)[k % 3],
            "asr": "<", "asr_value": 30, "acd": "<", "acd_value": 40, "abr": "1",
            "pdd": "1", "profitability": "1", "revenue": "1", "min_call_attempt": 20,
            "execution_schedule": 1, "specific_minutes": 5, "active": True,
            "is_block": k % 4 == 0, "is_email": True, "unblock_after_min": 30,
            "trouble_ticket_sent_to": 3})
    return out


def insert_rules(cur: db.Cursor, rules: Sequence[dict[str, object]]) -> None:
    for rule in rules:
        cur.execute(sql.SQL("INSERT INTO alert_rules ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, rule)),
            sql.SQL(", ").join(sql.Placeholder() * len(rule))), list(rule.values()))


_GROUP = {0: None, 5: "code_name", 6: "country", 7: "code"}


def bare_query(side: int, grp: int) -> sql.Composed:
    """The plain aggregation for one (leg, grouping), totalled on the server (no rows sent
    back; the outer sums keep PostgreSQL from dropping the inner ones as unused)."""
    leg = "ingress" if side == 1 else "egress"
    keys = [sql.Identifier(f"{leg}_id")]
    if _GROUP[grp]:
        keys.append(sql.Identifier(f"{leg}_{_GROUP[grp]}"))
    return sql.SQL(
        "SELECT count(*), sum(t), sum(nz), sum(du), sum(pd), sum(ic), sum(ec) FROM ("
        "SELECT {keys}, sum({calls}) t, sum(not_zero_calls) nz, sum(duration) du, "
        "sum(pdd) pd, sum(ingress_call_cost) ic, sum(egress_call_cost) ec "
        "FROM cdr_report_detail WHERE report_time >= %s AND report_time < %s "
        "GROUP BY {keys}) s").format(keys=sql.SQL(", ").join(keys),
                                     calls=sql.Identifier(f"{leg}_total_calls"))


def best_of(n: int, work) -> float:
    return min(stopwatch(work)[1] for _ in range(n))


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    n_rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    n_rules = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    with provider_database("bench_quality") as (dsn, tmp):
        _, seconds = stopwatch(lambda: populate(dsn, lambda cur: load(cur, n_rows)))
        print(f"{n_rows:,} report rows over {TRUNKS:,} trunks loaded in {seconds:.1f} s")
        raw = rule_rows(n_rules)
        populate(dsn, lambda cur: insert_rules(cur, raw))
        rules = [quality_rule.rule_from_row(r) for r in raw]
        assert all(not quality_rule.not_computable(r) for r in rules)
        combos = sorted({(r.side, r.monitor_by, r.window(NOW)) for r in rules})
        database = db.Database(dsn)
        with database.transaction() as cur:
            def bare() -> None:
                for side, grp, (start, end) in combos:
                    cur.execute(bare_query(side, grp), (start, end))
                    cur.fetchone()

            bare_s = best_of(3, bare)
            found: dict[int, list] = {}

            def evaluate() -> None:
                found.update(quality_rule.evaluate(cur, rules, NOW))

            eval_s = best_of(3, evaluate)
            # the worst case: every rule on all trunks (no listed-trunk shortcut)
            everywhere = [dataclasses.replace(r, all_trunk=True) for r in rules]
            all_s = best_of(3, lambda: quality_rule.evaluate(cur, everywhere, NOW))
        matches = sum(len(v) for v in found.values())
        print(f"{n_rules} rules, {len(combos)} distinct (leg, grouping, window) aggregations")
        show(f"bare aggregation queries ({len(combos)}), best of 3", bare_s, unit="ms")
        show("one evaluation of all rules, best of 3", eval_s, unit="ms")
        print(f"    {matches:,} matching groups; evaluation / bare = {eval_s / bare_s:.2f}x "
              f"(target <= 2x)")
        show("the same, every rule on all trunks, best of 3", all_s, unit="ms")
        print(f"    evaluation / bare = {all_s / bare_s:.2f}x")
        settings = bench_settings(dsn, tmp)
        result, sweep_s = stopwatch(lambda: quality_rule.sweep(database, NOW, settings))
        show("whole sweep once (logs, blocks, tickets queued)", sweep_s, unit="ms")
        print(f"    queued {result.queued:,} trouble tickets, {result.state_changes:,} blocks")
        _idle, idle_s = stopwatch(lambda: quality_rule.sweep(database, NOW, settings))
        show("next sweep (no rule due yet)", idle_s, unit="ms")
        database.close()


if __name__ == "__main__":
    main()
