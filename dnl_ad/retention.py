"""Keep dnl_ad's own tables from growing forever (about 30 GB a year at 5,000 clients).

Once an hour, finished outbox rows (sent or failed) older than OUTBOX_RETENTION_DAYS go,
with the quiet-report records of the same age, in small batches so that no statement
holds many locks or runs for long, and at most MAX_BATCHES per run so a first run on a
big table spreads over hours. Pending rows are never purged, and the retention is kept
longer than CATCHUP_HOURS (config): a dedupe key a sweep could still produce stays.
"""

from __future__ import annotations

import datetime as dt
import logging

from . import db, outbox
from .config import Settings

log = logging.getLogger(__name__)

BATCH = 1000
MAX_BATCHES = 50
PERIOD_SECONDS = 3600


def purge(database: db.Database, settings: Settings, now: dt.datetime) -> int:
    """One run: how many outbox rows were deleted."""
    if settings.dry_run:
        return 0
    before = now - dt.timedelta(days=settings.outbox_retention_days)
    removed = 0
    for _ in range(MAX_BATCHES):
        with database.transaction() as cur:
            n = outbox.purge(cur, settings.own_schema, before, BATCH)
        removed += n
        if n < BATCH:
            break
    if removed:
        log.info("outbox: %d delivered or failed notices older than %d days purged",
                 removed, settings.outbox_retention_days)
    return removed
