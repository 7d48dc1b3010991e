"""Alert 6: warn a trunk's client that its rate deck must be downloaded before a deadline.

Which sends: a link rate send with "Send Reminder Email" (rate_send_log.is_email_alert)
whose trunk has not downloaded it (trunk_common). The deadline is 23:59:59 GMT of the
download_deadline date.

Stages. The one-day stage ("24") always exists. The UI may also fill the staged warning
templates hour_48, hour_3 and hour_1 (and hour_24); each filled stage is an extra
warning sent once as its window opens (deadline within 48/3/1 hours). The one-day stage
uses hour_24 when filled, else the UI's "Pending Trunk Suspension Notice" (pending_trunk;
empty: the project's default template). `download_rate_notice` is the UI's own "Rate is
Downloaded" confirmation, never dnl_ad's.

Decision (documented in the README): only the latest-opened stage is sent. A rate send
first seen 2 hours before its deadline gets the 3-hour stage only, not 48 and 24 as well;
three mails in one minute would say the same thing. Each stage has its own dedupe key
`trunk_pending:<resource>:<rate send id>:<stage hours>`, so a stage goes out once even
when two daemons sweep at once, and the 24-hour key stays the same whichever template
serves it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from .. import batches, db, outbox
from ..config import Settings
from ..contract import EMAIL_TYPE
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, trunk_common

log = logging.getLogger(__name__)

KIND = "trunk_pending"
ONE_DAY = 24
EXTRA_STAGES = (48, 3, 1)  # used only when their hour_* template is filled in


def _filled(templates: Mapping[str, Any], subject_col: str, content_col: str) -> bool:
    return bool(str(templates.get(subject_col) or "").strip()
                and str(templates.get(content_col) or "").strip())


def staged_filled(templates: Mapping[str, Any]) -> set[int]:
    """Hours whose hour_subject_H / hour_content_H are both filled in."""
    return {h for h in (48, 24, 3, 1)
            if _filled(templates, f"hour_subject_{h}", f"hour_content_{h}")}


def enabled_stages(templates: Mapping[str, Any]) -> list[int]:
    """Stage hours in use, largest first: 24 always, plus the filled extra stages."""
    return sorted({ONE_DAY} | (staged_filled(templates) & set(EXTRA_STAGES)), reverse=True)


def one_day_template(templates: Mapping[str, Any]) -> str:
    """mail_tmplate prefix for the 24-hour stage: hour_24 when filled, else pending_trunk."""
    if ONE_DAY in staged_filled(templates):
        return "hour_24"
    return "pending_trunk"


def current_stage(stages: list[int], deadline: dt.datetime, now: dt.datetime) -> int | None:
    """The latest-opened stage: the smallest H with deadline - now <= H hours (None if none)."""
    left = deadline - now
    open_ = [h for h in stages if left <= dt.timedelta(hours=h)]
    return min(open_) if open_ else None


def dedupe_key(resource_id: int, rate_send_id: int, stage: int) -> str:
    return f"{KIND}:{resource_id}:{rate_send_id}:{stage}"


# email_log.alert_rule of dnl_ad's own trunk notices (see Notice.alert_rule below)
OWN_RULE_PREFIX = "rate deck not downloaded"
_TAKEN_OVER_LOGGED: set[tuple[str, str]] = set()


def sent_by_original(cur: db.Cursor, client_ids: list[int]) -> dict[int, dt.datetime]:
    """client -> the last trunk notice (email_log type 36) another sender wrote, i.e. the
    original dnl_ad before the take-over: one query. email_log names no trunk, so a
    client's stage counts as sent when the original mailed that client after the stage's
    window opened."""
    if not client_ids:
        return {}
    cur.execute("SELECT client_id, max(send_time) AS last FROM email_log "
                "WHERE type = %s AND client_id = ANY(%s) AND send_time IS NOT NULL "
                "AND coalesce(alert_rule, '') NOT LIKE %s GROUP BY client_id",
                (EMAIL_TYPE[KIND], sorted(set(client_ids)), OWN_RULE_PREFIX + "%"))
    return {r["client_id"]: r["last"] for r in cur.fetchall()}


def _note_taken_over(database: db.Database, cand: trunk_common.Candidate, stage: int,
                     last: dt.datetime) -> None:
    key = (database.safe_name, dedupe_key(cand.resource_id, cand.rate_send_id, stage))
    if key in _TAKEN_OVER_LOGGED:
        return
    _TAKEN_OVER_LOGGED.add(key)
    log.info("trunk_pending: client %s trunk %s %r rate send %s: the %s h warning was already "
             "sent by the original daemon (email_log at %s); not sent again", cand.client_id,
             cand.resource_id, cand.alias, cand.rate_send_id, stage, last.isoformat())


def sweep(database: db.Database, now: dt.datetime, settings: Settings) -> SweepResult:
    """Queue the due stage's warning for every trunk whose latest rate send is pending.

    1. Read the mail settings once and work out the enabled stages.
    2. One query: every live, undownloaded latest rate send due within the largest stage.
    3. For each, pick the latest-opened stage; skip keys already in the outbox (one query).
    4. Render and queue the notices in bounded batches (dnl_ad.batches): one bad row skips
       only itself.
    """
    result = SweepResult(KIND)
    with database.transaction() as cur:
        pipeline = Pipeline.open(cur, settings)
        templates = pipeline.mail_config.templates
        stages = enabled_stages(templates)
        after = now + dt.timedelta(microseconds=1)  # the deadline is still ahead
        rows = trunk_common.candidates(cur, after, now + dt.timedelta(hours=max(stages)),
                                       trunk_common.EMAIL_ALERT)
        due: list[tuple[trunk_common.Candidate, int]] = []
        for cand in rows:
            stage = current_stage(stages, cand.deadline, now)
            if stage is not None:
                due.append((cand, stage))
        done = outbox.already_queued(
            cur, settings.own_schema,
            [dedupe_key(c.resource_id, c.rate_send_id, s) for c, s in due])
        original = sent_by_original(cur, [c.client_id for c, s in due
                                           if dedupe_key(c.resource_id, c.rate_send_id, s)
                                           not in done])
    todo: list[tuple[trunk_common.Candidate, int]] = []
    for cand, stage in due:
        key = dedupe_key(cand.resource_id, cand.rate_send_id, stage)
        if key in done:
            result.duplicates += 1
            continue
        last = original.get(cand.client_id)
        if last is not None and last >= cand.deadline - dt.timedelta(hours=stage):
            _note_taken_over(database, cand, stage, last)
            result.duplicates += 1
            continue
        todo.append((cand, stage))

    def work(cur: db.Cursor, item: tuple[trunk_common.Candidate, int]) -> None:
        cand, stage = item
        template = one_day_template(templates) if stage == ONE_DAY else f"hour_{stage}"
        # the context is built here too: a bad row must skip only itself
        pipeline.queue(cur, Notice(
            kind=KIND, dedupe_key=dedupe_key(cand.resource_id, cand.rate_send_id, stage),
            template=template, client_id=cand.client_id, recipients=cand.recipients,
            context=trunk_common.context(cand, pipeline.system), decided_at=now,
            alert_rule=f"{OWN_RULE_PREFIX}; {stage} h warning", resource_id=cand.resource_id,
            meta={"rate_send_id": cand.rate_send_id, "stage": stage},
        ))

    outcome = batches.run(
        database, todo, work, dry_run=settings.dry_run, size=settings.sweep_batch,
        describe=lambda i: (f"trunk_pending: client {i[0].client_id} trunk {i[0].resource_id}"
                            f" {i[0].alias!r} rate send {i[0].rate_send_id}: notice"))
    result.skipped += len(outcome.failed)
    for cand, stage in outcome.done:
        key = dedupe_key(cand.resource_id, cand.rate_send_id, stage)
        log.log(logging.INFO if pipeline.worth_saying(key) else logging.DEBUG,
                "trunk_pending: client %s trunk %s %r rate send %s deadline %s: %s h "
                "warning%s", cand.client_id, cand.resource_id, cand.alias,
                cand.rate_send_id, cand.deadline.isoformat(), stage,
                " [dry run]" if settings.dry_run else "")
    result.queued += pipeline.queued
    result.duplicates += pipeline.duplicates
    result.skipped += pipeline.failed  # unsendable: recorded as failed in email_log
    result.mails.extend(pipeline.mails)
    return result
