"""Alert 5: the daily CDR delivery, one mail with a download link per trunk that carried calls.

For each due client (the previous day in its daily_cdr_generation_zone, sent at its send
hour), every active trunk of the direction daily_cdr_generation_type asks for (0 ingress,
1 egress, 2 both) with at least one non-zero call in the window gets a link per direction
it carried calls in: from the DNL CDR API when CDR_API_HOST is set and answers in time,
else the static CDR_DOWNLOAD_URL link (dnl_ad.cdr_api). The export asks for the
daily_cdr_fields ids of the direction, read once per sweep. One mail lists them all, to
whom auto_daily_balance_recipient names. A client with no such trunk gets no mail.
cdr_count is the number of records the files hold: the API's `count` for an API link,
else the calls (attempts) on that trunk in the window.

The API can take minutes, so the sweep runs in three steps and holds no transaction
while it waits on HTTP: read (who is due, their trunks), links, then queue. A trunk
whose link failed is retried at the next check (the links already obtained are kept in
memory, not asked again); the mail waits until every trunk has its link, and goes out
with the links it has at the last check within CATCHUP_HOURS. A stop request (SIGTERM)
abandons the export in hand at once; mails not queued yet are retried at the next start.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from psycopg2 import sql

from .. import clock, db
from ..cdr_api import NEVER, SIDES, CdrApiError, CdrApiStopped, FieldSet, Link, LinkMaker, Stop
from ..config import Settings, cdr_api_host
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, daily_common
from .daily_common import Due

log = logging.getLogger(__name__)

KIND = "cdr_delivery"
SPEC = daily_common.DailySpec(KIND, "daily_cdr_generation", "auto_cdr", "daily CDR delivery",
                              taken_over="last_cdrdown_time",
                              report_zone_column="daily_cdr_generation_zone")

# Per due window: each active trunk of the client with non-zero calls in it, and its calls.
# One index range scan per window and side on the (client, report_time) indexes, grouped
# by trunk; only trunks that belong to the client and are active count. `side` says which
# leg (the client's ingress or egress trunk): the CDR API exports one direction at a time.
def _leg(side: str, types: tuple[int, ...]) -> sql.Composable:
    """One direction's trunks, only when client.daily_cdr_generation_type (0 incoming =
    ingress trunks, 1 outgoing = egress, 2 both; NULL = 0) asks for it."""
    return sql.SQL(
        "SELECT {s}::text AS side, d.{p}_id AS trunk, sum(d.{p}_total_calls) AS calls, "
        "sum(d.not_zero_calls) AS nz FROM cdr_report_detail d "
        "WHERE coalesce(cc.daily_cdr_generation_type, 0) = ANY({t}) "
        "AND d.{p}_client_id = w.client_id AND d.report_time >= w.t0 "
        "AND d.report_time < w.t1 AND d.report_time >= %(lo)s AND d.report_time < %(hi)s "
        "GROUP BY d.{p}_id"
    ).format(p=sql.SQL(side), s=sql.Literal(side), t=sql.Literal(list(types)))


QUERY = sql.SQL(
    "WITH {windows}, "
    "legs AS (SELECT w.key, x.trunk, x.side, x.calls, x.nz FROM w "
    "JOIN client cc ON cc.client_id = w.client_id "
    "CROSS JOIN LATERAL ({ingress} UNION ALL {egress}) x), "
    "per AS (SELECT key, trunk, side, sum(calls) AS calls FROM legs "
    "GROUP BY key, trunk, side HAVING sum(nz) > 0) "
    "SELECT w.key, {client}, r.resource_id, r.alias, per.side, "
    "per.calls::bigint AS calls "
    "FROM per JOIN w ON w.key = per.key {join} "
    "JOIN resource r ON r.resource_id = per.trunk AND r.client_id = w.client_id AND r.active "
    "ORDER BY w.key, r.resource_id, per.side DESC"
).format(windows=daily_common.WINDOWS, ingress=_leg("ingress", (0, 2)),
         egress=_leg("egress", (1, 2)), client=daily_common.CLIENT_COLUMNS,
         join=daily_common.CLIENT_JOIN)


def fetch(cur: db.Cursor, due: list[Due]) -> dict[str, dict[str, Any]]:
    """key -> client columns plus `trunks`: [(resource_id, side, alias, calls)], only keys
    with traffic."""
    grouped: dict[str, dict[str, Any]] = {}
    if not due:
        return grouped
    cur.execute(QUERY, daily_common.windows_params(due))
    for row in cur.fetchall():
        entry = grouped.setdefault(row["key"], {**dict(row), "trunks": []})
        entry["trunks"].append((row["resource_id"], row["side"], row["alias"] or "",
                                int(row["calls"])))
    return grouped


FIELDS = sql.SQL("SELECT id, type, label FROM daily_cdr_fields WHERE type IN (0, 1) "
                 "ORDER BY id")


def read_fields(cur: db.Cursor) -> dict[str, FieldSet]:
    """The CDR file's columns per direction (daily_cdr_fields type 0 ingress, 1 egress)."""
    cur.execute(FIELDS)
    by_type: dict[int, list[tuple[int, str | None]]] = {0: [], 1: []}
    for row in cur.fetchall():
        by_type[int(row["type"])].append((row["id"], row["label"]))
    return {side: FieldSet.from_rows(by_type[n]) for n, side in enumerate(SIDES)}


def file_name(alias: str, trunk_id: int, day: dt.date) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", alias).strip("_") or f"trunk{trunk_id}"
    return f"{stem}_{day:%Y%m%d}.csv"


def context(due: Due, row: Mapping[str, Any], links: list[tuple[Link, str, int]]
            ) -> dict[str, Any]:
    """Every CDR-delivery tag (PROVIDER_DB.md); links are (link, alias, calls) per trunk
    and direction."""
    items = Markup("").join(
        Markup('<li><a href="{}">{}</a></li>').format(link.url, alias or f"trunk {link.trunk_id}")
        for link, alias, _ in links)
    return {
        **daily_common.identity_context(due, row),
        "cdr_count": sum(calls if link.count is None else link.count
                         for link, _, calls in links),
        "download_link": Markup("<ul>") + items + Markup("</ul>"),
        "file_name": ", ".join(file_name(a, lk.trunk_id, due.report_day) for lk, a, _ in links),
        "share_link": links[0][0].url,  # one URL (the first trunk's); download_link has all
        "trunk_name": ",".join(dict.fromkeys(alias for _, alias, _ in links)),
        "current_day": due.report_day.isoformat(),
        "currency": row.get("currency") or "",
    }


# --- links held across sweeps ------------------------------------------------------------

TrunkKey = tuple[int, str]  # (resource_id, side)


@dataclass
class _Hold:
    """A due mail's links obtained so far, and the trunks whose link failed (each logged
    once when it starts failing, and once when it is obtained)."""

    links: dict[TrunkKey, Link] = field(default_factory=dict)
    failing: dict[TrunkKey, str] = field(default_factory=dict)
    held_logged: bool = False


_HOLDS: weakref.WeakKeyDictionary[Any, dict[str, _Hold]] = weakref.WeakKeyDictionary()


def _holds_for(database: Any, due: list[Due]) -> dict[str, _Hold]:
    """This database's holds, pruned to the keys still due (queued or too old: dropped)."""
    holds = _HOLDS.setdefault(database, {})
    keep = {d.key for d in due}
    for key in [k for k in holds if k not in keep]:
        del holds[key]
    return holds


def last_check(d: Due, settings: Settings) -> dt.datetime:
    """From this instant on, a check may be the last within CATCHUP_HOURS: a mail still
    missing links goes out with those it has rather than not at all."""
    return d.due_at + daily_common.grace(settings) - dt.timedelta(
        seconds=settings.daily_check_seconds)


def _obtain(maker: LinkMaker, d: Due, trunks: list[tuple[int, str, str, int]],
            hold: _Hold) -> None:
    """Ask for every link the hold lacks; CdrApiStopped goes up (the sweep ends)."""
    for trunk_id, side, alias, _ in trunks:
        tk = (trunk_id, side)
        if tk in hold.links:
            continue
        try:
            hold.links[tk] = maker.link(d.client_id, trunk_id, side, alias, d.start, d.end)
        except CdrApiStopped:
            raise
        except CdrApiError as exc:
            if tk not in hold.failing:
                log.warning("%s: client %s %s trunk %s %r: no link for %s: %s; retried at "
                            "the next check", KIND, d.client_id, side, trunk_id, alias,
                            d.report_day, exc)
            else:
                log.debug("%s: client %s %s trunk %s: still no link: %s", KIND, d.client_id,
                          side, trunk_id, exc)
            hold.failing[tk] = str(exc)
            continue
        if hold.failing.pop(tk, None) is not None:
            log.info("%s: client %s %s trunk %s %r: link for %s obtained after earlier "
                     "failures", KIND, d.client_id, side, trunk_id, alias, d.report_day)


def make_links(database: Any, due: list[Due], rows: Mapping[str, Mapping[str, Any]],
               maker: LinkMaker, now: dt.datetime, settings: Settings, result: SweepResult
               ) -> dict[str, list[tuple[Link, str, int]]]:
    """key -> (link, alias, calls) of each mail ready to queue.

    1. Each due mail's missing links are asked for (held ones are not asked again).
    2. A mail with every link is ready. One still missing some waits for the next check
       (logged once), unless this may be the last check within CATCHUP_HOURS: then it
       goes with the links it has (logged), or, with none, is given up (logged).
    3. A stop request ends the asking at once; what is complete is still queued.
    """
    holds = _holds_for(database, due)
    ready: dict[str, list[tuple[Link, str, int]]] = {}
    stopped = False
    for d in due:
        row = rows.get(d.key)
        if row is None:
            continue
        hold = holds.setdefault(d.key, _Hold())
        trunks = row["trunks"]
        if not stopped:
            try:
                _obtain(maker, d, trunks, hold)
            except CdrApiStopped:
                stopped = True
                log.info("%s: stop requested: CDR export for client %s abandoned; the CDR "
                         "mails not queued yet are retried at the next start", KIND,
                         d.client_id)
        found = [(hold.links[(t, s)], alias, calls) for t, s, alias, calls in trunks
                 if (t, s) in hold.links]
        missing = [f"{s} trunk {t} {alias!r}" for t, s, alias, _ in trunks
                   if (t, s) not in hold.links]
        if not missing:
            ready[d.key] = found
            continue
        if stopped:
            continue
        if now >= last_check(d, settings):
            if found:
                log.warning("%s: client %s: CDR mail for %s sent with %d of %d links at the "
                            "end of CATCHUP_HOURS=%s; no link for %s", KIND, d.client_id,
                            d.report_day, len(found), len(trunks), settings.catchup_hours,
                            ", ".join(missing))
                ready[d.key] = found
            else:
                result.skipped += 1
                log.warning("%s: client %s: no download link for %s within CATCHUP_HOURS=%s; "
                            "the CDR mail is not sent", KIND, d.client_id, d.report_day,
                            settings.catchup_hours)
            continue
        result.skipped += 1
        if not hold.held_logged:
            hold.held_logged = True
            log.warning("%s: client %s: CDR mail for %s held until every trunk has its link "
                        "(missing: %s); retried at each check until %s UTC", KIND,
                        d.client_id, d.report_day, ", ".join(missing),
                        f"{last_check(d, settings):%Y-%m-%d %H:%M}")
    return ready


def sweep(database: db.Database, now: dt.datetime, settings: Settings, *,
          stop: Stop | None = None) -> SweepResult:
    """Queue yesterday's (local) CDR links for every client whose send hour has come.

    1. Read: enabled clients, their due windows, keys already queued (skipped), one
       query for every remaining window's trunks with non-zero calls, and the CDR file's
       fields per direction (daily_cdr_fields).
    2. Links, outside any transaction (the API may take minutes; `stop`, the daemon's
       Wakeup, ends the waiting on SIGTERM). A dry run uses the static links only: it
       starts no export on the provider's API.
    3. Queue: each ready client's notice in its own savepoint; a client without traffic
       is remembered as settled and not looked at again for that day; one still missing
       a link is not (make_links).
    """
    now = clock.require_aware(now)
    result = SweepResult(KIND)
    mem = daily_common.memory_for(database)
    with database.transaction() as cur:
        due = daily_common.plan(cur, SPEC, now, settings, database, result)
        rows = fetch(cur, due)
        fields = read_fields(cur) if rows else {}
    for d in due:
        if d.key not in rows:
            mem.settled[d.key] = d.report_day
            log.debug("%s: client %s: no active trunk with non-zero calls on %s; no mail",
                      KIND, d.client_id, d.report_day)
    if not rows:
        return result
    if settings.dry_run and cdr_api_host(settings):
        # An export request is work on the provider's side: a dry run does not start any.
        log.info("%s: dry run: the CDR API is not called; showing the static links", KIND)
    maker = LinkMaker(settings, fields, stop=stop or NEVER, use_api=not settings.dry_run)
    links = make_links(database, due, rows, maker, now, settings, result)
    if not links:
        return result

    with db.unit_of_work(database, dry_run=settings.dry_run) as cur:
        pipeline = Pipeline.open(cur, settings)

        def build(d: Due, row: Mapping[str, Any]) -> Notice | None:
            return daily_common.notice(SPEC, d, row, context(d, row, links[d.key]), now,
                                       pipeline.system, settings)

        daily_common.queue_all(cur, pipeline, SPEC, [d for d in due if d.key in links],
                               rows, build, database, result)
        daily_common.finish(result, pipeline)
    return result
