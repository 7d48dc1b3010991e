"""clock: every zone format seen in client rows, the fall-back order, local days."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from dnl_ad import clock

from .conftest import utc

WINTER = dt.datetime(2026, 1, 15, 12)
SUMMER = dt.datetime(2026, 7, 15, 12)


def offset(zone: dt.tzinfo, at: dt.datetime = WINTER) -> dt.timedelta:
    return utc(at.year, at.month, at.day, at.hour).astimezone(zone).utcoffset()


H = dt.timedelta(hours=1)
M = dt.timedelta(minutes=1)


@pytest.mark.parametrize("text, winter, summer", [
    ("+08:00", 8 * H, 8 * H),
    ("-05:00", -5 * H, -5 * H),
    ("+0800", 8 * H, 8 * H),
    ("-0330", -(3 * H + 30 * M), -(3 * H + 30 * M)),
    ("+8", 8 * H, 8 * H),
    ("-3", -3 * H, -3 * H),
    ("GMT+8", 8 * H, 8 * H),
    ("gmt-05:00", -5 * H, -5 * H),
    ("UTC+05:45", 5 * H + 45 * M, 5 * H + 45 * M),
    ("GMT +5:30", 5 * H + 30 * M, 5 * H + 30 * M),
    ("+14:00", 14 * H, 14 * H),
    ("-12:00", -12 * H, -12 * H),
    ("UTC", 0 * H, 0 * H),
    ("utc", 0 * H, 0 * H),
    ("GMT", 0 * H, 0 * H),
    ("+00:00", 0 * H, 0 * H),
    ("  +08:00  ", 8 * H, 8 * H),
    ("Asia/Hong_Kong", 8 * H, 8 * H),
    ("America/New_York", -5 * H, -4 * H),
    ("Europe/London", 0 * H, 1 * H),
    ("Australia/Adelaide", 10 * H + 30 * M, 9 * H + 30 * M),
    ("Etc/GMT+8", -8 * H, -8 * H),  # IANA's POSIX sign: 8 hours behind
])
def test_parse_zone_formats(text, winter, summer) -> None:
    zone = clock.parse_zone(text)
    assert zone is not None
    assert (offset(zone, WINTER), offset(zone, SUMMER)) == (winter, summer)


@pytest.mark.parametrize("text", [None, "", "   "])
def test_empty_and_null_name_no_zone(text) -> None:
    assert clock.parse_zone(text) is None


@pytest.mark.parametrize("text", ["+99:99", "+08:60", "+15:00", "-14:30", "GMT+25",
                                  "Mars/Olympus_Mons", "8 hours", "+8.5", "UTC++8"])
def test_unusable_zones_raise(text) -> None:
    with pytest.raises(clock.ZoneError):
        clock.parse_zone(text)


@pytest.mark.parametrize("auto, daily, system, expected", [
    ("+08:00", "-05:00", "+03:00", 8 * H),          # auto_send_zone first
    ("", "-05:00", "+03:00", -5 * H),               # empty: next source
    (None, "-05:00", "+03:00", -5 * H),             # NULL: next source
    ("+99:99", "-05:00", "+03:00", -5 * H),         # unusable: next source
    (None, None, "+03:00", 3 * H),                  # system_parameter.sys_timezone
    (None, "bogus", "+0300", 3 * H),
    (None, None, None, 0 * H),                      # finally UTC
    ("bad", "worse", "worst", 0 * H),
])
def test_fall_back_order(auto, daily, system, expected) -> None:
    zone = clock.client_zone(7, auto, daily, system, clock.ZoneResolver())
    assert offset(zone) == expected


def test_resolver_names_the_source() -> None:
    r = clock.ZoneResolver()
    assert r.resolve(1, [("a", ""), ("b", "+02:00")])[1] == "b"
    assert r.resolve(1, [("a", None)]) == (clock.UTC, "UTC")


def test_bad_zone_logged_once_per_client_and_value(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="dnl_ad.clock")
    r = clock.ZoneResolver()
    for _ in range(3):
        clock.client_zone(1, "+99:99", None, "+08:00", r)
    clock.client_zone(2, "+99:99", None, "+08:00", r)       # another client: logged
    clock.client_zone(1, "GMT+99", None, "+08:00", r)       # another value: logged
    clock.client_zone(1, None, None, "Nowhere/City", r)     # a bad system zone: logged
    clock.client_zone(1, None, None, "Nowhere/City", r)
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 4, lines
    assert "client 1: auto_send_zone '+99:99' is not a usable time zone" in lines[0]
    assert lines[1].startswith("client 2:")
    assert "'GMT+99'" in lines[2]
    assert "system_parameter.sys_timezone 'Nowhere/City'" in lines[3]


@pytest.mark.parametrize("zone, day, hours", [
    ("America/New_York", dt.date(2026, 3, 8), 23),     # spring forward
    ("America/New_York", dt.date(2026, 11, 1), 25),    # fall back
    ("America/New_York", dt.date(2026, 11, 2), 24),
    ("Europe/London", dt.date(2026, 3, 29), 23),
    ("Europe/London", dt.date(2026, 10, 25), 25),
    ("America/Santiago", dt.date(2026, 9, 5), 24),     # its midnight is skipped on the 6th
    ("America/Santiago", dt.date(2026, 9, 6), 23),
    ("America/Santiago", dt.date(2026, 4, 4), 25),
    ("Asia/Hong_Kong", dt.date(2026, 3, 8), 24),
    ("+14:00", dt.date(2026, 3, 8), 24),
])
def test_dst_day_lengths(zone, day, hours) -> None:
    start, end = clock.day_window(day, clock.parse_zone(zone))
    assert end - start == dt.timedelta(hours=hours)
    # the window really is that local day: its first instant is on it, the one before is not
    z = clock.parse_zone(zone)
    assert start.astimezone(z).date() == day
    assert (start - dt.timedelta(seconds=1)).astimezone(z).date() == day - dt.timedelta(days=1)


def test_skipped_midnight_starts_the_day_at_its_first_instant() -> None:
    """Santiago skips 00:00 on 2026-09-06: the day starts at 01:00 -03 (04:00 UTC)."""
    z = clock.parse_zone("America/Santiago")
    assert clock.local_instant(dt.date(2026, 9, 6), z) == utc(2026, 9, 6, 4)
    assert clock.local_instant(dt.date(2026, 3, 8), clock.parse_zone("America/New_York"),
                               hour=2) == utc(2026, 3, 8, 7)  # 02:00 skipped -> 03:00 EDT


@pytest.mark.parametrize("zone, now, date, midnight", [
    ("+08:00", utc(2026, 11, 21, 16), dt.date(2026, 11, 22), utc(2026, 11, 21, 16)),
    ("+08:00", utc(2026, 11, 21, 15, 59), dt.date(2026, 11, 21), utc(2026, 11, 20, 16)),
    ("-03:30", utc(2026, 11, 22, 0), dt.date(2026, 11, 21), utc(2026, 11, 21, 3, 30)),
    ("-03:30", utc(2026, 11, 22, 3, 30), dt.date(2026, 11, 22), utc(2026, 11, 22, 3, 30)),
    ("+14:00", utc(2026, 11, 21, 10), dt.date(2026, 11, 22), utc(2026, 11, 21, 10)),
    ("America/New_York", utc(2026, 3, 8, 12), dt.date(2026, 3, 8), utc(2026, 3, 8, 5)),
    ("America/New_York", utc(2026, 3, 9, 12), dt.date(2026, 3, 9), utc(2026, 3, 9, 4)),
])
def test_local_date_and_midnight(zone, now, date, midnight) -> None:
    z = clock.parse_zone(zone)
    assert clock.local_date(now, z) == date
    assert clock.local_midnight(now, z) == midnight


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        clock.local_date(dt.datetime(2026, 11, 21), clock.UTC)


@pytest.mark.parametrize("zone, at, label", [
    ("+08:00", utc(2026, 1, 1), "GMT+08:00"),
    ("-03:30", utc(2026, 1, 1), "GMT-03:30"),
    ("UTC", utc(2026, 1, 1), "GMT+00:00"),
    ("America/New_York", utc(2026, 1, 1), "GMT-05:00"),
    ("America/New_York", utc(2026, 7, 1), "GMT-04:00"),
])
def test_gmt_label(zone, at, label) -> None:
    assert clock.gmt_label(clock.parse_zone(zone), at) == label
