"""Alert 7: block a trunk that did not download its latest rate deck by the deadline.

Each suspension is one atomic step (a savepoint inside the sweep's transaction): close the
rate send detail, block the trunk, write the UI's modif_log row with a rollback statement,
queue the notice. Either all four happen or none does, so a failure never leaves a
half-blocked trunk or a notice about a block that did not happen; the next sweep retries.

Like Healthchecks' flips, the decision is recorded by a conditional update first:
`UPDATE rate_send_log_detail SET status = false ... WHERE id = %s AND status`. Only the
daemon whose update touched exactly one row goes on, so two daemons never suspend twice.
The closed detail is also what makes it "once per trunk and rate send": an operator who
re-activates the trunk is not blocked again for the same rate send.

Delivery is a separate job: the block happens even when SMTP is down.
"""

from __future__ import annotations

import datetime as dt
import logging

from psycopg2 import sql

from .. import db
from ..config import Settings
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, trunk_common

log = logging.getLogger(__name__)

KIND = "trunk_suspended"
TEMPLATE = "no_download_rate"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class _Skip(Exception):
    """Leave this trunk alone (another daemon or an operator got there first)."""


def dedupe_key(resource_id: int, rate_send_id: int) -> str:
    return f"{KIND}:{resource_id}:{rate_send_id}"


def rollback_statement(cur: db.Cursor, resource_id: int) -> str:
    """SQL the UI runs to undo the block; built from the integer id only, never the alias."""
    return sql.SQL(
        "UPDATE resource SET active = true, disable_by_alert = false WHERE resource_id = {}"
    ).format(sql.Literal(int(resource_id))).as_string(cur)


def _suspend(cur: db.Cursor, pipeline: Pipeline, cand: trunk_common.Candidate,
             now: dt.datetime) -> None:
    """The four writes of one suspension, in the caller's savepoint.

    1. Close the detail if still live (the flip; no row = someone else did it: skip).
    2. Block the trunk if still active (no row = an operator blocked it meanwhile: skip,
       and the savepoint rollback re-opens the detail).
    3. modif_log row with the rollback statement.
    4. Queue the notice.
    """
    error = (f"dnl_ad: rate deck not downloaded by the deadline "
             f"{cand.deadline.isoformat()}; trunk suspended at {now.isoformat()}")
    cur.execute("UPDATE rate_send_log_detail SET status = false, error = %s "
                "WHERE id = %s AND status RETURNING id", (error, cand.detail_id))
    if cur.fetchone() is None:
        raise _Skip("the rate send was already closed")
    cur.execute("UPDATE resource SET active = false, disable_by_alert = true, "
                "update_by = 'dnl_ad', update_at = %s WHERE resource_id = %s AND active "
                "RETURNING resource_id", (now, cand.resource_id))
    if cur.fetchone() is None:
        raise _Skip("the trunk is no longer active")
    detail = (f"Trunk {cand.alias} (id {cand.resource_id}) of client {cand.client_name} "
              f"(id {cand.client_id}) suspended by dnl_ad: rate deck {cand.file} "
              f"(rate send {cand.rate_send_id}) not downloaded by {cand.deadline.isoformat()}")
    cur.execute(
        "INSERT INTO modif_log (time, module, type, name, detail, rollback, rollback_msg, "
        "rollback_extra_info) VALUES (%s, 'Trunk', 2, 'dnl_ad', %s, %s, %s, %s)",
        (now, detail, rollback_statement(cur, cand.resource_id),
         f"Re-activate trunk id {cand.resource_id} suspended by dnl_ad", '{"type":2}'),
    )
    pipeline.queue(cur, Notice(
        kind=KIND, dedupe_key=dedupe_key(cand.resource_id, cand.rate_send_id),
        template=TEMPLATE, client_id=cand.client_id, recipients=cand.billing_email,
        context=trunk_common.context(cand, pipeline.system), decided_at=now,
        alert_rule="rate deck not downloaded by the deadline; trunk suspended",
        resource_id=cand.resource_id, meta={"rate_send_id": cand.rate_send_id},
    ))


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Suspend every active trunk whose live latest rate send is past deadline + grace.

    One query finds them all; each suspension runs in its own savepoint so a failing trunk
    is logged and retried next sweep while the others are still blocked. In dry run the
    unit of work rolls back: the log and the result say what would have happened.
    """
    result = SweepResult(KIND)
    until = now - dt.timedelta(minutes=settings.suspend_grace_minutes)
    with db.unit_of_work(database, dry_run=settings.dry_run) as cur:
        pipeline = Pipeline.open(cur, settings)
        for cand in trunk_common.candidates(cur, _EPOCH, until):
            try:
                with db.savepoint(cur, "trunk_suspend_item"):
                    _suspend(cur, pipeline, cand, now)
            except _Skip as why:
                log.info("trunk_suspended: client %s trunk %s %r rate send %s: left alone, %s",
                         cand.client_id, cand.resource_id, cand.alias, cand.rate_send_id, why)
                continue
            except db.CONNECTION_ERRORS:
                raise
            except Exception:
                result.skipped += 1
                log.exception("trunk_suspended: client %s trunk %s %r rate send %s: suspension "
                              "failed and was rolled back whole; will retry next sweep",
                              cand.client_id, cand.resource_id, cand.alias, cand.rate_send_id)
                continue
            result.state_changes += 1
            log.warning("trunk_suspended: %sclient %s (%r) trunk %s %r blocked: rate send %s "
                        "(%r) not downloaded by deadline %s",
                        "[dry run] would have: " if settings.dry_run else "", cand.client_id,
                        cand.client_name, cand.resource_id, cand.alias, cand.rate_send_id,
                        cand.file, cand.deadline.isoformat())
        result.queued += pipeline.queued
        result.duplicates += pipeline.duplicates
        result.skipped += pipeline.failed  # unsendable: recorded as failed in email_log
        result.mails.extend(pipeline.mails)
    return result
