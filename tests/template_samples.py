"""Realistic contexts for every alert kind, typed as the alert modules pass them (money as
Decimal, counts as int, times as text): what a customer's mail is made of."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from markupsafe import Markup

from dnl_ad.notice import Notice
from tests.mail_helpers import NOW

TEMPLATE_FOR_KIND = {"low_balance": "lowbalance", "zero_balance": "zerobalance",
                     "usage_summary": "auto_summary", "balance_summary": "auto_balance",
                     "cdr_delivery": "auto_cdr", "trunk_pending": "pending_trunk",
                     "trunk_suspended": "no_download_rate", "quality_rule": "alert_rules",
                     "period_compare": "period_compare", "traffic_alert": "traffic_alert",
                     "watch_list": "watch_list", "usage_limit": "usage_limit",
                     "fraud_detection": "fraud_detection",
                     "low_balance_disable": "low_balance_disable",
                     "balance_restored": "balance_restored"}

# What the lead's alert layer adds to every context (may be empty strings).
OPERATOR = {"currency": "USD", "switch_alias": "CarrierX", "switch_ip": "203.0.113.10",
            "noc_email": "noc@carrier.example"}

_BALANCE = {
    "company_name": "Acme Telecom Ltd", "client_name": "acme",
    "current_date": "2026-03-02", "date": "2026-03-02", "time": "16:00:00",
    "now": "2026-03-02 16:00:00",
    "balance": Decimal("-5.5"), "notify_balance": Decimal("100"),
    "credit_limit": Decimal("1000"), "allow_credit": Decimal("1000"),
    "remaining_credit": Decimal("994.5"), "payment_terms": "Net 15", "payment_term": "Net 15",
}

_DAILY = {
    "company_name": "Acme Telecom Ltd", "client_name": "acme",
    "begin_time": "2026-03-01 00:00:00", "end_time": "2026-03-01 23:59:59",
    "customer_gmt": "GMT+08:00", "credit_limit": Decimal("1000"),
    "allowed_credit": Decimal("1000"), "balance": Decimal("2345.678"),
    "remaining_credit": Decimal("3345.68"), "current_day": "2026-03-01",
}

_TRUNK = {
    "company_name": "Acme Telecom Ltd", "client_name": "acme", "trunk_name": "acme-in",
    "rate_update_file_name": "acme_rates_20260301.csv",
    "rate_download_deadline": "2026-03-04 07:59:59 GMT+08:00",
    "download_deadline": "2026-03-04 07:59:59 GMT+08:00",
    "effective_date": "2026-03-04 07:59:59 GMT+08:00",
    "rate_download_link": "https://portal.carrier.example/rates/acme_rates_20260301.csv",
    "download_url": "https://portal.carrier.example/rates/acme_rates_20260301.csv",
    "allowed_ip": "198.51.100.7", "prefix": "0044",
}

SAMPLES: dict[str, dict[str, Any]] = {
    "low_balance": {**_BALANCE, "balance": Decimal("55.25"),
                    "remaining_credit": Decimal("1055.25")},
    "zero_balance": {**_BALANCE, "notify_balance": Decimal("0")},
    "usage_summary": {
        **_DAILY,
        "total_call_buy": 1200, "total_not_zero_calls_buy": 800,
        "total_success_call_buy": 790, "total_billed_min_buy": "2400.50",
        "total_billed_amount_buy": Decimal("120.0123"), "buy_total_duration": "2390.25",
        "total_call_sell": 30, "total_not_zero_calls_sell": 12, "total_success_call_sell": 12,
        "total_billed_min_sell": "40.00", "total_billed_amount_sell": Decimal("2.4"),
        "sell_total_duration": "39.10",
    },
    "balance_summary": {
        **_DAILY, "start_time": "2026-03-01 00:00:00",
        "beginning_balance": Decimal("2468.08"), "beginning_of_day_balance": Decimal("2468.08"),
        "begining_of_day": "2026-03-01 00:00:00", "beginning_of_day": "2026-03-01 00:00:00",
        "buy_amount": Decimal("120.0123"), "sell_amount": Decimal("2.4"),
        "ending_balance": Decimal("2345.678"), "current_balance": Decimal("2345.678"),
        "current_time": "2026-03-02 08:00:00",
    },
    "cdr_delivery": {
        "company_name": "Acme Telecom Ltd", "client_name": "acme",
        "begin_time": "2026-03-01 00:00:00", "end_time": "2026-03-01 23:59:59",
        "customer_gmt": "GMT+08:00", "cdr_count": 1234,
        "download_link": Markup('<ul><li><a href="https://cdr.carrier.example/d/1">acme-in</a>'
                                '</li><li><a href="https://cdr.carrier.example/d/2">acme-out'
                                '</a></li></ul>'),
        "file_name": "acme-in_20260301.csv, acme-out_20260301.csv",
        "share_link": "https://cdr.carrier.example/d/1", "trunk_name": "acme-in,acme-out",
        "current_day": "2026-03-01",
    },
    "trunk_pending": dict(_TRUNK),
    "trunk_suspended": {k: v for k, v in _TRUNK.items()
                        if k not in ("download_deadline", "rate_download_link", "download_url",
                                     "allowed_ip", "prefix")},
    "quality_rule": {
        "rule_name": "Low ASR", "trunk_name": "acme-in", "trunk_id": 12,
        "trunk_type": "ingress", "client_name": "acme", "company_name": "Acme Telecom Ltd",
        "monitor_by": "trunk + country", "group": "Nigeria", "code": "",
        "code_name": "", "country": "Nigeria", "conditions": "ASR below 30% and ACD below 60s",
        "calls": 150, "not_zero_calls": 38, "min_call_attempt": 100, "asr": "25.33",
        "abr": "25.33", "acd": "50.00", "pdd": "2000.00", "revenue": "2.00",
        "profitability": "20.00", "start_time": "2026-03-01 09:00:00 GMT",
        "end_time": "2026-03-01 10:00:00 GMT", "sample_size": 60, "blocked": "yes",
        "unblock_at": "2026-03-01 10:35:00 GMT",
    },
    "period_compare": {
        "rule_name": "Daily ASR drop", "metric": "ASR", "unit": "%",
        "scope": "ingress traffic of country Nigeria", "period": "day",
        "condition": "ASR falls by more than 20% against the previous day",
        "current_period": "2026-03-01", "previous_period": "2026-02-28",
        "current_value": "30.00", "previous_value": "50.00", "change": "-20.00",
        "change_pct": "-40.00", "current_calls": 200, "previous_calls": 180,
        "client_name": "", "company_name": "",
    },
    "traffic_alert": {
        "carrier": "acme", "client_name": "acme", "company_name": "Acme Telecom Ltd",
        "code_name": "Cuba Mobile", "previous_hour": "2026-03-01 08:00 GMT",
        "current_hour": "2026-03-01 09:00 GMT", "previous_hour_calls": 5,
        "current_hour_calls": 500, "less_hour": 10, "greater_hour": 400,
    },
    "watch_list": {
        "client_name": "acme", "company_name": "Acme Telecom Ltd",
        "destination": "prefix 53", "reason": "blacklisted", "day": "2026-03-01",
        "calls": 42, "minutes": "61.50", "cost": Decimal("12.3456"),
    },
    "usage_limit": {
        "company_name": "Acme Telecom Ltd", "client_name": "acme", "event": "blocked",
        "period": "daily", "step": "100 %", "percent": "104 %",
        "usage": Decimal("156.25"), "limit": Decimal("150"), "base_limit": Decimal("100"),
        "carried": Decimal("50"), "unit": "amount in USD",
        "period_start": "2026-03-02 00:00:00 GMT+08:00",
        "period_end": "2026-03-03 00:00:00 GMT+08:00", "trunks": "acme-in, acme-in2",
        "reopen_at": "2026-03-03 00:00:00 GMT+08:00",
    },
    "fraud_detection": {
        "rule_name": "Night revenue", "client_name": "acme", "company_name": "Acme Telecom Ltd",
        "company": "Acme Telecom Ltd", "username": "acme_portal", "ingress_name": "acme-in",
        "trunk_name": "acme-in", "type": "1h revenue", "limit_value": "10.00 USD",
        "actual_value": "12.34 USD", "window": "last 60 minutes", "blocked": "yes",
        "current_time": "2026-03-02 03:00:00 GMT",
    },
    "low_balance_disable": {
        "company_name": "Acme Telecom Ltd", "client_name": "acme", "event": "disabled",
        "balance": Decimal("12.5"), "notify_balance": Decimal("100"), "days": 5,
        "since": "2026-02-25 16:00:00 GMT+08:00", "trunks": "acme-in, acme-in2",
        "now": "2026-03-02 16:00:00 GMT+08:00",
    },
    "balance_restored": {**_BALANCE, "balance": Decimal("250"),
                         "remaining_credit": Decimal("1250"),
                         "payment_amount": Decimal("300"),
                         "payment_time": "2026-03-02 15:40:00"},
}


def sample(kind: str, *, client_id: int = 7, **changes: Any) -> Notice:
    """A notice of `kind` with the realistic context, the operator's keys, and `changes`."""
    context = {**SAMPLES[kind], **OPERATOR, **changes}
    return Notice(kind=kind, dedupe_key=f"{kind}:{client_id}:sample",
                  template=TEMPLATE_FOR_KIND[kind], client_id=client_id,
                  recipients=f"billing@client{client_id}.example", context=context,
                  decided_at=NOW, alert_rule=f"{kind} sample")
