"""What the quality alarms share: the metric definitions (PROVIDER_DB.md section 7, as
DNL's own daemon computes them) and the comparison operators.

ASR = ABR = not_zero_calls / total_calls x 100 (%)    ACD = duration / not_zero_calls (s)
PDD = pdd / total_calls (ms)    revenue = ingress cost - egress cost
profitability = revenue / ingress cost x 100 (%)

A metric whose denominator is zero is 0 (a trunk with no answered call has ASR 0 and ACD
0), so every comparison has a value to compare; the minimum-sample rule, not a NULL, is
what keeps thin groups from being judged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

# v5 condition codes of alert_rules (acd, asr, ...): '1' ignore, '>', '<', '='.
IGNORE = "1"
OPERATORS = (">", "<", "=")
METRICS = ("asr", "abr", "acd", "pdd", "profitability", "revenue")
UNITS = {"asr": "%", "abr": "%", "acd": "s", "pdd": "ms", "profitability": "%",
         "revenue": ""}


def op_code(value: Any) -> str:
    """A v5 condition column as one of IGNORE or OPERATORS (blank/NULL/unknown: IGNORE)."""
    text = str(value or "").strip()
    return text if text in OPERATORS else IGNORE


def holds(op: str, value: float, limit: float) -> bool:
    """value OP limit, '=' meaning equal to two decimals (the UI shows two)."""
    if op == "<":
        return value < limit
    if op == ">":
        return value > limit
    if op == "=":
        return round(value, 2) == round(limit, 2)
    return True


def metrics(total: int, not_zero: int, duration: int, pdd: int, in_cost: float,
            out_cost: float) -> dict[str, float]:
    """The six values of one group, from its sums (the Python twin of the SQL in
    quality_rule, used for the mail's context and by tests)."""
    asr = not_zero / total * 100 if total else 0.0
    revenue = float(in_cost) - float(out_cost)
    return {
        "asr": asr, "abr": asr,
        "acd": duration / not_zero if not_zero else 0.0,
        "pdd": pdd / total if total else 0.0,
        "revenue": revenue,
        "profitability": revenue / float(in_cost) * 100 if in_cost else 0.0,
    }


OP_WORDS = {"<": "below", ">": "above", "=": "equal to"}


def describe_conditions(rule: Mapping[str, Any]) -> str:
    """'ASR below 30% and ACD below 60s': the rule's set conditions in words (a mail's
    text part carries no '<')."""
    parts = []
    for metric in METRICS:
        op = op_code(rule.get(metric))
        if op != IGNORE:
            value = rule.get(f"{metric}_value")
            parts.append(f"{metric.upper()} {OP_WORDS[op]} {_number(value)}{UNITS[metric]}")
    return " and ".join(parts)


def _number(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "?"
    return f"{number:g}"


def epoch(instant: dt.datetime) -> int:
    """Epoch seconds, as resource_block.unblock_at and the log tables keep time."""
    return int(instant.timestamp())


def floor_hour(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
