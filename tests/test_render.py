"""Rendering: default templates carry every tag, operator templates are sandboxed and
bounded, unknown tags stay visible and are reported, values follow one format contract."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from markupsafe import Markup

from dnl_ad.mail import render
from dnl_ad.mail.render import KNOWN_TAGS, MailConfig, format_money, render_notice, unknown_tags
from dnl_ad.notice import KINDS
from tests import factories
from tests.mail_helpers import notice
from tests.template_samples import TEMPLATE_FOR_KIND

REPO = Path(__file__).resolve().parent.parent


def config(**columns: str) -> MailConfig:
    return MailConfig(dict(columns), {}, {}, REPO / "templates")


def test_known_tags_cover_every_kind() -> None:
    assert set(KNOWN_TAGS) == set(KINDS.values())
    assert {render.TEMPLATE_KINDS[t] for t in TEMPLATE_FOR_KIND.values()} == set(KINDS.values())


# Tags a default template need not show as such: the currency code stands beside each
# amount (money filter), not on its own; a synonym (the same value under another name) or
# a part of a value shown whole is shown once, under the first name.
NOT_SHOWN_BY_DEFAULT = {"currency"}
ONLY_WHERE_IT_MATTERS = {"switch_ip": {"trunk_pending"}}
SYNONYMS = {
    "low_balance": {"allow_credit", "payment_term", "current_date", "date", "time"},
    "zero_balance": {"allow_credit", "payment_term", "current_date", "date", "time"},
    "usage_summary": set(),
    "balance_summary": {"beginning_of_day_balance", "beginning_of_day", "balance",
                        "allowed_credit"},
    "cdr_delivery": {"file_name", "share_link", "trunk_name"},   # all in download_link
    "trunk_pending": {"download_deadline"},
    "trunk_suspended": set(),
    # abr is asr; code, code name or country is the group; the block line shows one of two
    "quality_rule": {"abr", "code", "code_name", "country", "trunk_id", "blocked"},
    "period_compare": {"metric", "unit", "period", "client_name"},  # in condition, values
    "traffic_alert": {"carrier", "client_name"},   # the account line names the carrier
    "watch_list": set(),
    # shown by event: `event` picks the wording; trunks and reopen_at appear in the
    # blocked and reopened mails only (test_usage_limit shows them)
    "usage_limit": {"event", "trunks", "reopen_at"},
    "fraud_detection": {"company", "ingress_name", "blocked"},  # blocked: a sentence
    "low_balance_disable": {"event", "now"},  # event picks the wording
    "balance_restored": {"allow_credit", "payment_term", "current_date", "date", "time"},
}


@pytest.mark.parametrize("kind", sorted(KINDS.values()))
def test_every_tag_renders_in_an_operator_template(kind: str) -> None:
    tags = KNOWN_TAGS[kind]
    context = {tag: f"VALUE-OF-{tag}" for tag in tags}
    template = TEMPLATE_FOR_KIND[kind]
    cfg = config(**{f"{template}_subject": "S {client_name}",
                    f"{template}_content": "".join(f"<p>{{{t}}}</p>" for t in tags)})
    out = render_notice(notice(f"{kind}:1", kind=kind, template=template, **context), cfg)
    assert out.source == "operator" and out.unknown_tags == ()
    assert [t for t in tags if f"<p>VALUE-OF-{t}</p>" not in out.html] == []


@pytest.mark.parametrize("kind", sorted(KINDS.values()))
def test_every_tag_of_every_default_template_renders(kind: str) -> None:
    tags = [t for t in KNOWN_TAGS[kind] if t not in NOT_SHOWN_BY_DEFAULT | SYNONYMS[kind]
            and kind in ONLY_WHERE_IT_MATTERS.get(t, {kind})]
    context = {tag: f"https://x.example/VALUE-OF-{tag}" if "link" in tag or "url" in tag
               else f"VALUE-OF-{tag}" for tag in tags}
    n = notice(f"{kind}:1", kind=kind, template=TEMPLATE_FOR_KIND[kind], **context)
    out = render_notice(n, config())
    assert out.source == "default"
    missing_html = [t for t in tags if f"VALUE-OF-{t}" not in out.html]
    missing_text = [t for t in tags if f"VALUE-OF-{t}" not in out.text]
    assert missing_html == [] and missing_text == []
    assert out.subject and "{" not in out.subject and "\n" not in out.subject
    assert (REPO / "templates" / f"{kind}.subject.j2").is_file()
    assert out.unknown_tags == ()


@pytest.mark.parametrize(("value", "shown"), [
    (Decimal("12.5"), "12.50"), (Decimal("-12.5"), "(12.50)"), (Decimal("0"), "0.00"),
    (Decimal("-0.001"), "0.00"), (Decimal("1234567.005"), "1234567.01"),
    (Decimal("-300"), "(300.00)"), (Decimal("999999999999999.99"), "999999999999999.99"),
])
def test_format_money(value: Decimal, shown: str) -> None:
    assert format_money(value) == shown


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"),
                                   Decimal("-Infinity"), Decimal("1e15"), Decimal("-1e15"),
                                   Decimal("1e24")])
def test_format_money_refuses_what_is_no_amount(value: Decimal) -> None:
    with pytest.raises(render.BadAmount):
        format_money(value)


def test_a_bad_amount_names_its_tag_and_is_not_rendered_by_any_template() -> None:
    cfg = config(lowbalance_content="<p>{balance}</p>")
    for c in (cfg, config()):
        with pytest.raises(render.BadAmount) as err:
            render_notice(notice(balance=Decimal("NaN")), c)
        assert err.value.tag == "balance" and "tag balance is NaN" in str(err.value)


def test_value_contract_in_html_and_text() -> None:
    links = Markup('<ul><li><a href="https://x.example/a.csv">a.csv</a></li></ul>')
    n = notice("cdr:1", kind="cdr_delivery", template="auto_cdr", company_name="<b>Evil</b> & Co",
               cdr_count=1234, download_link=links, trunk_name=None, client_name="c1")
    out = render_notice(n, config())
    assert "&lt;b&gt;Evil&lt;/b&gt; &amp; Co" in out.html and "<b>Evil</b>" not in out.html
    assert '<a href="https://x.example/a.csv">a.csv</a>' in out.html   # Markup unescaped
    assert "1234 calls" in out.html
    assert "https://x.example/a.csv" in out.text and "<a " not in out.text
    assert "<b>Evil</b> & Co" in out.text                                # text is not escaped
    assert "None" not in out.html and "None" not in out.text


def test_money_in_operator_template() -> None:
    cfg = config(lowbalance_subject="Balance {balance}",
                 lowbalance_content="<p>{balance} / {{ '%.3f'|format(balance) }}</p>")
    out = render_notice(notice(balance=Decimal("-7.1")), cfg)
    assert out.subject == "Balance (7.10)"
    assert "<p>(7.10) / -7.100</p>" in out.html
    assert out.source == "operator"
    assert "(7.10) / -7.100" in out.text   # text part derived from the operator's HTML


def test_operator_template_from_database_with_unknown_tag(conn, dsn, settings, caplog) -> None:
    factories.system(conn)
    factories.update(conn, "mail_tmplate", {"id": 1},
                     lowbalance_subject="Low: {company_name} {nosuch}",
                     lowbalance_content="<p>Dear {company_name},</p><p>{balance} {mystery_tag}</p>")
    from dnl_ad import db
    with db.connect(dsn) as c, c.cursor() as cur:
        cfg = MailConfig.load(cur, settings)
    caplog.set_level(logging.WARNING, logger="dnl_ad.mail.render")
    outs = [render_notice(notice(f"k{i}", company_name="A<B"), cfg) for i in range(3)]
    out = outs[0]
    assert out.subject == "Low: A<B {nosuch}"
    assert "<p>Dear A&lt;B,</p><p>(12.50) {mystery_tag}</p>" in out.html
    assert set(out.unknown_tags) == {"nosuch", "mystery_tag"}
    reports = [r for r in caplog.records if "unknown tags" in r.getMessage()]
    assert len(reports) == 1 and "{mystery_tag}" in reports[0].getMessage()
    problems = cfg.problems()
    assert {(p.column, p.unknown_tags) for p in problems} == {
        ("lowbalance_subject", ("nosuch",)), ("lowbalance_content", ("mystery_tag",))}


def test_unknown_tags_function() -> None:
    text = ("Dear {company_name} {foo}, {{ balance }} {{ bar }} {% for i in range(2) %}{{ i }}"
            "{% endfor %} {trunk_name} {{ loop_free }}")
    assert unknown_tags(text, "low_balance") == ["bar", "foo", "loop_free", "trunk_name"]
    assert unknown_tags(text, "trunk_pending") == ["balance", "bar", "foo", "loop_free"]
    assert unknown_tags("{% if %} {zzz} {balance}", "low_balance") == ["zzz"]
    assert unknown_tags(None, "low_balance") == []


def test_broken_template_falls_back_and_is_logged_once(caplog) -> None:
    cfg = config(lowbalance_subject="S {company_name}",
                 lowbalance_content="<p>{% if balance %}unclosed</p>")
    caplog.set_level(logging.ERROR, logger="dnl_ad.mail.render")
    outs = [render_notice(notice(f"k{i}", company_name=f"Co{i}"), cfg) for i in range(5)]
    assert all(o.source == "operator+default" for o in outs)
    assert "Co3" in outs[3].html and "unclosed" not in outs[3].html
    assert outs[3].subject == "S Co3"
    errors = [r.getMessage() for r in caplog.records if "does not compile" in r.getMessage()]
    assert len(errors) == 1 and "lowbalance_content" in errors[0]
    assert cfg.problems()[0].error


def test_subject_only_template_and_hour_columns() -> None:
    cfg = config(hour_subject_48="48h left for {trunk_name}",
                 hour_content_48="<p>Trunk {trunk_name}: {rate_download_deadline}</p>",
                 hour_cc_48="noc@carrier.example", hour_from_48="3")
    n = notice("tp:1", kind="trunk_pending", template="hour_48", trunk_name="T1",
               rate_download_deadline="2026-03-04 10:00 +0800")
    out = render_notice(n, cfg)
    assert out.subject == "48h left for T1"
    assert "<p>Trunk T1: 2026-03-04 10:00 +0800</p>" in out.html
    assert out.cc == "noc@carrier.example" and out.from_id == "3"
    only_subject = config(lowbalance_subject="Custom {company_name}")
    out = render_notice(notice(company_name="Zed"), only_subject)
    assert out.subject == "Custom Zed" and "Low balance alert" in out.html


HOSTILE = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for a in range(9999) %}{% for b in range(9999) %}{% endfor %}{% endfor %}",
    "{% for a in 'y'*2000 %}{% for b in 'y'*2000 %}{% for c in 'y'*2000 %}{% endfor %}"
    "{% endfor %}{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ range(10000)|join('x' * 400000) }}",
    "{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{{ 99999**99999 }}",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_template_is_contained(hostile: str, caplog) -> None:
    cfg = config(lowbalance_content=hostile)
    box: dict = {}
    worker = threading.Thread(target=lambda: box.update(out=render_notice(notice(), cfg)),
                              daemon=True)
    worker.start()
    worker.join(60)  # a hang detector, not a speed assertion
    assert not worker.is_alive(), "render did not finish"
    out = box["out"]
    assert out.source == "default"            # the notice still goes out, with the default
    assert "Low balance alert" in out.html
    for leak in ("<class", "subclasses", "__globals__", "xxxxxxxx"):
        assert leak not in out.html
    assert any("failed" in r.getMessage() and "default template is used" in r.getMessage()
               for r in caplog.records)


def test_private_attributes_render_nothing() -> None:
    cfg = config(lowbalance_content="[{{ self._TemplateReference__context }}]"
                                    "[{{ company_name.__class__ }}]")
    out = render_notice(notice(), cfg)
    assert "Context" not in out.html and "class" not in out.html


def test_bounded_sandbox_still_allows_ordinary_jinja() -> None:
    content = ("{% for i in range(3) %}<i>{{ i }}</i>{% endfor %}"
               "{% set ns = namespace(t=0) %}{% for x in [1, 2, 3] %}{% set ns.t = ns.t + x %}"
               "{% endfor %}<b>{{ ns.t }}</b>{{ company_name|upper }}{{ 'ab' ~ 'cd' }}"
               "{% if balance < 0 %}NEG{% endif %}")
    out = render_notice(notice(company_name="acme"), config(lowbalance_content=content))
    assert out.source == "default+operator"  # default subject, operator content
    assert "<i>0</i><i>1</i><i>2</i><b>6</b>ACMEabcdNEG" in out.html


# --- TEMPLATE_DIR files: a sandbox without the per-step budget --------------------------

def file_config(tmp_path: Path, html: str) -> MailConfig:
    """The repo's templates, with low_balance.html.j2 replaced by `html`."""
    for src in (REPO / "templates").iterdir():
        (tmp_path / src.name).write_bytes(src.read_bytes())
    (tmp_path / "low_balance.html.j2").write_text(html, encoding="utf-8")
    return MailConfig({}, {}, {}, tmp_path)


@pytest.mark.parametrize("html, leak", [
    ("[{{ ''.__class__.__mro__ }}]", "<class"),
    ("[{{ cycler.__init__.__globals__.os }}]", "module"),
    ("[{{ self._TemplateReference__context }}]", "Context"),
])
def test_template_files_are_still_sandboxed(tmp_path: Path, html: str, leak: str) -> None:
    out = render_notice(notice(), file_config(tmp_path, html))
    assert leak not in out.html


@pytest.mark.parametrize("html", ["{% for i in range(10**9) %}x{% endfor %}",
                                  "{% for i in range(20) %}{{ 'x' * 99999 }}{% endfor %}"])
def test_a_runaway_template_file_is_stopped_and_logged(tmp_path: Path, html: str,
                                                      caplog) -> None:
    out = render_notice(notice(), file_config(tmp_path, html))
    assert len(out.html) < 10_000  # the fallback listing, not the runaway output
    assert "Client Co" in out.html
    assert any("default template low_balance.html.j2 failed" in r.getMessage()
               for r in caplog.records)


def test_template_files_need_no_budget(tmp_path: Path) -> None:
    """More steps than an operator template may take (BoundedSandbox.MAX_STEPS) are fine
    in a file: its loops run over the notice's own rows."""
    html = "{% for i in range(9000) %}{% for j in range(30) %}{% endfor %}{% endfor %}done"
    assert render_notice(notice(), file_config(tmp_path, html)).html == "done"
    bounded = render_notice(notice(), config(lowbalance_content=html))
    assert bounded.source == "default"  # the same text from the database is refused


def test_a_missing_template_file_is_logged_once_per_sweep(tmp_path: Path, caplog) -> None:
    cfg = file_config(tmp_path, "x")
    (tmp_path / "low_balance.html.j2").unlink()
    outs = [render_notice(notice(f"k{i}"), cfg) for i in range(3)]
    assert all("Client Co" in o.html for o in outs)  # every notice still has a body
    missing = [r for r in caplog.records if "missing or broken" in r.getMessage()]
    assert len(missing) == 1


def test_a_changed_template_file_is_used_from_the_next_sweep_on(tmp_path: Path) -> None:
    """Template files (and the layouts they extend) are checked for changes once per
    MailConfig, i.e. once per sweep, not at every notice."""
    import os

    first = file_config(tmp_path, "{% extends '_layout.html.j2' %}{% block body %}v1"
                                  "{% endblock %}")
    assert "v1" in render_notice(notice(), first).html
    layout = tmp_path / "_layout.html.j2"
    layout.write_text("LAYOUT2 {% block body %}{% endblock %}", encoding="utf-8")
    later = layout.stat().st_mtime + 10
    os.utime(layout, (later, later))
    assert "LAYOUT2" not in render_notice(notice("k2"), first).html  # same sweep
    second = MailConfig({}, {}, {}, tmp_path)
    assert "LAYOUT2 v1" in render_notice(notice("k3"), second).html  # the next sweep
