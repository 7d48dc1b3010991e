"""What the three daily reports (usage summary, balance summary, CDR delivery) share.

Who is due, and for which local day, is worked out in Python because every client has
its own zone text. Clients sharing their send settings share their schedule, so one query
groups the enabled clients by those settings (a few hundred groups for 100,000 clients),
each group's send instants and previous-day windows are computed here once, and only the
clients of a group that may have something to do are read one by one: a group whose
reports were all decided (queued, settled or logged) at an earlier sweep, with the same
members and the same slots, is not read again (an idle sweep reads no client row). The
dedupe keys of the clients read are checked against the outbox in one query, and only the
windows still to send go to the alert's single aggregation query (all windows at once,
passed as arrays through `unnest`).

Due rule. A report for local day D is due at local D+1 at the client's send hour
(auto_summary_hour, NULL = 0). A sweep at `now` considers every due instant in
(now - grace, now], where grace is CATCHUP_HOURS (at least two sweep periods, so that
CATCHUP_HOURS = 0 still lets a running daemon send). A normally running daemon sends each
report within one sweep of its hour; one restarted after an outage sends each report it
missed once if it is not older than the grace, and logs (once) the one it no longer sends.
Dedupe keys `<kind>:<client>:<local report date>` make "once" hold across sweeps and
daemons.
"""

from __future__ import annotations

import datetime as dt
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from psycopg2 import sql

from .. import batches, clock, db, migrations, outbox
from ..config import Settings
from ..mail.message import split_addresses
from ..notice import Notice
from ..pipeline import Pipeline
from . import SweepResult, recipients

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # shown for a value the database does not have (NULL balance, no history)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class DailySpec:
    """One daily report: its kind (dedupe key prefix), enabling column and template.

    taken_over: the client column where the original dnl_ad recorded its last mail of this
    report (last_autoreport_time, ...): a report whose due instant it already covers was
    sent by the original and is never sent again (take-over).
    """

    kind: str
    flag: str       # client column that enables it (is_auto_summary, ...)
    template: str   # mail_tmplate prefix (auto_summary, ...)
    title: str      # for alert_rule and logs
    taken_over: str = ""
    own_send_time: bool = False       # balance summary: daily_balance_send_time when set
    report_zone_column: str = ""      # CDR: daily_cdr_generation_zone names the day's zone
    days_column: str = ""             # balance summary: numer_of_days_balance
    period_column: str = ""           # usage summary: auto_summary_period


@dataclass(frozen=True)
class Due:
    """One report still to send: a client and one of its previous local days."""

    client_id: int
    zone: dt.tzinfo
    report_day: dt.date          # the local day the report covers
    start: dt.datetime           # UTC, inclusive
    end: dt.datetime             # UTC, exclusive
    due_at: dt.datetime          # UTC instant the report became due
    key: str

    @property
    def days(self) -> int:
        """Local days the window covers (balance summary: numer_of_days_balance)."""
        return max(round((self.end - self.start).total_seconds() / 86400), 1)

    @property
    def first_day(self) -> dt.date:
        return self.report_day - dt.timedelta(days=self.days - 1)

    @property
    def customer_gmt(self) -> str:
        return clock.gmt_label(self.zone, self.start)

    def local_text(self, instant: dt.datetime) -> str:
        return instant.astimezone(self.zone).strftime(_TIME_FORMAT)

    @property
    def begin_text(self) -> str:
        return self.local_text(self.start)

    @property
    def end_text(self) -> str:
        """The last second of the day (23:59:59 local), as people read a day's end."""
        return self.local_text(self.end - dt.timedelta(seconds=1))


@dataclass
class _Memory:
    """Per-database memory of a long-running daemon, so that work is not repeated.

    settled: keys decided "nothing to send" (no traffic): not re-aggregated every sweep.
    logged:  keys whose one-time log line (too old, no recipient) was written.
    A restart forgets it; then each such key is re-decided or re-logged once.
    """

    settled: dict[str, dt.date] = field(default_factory=dict)
    logged: dict[str, dt.date] = field(default_factory=dict)
    # groups: (settings group, members, slots) -> (duplicates, day) of a group of clients
    # with nothing left to do for those slots: not read again until one of them changes
    groups: dict[tuple[Any, ...], tuple[int, dt.date]] = field(default_factory=dict)

    def prune(self, before: dt.date) -> None:
        for book in (self.settled, self.logged):
            for key in [k for k, day in book.items() if day < before]:
                del book[key]
        for group in [k for k, (_, day) in self.groups.items() if day < before]:
            del self.groups[group]


_MEMORY: weakref.WeakKeyDictionary[Any, _Memory] = weakref.WeakKeyDictionary()


def memory_for(database: Any) -> _Memory:
    """The memory kept for this Database object (one per daemon; one per test)."""
    mem = _MEMORY.get(database)
    if mem is None:
        mem = _MEMORY[database] = _Memory()
    return mem


def dedupe_key(kind: str, client_id: int, day: dt.date) -> str:
    return f"{kind}:{client_id}:{day.isoformat()}"


def grace(settings: Settings) -> dt.timedelta:
    """How old a due instant may be and still be sent (CATCHUP_HOURS, floored)."""
    return max(dt.timedelta(hours=settings.catchup_hours),
               dt.timedelta(seconds=2 * settings.daily_check_seconds))


def send_hour(client_id: int, value: Any, mem: _Memory, kind: str, *,
              quiet: bool = False) -> int:
    """auto_summary_hour as 0-23; NULL = 0; a value out of range is logged (unless
    `quiet`: a group's schedule, logged per client when its clients are read) and 0 is used."""
    if value is None:
        return 0
    try:
        hour = int(value)
    except (TypeError, ValueError):
        hour = -1
    if 0 <= hour <= 23:
        return hour
    note = f"hour:{kind}:{client_id}:{value}"
    if not quiet and note not in mem.logged:
        mem.logged[note] = dt.date.max
        log.warning("%s: client %s: auto_summary_hour %r is not an hour 0-23; using 0",
                    kind, client_id, value)
    return 0


def due_instants(now: dt.datetime, zone: dt.tzinfo, hour: int, window: dt.timedelta,
                 minute: int = 0
                 ) -> tuple[list[tuple[dt.date, dt.datetime]], tuple[dt.date, dt.datetime] | None]:
    """(report day, due instant) pairs due in (now - window, now], oldest first, and the
    latest one already older than the window (the report a long outage lost), if any."""
    today = clock.local_date(now, zone)
    days_back = window.days + 2
    fresh: list[tuple[dt.date, dt.datetime]] = []
    stale: tuple[dt.date, dt.datetime] | None = None
    for back in range(days_back, -1, -1):
        send_day = today - dt.timedelta(days=back)
        due_at = clock.local_instant(send_day, zone, hour) + dt.timedelta(minutes=minute)
        if due_at > now:
            continue
        report_day = send_day - dt.timedelta(days=1)
        if now - due_at <= window:
            fresh.append((report_day, due_at))
        else:
            stale = (report_day, due_at)
    return fresh, stale


_CLIENTS = sql.SQL(
    "SELECT c.client_id, c.auto_summary_hour, c.auto_send_zone, "
    "c.daily_balance_send_time, c.daily_balance_send_time_zone, "
    "c.daily_cdr_generation_zone, c.numer_of_days_balance, c.auto_summary_period, "
    "c.last_autoreport_time, c.last_autobalance_time, c.last_cdrdown_time, "
    "(SELECT s.sys_timezone FROM system_parameter s ORDER BY s.sys_id LIMIT 1) AS sys_timezone "
    "FROM client c WHERE c.status AND coalesce(c.{flag}, false) ORDER BY c.client_id"
)


@dataclass(frozen=True)
class _When:
    """A client's send time and report zone, as its v5 settings say."""

    zone: dt.tzinfo          # the zone of the send time
    hour: int
    minute: int
    report_zone: dt.tzinfo   # the zone of the report's day (CDR: its own)
    days: int                # days one report covers (balance summary: numer_of_days_balance)
    period_hours: int = 24   # usage summary: auto_summary_period (24 = the daily report)
    settle: dt.timedelta = dt.timedelta(0)  # REPORT_SETTLE_MINUTES


# auto_summary_period values the v5 UI offers (hours; -15/-30 are minutes).
_PERIODS = {24, 12, 8, 6, 4, 2, 1, -15, -30}


def period_hours(spec: DailySpec, client_id: int, value: Any, mem: _Memory, *,
                 quiet: bool = False) -> int:
    """auto_summary_period as whole hours. cdr_report_detail holds one row per hour, so a
    15- or 30-minute period cannot be computed: it is served hourly (logged once)."""
    if value is None:
        return 24
    try:
        period = int(value)
    except (TypeError, ValueError):
        period = 0
    if period not in _PERIODS:
        period = 24
        note = f"period:{spec.kind}:{client_id}:{value}"
    elif period < 0:
        note = f"minutes:{spec.kind}:{client_id}:{value}"
    else:
        return period
    if not quiet and note not in mem.logged:
        mem.logged[note] = dt.date.max
        if period < 0:
            log.warning("%s: client %s: auto_summary_period %s minutes cannot be served from "
                        "cdr_report_detail (hourly rows); summaries go hourly", spec.kind,
                        client_id, -period)
        else:
            log.warning("%s: client %s: auto_summary_period %r is not one the UI offers "
                        "(1, 2, 4, 6, 8, 12, 24 hours); the daily summary is sent", spec.kind,
                        client_id, value)
    return 1 if period < 0 else period


class _SilentResolver(clock.ZoneResolver):
    """Resolves a group's zones without a word: a bad value is logged, naming the client,
    when the group's clients are read (with the daemon's resolver)."""

    def _warn(self, client_id: Any, source: str, value: str, why: str) -> None:
        return None


_SILENT = _SilentResolver()


def _when(spec: DailySpec, row: Mapping[str, Any], mem: _Memory,
          resolver: clock.ZoneResolver | None, settle: dt.timedelta, *,
          quiet: bool = False) -> _When:
    cid = row["client_id"]
    resolve = (resolver or clock.RESOLVER).resolve
    zone, _ = resolve(cid, [("auto_send_zone", row["auto_send_zone"]),
                            ("system_parameter.sys_timezone", row["sys_timezone"])])
    hour, minute = send_hour(cid, row["auto_summary_hour"], mem, spec.kind, quiet=quiet), 0
    send_time = row.get("daily_balance_send_time")
    if spec.own_send_time and send_time is not None:
        zone, _ = resolve(cid, [("daily_balance_send_time_zone",
                                 row["daily_balance_send_time_zone"]),
                                ("auto_send_zone", row["auto_send_zone"]),
                                ("system_parameter.sys_timezone", row["sys_timezone"])])
        hour, minute = send_time.hour, send_time.minute
    report_zone = zone
    if spec.report_zone_column:
        report_zone, _ = resolve(cid, [(spec.report_zone_column, row[spec.report_zone_column]),
                                       ("auto_send_zone", row["auto_send_zone"]),
                                       ("system_parameter.sys_timezone", row["sys_timezone"])])
    days = 1
    if spec.days_column:
        try:
            days = min(max(int(row[spec.days_column] or 1), 1), 31)
        except (TypeError, ValueError):
            days = 1
    period = 24
    if spec.period_column:
        period = period_hours(spec, cid, row[spec.period_column], mem, quiet=quiet)
    return _When(zone, hour, minute, report_zone, days, period, settle)


# The settings that decide a client's schedule (every column _when reads).
_SETTINGS = ("auto_summary_hour", "auto_send_zone", "daily_balance_send_time",
             "daily_balance_send_time_zone", "daily_cdr_generation_zone",
             "numer_of_days_balance", "auto_summary_period", "sys_timezone")


def _settings_sql() -> tuple[sql.Composable, sql.Composable]:
    """The settings columns of `q`, and the group key md5(row(...)::text) over them."""
    cols = sql.SQL(", ").join(sql.SQL("q.{}").format(sql.Identifier(c)) for c in _SETTINGS)
    return cols, sql.SQL("md5(row({})::text)").format(cols)


def _groups_query(spec: DailySpec) -> sql.Composed:
    """The enabled clients grouped by their send settings: one row per group with its key
    (`grp`) and a digest of its members and their take-over column (`members`)."""
    clients = _CLIENTS.format(flag=sql.Identifier(spec.flag))  # the flag column, never data
    cols, grp = _settings_sql()
    taken = (sql.SQL("q.{}::text").format(sql.Identifier(spec.taken_over))
             if spec.taken_over else sql.SQL("''"))
    return sql.SQL(
        "SELECT {cols}, {grp} AS grp, md5(string_agg(q.client_id::text || '/' || "
        "coalesce({taken}, ''), ',' ORDER BY q.client_id)) AS members "
        "FROM ({clients}) q GROUP BY {cols}").format(cols=cols, grp=grp, taken=taken,
                                                     clients=clients)


def _members_query(spec: DailySpec) -> sql.Composed:
    """The enabled clients of the groups whose keys are `%(groups)s`, with their group."""
    clients = _CLIENTS.format(flag=sql.Identifier(spec.flag))
    _, grp = _settings_sql()
    return sql.SQL("SELECT * FROM (SELECT q.*, {grp} AS grp FROM ({clients}) q) m "
                   "WHERE m.grp = ANY(%(groups)s) ORDER BY m.client_id").format(
        grp=grp, clients=clients)


def plan(cur: db.Cursor, spec: DailySpec, now: dt.datetime, settings: Settings,
         database: Any, result: SweepResult,
         resolver: clock.ZoneResolver | None = None) -> list[Due]:
    """The reports of `spec` due at `now` and not yet queued (nor settled), oldest first.

    1. One query: enabled active clients grouped by their v5 send-time and zone settings;
       each group's zones, due instants within the grace and report windows (Python).
       A group decided at an earlier sweep (same members, same slots) stops here.
    2. One query: the clients of the other groups, one by one.
    3. A report the original daemon already sent (its last_* column at or after the due
       instant) is settled: never sent again (take-over).
    4. One query: which of those keys are in the outbox already (never re-rendered).
    5. A due instant older than the grace whose report was never queued is logged once.
    """
    now = clock.require_aware(now)
    mem = memory_for(database)
    window = grace(settings)
    settle = dt.timedelta(minutes=settings.report_settle_minutes)
    today = clock.local_date(now, clock.UTC)
    mem.prune(clock.local_date(now - window, clock.UTC) - dt.timedelta(days=3))
    # Most clients share a few settings: their instants are computed once.
    schedules: dict[_When, tuple[list[_Slot], _Slot | None]] = {}

    def schedule_of(when: _When) -> tuple[list[_Slot], _Slot | None]:
        sched = schedules.get(when)
        if sched is None:
            sched = schedules[when] = _schedule(now, when, window)
        return sched

    cur.execute(_groups_query(spec))
    open_groups: dict[str, tuple[Any, ...]] = {}
    for group in cur.fetchall():
        when = _when(spec, {**group, "client_id": None}, mem, _SILENT, settle, quiet=True)
        fresh, old = schedule_of(when)
        memo = (group["grp"], group["members"], tuple(fresh), old)
        decided = mem.groups.get(memo)
        if decided is not None:
            result.duplicates += decided[0]
        else:
            open_groups[group["grp"]] = memo
    if not open_groups:
        return []
    due: list[Due] = []
    busy: set[str] = set()  # groups with a report still to send
    per_group: dict[str, int] = dict.fromkeys(open_groups, 0)  # duplicates per group
    lost: list[Due] = []
    lost_count = 0
    # Streamed from a server-side cursor, a chunk at a time, so that a first sweep over
    # 100,000 clients never holds them all in memory at once.
    with cur.connection.cursor(name=f"dnl_ad_plan_{spec.kind}") as members:
        members.itersize = _CHUNK
        members.execute(_members_query(spec), {"groups": list(open_groups)})
        while chunk := members.fetchmany(_CHUNK):
            candidates: list[Due] = []
            stale: list[Due] = []
            group_of: dict[int, str] = {}
            for row in chunk:
                cid = row["client_id"]
                group_of[cid] = row["grp"]
                when = _when(spec, row, mem, resolver, settle)
                fresh, old = schedule_of(when)
                sent_before = row.get(spec.taken_over) if spec.taken_over else None
                for slot in fresh:
                    d = Due(cid, when.report_zone, *slot, slot_key(spec.kind, cid, slot, when))
                    if sent_before is not None and sent_before >= d.due_at:
                        _settle_taken_over(spec, d, sent_before, mem)
                        continue
                    candidates.append(d)
                if old is not None and not (sent_before is not None
                                            and sent_before >= old[3]):
                    stale.append(Due(cid, when.report_zone, *old,
                                     slot_key(spec.kind, cid, old, when)))
            keys = [d.key for d in candidates if d.key not in mem.settled]
            keys += [d.key for d in stale if d.key not in mem.logged]
            queued = outbox.already_queued(cur, settings.own_schema, keys)
            for key in quiet_keys(cur, settings.own_schema, keys):
                mem.settled[key] = dt.date.max  # decided quiet by an earlier run: never lost
                queued.add(key)
            for d in candidates:
                if d.key in queued:
                    result.duplicates += 1
                    per_group[group_of[d.client_id]] += 1
                elif d.key not in mem.settled:
                    due.append(d)
                    busy.add(group_of[d.client_id])
            for d in stale:
                if d.key not in queued and d.key not in mem.logged:
                    mem.logged[d.key] = d.report_day
                    lost_count += 1
                    if len(lost) < _LOST_SHOWN:
                        lost.append(d)
    _log_lost(spec, lost, lost_count, settings)
    # A group with nothing due is decided: every report of its slots is queued, settled
    # or logged; it is not read again while its members and slots stay the same.
    for grp, memo in open_groups.items():
        if grp not in busy:
            mem.groups[memo] = (per_group[grp], today)
    return due


def _settle_taken_over(spec: DailySpec, due: Due, sent: dt.datetime, mem: _Memory) -> None:
    if due.key in mem.settled:
        return
    mem.settled[due.key] = due.report_day
    log.info("%s: client %s: report for %s already sent by the original daemon at %s "
             "(client.%s); not sent again", spec.kind, due.client_id, due.report_day,
             sent.isoformat(), spec.taken_over)


# (report day, window start, window end, due instant): one schedule's report slot.
_Slot = tuple[dt.date, dt.datetime, dt.datetime, dt.datetime]


def slot_key(kind: str, client_id: int, slot: _Slot, when: _When) -> str:
    """`<kind>:<client>:<local date>` for a daily report; a shorter period adds its local
    start (`usage_summary:7:2026-11-20T04:00`)."""
    if when.period_hours == 24:
        return dedupe_key(kind, client_id, slot[0])
    start = slot[1].astimezone(when.report_zone)
    return f"{kind}:{client_id}:{start:%Y-%m-%dT%H:%M}"


def _schedule(now: dt.datetime, when: _When, window: dt.timedelta
              ) -> tuple[list[_Slot], _Slot | None]:
    """The report slots due in (now - window, now] and the latest one older than that.

    A report is due at its send instant, but never before its window has settled
    (REPORT_SETTLE_MINUTES after the window ends: the switch writes an hour's
    cdr_report_detail rows minutes after the hour), so a report read too early cannot
    miss the last hour's traffic.
    """
    if when.period_hours != 24:
        return _period_schedule(now, when, window)

    def slot(send_zone_day: dt.date, due_at: dt.datetime) -> _Slot:
        # the report covers the day(s) before the send instant, in the report's zone
        last = clock.local_date(due_at, when.report_zone) - dt.timedelta(days=1)
        first = last - dt.timedelta(days=when.days - 1)
        start, _ = clock.day_window(first, when.report_zone)
        _, end = clock.day_window(last, when.report_zone)
        return (last, start, end, max(due_at, end + when.settle))

    fresh, old = due_instants(now, when.zone, when.hour, window + when.settle, when.minute)
    slots = [slot(*f) for f in fresh]
    stale = slot(*old) if old is not None else None
    fresh_slots = []
    for s in slots:
        if s[3] > now:
            continue  # not settled yet
        if now - s[3] <= window:
            fresh_slots.append(s)
        else:
            stale = s
    return fresh_slots, stale


def _period_schedule(now: dt.datetime, when: _When, window: dt.timedelta
                     ) -> tuple[list[_Slot], _Slot | None]:
    """Slots of a period shorter than a day: blocks of `period_hours` aligned to local
    midnight in the send zone, each due once it has ended and settled."""
    step = dt.timedelta(hours=when.period_hours)
    day = clock.local_date(now - window - when.settle - step, when.zone)
    fresh: list[_Slot] = []
    stale: _Slot | None = None
    while True:
        start = clock.local_instant(day, when.zone)
        day_end = clock.local_instant(day + dt.timedelta(days=1), when.zone)
        while start < day_end:
            end = min(start + step, day_end)
            due_at = end + when.settle
            if due_at > now:
                return fresh, stale
            local_day = clock.local_date(start, when.zone)
            if now - due_at <= window:
                fresh.append((local_day, start, end, due_at))
            else:
                stale = (local_day, start, end, due_at)
            start = end
        day += dt.timedelta(days=1)


_CHUNK = 5000      # client rows read and decided at a time
_LOST_SHOWN = 10   # lost reports named in the log line (the rest are counted)


def _log_lost(spec: DailySpec, shown_lost: list[Due], count: int, settings: Settings) -> None:
    """One line per sweep for reports a long outage made too old to send (each key once:
    the caller has recorded them in the memory); the first few named, the rest counted."""
    if not count:
        return
    shown = ", ".join(f"client {d.client_id} day {d.report_day} (due {d.due_at:%Y-%m-%d %H:%M}"
                      " UTC)" for d in shown_lost[:_LOST_SHOWN])
    more = f" and {count - _LOST_SHOWN} more" if count > _LOST_SHOWN else ""
    log.warning("%s: %d report(s) not sent: due more than CATCHUP_HOURS=%s ago and never "
                "queued (daemon down, or the report was newly enabled): %s%s", spec.kind,
                count, settings.catchup_hours, shown, more)


def windows_params(due: Sequence[Due]) -> dict[str, Any]:
    """Bound parameters for WINDOWS: one array per column, plus the overall range."""
    return {
        "w_client": [d.client_id for d in due],
        "w_start": [d.start for d in due],
        "w_end": [d.end for d in due],
        "w_key": [d.key for d in due],
        "w_day": [d.report_day for d in due],
        "w_first": [d.first_day for d in due],
        "lo": min(d.start for d in due),
        "hi": max(d.end for d in due),
    }


# The due windows as a relation; %(lo)s/%(hi)s bound the whole scan so that PostgreSQL
# prunes cdr_report_detail to the UTC-day children the windows touch.
WINDOWS = sql.SQL(
    "w AS (SELECT * FROM unnest(%(w_client)s::int[], %(w_start)s::timestamptz[], "
    "%(w_end)s::timestamptz[], %(w_key)s::text[], %(w_day)s::date[], %(w_first)s::date[]) "
    "AS w(client_id, t0, t1, key, day, first))"
)

# Buy (the client on the ingress side) and sell (egress side) totals per window, as
# `FROM w ... {TRAFFIC}`: one index range scan per window and side on (ingress_client_id,
# report_time) / (egress_client_id, report_time), in only the children the overall range
# touches. Measured against a hash join of all windows with the whole range (bench_usage):
# faster at 20,000 windows, and far faster for the few hundred windows a normal sweep has.
def _side(prefix: str, alias: str) -> sql.Composable:
    cols = {"p": sql.SQL(prefix), "a": sql.Identifier(alias)}
    return sql.SQL(
        "LEFT JOIN LATERAL (SELECT sum(d.{p}_total_calls) AS total_calls, "
        "sum(d.{p}_success_calls) AS success_calls, sum(d.not_zero_calls) AS not_zero_calls, "
        "sum(d.{p}_bill_time) AS bill_time, sum(d.{p}_call_cost) AS cost, "
        "sum(d.duration) AS duration FROM cdr_report_detail d "
        "WHERE d.{p}_client_id = w.client_id AND d.report_time >= w.t0 "
        "AND d.report_time < w.t1 AND d.report_time >= %(lo)s AND d.report_time < %(hi)s"
        ") {a} ON true"
    ).format(**cols)


TRAFFIC = sql.SQL(" ").join([_side("ingress", "buy"), _side("egress", "sell")])

# Client columns every daily report shows, for `FROM w JOIN client c ...`.
CLIENT_COLUMNS = sql.SQL(
    "c.name, c.company, c.billing_email, c.email, c.auto_daily_balance_recipient, "
    "c.allowed_credit, c.unlimited_credit, c.mode, cur.code AS currency, "
    "b.balance::numeric AS balance"
)
CLIENT_JOIN = sql.SQL(
    "JOIN client c ON c.client_id = w.client_id "
    "LEFT JOIN currency cur ON cur.currency_id = c.currency_id "
    "LEFT JOIN c4_client_balance b ON b.client_id = c.client_id::text"
)


def fetch_by_key(cur: db.Cursor, query: sql.Composable, due: Sequence[Due]
                 ) -> dict[str, dict[str, Any]]:
    """Run an alert's aggregation query over all due windows; rows keyed by dedupe key."""
    if not due:
        return {}
    cur.execute(query, windows_params(due))
    return {row["key"]: dict(row) for row in cur.fetchall()}


# --- context values (contract with the renderer: Decimal = money, int = counts,
#     str = already formatted text)

def minutes(seconds: Any) -> str:
    """Seconds as minutes with two decimals ('12.50'): durations are not money."""
    value = Decimal(seconds or 0) / Decimal(60)
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def count(value: Any) -> int:
    return int(value or 0)


def money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def identity_context(due: Due, row: Mapping[str, Any]) -> dict[str, Any]:
    """Tags naming the client and the report window, common to all three daily reports."""
    return {
        "client_name": row.get("name") or "",
        "company_name": row.get("company") or row.get("name") or "",
        "begin_time": due.begin_text,
        "end_time": due.end_text,
        "customer_gmt": due.customer_gmt,
    }


def client_context(due: Due, row: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Tags every daily report carries: names, window, zone, credit and balance."""
    limit = -money(row.get("allowed_credit"))
    balance = row.get("balance")
    if balance is None:
        log.warning("%s: client %s has no current balance (c4_client_balance missing or NULL);"
                    " balance and remaining credit show %r", kind, due.client_id, UNKNOWN)
    remaining: Any = UNKNOWN if balance is None else money(balance) + limit
    return {
        **identity_context(due, row),
        "credit_limit": limit,
        "allowed_credit": limit,
        "balance": UNKNOWN if balance is None else money(balance),
        "remaining_credit": remaining,
        "currency": row.get("currency") or "",
    }


def notice(spec: DailySpec, due: Due, row: Mapping[str, Any], context: Mapping[str, Any],
           now: dt.datetime, system: Mapping[str, Any], settings: Settings) -> Notice:
    """The report's notice, addressed as client.auto_daily_balance_recipient says."""
    audience = recipients.daily_audience(row.get("auto_daily_balance_recipient"))
    to_text, extra = recipients.addresses(audience, row, system, settings)
    return Notice(
        kind=spec.kind, dedupe_key=due.key, template=spec.template, client_id=due.client_id,
        recipients=to_text, context=dict(context), decided_at=now,
        alert_rule=f"{spec.title} for {due.report_day.isoformat()} ({due.customer_gmt})",
        extra_recipients=extra,
        meta={"report_day": due.report_day.isoformat(), "window": (due.start, due.end)},
    )


Builder = Callable[[Due, Mapping[str, Any]], Notice | None]


QUIET_TABLE = "report_quiet"


def quiet_keys(cur: db.Cursor, schema: str, keys: Sequence[str]) -> set[str]:
    """The keys among `keys` already decided "nothing to send" (one query)."""
    if not keys:
        return set()
    cur.execute(sql.SQL("SELECT dedupe_key FROM {} WHERE dedupe_key = ANY(%s)").format(
        migrations.own(schema, QUIET_TABLE)), (list(keys),))
    return {r["dedupe_key"] for r in cur.fetchall()}


def record_quiet(cur: db.Cursor, schema: str, key: str, now: dt.datetime) -> None:
    cur.execute(sql.SQL("INSERT INTO {} (dedupe_key, decided_at) VALUES (%s, %s) "
                        "ON CONFLICT (dedupe_key) DO NOTHING").format(
        migrations.own(schema, QUIET_TABLE)), (key, now))


def queue_all(database: db.Database, pipeline: Pipeline, spec: DailySpec, due: Sequence[Due],
              rows: Mapping[str, Mapping[str, Any]], build: Builder,
              result: SweepResult, now: dt.datetime) -> None:
    """Build and queue each due report in bounded batches (dnl_ad.batches): a bad client
    skips itself, and no transaction holds more than SWEEP_BATCH notices.

    `build` returns None when there is nothing to send (no traffic): the key is then
    recorded as quiet (dnl_ad.report_quiet), so neither a later sweep nor a restart reads
    that period again, nor logs it as a report that was missed.
    """
    mem = memory_for(database)
    settings = pipeline.settings
    todo: list[Due] = []
    for d in due:
        row = rows.get(d.key)
        if row is None:  # the client vanished between the two queries
            continue
        audience = recipients.daily_audience(row.get("auto_daily_balance_recipient"))
        to_text, extra = recipients.addresses(audience, row, pipeline.system, settings)
        if not split_addresses("; ".join([to_text, *extra])):
            if d.key not in mem.logged:
                mem.logged[d.key] = d.report_day
                log.warning("%s: client %s has no recipient address for its report of %s "
                            "(auto_daily_balance_recipient %s: billing_email, email, "
                            "finance_email are empty); not sent", spec.kind, d.client_id,
                            d.report_day, row.get("auto_daily_balance_recipient"))
            result.skipped += 1
            continue
        todo.append(d)

    def work(cur: db.Cursor, d: Due) -> None:
        n = build(d, rows[d.key])
        if n is None:
            record_quiet(cur, settings.own_schema, d.key, now)
            return
        pipeline.stage(cur, n)  # inserted with the batch's others (pipeline.flush)

    outcome = batches.run(database, todo, work, dry_run=settings.dry_run,
                          size=settings.sweep_batch, finish=pipeline,
                          describe=lambda d: f"{spec.kind}: client {d.client_id} report for "
                                             f"{d.report_day}")
    result.skipped += len(outcome.failed)
    for d in outcome.done:
        if d.key not in pipeline.outcomes:  # decided quiet
            mem.settled[d.key] = d.report_day


def run(database: db.Database, now: dt.datetime, settings: Settings, spec: DailySpec,
        query: sql.Composable,
        build: Callable[[Due, Mapping[str, Any], dt.datetime, Pipeline], Notice | None]
        ) -> SweepResult:
    """A whole daily sweep: plan and one aggregation query, then queue in batches."""
    now = clock.require_aware(now)
    result = SweepResult(spec.kind)
    with database.transaction() as cur:
        pipeline = Pipeline.open(cur, settings)
        due = plan(cur, spec, now, settings, database, result)
        rows = fetch_by_key(cur, query, due)
    queue_all(database, pipeline, spec, due, rows, lambda d, r: build(d, r, now, pipeline),
              result, now)
    finish(result, pipeline)
    return result


def finish(result: SweepResult, pipeline: Pipeline) -> None:
    result.queued += pipeline.queued
    result.duplicates += pipeline.duplicates
    result.mails.extend(pipeline.mails)
