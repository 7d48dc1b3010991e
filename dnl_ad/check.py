"""`dnl-ad check`: is this installation ready to run? One row per check, exit 0 or 1.

Checks, in order (later ones are skipped when the database cannot be reached):
configuration, database connection, provider contract columns (missing ones listed by
table), dnl_ad's own schema migrated, SMTP reachable (EHLO, STARTTLS/TLS and AUTH as
configured), and every mail template: the operator's mail_tmplate columns compile, their
unknown tags are listed, and each template renders a sample notice (with the project's
defaults where the column is empty), then the daily CDR links: the CDR API answers a
token request, daily_cdr_fields per direction, the deprecated CDR_API_* keys in use.

FAIL makes the exit status 1; WARN (optional columns, unknown tags) is listed only.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TextIO

from psycopg2 import sql

from . import contract, db, migrations
from .config import Settings

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"


@dataclass
class Row:
    check: str
    status: str
    detail: str


def table(rows: list[Row]) -> str:
    """A plain text table; long details wrap onto indented lines."""
    width = max(len(r.check) for r in rows)
    out = [f"{'CHECK'.ljust(width)}  STATUS  DETAIL", f"{'-' * width}  ------  {'-' * 40}"]
    for r in rows:
        lines = r.detail.splitlines() or [""]
        out.append(f"{r.check.ljust(width)}  {r.status.ljust(6)}  {lines[0]}")
        out.extend(f"{'':{width}}  {'':6}  {line}" for line in lines[1:])
    return "\n".join(out)


def _first_line(exc: BaseException) -> str:
    lines = db.scrub(str(exc)).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def check_contract(cur: db.Cursor) -> list[Row]:
    present = db.table_columns(cur)
    missing = contract.missing_columns(present)
    rows = []
    if missing:
        rows.append(Row("contract columns", FAIL, "missing:\n" + "\n".join(
            f"{t}: {', '.join(cols)}" for t, cols in sorted(missing.items()))))
    else:
        n = sum(len(c) for c in contract.REQUIRED.values())
        rows.append(Row("contract columns", OK, f"all {n} required columns present in "
                                                f"{len(contract.REQUIRED)} tables"))
    optional = {t: [c for c in cols if c not in present.get(t, set())]
                for t, cols in contract.OPTIONAL.items()}
    optional = {t: cols for t, cols in optional.items() if cols}
    if optional:
        rows.append(Row("optional columns", WARN, "absent (their tags render empty):\n"
                        + "\n".join(f"{t}: {', '.join(c)}" for t, c in sorted(optional.items()))))
    return rows


def check_schema(cur: db.Cursor, settings: Settings) -> Row:
    todo = migrations.pending(cur, settings.own_schema)
    if todo:
        return Row("own schema", FAIL, f"schema {settings.own_schema} lacks "
                   f"{', '.join(n for _, n in todo)}: run `dnl-ad migrate` (start does too)")
    return Row("own schema", OK, f"schema {settings.own_schema} is at version "
               f"{max(v for v, _ in migrations.available())}")


def unknown_keys_row(settings: Settings) -> Row:
    """An unknown key is a setting the operator wrote and dnl_ad ignores: a typo, mostly."""
    from .config import ENV_PREFIX, did_you_mean

    named = [key + (did_you_mean(key.removeprefix(ENV_PREFIX), ENV_PREFIX)
                    if key.startswith(ENV_PREFIX) else did_you_mean(key))
             for key in settings.unknown_keys]
    return Row("unknown keys", FAIL, "ignored: " + "; ".join(named)
               + " (fix or remove them; the README lists every key)")


def check_active_daemon(settings: Settings) -> Row:
    """Informative: which daemon holds the active-daemon lock on this database."""
    from . import leader

    try:
        holder = leader.LeaderLock(settings.connection_string).holder()
    except Exception as exc:
        return Row("active daemon", WARN, f"could not read the lock: {_first_line(exc)}")
    if holder is None:
        return Row("active daemon", OK, "no daemon is active on this database")
    then = (f"stand by, taking over within {settings.ha_takeover_seconds} s (HA_STANDBY)"
            if settings.ha_standby else "exit 1 (HA_STANDBY=false)")
    return Row("active daemon", OK, f"held by {holder.describe()}; a daemon started now "
               f"would {then}")


def check_smtp(settings: Settings, system: dict[str, Any]) -> Row:
    from .mail import smtp

    try:
        config = smtp.resolve(settings, system)
    except smtp.SessionError as exc:
        return Row("smtp", FAIL, str(exc))
    if not config.host:
        return Row("smtp", FAIL, "no SMTP host: set SMTP_HOST or system_parameter.smtphost")
    if settings.smtp_ca_file and not os.path.isfile(settings.smtp_ca_file):
        return Row("smtp", FAIL, f"SMTP_CA_FILE={settings.smtp_ca_file!r} is not a readable "
                   "file: name the PEM file of the CA that signed the server's certificate")
    sender = (str(system.get("fromemail") or "").strip() or settings.smtp_from
              or "postmaster@" + (config.helo_name or smtp.default_helo_name()))
    session = smtp.Session(config)
    try:
        features = session.probe(sender)
    except smtp.SessionError as exc:
        return Row("smtp", FAIL, db.scrub(str(exc)))
    auth = f"logged in as {config.user}" if config.user else "no AUTH configured"
    auth += " over TLS" if session.tls else " without TLS"
    return Row("smtp", OK, f"{config.where}: EHLO as {config.helo_name or smtp.default_helo_name()}"
               f" ok, {auth}, MAIL FROM:<{sender}> and RSET ok; "
               f"server offers {', '.join(features) or 'no extensions'}")


def check_operator_alerts(cur: db.Cursor, settings: Settings, system: dict[str, Any]) -> Row:
    """Where the operator alerts go (dnl_ad.operator_alerts)."""
    from . import operator_alerts

    to = operator_alerts.recipients(settings, system)
    cur.execute("SELECT to_regclass('admin_alert') IS NOT NULL AS ok")
    inbox = "" if cur.fetchone()["ok"] else "; no admin_alert table (the UI's inbox): not written"
    if not to:
        return Row("operator alerts", WARN, "no address: set ADMIN_EMAIL or system_parameter."
                   "system_admin_email (admin_alert rows only)" + inbox)
    return Row("operator alerts", WARN if inbox else OK,
               f"to {to}, after {settings.admin_alert_after_minutes} min of failures"
               + inbox)


def check_cdr(cur: db.Cursor, settings: Settings) -> list[Row]:
    """The daily CDR links: the CDR API answers a token request, the file's fields
    (daily_cdr_fields) per direction, the old CDR_API_* keys still in use."""
    from . import cdr_api
    from .config import cdr_api_host, old_cdr_keys_note

    rows = []
    note = old_cdr_keys_note(settings)
    if note:
        rows.append(Row("cdr api keys", WARN, note))
    host = cdr_api_host(settings)
    static = settings.cdr_download_url
    if not host:
        rows.append(Row("cdr api", OK if static else WARN,
                        "CDR_API_HOST is empty: static CDR_DOWNLOAD_URL links" if static else
                        "neither CDR_API_HOST nor CDR_DOWNLOAD_URL is set: CDR mails get no "
                        "link and are not sent"))
    else:
        api = cdr_api.CdrApi(host, token_port=settings.cdr_api_token_port,
                             export_port=settings.cdr_api_export_port,
                             user=settings.cdr_api_user, password=settings.cdr_api_password,
                             timeout=min(settings.cdr_api_timeout_seconds, 10), poll=1)
        where = f"{host} (token port {settings.cdr_api_token_port}, export port " \
                f"{settings.cdr_api_export_port})"
        try:
            api.ping()
            rows.append(Row("cdr api", OK, f"{where}: token obtained"))
        except cdr_api.CdrApiError as exc:
            rows.append(Row("cdr api", FAIL if not static else WARN,
                            f"{where}: {exc}" + ("; CDR_DOWNLOAD_URL links are used meanwhile"
                                                 if static else "")))
    cur.execute("SELECT type, count(*) AS n FROM daily_cdr_fields WHERE type IN (0, 1) "
                "GROUP BY type")
    counts = {r["type"]: r["n"] for r in cur.fetchall()}
    sides = ", ".join(f"{counts.get(n, 0)} {side}" for n, side in enumerate(cdr_api.SIDES))
    rows.append(Row("cdr fields", OK if counts else WARN,
                    f"daily_cdr_fields: {sides}" + ("" if counts else
                                                    " (the API's default columns are used)")))
    return rows


def _sample_value(tag: str, now: dt.datetime) -> Any:
    """A plausible value for a tag, typed as alerts pass them (money as Decimal, ...)."""
    if tag in ("currency", "noc_email"):
        return {"currency": "USD", "noc_email": "noc@carrier.example"}[tag]
    if any(w in tag for w in ("balance", "amount", "credit", "cost")):
        return Decimal("1234.50")
    if any(w in tag for w in ("calls", "count")):
        return 42
    if any(w in tag for w in ("min", "duration")):
        return Decimal("12.50")
    if any(w in tag for w in ("time", "date", "deadline", "now", "day", "begining")):
        return now
    if "link" in tag or "url" in tag:
        return "https://portal.example/cdr?id=1"
    return f"Sample {tag.replace('_', ' ')}"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check_templates(cur: db.Cursor, settings: Settings, now: dt.datetime) -> list[Row]:
    from .mail import render
    from .notice import Notice

    config = render.MailConfig.load(cur, settings)
    rows = []
    problems: dict[str, list[render.TemplateProblem]] = {}
    for found in config.problems():  # one per column: subject and content may both have some
        problems.setdefault(found.template, []).append(found)
    for template, kind in render.TEMPLATE_KINDS.items():
        context = {tag: _sample_value(tag, now) for tag in render.KNOWN_TAGS.get(kind, ())}
        notice = Notice(kind=kind, dedupe_key=f"check:{template}", template=template,
                        client_id=None, recipients="client@example.com", context=context,
                        decided_at=now)
        collect = _Collect()
        logger = logging.getLogger("dnl_ad.mail")
        logger.addHandler(collect)
        try:
            rendered = render.render_notice(notice, config)
            error = ""
        except Exception as exc:  # render_notice should not raise; report if it does
            rendered, error = None, f"{type(exc).__name__}: {exc}"
        finally:
            logger.removeHandler(collect)
        name = f"template {template}"
        found = problems.get(template, [])
        compile_errors = "; ".join(f"{p.column}: {p.error}" for p in found if p.error)
        unknown = "; ".join(f"{p.column}: " + ", ".join("{" + t + "}" for t in p.unknown_tags)
                            for p in found if p.unknown_tags)
        failures = [m for m in collect.messages if "unknown tags" not in m]
        if error or failures or compile_errors or rendered is None \
                or not rendered.subject.strip() or not rendered.text.strip():
            detail = error or "; ".join(failures) or compile_errors \
                or "renders an empty subject or text"
            rows.append(Row(name, FAIL, f"{kind}: {detail}"))
        elif unknown:
            rows.append(Row(name, WARN, f"{kind}: unknown tags in {unknown}"
                            " (they reach the client as written)"))
        else:
            rows.append(Row(name, OK, f"{kind}: renders ({rendered.source} template): "
                            f"{rendered.subject[:60]}"))
    return rows


_ENABLED = """
SELECT count(*) FILTER (WHERE c.status AND NOT coalesce(c.unlimited_credit, false)
           AND (coalesce(c.is_daily_balance_notification, false)
                OR coalesce(g.is_notify, false))) AS low,
       count(*) FILTER (WHERE c.status AND NOT coalesce(c.unlimited_credit, false)
           AND coalesce(c.zero_balance_notice, false)) AS zero,
       count(*) FILTER (WHERE c.status AND coalesce(c.is_auto_summary, false)) AS usage,
       count(*) FILTER (WHERE c.status AND coalesce(c.is_auto_balance, false)) AS balance,
       count(*) FILTER (WHERE c.status AND coalesce(c.daily_cdr_generation, false)) AS cdr,
       count(*) FILTER (WHERE c.status) AS active
FROM client c LEFT JOIN client_low_balance_config g ON g.client_id = c.client_id
"""


def check_settings(cur: db.Cursor, settings: Settings, now: dt.datetime) -> list[Row]:
    """What the v5 UI's settings ask of dnl_ad: clients enabled per alert, rate sends
    waiting for a download, and trunks too long overdue to be suspended by dnl_ad."""
    from .alerts import (
        fraud_detection,
        low_balance_disable,
        trunk_common,
        trunk_suspended,
        usage_limit,
    )

    cur.execute(_ENABLED)
    n = cur.fetchone()
    rows = [Row("clients enabled per alert", OK,
                f"low balance {n['low']}, zero balance {n['zero']}, usage summary "
                f"{n['usage']}, balance summary {n['balance']}, daily CDR {n['cdr']} "
                f"(of {n['active']} active clients)")]
    waiting = trunk_common.candidates(cur, now, dt.datetime.max.replace(tzinfo=dt.UTC),
                                      trunk_common.ANY_SEND)
    rows.append(Row("rate sends pending", OK,
                    f"{len(waiting)} trunk(s) waiting to download a rate deck"
                    + (f", next deadline {waiting[0].deadline.isoformat()}" if waiting
                       else "")))
    rows.append(Row("usage limits", OK, usage_limit.check_line(cur, settings)))
    rows.append(Row("fraud rules", OK, fraud_detection.check_line(cur, settings)))
    rows.append(Row("low balance disable", OK, low_balance_disable.check_line(cur, settings)))
    old = trunk_suspended.too_old(cur, now, settings)
    if old:
        shown = "\n".join(f"client {c.client_id} trunk {c.resource_id} {c.alias!r}: rate send "
                          f"{c.rate_send_id}, deadline {c.deadline:%Y-%m-%d}" for c in old[:20])
        more = f"\n... and {len(old) - 20} more" if len(old) > 20 else ""
        rows.append(Row("overdue rate sends", WARN,
                        f"{len(old)} trunk(s) past the deadline by more than "
                        f"SUSPEND_MAX_OVERDUE_DAYS={settings.suspend_max_overdue_days}; "
                        f"dnl_ad will not suspend them:\n{shown}{more}"))
    return rows


def _own_templates(check: str, kind: str,
                   sources: list[tuple[str, str, str | None, str | None]]) -> list[Row]:
    """Unknown tags in the templates v5 keeps on the rule rows themselves (a row only when
    one has some: they reach the recipient as written)."""
    from .mail import render

    found = []
    for name, prefix, subject, content in sources:
        for part, text in (("subject", subject), ("content", content)):
            unknown = render.unknown_tags(text, kind)
            if unknown:
                found.append(f"{name} {prefix}_{part}: "
                             + ", ".join("{" + t + "}" for t in unknown))
    if not found:
        return []
    return [Row(check, WARN, "unknown tags (they reach the recipient as written):\n"
                + "\n".join(found[:20]))]


def check_quality(cur: db.Cursor, now: dt.datetime, schema: str = "dnl_ad") -> list[Row]:
    """The quality alarms' settings: active rules, and the rules dnl_ad cannot evaluate
    from the aggregate tables (each with the reason)."""
    from .alerts import quality_rule

    rules = quality_rule.load_rules(cur)
    skipped = [(r, quality_rule.not_computable(r)) for r in rules]
    skipped = [(r, why) for r, why in skipped if why]
    never = [r for r in rules if r.schedule not in (1, 2, 3)]
    rows = [Row("quality rules", OK,
                f"{len(rules)} active alert_rules, {len(rules) - len(skipped)} evaluated"
                + (f", {len(never)} with execution_schedule 'never'" if never else ""))]
    if skipped:
        shown = "\n".join(f"rule {r.id} {r.name!r}: {why}" for r, why in skipped[:20])
        more = f"\n... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        rows.append(Row("quality rules skipped", WARN,
                        f"{len(skipped)} rule(s) not computable from aggregates:\n"
                        f"{shown}{more}"))
    rows += _own_templates(
        "quality rule templates", "quality_rule",
        [(f"rule {r.id} {r.name!r}", "trouble_ticket", r.subject, r.content) for r in rules])
    from .alerts import traffic_alert

    alerts = traffic_alert.load(cur)
    rows += _own_templates(
        "traffic alert templates", "traffic_alert",
        [(f"traffic_alert {a['id']}", "mail", a.get("mail_subject"), a.get("mail_content"))
         for a in alerts])
    unusable = [(a, traffic_alert.problem(a)) for a in alerts]
    unusable = [(a, why) for a, why in unusable if why]
    rows.append(Row("traffic alerts", WARN if unusable else OK,
                    f"{len(alerts)} active traffic_alert row(s)"
                    + "".join(f"\nrow {a['id']}: {why}" for a, why in unusable[:20])))
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f"{schema}.period_rule",))
    if cur.fetchone()["present"]:
        cur.execute(sql.SQL("SELECT count(*) FILTER (WHERE active) AS active, count(*) AS n "
                            "FROM {}.period_rule").format(sql.Identifier(schema)))
        n = cur.fetchone()
        rows.append(Row("period rules", OK, f"{n['active']} active of {n['n']} "
                        "(dnl-ad rule list)"))
        cur.execute(sql.SQL("SELECT count(*) FILTER (WHERE list = 'black') AS black, "
                            "count(*) FILTER (WHERE list = 'white') AS white "
                            "FROM {}.watch_entry").format(sql.Identifier(schema)))
        n = cur.fetchone()
        rows.append(Row("watch lists", OK, f"{n['black']} blacklist and {n['white']} "
                        "whitelist entries (dnl-ad watch list)"))
    return rows


def run_checks(settings: Settings, now: dt.datetime | None = None) -> list[Row]:
    now = now or dt.datetime.now(dt.timezone.utc)
    rows = [Row("configuration", OK, f"{settings.config_path or 'defaults'} "
                "(+ DNL_AD_* environment)" + (", DRY RUN" if settings.dry_run else ""))]
    if settings.unknown_keys:
        rows.append(unknown_keys_row(settings))
    try:
        conn = db.connect(settings.connection_string, connect_timeout=10)
    except db.CONNECTION_ERRORS as exc:
        rows.append(Row("database", FAIL, f"{db.mask_dsn(settings.connection_string)}: "
                        f"{_first_line(exc)}"))
        rows += [Row(n, SKIP, "needs the database") for n in
                 ("contract columns", "own schema", "active daemon", "smtp", "templates")]
        return rows
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()["server_version"]
            rows.append(Row("database", OK, f"{db.mask_dsn(settings.connection_string)} "
                            f"(PostgreSQL {version})"))
            rows += check_contract(cur)
            rows.append(check_schema(cur, settings))
            rows.append(check_active_daemon(settings))
            try:
                cur.execute("SELECT * FROM system_parameter ORDER BY sys_id LIMIT 1")
                system = dict(cur.fetchone() or {})
            except Exception as exc:
                conn.rollback()
                system = {}
                rows.append(Row("system_parameter", FAIL, _first_line(exc)))
            rows.append(check_smtp(settings, system))
            rows.append(check_operator_alerts(cur, settings, system))
            try:
                rows += check_templates(cur, settings, now)
            except Exception as exc:
                conn.rollback()
                rows.append(Row("templates", FAIL, _first_line(exc)))
            try:
                rows += check_settings(cur, settings, now)
            except Exception as exc:
                conn.rollback()
                rows.append(Row("v5 settings", FAIL, _first_line(exc)))
            try:
                rows += check_cdr(cur, settings)
            except Exception as exc:
                conn.rollback()
                rows.append(Row("cdr fields", FAIL, _first_line(exc)))
            try:
                rows += check_quality(cur, now, settings.own_schema)
            except Exception as exc:
                conn.rollback()
                rows.append(Row("quality rules", FAIL, _first_line(exc)))
        conn.rollback()  # check writes nothing
    finally:
        conn.close()
    return rows


def main(settings: Settings, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    rows = run_checks(settings)
    print(table(rows), file=out)
    failed = [r.check for r in rows if r.status == FAIL]
    print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}" if failed
          else "\nall checks passed", file=out)
    return 1 if failed else 0
