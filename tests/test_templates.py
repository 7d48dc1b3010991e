"""The default templates as a customer reads them: realistic data, text and HTML parts."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from pathlib import Path

import pytest

from dnl_ad.mail.render import KNOWN_TAGS, MailConfig, format_money, render_notice
from tests import factories
from tests.mail_helpers import email_log, outbox_rows, queue
from tests.template_samples import SAMPLES, TEMPLATE_FOR_KIND, sample

REPO = Path(__file__).resolve().parent.parent
KINDS = sorted(SAMPLES)
MONEY_KINDS = [k for k in KINDS if any(isinstance(v, Decimal) for v in SAMPLES[k].values())]


def config(**columns: str) -> MailConfig:
    return MailConfig(dict(columns), {}, {}, REPO / "templates")


def amounts(kind: str) -> set[str]:
    return {format_money(v) for v in SAMPLES[kind].values() if isinstance(v, Decimal)}


@pytest.mark.parametrize("kind", MONEY_KINDS)
def test_every_amount_carries_the_currency_code(kind: str) -> None:
    out = render_notice(sample(kind, currency="EUR"), config())
    for part in (out.html.replace("&nbsp;", " "), out.text):
        shown = re.findall(r"\(?\d+\.\d\d\)?(?: [A-Z]{3})?", part)
        money = [s for s in shown if s.split()[0] in amounts(kind)]
        assert money, part
        assert all(s.endswith(" EUR") for s in money), (kind, money)
    assert "(5.50) EUR" in render_notice(sample("zero_balance", currency="EUR"),
                                         config()).subject


@pytest.mark.parametrize("kind", MONEY_KINDS)
def test_an_empty_currency_shows_the_bare_amount(kind: str) -> None:
    out = render_notice(sample(kind, currency=""), config())
    for part in (out.html, out.text):
        assert not re.search(r"\d\.\d\d\)? +(<|\n|$)", part, re.M), part
        assert "None" not in part


def test_money_tag_is_the_bare_amount_and_currency_a_tag_of_its_own() -> None:
    assert all("currency" in tags for tags in KNOWN_TAGS.values())
    cfg = config(lowbalance_subject="Balance {balance} {currency}",
                 lowbalance_content="<p>{balance} {currency} / {{ balance|money }}</p>")
    out = render_notice(sample("low_balance", balance=Decimal("-7.1"), currency="GBP"), cfg)
    assert out.subject == "Balance (7.10) GBP"
    assert "<p>(7.10) GBP / (7.10)&nbsp;GBP</p>" in out.html
    assert "GBP GBP" not in out.html


def test_money_filter_leaves_a_non_amount_alone() -> None:
    out = render_notice(sample("usage_summary", balance="unknown", remaining_credit="unknown"),
                        config())
    assert "unknown USD" not in out.text and "unknown" in out.text


def test_currency_code_is_escaped_in_html() -> None:
    out = render_notice(sample("low_balance", currency="<b>X</b>"), config())
    assert "<b>X</b>" not in out.html and "&lt;b&gt;X&lt;/b&gt;" in out.html


def test_samples_cover_every_kind() -> None:
    assert set(SAMPLES) == set(KNOWN_TAGS) == set(TEMPLATE_FOR_KIND)


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), Decimal("1e15"),
                                 Decimal("-2.5e17")])
def test_a_bad_amount_fails_its_own_notice_only_with_one_log_line(
        bad, database, settings, conn, caplog) -> None:
    factories.system(conn)
    notices = [sample("low_balance", client_id=1),
               sample("low_balance", client_id=2, remaining_credit=bad),
               sample("low_balance", client_id=3)]
    caplog.set_level(logging.INFO, logger="dnl_ad")
    pipeline = queue(database, settings, notices)
    assert (pipeline.queued, pipeline.failed) == (2, 1)
    rows = {r["client_id"]: r for r in outbox_rows(conn)}
    assert {c: r["status"] for c, r in rows.items()} == {1: "pending", 2: "failed",
                                                          3: "pending"}
    assert "tag remaining_credit" in rows[2]["last_error"]
    assert "bad data" in rows[2]["last_error"]
    assert "1055.25 USD" in rows[1]["text_body"]
    [logged] = email_log(conn)
    assert logged["client_id"] == 2 and "remaining_credit" in logged["error"]
    about_2 = [r for r in caplog.records if "client 2 " in r.getMessage()]
    assert len(about_2) == 1, [r.getMessage() for r in about_2]
    assert about_2[0].levelno == logging.ERROR
    assert "bad data" in about_2[0].getMessage() and "remaining_credit" in about_2[0].getMessage()
    assert not [r for r in caplog.records if "default template" in r.getMessage()]
    again = queue(database, settings, notices)     # the next sweep: nothing new, no log
    assert (again.queued, again.failed, again.duplicates) == (0, 0, 3)


# --- item 26: what a customer must not see ---------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_no_markdown_in_any_text_part(kind: str) -> None:
    text = render_notice(sample(kind), config()).text
    assert "**" not in text and "](" not in text and "__" not in text
    assert not re.search(r"^\s*(#|\* |\\)", text, re.M), text
    assert "<" not in text and "&amp;" not in text


def test_text_part_of_an_operator_template_has_no_markdown() -> None:
    cfg = config(lowbalance_content=(
        "<h1>Low balance</h1><p>Your balance is <b>{balance}</b> , <i>please</i> pay "
        '<a href="https://pay.example/acme">here</a> or write to '
        '<a href="mailto:billing@carrier.example">billing</a>.</p>'
        "<table><tr><td>Balance</td><td><b>{balance}</b></td></tr>"
        "<tr><td>Limit:</td><td>{credit_limit}</td></tr></table>"
        "<ul><li>one</li><li>two</li></ul>"))
    text = render_notice(sample("low_balance", balance=Decimal("-5.5")), cfg).text
    assert text == ("Low balance\n\nYour balance is (5.50) , please pay here "
                    "(https://pay.example/acme) or write to billing "
                    "(billing@carrier.example).\n\nBalance: (5.50)\nLimit: 1000.00\n\n"
                    "- one\n- two\n")


@pytest.mark.parametrize(("kind", "value"), [
    ("trunk_pending", "2026-03-04 07:59:59 GMT+08:00"),
    ("trunk_suspended", "2026-03-04 07:59:59 GMT+08:00"),
    ("low_balance", "1000.00 USD"), ("zero_balance", "1000.00 USD"),
    ("low_balance", "Net 15"), ("low_balance", "2026-03-02"),
    ("balance_summary", "2468.08 USD"), ("balance_summary", "1000.00 USD"),
    ("balance_summary", "2026-03-01 00:00:00"),
    ("usage_summary", "1000.00 USD"),
    ("cdr_delivery", "acme-out"),
])
def test_a_value_is_shown_once_not_under_each_synonym(kind: str, value: str) -> None:
    out = render_notice(sample(kind), config())
    assert out.text.count(value) == 1, out.text
    html = re.sub(r'href="[^"]*"', "", out.html).replace("&nbsp;", " ")
    assert html.count(value) == 1, out.html


def test_a_different_effective_date_is_shown() -> None:
    out = render_notice(sample("trunk_pending", effective_date="2026-03-10"), config())
    assert "take effect on 2026-03-10" in out.text and "2026-03-10" in out.html


@pytest.mark.parametrize("link", ["/rates/acme.csv", "rates/acme.csv", "", "javascript:x()",
                                  "www.carrier.example/rates.csv"])
def test_only_absolute_links_reach_the_mail(link: str) -> None:
    out = render_notice(sample("trunk_pending", rate_download_link=link, download_url=link),
                        config())
    assert "Download:" not in out.text and "Rate portal" not in out.text
    assert re.findall(r'href="([^"]*)"', out.html) == ["mailto:noc@carrier.example"]
    assert "Please download them by 2026-03-04 07:59:59 GMT+08:00" in out.text
    assert "from our customer portal" in out.text and "from our customer portal" in out.html


def test_absolute_url_test() -> None:
    from dnl_ad.mail.render import is_absolute_url
    assert is_absolute_url("https://portal.example/r.csv")
    assert is_absolute_url(" http://10.0.0.1:8080/x ")
    for bad in ("/r.csv", "r.csv", "", None, "https://", "mailto:a@b.c", "http:/x",
                "https://a b/c"):
        assert not is_absolute_url(bad), bad


def test_portal_link_shown_when_it_differs() -> None:
    out = render_notice(sample("trunk_pending", download_url="https://portal.example/"),
                        config())
    assert "Rate portal: https://portal.example/" in out.text
    assert '<a href="https://portal.example/">' in out.html


@pytest.mark.parametrize(("kind", "empty", "label"), [
    ("trunk_pending", "allowed_ip", "allowed IP"), ("trunk_pending", "prefix", "Prefix"),
    ("trunk_pending", "switch_ip", "switch IP"),
    ("low_balance", "payment_terms", "Payment terms"),
    ("zero_balance", "payment_terms", "Payment terms"),
])
def test_no_row_for_an_empty_value(kind: str, empty: str, label: str) -> None:
    full = render_notice(sample(kind), config())
    assert label in full.text and label in full.html
    out = render_notice(sample(kind, **{empty: ""}), config())
    assert label not in out.text and label not in out.html


@pytest.mark.parametrize("kind", KINDS)
def test_no_empty_row_when_optional_values_are_empty(kind: str) -> None:
    empties = {k: "" for k, v in SAMPLES[kind].items()
               if isinstance(v, str) and k in ("allowed_ip", "prefix", "payment_terms",
                                               "payment_term", "switch_alias")}
    out = render_notice(sample(kind, switch_ip="", noc_email="", currency="", **empties),
                        config())
    assert not re.search(r":[ \t]*\n(?!- )", out.text), out.text
    assert not re.search(r"<td[^>]*>\s*</td>\s*</tr>", out.html), out.html


@pytest.mark.parametrize("kind", ["low_balance", "zero_balance", "usage_summary",
                                  "balance_summary"])
def test_no_credit_rows_for_a_client_without_credit(kind: str) -> None:
    out = render_notice(sample(kind, credit_limit=Decimal(0), allow_credit=Decimal(0),
                               allowed_credit=Decimal(0)), config())
    assert "Credit limit" not in out.text and "Remaining credit" not in out.text
    assert "Credit limit" not in out.html


@pytest.mark.parametrize("kind", ["usage_summary", "balance_summary"])
def test_text_part_explains_buy_and_sell_as_the_html_does(kind: str) -> None:
    out = render_notice(sample(kind), config())
    for part in (out.text, out.html):
        assert "your traffic to us" in part and "our traffic to you" in part


def test_account_named_once_when_company_and_client_names_agree() -> None:
    out = render_notice(sample("low_balance", company_name="acme"), config())
    assert "acme (acme)" not in out.text and "your account acme is" in out.text


# --- item 27: the operator's contact line at the foot of every default template -------

@pytest.mark.parametrize("kind", KINDS)
def test_contact_line_and_carrier_name_at_the_foot(kind: str) -> None:
    out = render_notice(sample(kind), config())
    foot = out.text.split("Kind regards,", 1)[1]
    assert foot.startswith("\nCarrierX\n")
    assert "Questions? Contact our NOC at noc@carrier.example." in foot
    assert "please do not reply" not in out.text
    html_foot = out.html.split("Kind regards,", 1)[1]
    assert "CarrierX" in html_foot
    assert ('Questions? Contact our NOC at <a href="mailto:noc@carrier.example">'
            "noc@carrier.example</a>.") in html_foot


@pytest.mark.parametrize("kind", KINDS)
def test_no_contact_line_nor_signature_when_the_operator_left_them_empty(kind: str) -> None:
    out = render_notice(sample(kind, noc_email="", switch_alias=""), config())
    for part in (out.text, out.html):
        assert "Questions?" not in part and "Kind regards" not in part and "NOC" not in part
        assert "please do not reply to it" in part
    out = render_notice(sample(kind, noc_email=None, switch_alias=None), config())
    assert "None" not in out.text and "Questions?" not in out.text


def test_several_noc_addresses_and_hostile_text() -> None:
    out = render_notice(sample("low_balance",
                               noc_email="noc@a.example; NOC Team <noc2@a.example>,"),
                        config())
    assert "Contact our NOC at noc@a.example or noc2@a.example." in out.text
    assert '<a href="mailto:noc2@a.example">noc2@a.example</a>' in out.html
    out = render_notice(sample("low_balance", noc_email='x" onclick="evil()',
                               switch_alias="<script>x</script>"), config())
    assert "<script>" not in out.html and 'onclick="' not in out.html
    assert "<script>x</script>" in out.text


def test_operators_may_use_the_contact_tags() -> None:
    cfg = config(lowbalance_content="<p>{switch_alias} {noc_email} {switch_ip}</p>")
    out = render_notice(sample("low_balance"), cfg)
    assert "<p>CarrierX noc@carrier.example 203.0.113.10</p>" in out.html
    assert out.unknown_tags == ()
