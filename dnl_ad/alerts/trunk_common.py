"""What alerts 6 (trunk pending suspension) and 7 (trunk suspended) share: the one query
that finds each active trunk's live, undownloaded latest rate send, and the tag context.

Why one module: both alerts must agree exactly on which rate send "counts" for a trunk
(its latest link send, by greatest download_deadline; older undownloaded sends are
superseded), otherwise a trunk could be warned about one deck and suspended for another.
The v5 facts (PROVIDER_DB.md section 3): a link send waiting for download has
rate_send_log.status 5; the deadline is 23:59:59 GMT of the download_deadline date; a
download writes detail status 3, download_date and a rate_download_log row whose
log_detail_id is the rate_send_log id.

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
# tech_prefix is the prefix extension's prefix_range on a live switch: read it as text
_PREFIX_PRESENT = sql.SQL(
    "(SELECT string_agg(DISTINCT tech_prefix::text, ',' ORDER BY tech_prefix::text) "
    "FROM resource_prefix WHERE resource_id = latest.resource_id "
    "AND coalesce(tech_prefix::text, '') <> '')"
)
_ABSENT = sql.SQL("''")

# 1. For every active trunk of an active client, pick its latest LINK rate send
#    (download_method 2): greatest download_deadline, ties to the newest send.
# 2. Keep it only when it still waits for this trunk: the send has status 5 (link sent,
#    not yet downloaded), the trunk's detail status 1 (sent) without download_date, and no
#    rate_download_log row for (trunk, send): log_detail_id holds the rate_send_log id.
# 3. The deadline is the end of the deadline date, 23:59:59 GMT; keep the send only when
#    that instant lies in the caller's window [%(after)s, %(until)s].
_CANDIDATES = """
WITH latest AS (
    SELECT DISTINCT ON (d.resource_id)
           d.resource_id, d.id AS detail_id, d.status AS detail_status, d.download_date,
           l.id AS rate_send_id, l.status AS send_status, l.file, l.effective_date,
           l.download_deadline, l.is_email_alert, l.is_disable,
           (l.download_deadline + 1)::timestamp AT TIME ZONE 'UTC' - interval '1 second'
               AS deadline_at,
           r.alias, r.client_id
    FROM rate_send_log_detail d
    JOIN rate_send_log l ON l.id = d.log_id
    JOIN resource r ON r.resource_id = d.resource_id
    JOIN client c ON c.client_id = r.client_id
    WHERE r.active AND c.status AND l.download_deadline IS NOT NULL
      AND l.download_method = 2
    ORDER BY d.resource_id, l.download_deadline DESC, l.id DESC, d.id DESC
)
SELECT latest.resource_id, latest.detail_id, latest.rate_send_id, latest.file,
       latest.effective_date, latest.deadline_at, latest.alias, latest.client_id,
       latest.is_email_alert, latest.is_disable,
       c.name AS client_name, c.company, c.billing_email, c.email,
       c.auto_send_zone, c.daily_balance_send_time_zone, cur.code AS currency,
       {allowed_ip} AS allowed_ip, {prefix} AS prefix
FROM latest
JOIN client c ON c.client_id = latest.client_id
LEFT JOIN currency cur ON cur.currency_id = c.currency_id
WHERE latest.send_status = 5 AND latest.detail_status = 1 AND latest.download_date IS NULL
  AND NOT EXISTS (SELECT 1 FROM rate_download_log dl
                  WHERE dl.log_detail_id = latest.rate_send_id
                    AND dl.resource_id = latest.resource_id)
  AND latest.deadline_at >= %(after)s AND latest.deadline_at <= %(until)s
  AND {flag}
ORDER BY latest.deadline_at, latest.resource_id
"""

# Which rate sends an alert acts on: the UI's two switches of the send.
EMAIL_ALERT = sql.SQL("latest.is_email_alert")   # "Send Reminder Email"
DISABLE = sql.SQL("latest.is_disable")           # "Disable The Trunk"
ANY_SEND = sql.SQL("true")                       # check: every waiting send


@dataclass(frozen=True)
class Candidate:
    """One trunk whose latest rate send is live and undownloaded, with its tag sources."""

    resource_id: int
    detail_id: int
    rate_send_id: int
    file: str
    effective_date: str
    deadline: dt.datetime   # 23:59:59 GMT of the deadline date
    alias: str
    client_id: int
    client_name: str
    company: str | None
    billing_email: str | None
    email: str | None
    auto_send_zone: str | None
    daily_balance_send_time_zone: str | None
    currency: str
    allowed_ip: str
    prefix: str

    @property
    def recipients(self) -> str:
        """The partner's billing contact: billing_email, else the client's email."""
        return (self.billing_email or "").strip() or (self.email or "").strip()


def optional_tables(cur: Cursor) -> tuple[bool, bool]:
    """(resource_ip exists, resource_prefix exists), asked once per sweep."""
    cur.execute("SELECT to_regclass('resource_ip') IS NOT NULL AS ip, "
                "to_regclass('resource_prefix') IS NOT NULL AS prefix")
    row = cur.fetchone()
    return bool(row["ip"]), bool(row["prefix"])


def candidates(cur: Cursor, after: dt.datetime, until: dt.datetime,
               flag: sql.Composable = EMAIL_ALERT) -> list[Candidate]:
    """Every trunk whose live latest rate send has its deadline in [after, until] and the
    alert's switch (`flag`) set: one query."""
    has_ip, has_prefix = optional_tables(cur)
    query = sql.SQL(_CANDIDATES).format(
        allowed_ip=_ALLOWED_IP_PRESENT if has_ip else _ABSENT,
        prefix=_PREFIX_PRESENT if has_prefix else _ABSENT,
        flag=flag,
    )
    cur.execute(query, {"after": after, "until": until})
    return [
        Candidate(
            resource_id=r["resource_id"], detail_id=r["detail_id"],
            rate_send_id=r["rate_send_id"], file=r["file"] or "",
            effective_date=r["effective_date"] or "",
            deadline=r["deadline_at"], alias=r["alias"] or "",
            client_id=r["client_id"], client_name=r["client_name"] or "",
            company=r["company"], billing_email=r["billing_email"], email=r["email"],
            auto_send_zone=r["auto_send_zone"],
            daily_balance_send_time_zone=r["daily_balance_send_time_zone"],
            currency=r["currency"] or "",
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


def is_absolute_link(text: str) -> bool:
    """True for an http(s) link a mail reader can open (a server path is useless there)."""
    try:
        parsed = urlparse(text.strip())
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def format_local(instant: dt.datetime, zone: dt.tzinfo) -> str:
    """'2026-03-01 20:00:00 GMT+08:00': the deadline as the client reads it."""
    local = clock.require_aware(instant).astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {clock.gmt_label(zone, instant)}"


def context(cand: Candidate, system: Mapping[str, Any]) -> dict[str, str]:
    """Tag name -> text for both trunk templates (the suspended one uses a subset)."""
    zone = clock.client_zone(cand.client_id, cand.auto_send_zone,
                             cand.daily_balance_send_time_zone, system.get("sys_timezone"))
    deadline = format_local(cand.deadline, zone)
    link = cand.file if is_absolute_link(cand.file) else ""
    return {
        "company_name": cand.company or cand.client_name,
        "client_name": cand.client_name,
        "trunk_name": cand.alias,
        "rate_update_file_name": file_name(cand.file),
        "rate_download_deadline": deadline,
        "download_deadline": deadline,
        "effective_date": cand.effective_date,
        "rate_download_link": link,
        "download_url": link,
        "allowed_ip": cand.allowed_ip,
        "prefix": cand.prefix,
        "switch_ip": str(system.get("switch_ip") or ""),
        "currency": cand.currency,
    }
