"""Notice: what an alert decided to tell one client, before it is rendered.

An alert module builds Notices from its query rows; the pipeline renders each one
exactly once and stores it in the outbox under its dedupe key. Nothing here knows SMTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# alert number (harness keys 1-9, 0 for 10) -> kind; the kind names dedupe keys, email_log types
# and default template files (templates/<kind>.html.j2, templates/<kind>.txt.j2).
KINDS: dict[int, str] = {
    1: "low_balance",
    2: "zero_balance",
    3: "usage_summary",
    4: "balance_summary",
    5: "cdr_delivery",
    6: "trunk_pending",
    7: "trunk_suspended",
    8: "usage_limit",
    9: "fraud_detection",
    10: "low_balance_disable",
    11: "quality_rule",
    12: "period_compare",
    13: "traffic_alert",
    14: "watch_list",
    # decided by the low/zero-balance sweeps when an episode closes on a payment (no sweep
    # or harness key of its own: keys 1 and 2 show it; `preview 15` or `balance_restored`)
    15: "balance_restored",
}


@dataclass(frozen=True)
class Notice:
    """One mail to be sent, as data.

    kind        one of KINDS' values
    dedupe_key  unique forever in the outbox, e.g. "usage_summary:42:2026-11-21"
    template    mail_tmplate column prefix: lowbalance, zerobalance, auto_summary,
                auto_balance, auto_cdr, download_rate_notice, pending_trunk,
                hour_48/hour_24/hour_3/hour_1, no_download_rate
    client_id   provider client (email_log.client_id)
    recipients  billing_email text as stored ('a@x.com; b@y.com'); mail.message splits and
                validates it
    context     tag name -> value (Decimal for money, aware datetime, str, int)
    decided_at  the sweep's `now` (aware UTC): the message Date, created_at
    """

    kind: str
    dedupe_key: str
    template: str
    client_id: int | None
    recipients: str | None
    context: Mapping[str, Any]
    decided_at: dt.datetime
    alert_rule: str = ""
    extra_recipients: tuple[str, ...] = ()
    resource_id: int | None = None
    attachments_note: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
