"""The provider database contract (shared/PROVIDER_DB.md) as data: the one place that
lists every table and column dnl_ad reads or writes.

Tests check that the shipped provider-subset SQL creates all of it; `dnl-ad check`
checks a live provider database against it and lists what is missing by table.
"""

from __future__ import annotations

from collections.abc import Mapping

# table -> required columns. A live database missing one of these cannot be served.
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "client": (
        "client_id", "name", "company", "status", "mode", "allowed_credit", "unlimited_credit",
        "payment_term_id", "billing_email", "low_balance_notice", "notify_client_balance",
        "last_lowbalance_time", "zero_balance_notice", "zero_balance_notice_time",
        "zero_balance_notice_last_sent", "is_auto_summary", "auto_summary_not_zero",
        "auto_summary_hour", "auto_send_zone", "daily_balance_send_time_zone",
        "is_daily_balance_notification", "daily_cdr_generation",
    ),
    "client_low_balance_config": (
        "client_id", "value_type", "actual_notify_balance", "percentage_notify_balance",
        "duplicate_days", "last_alert_time",
    ),
    "c4_client_balance": ("client_id", "balance"),
    "payment_term": ("payment_term_id", "name"),
    "balance_history_actual": (
        "client_id", "date", "actual_balance", "unbilled_incoming_traffic",
        "unbilled_outgoing_traffic",
    ),
    "cdr_report_detail": (
        "report_time", "ingress_client_id", "ingress_id", "egress_client_id", "egress_id",
        "ingress_total_calls", "ingress_success_calls", "egress_total_calls",
        "egress_success_calls", "not_zero_calls", "duration", "ingress_bill_time",
        "egress_bill_time", "ingress_call_cost", "egress_call_cost",
    ),
    "resource": (
        "resource_id", "client_id", "alias", "active", "ingress", "egress", "disable_by_alert",
        "update_at", "update_by",
    ),
    "rate_send_log": ("id", "file", "download_deadline", "is_email_alert", "create_time"),
    "rate_send_log_detail": ("id", "log_id", "resource_id", "status", "download_date", "error"),
    "rate_download_log": ("id", "client_id", "log_detail_id", "download_time", "download_ip"),
    "mail_tmplate": tuple(
        f"{kind}_{part}"
        for kind in ("lowbalance", "zerobalance", "auto_summary", "auto_balance", "auto_cdr",
                     "download_rate_notice", "no_download_rate")
        for part in ("from", "subject", "content", "cc")
    ),
    "mail_sender": ("id", "email"),
    "system_parameter": (
        "sys_timezone", "fromemail", "smtphost", "smtpport", "emailusername", "emailpassword",
        "finance_email",
    ),
    "email_log": (
        "id", "send_time", "client_id", "email_addresses", "files", "type", "email_res",
        "status", "error", "subject", "content", "is_view", "alert_rule",
    ),
    "modif_log": (
        "id", "time", "module", "type", "name", "detail", "rollback", "rollback_msg",
        "rollback_flg", "rollback_extra_info",
    ),
    "version_information": (
        "id", "program_name", "major_ver", "minor_ver", "build_date", "start_time",
    ),
}

# table -> optional columns: used when present, their tags render empty when absent.
OPTIONAL: Mapping[str, tuple[str, ...]] = {
    "mail_tmplate": tuple(
        [f"pending_trunk_{p}" for p in ("from", "subject", "content", "cc")]
        + [f"hour_{p}_{h}" for h in (48, 24, 3, 1) for p in ("from", "subject", "content", "cc")]
    ),
    "mail_sender": ("smtp_host", "smtp_port", "username", "password", "secure"),
    "system_parameter": ("smtp_secure",),
    "resource_ip": ("resource_id", "ip"),
    "resource_prefix": ("resource_id", "tech_prefix"),
}

# email_log.type codes the provider UI knows.
EMAIL_TYPE = {
    "low_balance": 1,
    "zero_balance": 1,
    "usage_summary": 2,
    "balance_summary": 8,
    "cdr_delivery": 5,
    "trunk_pending": 35,
    "trunk_suspended": 35,
}


def missing_columns(present: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """Required columns absent from `present` (table -> its columns), listed by table."""
    missing: dict[str, list[str]] = {}
    for table, columns in REQUIRED.items():
        have = present.get(table, set())
        lacking = [c for c in columns if c not in have]
        if lacking:
            missing[table] = lacking
    return missing
