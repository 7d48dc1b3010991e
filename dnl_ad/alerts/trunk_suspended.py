"""Alert 7: block a trunk that did not download its latest rate deck by the deadline.

Each suspension is one atomic step (written in a bounded batch, dnl_ad.batches): close the
rate send detail, block the trunk, write the UI's modif_log row with a rollback statement,
queue the notice. Either all four happen or none does, so a failure never leaves a
half-blocked trunk or a notice about a block that did not happen; the next sweep retries.

Which sends: a link rate send whose "Disable The Trunk" switch (rate_send_log.is_disable)
is set and whose deadline (23:59:59 GMT of download_deadline, plus SUSPEND_GRACE_MINUTES)
has passed without a download. A deadline more than SUSPEND_MAX_OVERDUE_DAYS old is never
acted on: a first start against a database with old, forgotten sends must not block a
carrier's trunks wholesale; such trunks are logged once and listed by `check`.

Like Healthchecks' flips, the decision is recorded by a conditional update first:
`UPDATE rate_send_log_detail SET status = 4 (expired) ... WHERE id = %s AND status = 1`.
Only the daemon whose update touched exactly one row goes on, so two daemons never
suspend twice. The closed detail is also what makes it "once per trunk and rate send":
an operator who re-activates the trunk is not blocked again for the same rate send,
whoever blocked it (the original daemon closes the detail the same way).

The UI's change history: a modif_log row, module 'Trunk', type 4 (trunk disabled), with
the rollback statement the UI runs as is (rollback_extra_info '{"type":1}').

Delivery is a separate job: the block happens even when SMTP is down.
"""

from __future__ import annotations

import datetime as dt
import logging

from psycopg2 import sql

from .. import batches, db
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, trunk_common

log = logging.getLogger(__name__)

KIND = "trunk_suspended"
TEMPLATE = "no_download_rate"
DETAIL_SENT, DETAIL_EXPIRED = 1, 4      # rate_send_log_detail.status
SEND_WAITING = 5                        # rate_send_log.status: link sent, not downloaded
MODIF_TRUNK_DISABLED = 4                # modif_log.type the UI shows as "trunk disabled"
ROLLBACK_AS_IS = '{"type":1}'           # the UI runs modif_log.rollback as written
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TOO_OLD_LOGGED: set[tuple[str, int, int]] = set()


def overdue_window(now: dt.datetime, settings: Settings) -> tuple[dt.datetime, dt.datetime]:
    """[oldest, newest] deadline a sweep at `now` acts on."""
    until = now - dt.timedelta(minutes=settings.suspend_grace_minutes)
    # overdue counts from the end of the grace: a grace longer than the limit still leaves
    # a window in which the trunk is suspended
    return until - dt.timedelta(days=settings.suspend_max_overdue_days), until


def too_old(cur: db.Cursor, now: dt.datetime, settings: Settings
            ) -> list[trunk_common.Candidate]:
    """Trunks past the deadline by more than SUSPEND_MAX_OVERDUE_DAYS: never suspended by
    dnl_ad (listed by check, logged once)."""
    oldest, _ = overdue_window(now, settings)
    return trunk_common.candidates(cur, _EPOCH, oldest - dt.timedelta(microseconds=1),
                                   trunk_common.DISABLE)


class _Skip(Exception):
    """Leave this trunk alone (another daemon or an operator got there first)."""


def dedupe_key(resource_id: int, rate_send_id: int) -> str:
    return f"{KIND}:{resource_id}:{rate_send_id}"


def rollback_statement(cur: db.Cursor, resource_id: int) -> str:
    """SQL the UI runs to undo the block; built from the integer id only, never the alias."""
    return sql.SQL(
        "UPDATE resource SET active = true, disable_by_alert = false WHERE resource_id = {}"
    ).format(sql.Literal(int(resource_id))).as_string(cur)


# The flip and the block in one statement, every condition re-checked under the row
# locks: the detail is still sent (status 1), not downloaded (no download_date, no
# rate_download_log row for the trunk and send, the send still status 5) and the trunk is
# still active. A download that lands during the sweep (the UI sets status 3 and writes the
# log) or an operator's own block makes it touch nothing, and the trunk is left as it is.
_FLIP = """
WITH d AS (
    UPDATE rate_send_log_detail d SET status = %(expired)s, error = %(error)s
    WHERE d.id = %(detail)s AND d.status = %(sent)s AND d.download_date IS NULL
      AND NOT EXISTS (SELECT 1 FROM rate_download_log dl
                      WHERE dl.log_detail_id = d.log_id AND dl.resource_id = d.resource_id)
      AND EXISTS (SELECT 1 FROM rate_send_log l WHERE l.id = d.log_id AND l.status = %(waiting)s)
      AND EXISTS (SELECT 1 FROM resource r WHERE r.resource_id = d.resource_id AND r.active)
    RETURNING d.id
), r AS (
    UPDATE resource SET active = false, disable_by_alert = true, update_by = 'dnl_ad',
           update_at = %(now)s
    WHERE resource_id = %(resource)s AND active AND EXISTS (SELECT 1 FROM d)
    RETURNING resource_id
)
SELECT (SELECT count(*) FROM d) AS closed, (SELECT count(*) FROM r) AS blocked
"""


def _suspend(cur: db.Cursor, pipeline: Pipeline, cand: trunk_common.Candidate,
             now: dt.datetime) -> None:
    """The writes of one suspension, in the caller's transaction.

    1. Close the detail and block the trunk in one statement (_FLIP); nothing touched =
       someone else got there first (the trunk downloaded, an operator blocked it): skip.
    2. modif_log row with the rollback statement.
    3. Queue the notice.
    """
    error = (f"dnl_ad: rate deck not downloaded by the deadline "
             f"{cand.deadline.isoformat()}; trunk suspended at {now.isoformat()}")
    cur.execute(_FLIP, {"expired": DETAIL_EXPIRED, "error": error, "detail": cand.detail_id,
                        "sent": DETAIL_SENT, "waiting": SEND_WAITING, "now": now,
                        "resource": cand.resource_id})
    flip = cur.fetchone()
    if not flip["closed"]:
        raise _Skip("the rate send was closed or downloaded meanwhile, or the trunk is no "
                    "longer active")
    if not flip["blocked"]:
        raise _Skip("the trunk was deactivated meanwhile")
    detail = (f"Trunk {cand.alias} (id {cand.resource_id}) of client {cand.client_name} "
              f"(id {cand.client_id}) suspended by dnl_ad: rate deck {cand.file} "
              f"(rate send {cand.rate_send_id}) not downloaded by {cand.deadline.isoformat()}")
    cur.execute(
        "INSERT INTO modif_log (time, module, type, name, detail, rollback, rollback_msg, "
        "rollback_extra_info) VALUES (%s, 'Trunk', %s, 'dnl_ad', %s, %s, %s, %s)",
        (now, MODIF_TRUNK_DISABLED, detail, rollback_statement(cur, cand.resource_id),
         f"Re-activate trunk id {cand.resource_id} suspended by dnl_ad", ROLLBACK_AS_IS),
    )
    pipeline.queue(cur, Notice(
        kind=KIND, dedupe_key=dedupe_key(cand.resource_id, cand.rate_send_id),
        template=TEMPLATE, client_id=cand.client_id, recipients=cand.recipients,
        context=trunk_common.context(cand, pipeline.system), decided_at=now,
        alert_rule="rate deck not downloaded by the deadline; trunk suspended",
        resource_id=cand.resource_id, meta={"rate_send_id": cand.rate_send_id},
    ))


def _log_too_old(cur: db.Cursor, database: db.Database, now: dt.datetime,
                 settings: Settings) -> None:
    for cand in too_old(cur, now, settings):
        key = (database.safe_name, cand.resource_id, cand.rate_send_id)
        if key in _TOO_OLD_LOGGED:
            continue
        _TOO_OLD_LOGGED.add(key)
        log.warning("trunk_suspended: client %s trunk %s %r rate send %s: deadline %s is more "
                    "than SUSPEND_MAX_OVERDUE_DAYS=%s days ago; not suspended (block it in "
                    "the UI if it should be)", cand.client_id, cand.resource_id, cand.alias,
                    cand.rate_send_id, cand.deadline.isoformat(),
                    settings.suspend_max_overdue_days)


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Suspend every active trunk whose live latest rate send is past deadline + grace.

    One query finds them all; the suspensions are written in bounded batches
    (dnl_ad.batches), so a failing trunk is logged and retried next sweep while the
    others are still blocked, and a trunk row the UI holds locked fails only itself after
    the session's lock_timeout. In dry run every batch rolls back: the log and the result
    say what would have happened.
    """
    result = SweepResult(KIND)
    oldest, until = overdue_window(now, settings)
    with database.transaction() as cur:
        _log_too_old(cur, database, now, settings)
        pipeline = Pipeline.open(cur, settings)
        found = trunk_common.candidates(cur, oldest, until, trunk_common.DISABLE)
    skipped: dict[int, str] = {}

    def work(cur: db.Cursor, cand: trunk_common.Candidate) -> None:
        try:
            _suspend(cur, pipeline, cand, now)
        except _Skip as why:
            skipped[cand.detail_id] = str(why)
        else:
            skipped.pop(cand.detail_id, None)

    outcome = batches.run(
        database, found, work, dry_run=settings.dry_run, size=settings.sweep_batch,
        describe=lambda c: (f"trunk_suspended: client {c.client_id} trunk {c.resource_id} "
                            f"{c.alias!r} rate send {c.rate_send_id}: suspension"))
    result.skipped += len(outcome.failed)
    result.failed, result.errors = len(outcome.failed), list(outcome.errors)
    for cand in outcome.done:
        if cand.detail_id in skipped:
            log.info("trunk_suspended: client %s trunk %s %r rate send %s: left alone, %s",
                     cand.client_id, cand.resource_id, cand.alias, cand.rate_send_id,
                     skipped[cand.detail_id])
            continue
        result.state_changes += 1
        key = dedupe_key(cand.resource_id, cand.rate_send_id)
        log.log(logging.WARNING if pipeline.worth_saying(key) else logging.DEBUG,
                "trunk_suspended: %sclient %s (%r) trunk %s %r blocked: rate send %s "
                "(%r) not downloaded by deadline %s",
                "[dry run] would have: " if settings.dry_run else "", cand.client_id,
                cand.client_name, cand.resource_id, cand.alias, cand.rate_send_id,
                cand.file, cand.deadline.isoformat())
    result.queued += pipeline.queued
    result.duplicates += pipeline.duplicates
    result.skipped += pipeline.failed  # unsendable: recorded as failed in email_log
    result.mails.extend(pipeline.mails)
    return result
