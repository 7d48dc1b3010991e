"""Who gets a notice, as the v5 UI's recipient codes say (PROVIDER_DB.md).

Two codes, in opposite orders (the UI's, not ours):
- `client_low_balance_config.send_to` (low balance): 0 owner's billing contact,
  1 partner's, 2 both;
- `client.auto_daily_balance_recipient` (usage, balance and CDR reports): 0 partner's
  billing contact, 1 owner's, 2 both.

The partner's billing contact is `client.billing_email`, else `client.email`. The owner's
is the switch operator's own billing address: OWNER_BILLING_EMAIL, else
`system_parameter.finance_email`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import Settings

PARTNER, OWNER, BOTH = "partner", "owner", "both"

_LOW_BALANCE_SEND_TO = {0: OWNER, 1: PARTNER, 2: BOTH}
_DAILY_RECIPIENT = {0: PARTNER, 1: OWNER, 2: BOTH}


def partner(row: Mapping[str, Any]) -> str:
    """client.billing_email, else client.email (both may hold several addresses)."""
    return str(row.get("billing_email") or "").strip() or str(row.get("email") or "").strip()


def owner(system: Mapping[str, Any], settings: Settings) -> str:
    return settings.owner_billing_email or str(system.get("finance_email") or "").strip()


def low_balance_audience(code: Any) -> str:
    """send_to -> audience; missing or unknown (no config row): the partner."""
    return _LOW_BALANCE_SEND_TO.get(_as_int(code), PARTNER)


def daily_audience(code: Any) -> str:
    """auto_daily_balance_recipient -> audience; NULL or unknown: the partner (UI default 0)."""
    return _DAILY_RECIPIENT.get(_as_int(code), PARTNER)


def addresses(audience: str, row: Mapping[str, Any], system: Mapping[str, Any],
              settings: Settings) -> tuple[str, tuple[str, ...]]:
    """(recipients text, extra recipients) for Notice: the partner's text first when it
    is in the audience, the owner's as the extra (or as the recipients when alone)."""
    mine = owner(system, settings) if audience in (OWNER, BOTH) else ""
    theirs = partner(row) if audience in (PARTNER, BOTH) else ""
    if audience == OWNER:
        return mine, ()
    return theirs, ((mine,) if mine else ())


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
