"""The ten alerts. Each module exposes

    sweep(database: db.Database, now: datetime, settings: Settings) -> SweepResult

which finds every due client or trunk with one set-based query, and queues each notice
through pipeline.Pipeline in the same transaction as its provider state writes
(db.unit_of_work: rolled back in dry run). `now` is aware UTC and is the only clock an
alert reads. Adding an alert means one module and one line in ALERTS.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt

    from ..config import Settings
    from ..db import Database
    from ..mail.message import Mail


@dataclass
class SweepResult:
    """What one sweep did: for logs, the harness and the demo summary."""

    kind: str
    queued: int = 0          # notices newly queued (dry run: rendered and written)
    duplicates: int = 0      # notices whose dedupe key was already queued
    skipped: int = 0         # due rows skipped for bad data (logged with the reason)
    state_changes: int = 0   # provider rows written (episode resets, trunk blocks)
    mails: list[Mail] = field(default_factory=list)  # dry run: what would be sent
    # items whose writes failed and were rolled back (retried next sweep), and why:
    # the trunk suspension reports them to the operator (dnl_ad.operator_alerts)
    failed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AlertSpec:
    number: int          # harness key
    kind: str
    title: str
    module: str
    cadence_setting: str  # Settings field holding its period in seconds
    stoppable: bool = False  # its sweep takes `stop=` (a Wakeup) and ends early on a stop request

    def sweep_function(self) -> Callable[[Database, dt.datetime, Settings], SweepResult]:
        return importlib.import_module(self.module).sweep


ALERTS: dict[int, AlertSpec] = {
    1: AlertSpec(1, "low_balance", "Low balance", "dnl_ad.alerts.low_balance",
                 "balance_check_seconds"),
    2: AlertSpec(2, "zero_balance", "Zero balance", "dnl_ad.alerts.zero_balance",
                 "balance_check_seconds"),
    3: AlertSpec(3, "usage_summary", "Daily usage summary", "dnl_ad.alerts.usage_summary",
                 "daily_check_seconds"),
    4: AlertSpec(4, "balance_summary", "Daily balance summary", "dnl_ad.alerts.balance_summary",
                 "daily_check_seconds"),
    5: AlertSpec(5, "cdr_delivery", "Daily CDR delivery", "dnl_ad.alerts.cdr_delivery",
                 "daily_check_seconds", stoppable=True),
    6: AlertSpec(6, "trunk_pending", "Trunk pending suspension", "dnl_ad.alerts.trunk_pending",
                 "trunk_check_seconds"),
    7: AlertSpec(7, "trunk_suspended", "Trunk suspended", "dnl_ad.alerts.trunk_suspended",
                 "trunk_check_seconds"),
    8: AlertSpec(8, "usage_limit", "Usage limit", "dnl_ad.alerts.usage_limit",
                 "usage_limit_check_seconds"),
    9: AlertSpec(9, "fraud_detection", "Fraud rules", "dnl_ad.alerts.fraud_detection",
                 "fraud_check_seconds"),
    10: AlertSpec(10, "low_balance_disable", "Trunks disabled for low balance",
                  "dnl_ad.alerts.low_balance_disable", "balance_check_seconds"),
    11: AlertSpec(11, "quality_rule", "Quality rules (alert_rules)", "dnl_ad.alerts.quality_rule",
                  "quality_check_seconds"),
    12: AlertSpec(12, "period_compare", "Period-over-period rules",
                  "dnl_ad.alerts.period_compare", "period_check_seconds"),
    13: AlertSpec(13, "traffic_alert", "Traffic alerts (traffic_alert)",
                  "dnl_ad.alerts.traffic_alert", "traffic_check_seconds"),
    14: AlertSpec(14, "watch_list", "Destination watch lists", "dnl_ad.alerts.watch_list",
                  "watch_check_seconds"),
}
