"""What alerts 6 (trunk pending suspension) and 7 (trunk suspended) share: the one query
that finds each active trunk's live, undownloaded latest rate send, and the tag context.

Why one module: both alerts must agree exactly on which rate send "counts" for a trunk
(its latest one, by greatest download_deadline; older undownloaded sends are superseded),
otherwise a trunk could be warned about one deck and suspended for another.

The optional tables resource_ip and resource_prefix may be missing in a live provider
database. Their presence is checked once per sweep with to_regclass, and the query is put
together from fixed SQL fragments (never from data); a missing table's tag renders empty.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from psycopg2 import sql

from .. import clock
from ..db import Cursor

log = logging.getLogger(__name__)

# Fixed fragments for the optional tags; which one is used depends only on to_regclass.
_ALLOWED_IP_PRESENT = sql.SQL(
    "(SELECT string_agg(DISTINCT ip, ',' ORDER BY ip) FROM resource_ip "
    "WHERE resource_id = latest.resource_id AND coalesce(ip, '') <> '')"
)
_PREFIX_PRESENT = sql.SQL(
    "(SELECT string_agg(DISTINCT tech_prefix, ',' ORDER BY tech_prefix) FROM resource_prefix "
    "WHERE resource_id = latest.resource_id AND coalesce(tech_prefix, '') <> '')"
)
_ABSENT = sql.SQL("''")

# 1. For every active trunk of an active client, pick its latest rate send: greatest
#    download_deadline (sends without a deadline never count), ties to the newest send.
# 2. Keep it only when it is still live: is_email_alert, detail status true, no
#    download_date and no rate_download_log row.
# 3. Keep it only when its deadline lies in the caller's window [%(after)s, %(until)s].
_CANDIDATES = """
WITH latest AS (
    SELECT DISTINCT ON (d.resource_id)
           d.resource_id, d.id AS detail_id, d.status, d.download_date,
           l.id AS rate_send_id, l.file, l.download_deadline, l.is_email_alert,
           r.alias, r.client_id
    FROM rate_send_log_detail d
    JOIN rate_send_log l ON l.id = d.log_id
    JOIN resource r ON r.resource_id = d.resource_id
    JOIN client c ON c.client_id = r.client_id
    WHERE r.active AND c.status AND l.download_deadline IS NOT NULL
    ORDER BY d.resource_id, l.download_deadline DESC, l.id DESC, d.id DESC
)
SELECT latest.resource_id, latest.detail_id, latest.rate_send_id, latest.file,
       latest.download_deadline, latest.alias, latest.client_id,
       c.name AS client_name, c.company, c.billing_email,
       c.auto_send_zone, c.daily_balance_send_time_zone,
       {allowed_ip} AS allowed_ip, {prefix} AS prefix
FROM latest
JOIN client c ON c.client_id = latest.client_id
WHERE latest.status AND latest.is_email_alert AND latest.download_date IS NULL
  AND NOT EXISTS (SELECT 1 FROM rate_download_log dl WHERE dl.log_detail_id = latest.detail_id)
  AND latest.download_deadline >= %(after)s AND latest.download_deadline <= %(until)s
ORDER BY latest.download_deadline, latest.resource_id
"""


@dataclass(frozen=True)
class Candidate:
    """One trunk whose latest rate send is live and undownloaded, with its tag sources."""

    resource_id: int
    detail_id: int
    rate_send_id: int
    file: str
    deadline: dt.datetime
    alias: str
    client_id: int
    client_name: str
    company: str | None
    billing_email: str | None
    auto_send_zone: str | None
    daily_balance_send_time_zone: str | None
    allowed_ip: str
    prefix: str


def optional_tables(cur: Cursor) -> tuple[bool, bool]:
    """(resource_ip exists, resource_prefix exists), asked once per sweep."""
    cur.execute("SELECT to_regclass('resource_ip') IS NOT NULL AS ip, "
                "to_regclass('resource_prefix') IS NOT NULL AS prefix")
    row = cur.fetchone()
    return bool(row["ip"]), bool(row["prefix"])


def candidates(cur: Cursor, after: dt.datetime, until: dt.datetime) -> list[Candidate]:
    """Every trunk whose live latest rate send has its deadline in [after, until]: one query."""
    has_ip, has_prefix = optional_tables(cur)
    query = sql.SQL(_CANDIDATES).format(
        allowed_ip=_ALLOWED_IP_PRESENT if has_ip else _ABSENT,
        prefix=_PREFIX_PRESENT if has_prefix else _ABSENT,
    )
    cur.execute(query, {"after": after, "until": until})
    return [
        Candidate(
            resource_id=r["resource_id"], detail_id=r["detail_id"],
            rate_send_id=r["rate_send_id"], file=r["file"] or "",
            deadline=r["download_deadline"], alias=r["alias"] or "",
            client_id=r["client_id"], client_name=r["client_name"] or "",
            company=r["company"], billing_email=r["billing_email"],
            auto_send_zone=r["auto_send_zone"],
            daily_balance_send_time_zone=r["daily_balance_send_time_zone"],
            allowed_ip=r["allowed_ip"] or "", prefix=r["prefix"] or "",
        )
        for r in cur.fetchall()
    ]


def file_name(file: str) -> str:
    """The rate deck's file name: the last path segment when `file` is a link."""
    text = file.strip()
    try:
        parsed = urlparse(text)
    except ValueError:  # e.g. "http://[host/..." (broken IPv6 literal): show it as written
        return text
    if parsed.scheme and parsed.netloc:
        last = unquote(parsed.path.rstrip("/").rsplit("/", 1)[-1])
        return last or text
    return text


def format_local(instant: dt.datetime, zone: dt.tzinfo) -> str:
    """'2026-03-01 20:00:00 GMT+08:00': the deadline as the client reads it."""
    local = clock.require_aware(instant).astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {clock.gmt_label(zone, instant)}"


def context(cand: Candidate, system: Mapping[str, Any]) -> dict[str, str]:
    """Tag name -> text for both trunk templates (the suspended one uses a subset)."""
    zone = clock.client_zone(cand.client_id, cand.auto_send_zone,
                             cand.daily_balance_send_time_zone, system.get("sys_timezone"))
    deadline = format_local(cand.deadline, zone)
    return {
        "company_name": cand.company or cand.client_name,
        "client_name": cand.client_name,
        "trunk_name": cand.alias,
        "rate_update_file_name": file_name(cand.file),
        "rate_download_deadline": deadline,
        "download_deadline": deadline,
        "effective_date": deadline,
        "rate_download_link": cand.file,
        "download_url": cand.file,
        "allowed_ip": cand.allowed_ip,
        "prefix": cand.prefix,
        # The contract names no source for the switch's own address: rendered empty.
        "switch_ip": "",
    }
