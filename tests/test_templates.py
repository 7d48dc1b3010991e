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
    for part in (out.html, out.text):
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
    assert "<p>(7.10) GBP / (7.10) GBP</p>" in out.html
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
