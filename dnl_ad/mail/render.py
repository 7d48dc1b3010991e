"""Template rendering: a Notice's context -> subject, HTML and text, exactly once per notice.

Where a template comes from, per part (subject, content):

1. the provider's `mail_tmplate` row (columns chosen by Notice.template), edited in the
   UI: HTML with `{tag}` placeholders, possibly also Jinja syntax;
2. when that column is empty/NULL, or does not compile, or fails for one client, the
   project's defaults: templates/<kind>.subject.j2, <kind>.html.j2, <kind>.txt.j2.

Operator templates run in dnl_ad.mail.sandbox (no escape, bounded work). Known `{tag}`s
become Jinja expressions at compile time; an unknown `{tag}` stays in the text as written
and is reported (logged once per template per sweep, and listed by `unknown_tags` for
`dnl-ad check`). Values are formatted by one contract (see `display_values`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.utils import parseaddr
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import FileSystemLoader, TemplateError, meta, pass_context
from markupsafe import Markup

from ..config import Settings
from ..db import Cursor
from ..notice import Notice
from . import sandbox
from .plaintext import html_to_text

log = logging.getLogger(__name__)

_BALANCE_TAGS = ("company_name", "client_name", "current_date", "date", "time", "now",
                 "balance", "notify_balance", "credit_limit", "allow_credit",
                 "remaining_credit", "payment_terms", "payment_term")

# Tags every alert carries: the client's currency code (money tags print the bare amount,
# so "{balance} {currency}" never shows the code twice).
# The operator's own: switch name (signs the mail) and NOC address (the contact line).
_COMMON_TAGS = ("currency", "switch_alias", "switch_ip", "noc_email")

# Every tag PROVIDER_DB.md lists, per alert kind: what `{tag}` may name in a template.
KNOWN_TAGS: dict[str, tuple[str, ...]] = {
    "low_balance": _BALANCE_TAGS,
    "zero_balance": _BALANCE_TAGS,
    "usage_summary": (
        "client_name", "company_name", "begin_time", "end_time", "customer_gmt",
        "total_call_buy", "total_not_zero_calls_buy", "total_success_call_buy",
        "total_billed_min_buy", "total_billed_amount_buy", "buy_total_duration",
        "total_call_sell", "total_not_zero_calls_sell", "total_success_call_sell",
        "total_billed_min_sell", "total_billed_amount_sell", "sell_total_duration",
        "credit_limit", "remaining_credit", "balance", "switch_alias"),
    "balance_summary": (
        "company_name", "client_name", "start_time", "end_time", "beginning_balance",
        "beginning_of_day_balance", "begining_of_day", "beginning_of_day", "buy_amount",
        "sell_amount", "ending_balance", "current_balance", "balance", "allowed_credit",
        "credit_limit", "remaining_credit", "current_time", "current_day", "customer_gmt",
        "switch_alias"),
    "cdr_delivery": (
        "company_name", "client_name", "begin_time", "end_time", "customer_gmt", "cdr_count",
        "download_link", "file_name", "share_link", "trunk_name", "current_day"),
    "trunk_pending": (
        "company_name", "client_name", "trunk_name", "rate_update_file_name",
        "rate_download_deadline", "download_deadline", "rate_download_link", "download_url",
        "effective_date", "allowed_ip", "prefix", "switch_ip"),
    "trunk_suspended": (
        "company_name", "client_name", "trunk_name", "rate_update_file_name",
        "rate_download_deadline", "effective_date"),
    # dnl_ad's own (v5 has no template for it): `event` is step, blocked or reopened
    "usage_limit": (
        "company_name", "client_name", "event", "period", "step", "percent", "usage",
        "limit", "base_limit", "carried", "unit", "period_start", "period_end", "trunks",
        "reopen_at"),
    # the UI's tags for fraud_detection_* (PROVIDER_DB.md section 6), plus the window
    "fraud_detection": (
        "rule_name", "client_name", "company_name", "username", "company", "ingress_name",
        "trunk_name", "type", "limit_value", "actual_value", "window", "blocked",
        "current_time"),
    # dnl_ad's own: `event` is disabled or enabled
    "low_balance_disable": (
        "company_name", "client_name", "event", "balance", "notify_balance", "days",
        "since", "trunks", "now"),
    "quality_rule": (
        "rule_name", "trunk_name", "trunk_id", "trunk_type", "client_name", "company_name",
        "monitor_by", "group", "code", "code_name", "country", "conditions", "calls",
        "not_zero_calls", "min_call_attempt", "asr", "abr", "acd", "pdd", "revenue",
        "profitability", "start_time", "end_time", "sample_size", "blocked", "unblock_at"),
    "period_compare": (
        "rule_name", "metric", "unit", "scope", "period", "condition", "current_period",
        "previous_period", "current_value", "previous_value", "change", "change_pct",
        "current_calls", "previous_calls", "client_name", "company_name"),
    "traffic_alert": (
        "carrier", "client_name", "company_name", "code_name", "previous_hour",
        "current_hour", "previous_hour_calls", "current_hour_calls", "less_hour",
        "greater_hour"),
    "watch_list": (
        "client_name", "company_name", "destination", "reason", "day", "calls", "minutes",
        "cost"),
    "balance_restored": (*_BALANCE_TAGS, "payment_amount", "payment_time"),
}
KNOWN_TAGS = {kind: tags + tuple(t for t in _COMMON_TAGS if t not in tags)
              for kind, tags in KNOWN_TAGS.items()}

# mail_tmplate column prefix (Notice.template) -> alert kind (whose tags it may use).
TEMPLATE_KINDS: dict[str, str] = {
    "lowbalance": "low_balance",
    "zerobalance": "zero_balance",
    "auto_summary": "usage_summary",
    "auto_balance": "balance_summary",
    "auto_cdr": "cdr_delivery",
    "download_rate_notice": "trunk_pending",
    "pending_trunk": "trunk_pending",
    "hour_48": "trunk_pending",
    "hour_24": "trunk_pending",
    "hour_3": "trunk_pending",
    "hour_1": "trunk_pending",
    "no_download_rate": "trunk_suspended",
    "usage_limit": "usage_limit",          # no mail_tmplate column: the default template
    "fraud_detection": "fraud_detection",
    "low_balance_disable": "low_balance_disable",  # no mail_tmplate column
    # not mail_tmplate columns: these alerts carry their mail on their own v5 rows
    # (alert_rules.trouble_ticket_*, traffic_alert.mail_*), registered per row as
    # "<prefix>:<id>" (MailConfig.add_template); the bare prefix names the default.
    "alert_rules": "quality_rule",
    "period_compare": "period_compare",   # dnl_ad's own rules: default templates only
    "traffic_alert": "traffic_alert",
    "watch_list": "watch_list",
    # no mail_tmplate column: always the default template
    "balance_restored": "balance_restored",
}

PARTS = ("from", "subject", "content", "cc")

# A UI placeholder: {name}, not part of Jinja's {{ }} / {% %}.
_UI_TAG = re.compile(r"(?<!\{)\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}(?!\})")


def column(template: str, part: str) -> str:
    """mail_tmplate column of one part: lowbalance_subject, but hour_subject_48."""
    m = re.fullmatch(r"hour_(\d+)", template)
    if m:
        return f"hour_{part}_{m.group(1)}"
    return f"{template}_{part}"


# --- value formatting ------------------------------------------------------------

# An amount at or beyond this is bad data (numeric(30,6) allows 1e24; no carrier bills it).
MAX_AMOUNT = Decimal("1e15")


class BadAmount(ValueError):
    """A money value that is no amount (NaN, infinite, or abs >= MAX_AMOUNT): bad data.

    Raised instead of printing an empty or absurd amount; the pipeline records that one
    notice as failed and names the client and the tag (`tag`, set by display_values).
    """

    def __init__(self, value: object, tag: str = "") -> None:
        self.value = value
        self.tag = tag
        where = f"tag {tag} " if tag else ""
        super().__init__(f"{where}is {value!s:.40}, not an amount (finite, below "
                         f"{MAX_AMOUNT:.0e} in absolute value)")


def check_amount(value: object, tag: str = "") -> Decimal:
    """`value` as a Decimal, or BadAmount when it is not a plausible amount."""
    try:
        amount = Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, ValueError, TypeError):
        raise BadAmount(value, tag) from None
    if not amount.is_finite() or abs(amount) >= MAX_AMOUNT:
        raise BadAmount(value, tag)
    return amount


def format_money(value: Decimal) -> str:
    """Two decimals, half up; negatives in parentheses: Decimal('-12.5') -> '(12.50)'.
    BadAmount for NaN, Infinity and abs >= MAX_AMOUNT (never an empty amount)."""
    q = check_amount(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if q < 0:
        return f"({-q:.2f})"
    return f"{abs(q):.2f}"  # abs: no "-0.00"


class Money(Decimal):
    """A Decimal that prints as money; arithmetic in a template gives plain Decimals."""

    def __str__(self) -> str:
        return format_money(self)

    def __html__(self) -> str:
        return format_money(self)


@pass_context
def money_filter(context: Any, value: Any) -> Any:
    """`{{ balance|money }}`: an amount with the client's currency code ('12.34 USD',
    '(5.50) USD'); just the amount when the code is empty; a non-amount (e.g. 'unknown')
    as it is. In HTML a no-break space keeps the code on the amount's line."""
    if not isinstance(value, Decimal):
        return value
    code = _currency_code(context.get("currency"))
    amount = format_money(value)  # digits, '.', '(' and ')' only: nothing to escape
    if not code:
        return amount
    if context.eval_ctx.autoescape:  # as Markup("{}&nbsp;{}").format(...), a tenth the cost
        return Markup(f"{amount}&nbsp;{_html_code(code)}")
    return f"{amount} {code}"


@lru_cache(maxsize=64)
def _currency_code(value: object) -> str:
    return " ".join(str(value or "").split())


@lru_cache(maxsize=64)
def _html_code(code: str) -> str:
    return str(Markup.escape(code))


_ABSOLUTE_URL = re.compile(r"(?i)^(https?|ftp)://[^\s/?#]+[^\s]*$")


def is_absolute_url(value: object) -> bool:
    """`{% if link is absolute_url %}`: a link a mail reader can open (http, https or ftp
    with a host). A relative link ('/rates/x.csv') means nothing outside the portal."""
    return isinstance(value, str) and bool(_ABSOLUTE_URL.match(value.strip()))


_Env = TypeVar("_Env", sandbox.BoundedSandbox, sandbox.FileSandbox)


def _add_helpers(env: _Env) -> _Env:
    """The project's filters and tests, for default and operator templates alike (a
    BoundedSandbox charges its budget for each filter call)."""
    bounded = isinstance(env, sandbox.BoundedSandbox)
    env.filters["money"] = sandbox.guarded_filter("money", money_filter) if bounded \
        else money_filter
    env.tests["absolute_url"] = is_absolute_url
    return env


def display_values(context: Mapping[str, Any], *, html: bool) -> dict[str, Any]:
    """The value contract with the alert modules.

    Decimal = money (two decimals, negatives in parentheses); int as is; str already
    formatted (escaped in HTML); Markup = trusted HTML fragment (as is in HTML, converted
    to text in the text part); None = empty; a stray datetime prints without microseconds.
    A Decimal that is no amount (NaN, infinite, too large) raises BadAmount naming the tag.
    """
    out: dict[str, Any] = {}
    for key, value in context.items():
        if value is None:
            value = ""
        elif isinstance(value, Markup):
            value = value if html else html_to_text(value).strip()
        elif isinstance(value, Decimal):
            value = Money(check_amount(value, key))
        elif isinstance(value, dt.datetime):
            value = value.replace(microsecond=0).strftime("%Y-%m-%d %H:%M:%S %z").strip()
        elif isinstance(value, dt.date):
            value = value.isoformat()
        out[key] = value
    return out


def display_pair(context: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """display_values for HTML and for text in one pass: they differ only where a value
    is a Markup fragment (as is in HTML, as text in the text part)."""
    html = display_values(context, html=True)
    text = dict(html)
    for key, value in html.items():
        if isinstance(value, Markup):
            text[key] = html_to_text(value).strip()
    return html, text


# --- environments ----------------------------------------------------------------

@cache
def _operator_env(html: bool) -> sandbox.BoundedSandbox:
    return _add_helpers(sandbox.BoundedSandbox(autoescape=html))


def account_name(client_name: object, company_name: object) -> str:
    """How the default templates name an account: 'acme (Acme Telecom Ltd)', or one of
    the two when the other is empty or the same."""
    client = " ".join(str(client_name or "").split())
    company = " ".join(str(company_name or "").split())
    if client and company and company != client:
        return f"{client} ({company})"
    return client or company


def contact_addresses(text: object) -> tuple[str, ...]:
    """`noc_email|addresses`: the free-text address field ('a@x.com; B <b@y.com>') as bare
    addresses; a piece that is no address is kept as written (it is the operator's text)."""
    return _contact_addresses(str(text or ""))


@lru_cache(maxsize=64)  # one system_parameter value for every notice of a sweep
def _contact_addresses(text: str) -> tuple[str, ...]:
    found = []
    for piece in re.split(r"[;,]", text):
        piece = " ".join(piece.split())
        if not piece:
            continue
        _, addr = parseaddr(piece)
        found.append(addr if addr and "@" in addr else piece)
    return tuple(dict.fromkeys(found))


class _FileLoader(FileSystemLoader):
    """A FileSystemLoader that checks whether a file changed once per MailConfig (i.e.
    once per sweep), not at every render: each `{% extends %}` of a default template
    would otherwise read the layout file's date for every notice."""

    generation = 0  # bumped by every new MailConfig

    def get_source(self, environment: Any, template: str) -> tuple[str, str | None,
                                                                    Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        checked = {_FileLoader.generation: True}  # just read: current in this sweep

        def once_per_sweep() -> bool:
            generation = _FileLoader.generation
            if generation not in checked:
                checked.clear()
                checked[generation] = bool(uptodate()) if uptodate else False
            return checked[generation]

        return source, filename, once_per_sweep


@lru_cache(maxsize=8)
def _default_env(template_dir: str) -> sandbox.FileSandbox:
    """The TEMPLATE_DIR files' environment (see sandbox.FileSandbox for why it is not the
    bounded one)."""
    env = _add_helpers(sandbox.FileSandbox(
        loader=_FileLoader(template_dir),
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        keep_trailing_newline=True,
    ))
    env.globals["account"] = account_name
    env.filters["addresses"] = contact_addresses
    return env


def to_jinja(source: str, kind: str) -> tuple[str, list[str]]:
    """UI `{tag}` syntax -> Jinja for the tags `kind` knows; unknown tags are left as
    written (visible in the mail) and returned."""
    known = set(KNOWN_TAGS.get(kind, ()))
    unknown: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in known:
            return "{{ " + name + " }}"
        if name not in unknown:
            unknown.append(name)
        return m.group(0)

    return _UI_TAG.sub(sub, source), unknown


def unknown_tags(template_text: str | None, kind: str) -> list[str]:
    """Tags a template uses that `kind` does not provide: `{tag}`s and Jinja names.

    For `dnl-ad check`. A template that does not compile reports its `{tag}`s only.
    """
    if not template_text:
        return []
    source, unknown = to_jinja(template_text, kind)
    try:
        names = meta.find_undeclared_variables(_operator_env(True).parse(source))
    except TemplateError:
        return sorted(unknown)
    allowed = set(KNOWN_TAGS.get(kind, ())) | set(_operator_env(True).globals)
    return sorted(set(unknown) | {n for n in names if n not in allowed})


@dataclass(frozen=True)
class TemplateProblem:
    """What `dnl-ad check` lists for one mail_tmplate template."""

    template: str
    column: str
    error: str | None            # compile error; the default template is used instead
    unknown_tags: tuple[str, ...]


@dataclass(frozen=True)
class _Compiled:
    subject: Any | None      # jinja Template or None (use the default)
    content: Any | None
    unknown: tuple[str, ...]
    errors: tuple[str, ...]


def _compile_part(source: str | None, kind: str, *, html: bool
                  ) -> tuple[Any | None, list[str], str | None]:
    if not source or not str(source).strip():
        return None, [], None
    text, unknown = to_jinja(str(source), kind)
    try:
        return _operator_env(html).from_string(text), unknown, None
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        return None, unknown, f"{type(exc).__name__}{where}: {exc}"


# --- the provider's mail settings -------------------------------------------------

@dataclass
class MailConfig:
    """mail_tmplate, mail_sender and system_parameter, read once per sweep.

    Operator templates are compiled lazily, once per MailConfig (so a broken template is
    logged once per sweep, not once per client).
    """

    templates: Mapping[str, Any]
    senders: Mapping[str, str]
    system: Mapping[str, Any]
    template_dir: Path
    default_from: str = ""
    # delivery settings the message needs (MAX_RECIPIENTS, REPLY_TO) and the full
    # mail_sender rows (display name, own SMTP server) by id as text
    max_recipients: int = 50
    reply_to: str = ""
    sender_rows: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    _compiled: dict[tuple[str, str], _Compiled] = field(default_factory=dict, repr=False)
    _defaults: dict[str, Any] = field(default_factory=dict, repr=False)
    _file_globals: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, cur: Cursor, settings: Settings) -> MailConfig:
        cur.execute("SELECT * FROM mail_tmplate ORDER BY id LIMIT 1")
        templates = dict(cur.fetchone() or {})
        cur.execute("SELECT * FROM mail_sender")
        sender_rows = {str(r["id"]): dict(r) for r in cur.fetchall()}
        senders = {k: r["email"] for k, r in sender_rows.items()}
        cur.execute("SELECT * FROM system_parameter ORDER BY sys_id LIMIT 1")
        system = dict(cur.fetchone() or {})
        return cls(templates, senders, system, Path(settings.template_dir),
                   default_from=settings.smtp_from, max_recipients=settings.max_recipients,
                   reply_to=settings.reply_to, sender_rows=sender_rows)

    def __post_init__(self) -> None:
        _FileLoader.generation += 1  # a new sweep: template files are checked again

    def part(self, template: str, part: str) -> Any:
        return self.templates.get(column(template, part))

    def default_template(self, name: str) -> Any:
        """A TEMPLATE_DIR template, loaded (and its file's date checked) once per
        MailConfig, i.e. once per sweep; None when missing or broken (logged once)."""
        if name not in self._defaults:
            try:
                self._defaults[name] = _default_env(str(self.template_dir)).get_template(name)
            except TemplateError as exc:
                log.error("default template %s missing or broken in %s: %s", name,
                          self.template_dir, exc)
                self._defaults[name] = None
        return self._defaults[name]

    def file_globals(self) -> dict[str, Any]:
        """The TEMPLATE_DIR environment's globals (range, account, ...), which every
        render's values carry (sandbox.render_capped)."""
        if not self._file_globals:
            self._file_globals.update(_default_env(str(self.template_dir)).globals)
        return self._file_globals

    def add_template(self, template: str, *, subject: Any = None, content: Any = None,
                     sender: Any = None, cc: Any = None) -> None:
        """A template that lives outside mail_tmplate, under its own name: the v5 tables
        that carry their mail with the rule (alert_rules.trouble_ticket_*,
        traffic_alert.mail_*). Compiled and cached like a mail_tmplate one."""
        if not isinstance(self.templates, dict):
            self.templates = dict(self.templates)
        for part, value in (("subject", subject), ("content", content), ("from", sender),
                            ("cc", cc)):
            self.templates[column(template, part)] = value
        for key in [k for k in self._compiled if k[0] == template]:
            del self._compiled[key]

    def compiled(self, template: str, kind: str) -> _Compiled:
        key = (template, kind)
        if key not in self._compiled:
            subject, unk_s, err_s = _compile_part(self.part(template, "subject"), kind,
                                                  html=False)
            content, unk_c, err_c = _compile_part(self.part(template, "content"), kind,
                                                  html=True)
            errors = tuple(f"{column(template, p)}: {e}"
                           for p, e in (("subject", err_s), ("content", err_c)) if e)
            unknown = tuple(dict.fromkeys(unk_s + unk_c))
            for error in errors:
                log.error("mail template %s does not compile, the default %s template is "
                          "used instead: %s", template, kind, error)
            if unknown:
                log.warning("mail template %s uses unknown tags %s; they stay in the mail as "
                            "written", template, ", ".join("{" + t + "}" for t in unknown))
            self._compiled[key] = _Compiled(subject, content, unknown, errors)
        return self._compiled[key]

    def problems(self) -> list[TemplateProblem]:
        """Every configured template's compile errors and unknown tags (for check)."""
        found = []
        for template, kind in TEMPLATE_KINDS.items():
            for part in ("subject", "content"):
                source = self.part(template, part)
                if not source:
                    continue
                _, _, error = _compile_part(source, kind, html=part == "content")
                unknown = tuple(unknown_tags(source, kind))
                if error or unknown:
                    found.append(TemplateProblem(template, column(template, part), error,
                                                 unknown))
        return found


# --- rendering ----------------------------------------------------------------------

@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str
    cc: str
    from_id: str | None
    unknown_tags: tuple[str, ...] = ()
    source: str = "default"  # "operator", "default" or "operator+default" (per part)


def unrendered(notice: Notice, config: MailConfig) -> Rendered:
    """What is recorded for a notice that cannot be rendered (bad data): a plain subject
    naming the alert and the client, no body."""
    name = clean_name(notice.context.get("company_name") or notice.context.get("client_name"))
    return Rendered(subject=_default_subject(notice.kind, {"company_name": name}), html="",
                    text="", cc=str(config.part(notice.template, "cc") or ""),
                    from_id=(str(config.part(notice.template, "from")).strip()
                             if config.part(notice.template, "from") is not None else None),
                    source="none")


def clean_name(value: object) -> str:
    return " ".join(str(value or "").split())


def _default_subject(kind: str, values: Mapping[str, Any]) -> str:
    name = values.get("company_name") or values.get("client_name") or ""
    return f"{kind.replace('_', ' ').capitalize()}: {name}".strip(": ")


def _render_default(config: MailConfig, kind: str, name: str, values: dict[str, Any],
                    notice: Notice) -> str | None:
    template = config.default_template(name)
    if template is None:
        return None
    try:
        return sandbox.render_capped(template, values)
    except Exception as exc:  # a data problem must not stop other clients
        log.error("%s client %s: default template %s failed: %s", notice.kind,
                  notice.client_id, name, exc)
        return None


def _render_operator(template: Any, values: Mapping[str, Any], notice: Notice,
                     what: str) -> str | None:
    try:
        return sandbox.render_bounded(template, values)
    except Exception as exc:  # hostile or careless template: this notice uses the default
        log.warning("%s client %s: mail template %s %s failed (%s: %s); the default template "
                    "is used", notice.kind, notice.client_id, notice.template, what,
                    type(exc).__name__, exc)
        return None


def render_notice(notice: Notice, config: MailConfig) -> Rendered:
    """Subject, HTML and text for one notice. Never raises for template problems (they
    fall back to the default template); raises BadAmount for bad data, before rendering."""
    kind = notice.kind
    compiled = config.compiled(notice.template, kind)
    html_values, text_values = display_pair(notice.context)
    file_globals = config.file_globals()
    html_file, text_file = {**file_globals, **html_values}, {**file_globals, **text_values}
    sources = []

    subject = None
    if compiled.subject is not None:
        subject = _render_operator(compiled.subject, text_values, notice, "subject")
    if subject is not None:
        sources.append("operator")
    else:
        subject = _render_default(config, kind, f"{kind}.subject.j2", text_file, notice)
        subject = subject if subject and subject.strip() else _default_subject(kind,
                                                                              text_values)
        sources.append("default")

    html = text = None
    if compiled.content is not None:
        html = _render_operator(compiled.content, html_values, notice, "content")
        if html is not None:
            text = html_to_text(html)
    if html is not None:
        sources.append("operator")
    else:
        html = _render_default(config, kind, f"{kind}.html.j2", html_file, notice)
        text = _render_default(config, kind, f"{kind}.txt.j2", text_file, notice)
        if html is None:
            html = "<br>\n".join(f"{Markup.escape(k)}: {Markup.escape(v)}"
                                 for k, v in html_values.items())
        if text is None:
            text = html_to_text(html)
        sources.append("default")

    source = sources[0] if sources[0] == sources[1] else "+".join(dict.fromkeys(sources))
    return Rendered(
        subject=" ".join(subject.split()),
        html=html,
        text=text or "",
        cc=str(config.part(notice.template, "cc") or ""),
        from_id=(str(config.part(notice.template, "from")).strip()
                 if config.part(notice.template, "from") is not None else None),
        unknown_tags=compiled.unknown,
        source=source,
    )
