"""Demo and load data: N clients with the variety real carriers have, relative to `now`.

Used by the demo (all seven alerts fire at `now`), the benchmarks (100,000 clients) and
tests. Rows are loaded with COPY, and the bulky hourly traffic with set-based SQL on the
server, never row by row: 100,000 clients load in well under a minute.

What a client gets is a pure function of its number, so a bench or a test can say
"client 50 is under its low-balance threshold" without reading the data back:

    i % 50 == 10  under the low-balance threshold      (2 %)
    i % 100 == 1  at or below zero / the credit limit   (1 %)
    i % 997 == 0  no c4_client_balance row (balance unknown)
    i % 31 == 0   no client_low_balance_config row
    i % 20 == 0   trunk whose rate deck is due today (pending-suspension notice)
    i % 20 == 1   trunk whose rate deck deadline passed yesterday (suspension)
    i % 20 == 2   rate deck due tomorrow (the 48-hour warning, whose template is filled in)
    i % 20 == 3   rate deck downloaded (nothing)
    i % 20 == 4   an old undownloaded deck superseded by a newer one (nothing)
    i % 5 == 0    two days of hourly traffic, buying and selling; daily reports enabled
    i % 25 == 0   daily and hourly usage limits, with traffic in the running hour
                  (qos_route_report): 60 % of the hourly limit; i % 50 == 0: 125 %;
                  the fraud rule "Hourly revenue over 1" (all trunks) fires for them
    i % 100 == 1  (under the threshold) a low-balance episode open for 6 days and a second
                  ingress trunk (id 2n + i): with LOW_BALANCE_DISABLE=true its active
                  ingress trunks are deactivated (the UI's default "Disable ingress
                  trunks after 5 days")

Settings are stored as the v5 UI stores them (PROVIDER_DB.md): the low-balance checkbox is
client.is_daily_balance_notification, low_balance_notice is false as every v5 form writes
it, rate sends are link sends (status 5) with a deadline date. The same data loads into
the project's provider subset and into the real v5 schema.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from .. import db

ZONES: tuple[str | None, ...] = (
    "+08:00", "+0800", "+05:45", "-03:30", "+14:00", "Asia/Hong_Kong", None, "-05:00",
    "GMT+8", "UTC", "America/New_York", "+8",
)
COMPANIES: tuple[str | None, ...] = (
    "Pacific Voice Ltd", "深圳市通信科技有限公司", "Telefónica Mayorista S.A.",
    "ООО «Связь-Транзит»", None, "O'Brien & Sons <VoIP>", "Ελληνική Τηλεφωνία",
    "東京テレコム株式会社", "Nordic Carrier AB",
)
PAYMENT_TERMS = ("Prepay", "Net 7", "Net 15", "Net 30 (monthly)")
_NULL = "\\N"


@dataclass(frozen=True)
class Generated:
    clients: int
    trunks: int
    rate_details: int
    traffic_rows: int


def _copy(cur: db.Cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows into table (CSV, NULL as \\N). Identifiers quoted, data never in SQL text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    count = 0
    for row in rows:
        writer.writerow([_NULL if v is None else v for v in row])
        count += 1
    buf.seek(0)
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL {})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.Literal(_NULL))
    cur.copy_expert(statement.as_string(cur), buf)
    return count


def _emails(i: int) -> str | None:
    if i % 97 == 0:
        return None
    if i % 89 == 0:
        return "accounts at client dot com"  # invalid on purpose
    if i % 3 == 0:
        return f"billing{i}@client{i}.example; noc{i}@client{i}.example, ceo{i}@client{i}.example"
    return f"billing{i}@client{i}.example"


def _client_rows(n: int) -> Iterable[tuple[Any, ...]]:
    for i in range(1, n + 1):
        postpay = i % 3 == 0
        limit = Decimal(100 * (1 + i % 10)) if postpay else Decimal(0)
        zone = ZONES[i % len(ZONES)]
        reports = i % 5 == 0
        yield (
            i, f"client{i:06d}", COMPANIES[i % len(COMPANIES)], i % 41 != 0,
            2 if postpay else 1, 1 + i % 2, -limit, i % 50 == 7, 1 + i % len(PAYMENT_TERMS),
            _emails(i), f"main{i}@client{i}.example", i % 10 != 9, False,
            (-limit * Decimal("0.8")) if postpay else None,
            i % 10 != 8, 0, reports, 1 if i % 15 == 0 else 0, 0 if i % 4 else None,
            zone or "+00:00", None if zone else ("+0800" if i % 2 else None),
            reports, reports, i % 3, 0,
        )


_CLIENT_COLUMNS = (
    "client_id", "name", "company", "status", "mode", "currency_id", "allowed_credit",
    "unlimited_credit", "payment_term_id", "billing_email", "email",
    "is_daily_balance_notification", "low_balance_notice", "notify_client_balance",
    "zero_balance_notice", "zero_balance_notice_time", "is_auto_summary",
    "auto_summary_not_zero", "auto_summary_hour", "auto_send_zone",
    "daily_balance_send_time_zone", "is_auto_balance", "daily_cdr_generation",
    "daily_cdr_generation_type", "auto_daily_balance_recipient",
)


def _balance(i: int) -> float | None:
    """Current balance by the scheme in the module docstring."""
    if i % 997 == 0:
        return None
    postpay = i % 3 == 0
    limit = 100 * (1 + i % 10)
    if i % 100 == 1:
        return -(limit + 10.25) if postpay else -5.5
    if i % 50 == 10:
        return -(limit * 0.9) if postpay else 42.75
    return 500.0 + i % 1000 + 0.5 if postpay else 1000.0 + i % 1000 + 0.25


def _low_config_rows(n: int) -> Iterable[tuple[Any, ...]]:
    for i in range(1, n + 1):
        if i % 31 == 0:
            continue
        percentage = i % 3 == 0 and i % 6 == 0
        yield (i, 1 if percentage else 0, 100 if not percentage else None,
               20 if percentage else None, 3 if i % 7 == 0 else None, 1 if i % 11 else 2,
               8 if i % 13 == 0 else None)


def _trunk_rows(n: int) -> Iterable[tuple[Any, ...]]:
    """Each client an ingress trunk (id 2i-1); every second client, and every client with
    traffic, an egress one (id 2i)."""
    for i in range(1, n + 1):
        alias = f"client{i:06d}-in" if i % 40 else f"O'Brien \"main\" {i}"
        yield (2 * i - 1, i, alias, True, True, False)
        if i % 2 == 0 or i % 5 == 0:
            yield (2 * i, i, f"client{i:06d}-out", True, False, True)


_RATE_SENDS = {  # log id -> (file, deadline date offset from today (UTC), send status)
    1: ("https://portal.carrier.example/rates/rates_a_z_2026.csv", 0, 5),
    2: ("https://portal.carrier.example/rates/rates_premium.csv", -1, 5),
    3: ("https://portal.carrier.example/rates/rates_weekly.csv", 1, 5),
    4: ("https://portal.carrier.example/rates/rates_downloaded.csv", 0, 4),
    5: ("https://portal.carrier.example/rates/rates_old.csv", -1, 5),
    6: ("https://portal.carrier.example/rates/rates_new.csv", 10, 5),
}


def _rate_detail_rows(n: int) -> Iterable[tuple[Any, ...]]:
    """(id, log_id, resource_id, status, download_date, send_to) by client number."""
    detail_id = 0
    for i in range(1, n + 1):
        kind = i % 20
        logs = {0: [1], 1: [2], 2: [3], 3: [4], 4: [5, 6]}.get(kind, [])
        for log_id in logs:
            detail_id += 1
            yield (detail_id, log_id, 2 * i - 1, 1, None, f"rates{i}@client{i}.example")


def _mail_template() -> dict[str, Any]:
    """A mail_tmplate row as the UI leaves it: some kinds edited, the rest empty."""
    return {
        "lowbalance_from": "1",
        "lowbalance_subject": "Low balance warning for {company_name}",
        "lowbalance_content": (
            "<p>Dear {client_name},</p><p>Your balance is <b>{balance}</b>, at or below your "
            "alert level of {notify_balance}. Remaining credit: {remaining_credit}.</p>"
            "<p>Payment terms: {payment_terms}. Checked {current_date} {time}.</p>"
        ),
        "lowbalance_cc": "",
        "zerobalance_from": "default",
        "zerobalance_subject": "Balance exhausted: {company_name}",
        "zerobalance_content": (
            "<p>Dear {client_name},</p><p>Your balance is {balance}; calls may be refused. "
            "Credit limit {credit_limit}.</p>"
        ),
        "zerobalance_cc": "noc@carrier.example",
        "hour_subject_48": "Two days left: download the new rates for {trunk_name}",
        "hour_content_48": (
            "<p>Dear {client_name},</p><p>The rate deck {rate_update_file_name} for trunk "
            "{trunk_name} must be downloaded by {rate_download_deadline}: "
            "<a href=\"{rate_download_link}\">{rate_download_link}</a></p>"
        ),
        "no_download_rate_subject": "Trunk {trunk_name} suspended",
        "no_download_rate_content": (
            "<p>Trunk <b>{trunk_name}</b> of {company_name} was suspended: the rate deck "
            "{rate_update_file_name} was not downloaded by {rate_download_deadline}.</p>"
        ),
    }


def generate(cur: db.Cursor, n_clients: int, now: dt.datetime, *, seed: int = 1,
             traffic_hours: int = 48, own_schema: str = "dnl_ad") -> Generated:
    """Fill an empty provider-subset database with `n_clients` clients relative to `now`.

    `seed` varies the traffic pattern; everything else follows the client number.
    """
    now = now.astimezone(dt.timezone.utc)
    today = now.date()
    v5 = _is_v5(cur)
    _copy(cur, "currency", ("currency_id", "code"), [(1, "USD"), (2, "EUR")])
    _copy(cur, "payment_term", ("payment_term_id", "name", "type", "days"),
          ((k, name, 1, 7 * k) for k, name in enumerate(PAYMENT_TERMS, start=1)))
    _copy(cur, "system_parameter",
          ("sys_id", "sys_timezone", "fromemail", "emailname", "smtphost", "smtpport",
           "smtp_secure", "loginemail", "finance_email", "noc_email", "switch_alias",
           "switch_ip"),
          [(1, "+0800", "billing@carrier.example", "Carrier Billing", "127.0.0.1", "25", 0,
            "false", "finance@carrier.example", "noc@carrier.example", "Carrier Switch",
            "203.0.113.10")])
    _copy(cur, "mail_sender", ("id", "email", "name", "secure"),
          [(1, "alerts@carrier.example", "Carrier Alerts", 0)])
    template = _mail_template()
    _copy(cur, "mail_tmplate", tuple(template), [tuple(template.values())])
    clients = _copy(cur, "client", _CLIENT_COLUMNS, _client_rows(n_clients))
    _copy(cur, "c4_client_balance", ("client_id", "balance"),
          ((str(i), _balance(i)) for i in range(1, n_clients + 1) if _balance(i) is not None))
    _copy(cur, "client_low_balance_config",
          ("client_id", "value_type", "actual_notify_balance", "percentage_notify_balance",
           "duplicate_days", "send_to", "daily_send_time"), _low_config_rows(n_clients))
    trunks = _copy(cur, "resource",
                   ("resource_id", "client_id", "alias", "active", "ingress", "egress"),
                   _trunk_rows(n_clients))
    _copy(cur, "resource_ip", ("resource_id", "ip"),
          ((2 * i - 1, f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
           for i in range(1, n_clients + 1)))
    _copy(cur, "resource_prefix", ("resource_id", "tech_prefix"),
          ((2 * i - 1, f"{i % 9000 + 1000}#") for i in range(1, n_clients + 1) if i % 2))
    send_columns = ["id", "status", "file", "effective_date", "download_deadline",
                    "download_method", "is_email_alert", "is_disable", "create_time"]
    extra: tuple[Any, ...] = ()
    if v5:  # NOT NULL there; dnl_ad never reads them
        send_columns += ["rate_table_id", "format", "email_template_id"]
        extra = (1, 1, 1)
    _copy(cur, "rate_send_log", send_columns,
          ((k, status, f, str(today + dt.timedelta(days=off)), today + dt.timedelta(days=off),
            2, True, True, now - dt.timedelta(days=3), *extra)
           for k, (f, off, status) in _RATE_SENDS.items()))
    details = _copy(cur, "rate_send_log_detail",
                    ("id", "log_id", "resource_id", "status", "download_date", "send_to"),
                    _rate_detail_rows(n_clients))
    # Deck 4 was downloaded by every trunk it went to, as the UI records a download.
    cur.execute("UPDATE rate_send_log_detail SET status = 3, download_date = %s "
                "WHERE log_id = 4", (today,))
    cur.execute("INSERT INTO rate_download_log (resource_id, file_path, download_time, "
                "download_ip, log_detail_id) SELECT resource_id, 'rates_downloaded.csv', %s, "
                "'198.51.100.7', log_id FROM rate_send_log_detail WHERE log_id = 4",
                (now - dt.timedelta(hours=2),))
    traffic = _traffic(cur, n_clients, now, traffic_hours, seed, partitions=not v5)
    _history(cur, now)
    _quality_rules(cur)
    _own_rules(cur, own_schema, now)
    # a traffic alert on client 5, with limits its steady traffic always meets
    cur.execute("INSERT INTO traffic_alert (less_hour, greater_hour, email, carriers, "
                "code_name, mail_from, mail_subject, mail_content, active) "
                "VALUES (1000, 0, 'noc@carrier.example', '5', '', '1', '', '', true)")
    _limits(cur, n_clients, now)
    _long_low_balance(cur, n_clients, now, own_schema)
    for table, column in (("client", "client_id"), ("resource", "resource_id"),
                          ("rate_send_log", "id"), ("rate_send_log_detail", "id"),
                          ("payment_term", "payment_term_id"), ("mail_sender", "id"),
                          ("currency", "currency_id")):
        cur.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence(%s, %s), "
                    "(SELECT coalesce(max({}), 1) FROM {}))").format(
                sql.Identifier(column), sql.Identifier(table)),
            (table, column))
    cur.execute("ANALYZE")
    return Generated(clients, trunks, details, traffic)


def _is_v5(cur: db.Cursor) -> bool:
    """The real v5 schema (its change-feed tables exist) rather than the subset."""
    cur.execute("SELECT to_regclass('public.client_record') IS NOT NULL AS v5")
    return bool(cur.fetchone()["v5"])


def _traffic(cur: db.Cursor, n_clients: int, now: dt.datetime, hours: int, seed: int, *,
             partitions: bool = True) -> int:
    """Hourly rows for every fifth client over the last `hours` (+ a day of slack, so that
    every zone's previous local day is covered): client i buys from its ingress trunk and
    sells through client i+5's egress trunk (the last wraps to client 5), so each
    traffic client has both halves."""
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(hours=hours + 24)
    day = start.date()
    while partitions and day <= end.date():  # v5: rows without a daily child stay in the parent
        db.ensure_cdr_partition(cur, day)
        day += dt.timedelta(days=1)
    cur.execute(
        """
        INSERT INTO cdr_report_detail (
            report_time, ingress_client_id, ingress_id, egress_client_id, egress_id,
            ingress_total_calls, ingress_success_calls, egress_total_calls, egress_success_calls,
            not_zero_calls, duration, ingress_bill_time, egress_bill_time,
            ingress_call_cost, egress_call_cost)
        SELECT h, c, 2 * c - 1, p, 2 * p,
               t, s, t, s, s, s * 61, s * 60, s * 60,
               round(s * 60 / 60.0 * 0.0125, 6), round(s * 60 / 60.0 * 0.0150, 6)
        FROM generate_series(5, %(n)s, 5) AS c
        CROSS JOIN LATERAL (SELECT CASE WHEN c + 5 <= %(n)s THEN c + 5 ELSE 5 END AS p) AS pp
        CROSS JOIN generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour',
                                   interval '1 hour') AS h
        CROSS JOIN LATERAL (SELECT 5 + (c * 7 + %(seed)s
                                        + extract(hour FROM h)::int * 13) %% 40 AS t) AS tt
        CROSS JOIN LATERAL (SELECT (t * 3) / 5 AS s) AS ss
        """,
        {"n": n_clients, "start": start, "end": end, "seed": seed},
    )
    return cur.rowcount


# Quality rules as the v5 UI saves them: the first fires on the ingress trunks of clients
# 5 and 10 (the demo traffic answers 60 % of calls, 61 s each) and blocks them for an
# hour; the second groups by DNIS, which aggregates cannot, and is listed by `check`.
QUALITY_RULES: tuple[dict[str, Any], ...] = (
    {"rule_name": "Low ASR on key routes", "trunk_type": 1, "all_trunk": False,
     "res_id": "9,19", "asr": "<", "asr_value": 70, "acd": "<", "acd_value": 65,
     "abr": "1", "pdd": "1", "profitability": "1", "revenue": "1", "min_call_attempt": 1,
     "sample_size": 60, "execution_schedule": 1, "specific_minutes": 15, "is_block": True,
     "is_email": True, "unblock_after_min": 60, "trouble_ticket_sent_to": 1,
     "monitor_by": 0, "active": True},
    {"rule_name": "ASR by DNIS", "trunk_type": 1, "all_trunk": True, "asr": "<",
     "asr_value": 20, "acd": "1", "abr": "1", "pdd": "1", "profitability": "1",
     "revenue": "1", "min_call_attempt": 50, "sample_size": 60, "execution_schedule": 2,
     "daily_time": 6, "is_block": False, "is_email": True, "trouble_ticket_sent_to": 1,
     "monitor_by": 1, "active": True},
)


def _quality_rules(cur: db.Cursor) -> None:
    for rule in QUALITY_RULES:
        cur.execute(sql.SQL("INSERT INTO alert_rules ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, rule)),
            sql.SQL(", ").join(sql.Placeholder() * len(rule))), list(rule.values()))


# dnl_ad's own period rule (its schema, when migrated): the demo traffic answers 60 % of
# its calls every day, so "yesterday's ASR below 70 %" fires once.
PERIOD_RULES: tuple[dict[str, Any], ...] = (
    {"name": "Daily ASR below 70%", "metric": "asr", "scope": "all", "period": "day",
     "condition": "lt", "value": 70, "min_calls": 1, "recipients": "noc@carrier.example"},
)


def _own_rules(cur: db.Cursor, schema: str, now: dt.datetime) -> None:
    """dnl_ad's own rules, when its schema is migrated: the period rule above, and a
    global blacklist of Cuba's prefix 53 that client 10 called in the last hour."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f"{schema}.period_rule",))
    if not cur.fetchone()["present"]:
        return
    for rule in PERIOD_RULES:
        cur.execute(sql.SQL("INSERT INTO {}.period_rule ({}) VALUES ({})").format(
            sql.Identifier(schema), sql.SQL(", ").join(map(sql.Identifier, rule)),
            sql.SQL(", ").join(sql.Placeholder() * len(rule))), list(rule.values()))
    cur.execute(sql.SQL("INSERT INTO {}.watch_entry (list, kind, value, note) "
                        "VALUES ('black', 'prefix', '53', 'demo: no calls to Cuba')").format(
        sql.Identifier(schema)))
    cur.execute("INSERT INTO cdr_report_detail (report_time, ingress_client_id, ingress_id, "
                "ingress_total_calls, ingress_success_calls, not_zero_calls, duration, "
                "ingress_bill_time, ingress_call_cost, ingress_code, ingress_country, "
                "egress_country) SELECT %s, client_id, 2 * client_id - 1, 12, 6, 6, 366, 360, "
                "0.5, '5351234', 'Cuba', 'Cuba' FROM client WHERE client_id = 10",
                (now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1),))


def _history(cur: db.Cursor, now: dt.datetime) -> None:
    """Three days of balance_history_actual for the clients with daily reports."""
    cur.execute(
        """
        INSERT INTO balance_history_actual (client_id, date, actual_balance,
                                            unbilled_incoming_traffic, unbilled_outgoing_traffic)
        SELECT c.client_id, d::date, coalesce(b.balance, 0)::numeric + 12.5 * k,
               round((c.client_id %% 17) * 1.25, 2), round((c.client_id %% 13) * 1.5, 2)
        FROM client c
        JOIN c4_client_balance b ON b.client_id = c.client_id::text
        CROSS JOIN generate_series(1, 3) AS k
        CROSS JOIN LATERAL (SELECT (%s::date - k) AS d) AS dd
        WHERE c.is_auto_balance
        """,
        (now.date(),),
    )


def _limits(cur: db.Cursor, n_clients: int, now: dt.datetime) -> None:
    """Usage limits (the UI's "Fraud Detection" box) for every 25th client, and their
    ingress traffic of the running hour in qos_route_report (cdr_report_detail has only
    the finished hours): 1.2 of an hourly limit of 2 (the 50 % notice), 2.5 for every
    50th client (100 %: its trunks are blocked until the hour ends)."""
    cur.execute("UPDATE client SET daily_limit = 50, hourly_limit = 2 "
                "WHERE client_id %% 25 = 0 AND client_id <= %s", (n_clients,))
    at = now - dt.timedelta(minutes=min(5, now.minute))
    cur.execute(
        "INSERT INTO qos_route_report (report_time, resource_id, code, direction, "
        "total_calls, not_zero_calls, bill_time, cost) "
        "SELECT %s, 2 * c - 1, '44', 0, 20, 12, 600, "
        "CASE WHEN c %% 50 = 0 THEN 2.5 ELSE 1.2 END "
        "FROM generate_series(25, %s, 25) AS c", (at, n_clients))
    # Fraud rules as the UI's Fraud Detection page stores them: one that fires for the
    # traffic above (mail to the switch's NOC, block), one with every limit left at 0.
    cur.execute(
        "INSERT INTO fraud_detection (rule_name, active, hourly_minute, hourly_revenue, "
        "daily_minute, daily_revenue, is_block, is_send_mail, email_to, ingress_ids) VALUES "
        "('Hourly revenue over 1', true, 0, 1, 0, 0, true, true, 0, ''), "
        "('Not configured', true, 0, 0, 0, 0, true, true, 2, '')")


def _long_low_balance(cur: db.Cursor, n_clients: int, now: dt.datetime,
                      own_schema: str) -> None:
    """A low-balance episode opened 6 days ago for clients i % 100 == 1, as dnl_ad would
    have recorded it (its own balance_episode row, told once) and the UI's columns show."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (f"{own_schema}.balance_episode",))
    if not cur.fetchone()["ok"]:
        return  # no own schema (not migrated): nothing to pretend
    started = now - dt.timedelta(days=6)
    cur.execute(
        sql.SQL("INSERT INTO {} (kind, client_id, started_at, notices, days, last_day, "
                "last_sent_at, next_due_at) SELECT 'low_balance', c, %s, 1, 1, %s, %s, %s "
                "FROM generate_series(1, %s, 100) AS c").format(
                    sql.Identifier(own_schema, "balance_episode")),
        (started, started.date(), started, started + dt.timedelta(days=1), n_clients))
    cur.execute("UPDATE client SET last_lowbalance_time = %s WHERE client_id %% 100 = 1",
                (started,))
    cur.execute("INSERT INTO resource (resource_id, client_id, alias, active, ingress, egress) "
                "SELECT 2 * %(n)s + c, c, 'client' || lpad(c::text, 6, '0') || '-in2', true, "
                "true, false FROM generate_series(1, %(n)s, 100) AS c", {"n": n_clients})
    cur.execute("UPDATE client_low_balance_config SET last_alert_time = %s, "
                "duplicate_send_days = 1 WHERE client_id %% 100 = 1", (started,))
