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
        "client_id", "name", "company", "status", "mode", "currency_id", "allowed_credit",
        "unlimited_credit", "payment_term_id", "billing_email", "email",
        "is_daily_balance_notification", "notify_client_balance", "zero_balance_notice",
        "zero_balance_notice_time", "zero_balance_notice_last_sent", "last_lowbalance_time",
        "is_auto_summary", "auto_summary_hour", "auto_send_zone", "auto_summary_period",
        "auto_summary_group_by", "auto_summary_include_cdr", "auto_summary_not_zero",
        "auto_daily_balance_recipient", "is_auto_balance", "numer_of_days_balance",
        "daily_balance_send_time", "daily_balance_send_time_zone", "daily_cdr_generation",
        "daily_cdr_generation_zone", "daily_cdr_generation_type", "last_autoreport_time",
        "last_autobalance_time", "last_cdrdown_time", "daily_limit", "hourly_limit",
        "login",
    ),
    "currency": ("currency_id", "code"),
    "client_low_balance_config": (
        "client_id", "is_notify", "value_type", "actual_notify_balance",
        "percentage_notify_balance", "send_time_type", "daily_send_time", "duplicate_days",
        "send_to", "duplicate_send_days", "last_alert_time",
    ),
    "c4_client_balance": ("client_id", "balance"),
    "payment_term": ("payment_term_id", "name"),
    "balance_history_actual": ("client_id", "date", "actual_balance"),
    "cdr_report_detail": (
        "report_time", "ingress_client_id", "ingress_id", "egress_client_id", "egress_id",
        "ingress_total_calls", "ingress_success_calls", "egress_total_calls",
        "egress_success_calls", "not_zero_calls", "duration", "ingress_bill_time",
        "egress_bill_time", "ingress_call_cost", "egress_call_cost", "ingress_country",
        "ingress_code_name", "ingress_code", "egress_country", "egress_code_name",
        "egress_code",
    ),
    "resource": (
        "resource_id", "client_id", "alias", "active", "ingress", "egress", "disable_by_alert",
        "update_at", "update_by",
    ),
    "rate_send_log": (
        "id", "status", "file", "effective_date", "download_deadline", "download_method",
        "is_email_alert", "is_disable", "create_time",
    ),
    "rate_send_log_detail": ("id", "log_id", "resource_id", "status", "download_date", "error"),
    "rate_download_log": ("id", "resource_id", "log_detail_id", "download_time"),
    "mail_tmplate": tuple(
        [f"{kind}_{part}"
         for kind in ("lowbalance", "zerobalance", "auto_summary", "auto_balance", "auto_cdr",
                      "pending_trunk", "no_download_rate")
         for part in ("from", "subject", "content")]
        + [f"{kind}_cc" for kind in ("lowbalance", "zerobalance", "auto_summary",
                                     "auto_balance", "auto_cdr", "pending_trunk")]
    ),
    "mail_sender": ("id", "email"),
    "daily_cdr_fields": ("id", "type", "label"),
    "system_parameter": (
        "sys_id", "sys_timezone", "fromemail", "smtphost", "smtpport", "emailusername",
        "emailpassword", "smtp_secure", "finance_email",
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
    # limits, fraud rules and blocks (PROVIDER_DB.md section 6)
    "resource_block": (
        "res_block_id", "ingress_res_id", "ingress_client_id", "action_type", "create_by",
        "update_by", "create_time", "unblock_at", "block_at",
    ),
    "admin_alert": ("id", "type", "subject", "content", "is_view", "create_time"),
    "qos_route_report": ("report_time", "resource_id", "direction", "bill_time", "cost"),
    "fraud_detection": (
        "id", "rule_name", "active", "hourly_minute", "hourly_revenue", "daily_minute",
        "daily_revenue", "is_block", "is_send_mail", "email_to", "ingress_ids",
    ),
    "fraud_detection_log": (
        "id", "fraud_detection_id", "create_on", "create_by", "status", "finish_time", "time",
    ),
    "fraud_detection_log_detail": (
        "id", "fraud_detection_log_id", "ingress_id", "block_type", "limit_value",
        "actual_value", "partner_email", "system_email", "is_block", "is_send_email",
    ),
}

# table -> optional columns: used when present, read as empty (their tags render empty)
# when absent. Columns v5 never had (no_download_rate_cc, download_rate_notice_cc) are
# not listed: a template part whose column is missing is read as empty, never an error.
OPTIONAL: Mapping[str, tuple[str, ...]] = {
    "mail_tmplate": tuple(
        f"hour_{p}_{h}" for h in (48, 24, 3, 1) for p in ("from", "subject", "content", "cc")
    ),
    "mail_sender": ("smtp_host", "smtp_port", "username", "password", "secure", "name",
                    "loginemail"),
    "system_parameter": ("emailname", "loginemail", "noc_email", "system_admin_email",
                         "switch_alias", "switch_ip"),
    "client": ("noc_email",),
    "resource_ip": ("resource_id", "ip"),
    "resource_prefix": ("resource_id", "tech_prefix"),
    # quality rules (alert 11): a switch without them has no rules to evaluate
    "alert_rules": (
        "id", "rule_name", "active", "trunk_type", "all_trunk", "res_id", "monitor_by",
        "acd", "acd_value", "asr", "asr_value", "abr", "abr_value", "pdd", "pdd_value",
        "profitability", "profitability_value", "revenue", "revenue_value",
        "min_call_attempt", "sample_size", "execution_schedule", "specific_minutes",
        "daily_time", "weekly_time", "weekly_value", "last_run_time", "next_run_time",
        "is_block", "is_email", "unblock_after_min", "trouble_ticket_sent_to",
        "trouble_ticket_sent_from", "trouble_ticket_subject", "trouble_ticket_content"),
    "alert_rules_log": (
        "id", "alert_rules_id", "create_on", "status", "finish_time", "limit_acd_value",
        "limit_asr_value", "limit_abr_value", "limit_pdd_value", "limit_profitability_value",
        "limit_revenue_value", "limit_asr", "limit_abr", "limit_acd", "limit_pdd",
        "limit_profitability", "limit_revenue", "time", "call_attempt"),
    "alert_rules_log_detail": (
        "id", "update_at", "alert_rules_log_id", "resource_id", "code", "asr", "abr", "acd",
        "pdd", "profitability", "revenue", "system_email_address", "partner_email_address",
        "is_email", "is_block", "resource_block_id", "email_type", "valid_to", "trunk_type",
        "monitor_by", "time", "country", "code_name"),
    "resource_block": (
        "res_block_id", "ingress_res_id", "engress_res_id", "ingress_client_id",
        "egress_client_id", "digit", "action_type", "code_name", "country", "create_by",
        "update_by", "create_time", "unblock_at", "block_at", "unblock_after"),
    "traffic_alert": ("id", "less_hour", "greater_hour", "email", "carriers", "code_name",
                      "mail_from", "mail_subject", "mail_content", "active"),
    "qos_route_report": ("report_time", "resource_id", "code", "total_calls",
                         "not_zero_calls", "call_duration", "pdd"),
}

# email_log.type codes the v5 UI names (PROVIDER_DB.md, email_log).
EMAIL_TYPE = {
    "low_balance": 1,
    "zero_balance": 4,
    "usage_summary": 2,
    "balance_summary": 8,
    "cdr_delivery": 5,
    "trunk_pending": 36,
    "trunk_suspended": 36,
    # not in the UI's list: the UI shows daily/hourly limits in its "Fraud Detection" box,
    # so their mails are listed there; the trunks disabled for a low balance under it
    "usage_limit": 33,
    "fraud_detection": 33,
    "low_balance_disable": 1,
    "quality_rule": 22,        # rule alert
    "period_compare": 22,
    "traffic_alert": 22,
    "watch_list": 33,          # fraud detection
    # "balance restored" (dnl_ad.alerts.balance_restored): the UI's "Payment Received"
    "balance_restored": 21,
    # the operator mail (dnl_ad.operator_alerts; client_id NULL): the UI's "Rule Alert"
    "admin_alert": 22,
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
