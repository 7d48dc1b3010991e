"""The operator hears about failures: a mail and an admin_alert row when dnl_ad is in trouble.

A failing job is otherwise visible only in a log file. Three kinds of condition:

  job:<name>   a job (an alert sweep, delivery) has failed every run for
               ADMIN_ALERT_AFTER_MINUTES or longer (the scheduler keeps when its failures
               began and the last error);
  delivery     delivery gave notices up (refused for good, MAX_ATTEMPTS reached, expired)
               within the last ADMIN_ALERT_AFTER_MINUTES (read from the outbox, so it holds
               across restarts and daemons); operator mails themselves are not counted;
  suspension   a trunk suspension could not be written (rolled back, retried next sweep);
               it recovers when a trunk_suspended sweep writes everything it should.

For each condition: one mail to the operator (ADMIN_EMAIL, else system_parameter's
system_admin_email and noc_email) and one `admin_alert` row (the UI's inbox, type
ADMIN_ALERT_TYPE) when it starts, saying what failed, since when and the last error; one
more of each when it recovers (only when its start was told); never more than one
"failing" an hour per condition. The state is in dnl_ad's table `operator_condition`, so a
restart or a take-over does not tell again; the mail goes through the outbox with the
dedupe key `admin:<condition>:<failing|recovered>:<UTC hour>`, so it is sent once and
survives SMTP trouble. Telling the operator never raises: a failure to do so is logged
(once, and once when it works again) and tried again at the next check.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg2 import sql

from . import db, logs, outbox
from .config import Settings
from .mail import message as mail_message
from .mail import render as mail_render
from .migrations import own
from .notice import Notice

if TYPE_CHECKING:
    from .scheduler import Loop, _Job

log = logging.getLogger(__name__)

KIND = "admin_alert"             # outbox kind of the operator mail
JOB_NAME = "operator_alerts"     # the scheduler job that runs the checks
CHECK_SECONDS = 60
# admin_alert.type: the UI uses 1-5 (usage limits, invalid login, ...); 6 is dnl_ad's
ADMIN_ALERT_TYPE = 6
REPEAT_AFTER = dt.timedelta(hours=1)  # at most one "failing" per condition in this time
TABLE = "operator_condition"


@dataclass(frozen=True)
class Observation:
    """What a check saw of one condition: failing (since when, why) or fine."""

    condition: str
    what: str                      # "job low_balance", "delivery", ...
    failing: bool
    since: dt.datetime | None = None
    error: str = ""
    due: bool = True               # failing long enough to be told


@dataclass
class _Events:
    """Suspension failures the trunk_suspended runs reported since the last check."""

    failed: int = 0
    clean: bool = False
    error: str = ""


def recipients(settings: Settings, system: Mapping[str, Any]) -> str:
    """ADMIN_EMAIL when set, else system_parameter.system_admin_email and noc_email."""
    if settings.admin_email.strip():
        return settings.admin_email.strip()
    parts = [str(system.get(c) or "").strip() for c in ("system_admin_email", "noc_email")]
    return "; ".join(p for p in parts if p)


class Monitor:
    """Collects what the jobs report and, once a minute, tells the operator what changed."""

    def __init__(self) -> None:
        self.suspension = _Events()
        self.trouble = logs.Conditions(log, logging.ERROR)

    def observe(self, name: str, ok: bool, seconds: float, result: Any) -> None:
        """The scheduler's per-run hook: remember suspension writes that failed."""
        if name != "trunk_suspended" or not ok or result is None:
            return
        failed = int(getattr(result, "failed", 0) or 0)
        if failed:
            self.suspension.failed += failed
            errors = getattr(result, "errors", None) or []
            self.suspension.error = errors[-1] if errors else self.suspension.error
        else:
            self.suspension.clean = True

    def observations(self, jobs: Iterable[_Job], now: dt.datetime,
                     settings: Settings) -> list[Observation]:
        """The jobs' and the suspension's conditions as seen now (delivery is read from
        the outbox in `check`)."""
        after = dt.timedelta(minutes=settings.admin_alert_after_minutes)
        found = []
        for job in jobs:
            if job.name == JOB_NAME or job.last_run is None:
                continue
            since = job.failing_since
            if since is not None:
                found.append(Observation(f"job:{job.name}", f"job {job.name}", True, since,
                                         job.last_error, due=now - since >= after))
            else:
                found.append(Observation(f"job:{job.name}", f"job {job.name}", False))
        if self.suspension.failed:
            found.append(Observation("suspension", "trunk suspension", True, now,
                                     f"{self.suspension.failed} suspension(s) not written; "
                                     f"last: {self.suspension.error}"))
        elif self.suspension.clean:
            found.append(Observation("suspension", "trunk suspension", False))
        return found

    def check(self, database: db.Database, settings: Settings, now: dt.datetime,
              jobs: Iterable[_Job]) -> list[str]:
        """Record the conditions and tell the operator what started or recovered; returns
        the subjects told. Never raises (the failure is logged once). A dry run tells
        nothing (its state could not be kept: it would say the same each minute)."""
        if settings.dry_run:
            return []
        try:
            seen = self.observations(jobs, now, settings)
            with db.unit_of_work(database, dry_run=settings.dry_run) as cur:
                seen.append(delivery_observation(cur, settings, now))
                told = record(cur, settings, now, seen)
        except Exception as exc:
            self.trouble.holds("check", "operator alerts: could not record or tell the "
                               "operator (tried again each minute): %s: %s",
                               type(exc).__name__, db.scrub(str(exc)).strip())
            return []
        self.trouble.ends("check", "operator alerts: recorded and told again")
        self.suspension = _Events()
        return told


def delivery_observation(cur: db.Cursor, settings: Settings, now: dt.datetime) -> Observation:
    """Delivery gave notices up in the last ADMIN_ALERT_AFTER_MINUTES: refused for good or
    out of attempts (attempts > 0), or expired; not the notices recorded as failed when
    queued (no valid address: the client's data, said in the sweep's log)."""
    after = dt.timedelta(minutes=settings.admin_alert_after_minutes)
    cur.execute(sql.SQL(
        "SELECT count(*) AS n, min(finished_at) AS first,"
        " (array_agg(coalesce(last_error, '') || ' (' || kind || ', key ' || dedupe_key"
        "  || ')' ORDER BY finished_at DESC, id DESC))[1] AS last_error"
        " FROM {} WHERE status = 'failed' AND finished_at > %s AND finished_at <= %s"
        " AND kind <> %s AND (attempts > 0 OR last_error LIKE 'expired:%%')").format(
            own(settings.own_schema, "outbox")),
        (now - after, now, KIND))
    row = cur.fetchone()
    if not row["n"]:
        return Observation("delivery", "delivery", False)
    return Observation("delivery", "delivery", True, row["first"],
                       f"{row['n']} notice(s) given up in the last "
                       f"{settings.admin_alert_after_minutes} min; last: {row['last_error']}")


def record(cur: db.Cursor, settings: Settings, now: dt.datetime,
           seen: Sequence[Observation]) -> list[str]:
    """Apply the observations to operator_condition; tell what started or recovered."""
    table = own(settings.own_schema, TABLE)
    told = []
    for obs in seen:
        cur.execute(sql.SQL("SELECT * FROM {} WHERE condition = %s FOR UPDATE").format(table),
                    (obs.condition,))
        row = cur.fetchone()
        if obs.failing:
            since = obs.since or now
            if row is not None and row["failing_since"] is not None:
                since = min(since, row["failing_since"])
            alerted = bool(row and row["alerted"])
            last_alert = row["last_alert_at"] if row else None
            due = obs.due or now - since >= dt.timedelta(
                minutes=settings.admin_alert_after_minutes)
            tell = (due and not alerted
                    and (last_alert is None or now - last_alert >= REPEAT_AFTER))
            if tell:
                last_alert = now
                told.append(_tell(cur, settings, now, obs, since, recovered=False))
            elif due and not alerted:
                log.info("operator alerts: %s fails again since %s; not told (told %s, at "
                         "most once an hour)", obs.what, since.isoformat(),
                         last_alert.isoformat() if last_alert else "never")
            if (row is None or tell or row["failing_since"] != since
                    or row["last_error"] != obs.error):
                cur.execute(sql.SQL(
                    "INSERT INTO {} (condition, failing_since, last_error, alerted, "
                    "last_alert_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (condition) DO "
                    "UPDATE SET failing_since = EXCLUDED.failing_since, last_error = "
                    "EXCLUDED.last_error, alerted = EXCLUDED.alerted, last_alert_at = "
                    "EXCLUDED.last_alert_at").format(table),
                    (obs.condition, since, obs.error, alerted or tell, last_alert))
        elif row is not None and (row["failing_since"] is not None or row["alerted"]):
            if row["alerted"]:
                told.append(_tell(cur, settings, now, obs, row["failing_since"],
                                  recovered=True, error=row["last_error"] or ""))
            cur.execute(sql.SQL("UPDATE {} SET failing_since = NULL, alerted = false "
                                "WHERE condition = %s").format(table), (obs.condition,))
    return told


def _tell(cur: db.Cursor, settings: Settings, now: dt.datetime, obs: Observation,
          since: dt.datetime | None, *, recovered: bool, error: str = "") -> str:
    """One admin_alert row and one queued mail to the operator; returns the subject."""
    config = mail_render.MailConfig.load(cur, settings)
    switch = str(config.system.get("switch_alias") or "").strip()
    where = f" on {switch}" if switch else ""
    started = since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if since else "?"
    at = now.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if recovered:
        subject = f"dnl_ad{where}: {obs.what} works again"
        lines = [f"{obs.what} works again since {at}.", f"It had failed since {started}.",
                 f"The last error was: {error or '(none recorded)'}"]
    else:
        subject = f"dnl_ad{where}: {obs.what} is failing"
        lines = [f"{obs.what} has been failing since {started} (checked {at}).",
                 f"Last error: {obs.error or '(none recorded)'}",
                 "You will get one more message when it works again; at most one message "
                 "an hour says it fails. The daemon's log has the details."]
    subject = subject[:100]
    text = "\n\n".join(lines) + "\n"
    cur.execute("INSERT INTO admin_alert (type, subject, content, is_view, create_time) "
                "VALUES (%s, %s, %s, 0, %s)", (ADMIN_ALERT_TYPE, subject, text, now))
    state = "recovered" if recovered else "failing"
    log.warning("operator alerts: %s (admin_alert row written)", subject)
    to = recipients(settings, config.system)
    if not to:
        log.warning("operator alerts: no operator address (ADMIN_EMAIL, system_parameter."
                    "system_admin_email, noc_email are empty): %r not mailed", subject)
        return subject
    notice = Notice(kind=KIND, dedupe_key=f"admin:{obs.condition}:{state}:"
                    f"{now.astimezone(dt.UTC):%Y%m%dT%H}",
                    template=KIND, client_id=None, recipients=to, context={},
                    decided_at=now, alert_rule=f"dnl_ad operator alert: {obs.condition} "
                    f"{state}")
    body = "".join(f"<p>{html.escape(line)}</p>\n" for line in lines)
    rendered = mail_render.Rendered(subject=subject, html=body, text=text, cc="", from_id=None)
    mail = mail_message.build(notice, rendered, config)
    if mail.error:
        log.error("operator alerts: %r not mailed to %s: %s", subject, to, mail.error)
    elif outbox.enqueue(cur, settings.own_schema, notice, mail):
        log.info("operator alerts: queued %r to %s", subject, ", ".join(mail.recipients))
    return subject


def job(loop: Loop) -> Any:
    """The scheduler job: check the conditions at `now`."""
    def run(now: dt.datetime) -> list[str]:
        return loop.operator.check(loop.database, loop.settings, now, loop.registry.jobs)
    return run
