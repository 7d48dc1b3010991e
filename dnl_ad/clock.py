"""Time zones and local days: every "local" instant an alert needs, computed from `now`.

Client zones come from UI text fields and arrive in many shapes: `+08:00`, `-05:00`,
`+0800`, `+8`, `GMT+8`, `UTC+05:45`, `UTC`, IANA names such as `Asia/Hong_Kong`, `''`
and NULL. A client's zone is the first usable of its candidates (auto_send_zone,
daily_balance_send_time_zone, system_parameter.sys_timezone, UTC). An unparseable value
is logged once per client and value and the next candidate is used.

All arithmetic goes through pytz's `localize`/`normalize` so that IANA zones with
daylight saving give 23- and 25-hour days correctly.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

import pytz

log = logging.getLogger(__name__)

UTC = pytz.utc
_OFFSET = re.compile(
    r"^(?:(?:GMT|UTC)\s*)?(?P<sign>[+-])\s*(?P<h>\d{1,2})(?::?(?P<m>\d{2}))?$", re.IGNORECASE
)
_MAX_OFFSET_MINUTES = 14 * 60  # +14:00 (Kiribati) and -12:00 are the real extremes


class ZoneError(ValueError):
    """A zone text that names no usable time zone."""


def parse_zone(value: str | None) -> dt.tzinfo | None:
    """The tzinfo a zone text names; None for empty/NULL; ZoneError when unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.upper() in {"UTC", "GMT", "Z", "UTC+0", "GMT+0", "+0", "-0"}:
        return UTC
    m = _OFFSET.match(text)
    if m:
        hours, minutes = int(m.group("h")), int(m.group("m") or 0)
        if minutes >= 60:
            raise ZoneError(f"minutes out of range in zone {value!r}")
        total = hours * 60 + minutes
        if total > _MAX_OFFSET_MINUTES:
            raise ZoneError(f"offset beyond +/-14:00 in zone {value!r}")
        if total == 0:
            return UTC
        return pytz.FixedOffset(-total if m.group("sign") == "-" else total)
    try:
        return pytz.timezone(text)
    except (pytz.UnknownTimeZoneError, ValueError, AttributeError):
        raise ZoneError(f"unknown time zone {value!r}") from None


class ZoneResolver:
    """Resolves a client's zone from its candidate values, warning once per client+value.

    Kept by the long-running daemon across sweeps so a bad value is not logged every
    minute for months.
    """

    def __init__(self) -> None:
        self._warned: set[tuple[Any, str, str]] = set()
        self._lock = threading.Lock()

    def resolve(self, client_id: Any, candidates: Iterable[tuple[str, str | None]]
                ) -> tuple[dt.tzinfo, str]:
        """(tzinfo, source) for the first usable (source, value) candidate, else (UTC, 'UTC')."""
        for source, value in candidates:
            try:
                zone = parse_zone(value)
            except ZoneError as exc:
                self._warn(client_id, source, str(value), str(exc))
                continue
            if zone is not None:
                return zone, source
        return UTC, "UTC"

    def _warn(self, client_id: Any, source: str, value: str, why: str) -> None:
        key = (client_id, source, value)
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning("client %s: %s %r is not a usable time zone (%s); trying the next source",
                    client_id, source, value, why)


# The daemon-wide resolver; tests may create their own.
RESOLVER = ZoneResolver()


def client_zone(client_id: Any, auto_send_zone: str | None, daily_balance_zone: str | None,
                sys_timezone: str | None, resolver: ZoneResolver | None = None) -> dt.tzinfo:
    """The client's zone by the contract's fall-back order."""
    zone, _ = (resolver or RESOLVER).resolve(client_id, [
        ("auto_send_zone", auto_send_zone),
        ("daily_balance_send_time_zone", daily_balance_zone),
        ("system_parameter.sys_timezone", sys_timezone),
    ])
    return zone


def require_aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    return now.astimezone(UTC)


def local_date(now: dt.datetime, zone: dt.tzinfo) -> dt.date:
    """The calendar date at `now` in `zone`."""
    return require_aware(now).astimezone(zone).date()


def local_instant(day: dt.date, zone: dt.tzinfo, hour: int = 0) -> dt.datetime:
    """UTC instant of `day` at `hour`:00 local time (DST gaps resolve forward)."""
    naive = dt.datetime(day.year, day.month, day.day) + dt.timedelta(hours=hour)
    localize = getattr(zone, "localize", None)
    if localize is None:
        return naive.replace(tzinfo=zone).astimezone(UTC)
    try:
        aware = localize(naive, is_dst=None)
    except pytz.NonExistentTimeError:
        # Skipped by a spring-forward: read the wall time with the offset in force before
        # the gap, which lands on the first instant after it (02:30 -> 03:30; a skipped
        # midnight -> 01:00, the day's real start). is_dst=True would land before the gap,
        # in the previous local day.
        aware = localize(naive, is_dst=False)
    except pytz.AmbiguousTimeError:
        aware = localize(naive, is_dst=True)  # repeated by a fall-back: the first occurrence
    return aware.astimezone(UTC)


def day_window(day: dt.date, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of local calendar `day` (23, 24 or 25 hours long)."""
    return local_instant(day, zone), local_instant(day + dt.timedelta(days=1), zone)


def local_midnight(now: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """UTC instant of the most recent local 00:00 at or before `now`."""
    return local_instant(local_date(now, zone), zone)


def gmt_label(zone: dt.tzinfo, at: dt.datetime) -> str:
    """'GMT+08:00' style label of the zone's offset at `at` (tag customer_gmt)."""
    offset = require_aware(at).astimezone(zone).utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"GMT{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def next_at_hour(instant: dt.datetime, hour: int, zone: dt.tzinfo = UTC) -> dt.datetime:
    """The first instant strictly after `instant` at which the clock in `zone` reads
    `hour`:00 (the v5 UI's "daily at H GMT" with zone UTC, a local midnight with hour 0)."""
    day = local_date(instant, zone)
    for offset in range(3):
        candidate = local_instant(day + dt.timedelta(days=offset), zone, hour)
        if candidate > instant:
            return candidate
    raise AssertionError("unreachable: a day has an hour")


def next_clock_hour(instant: dt.datetime) -> dt.datetime:
    """The start of the next UTC clock hour after `instant`."""
    start = require_aware(instant).replace(minute=0, second=0, microsecond=0)
    return start + dt.timedelta(hours=1)
