"""HTML -> text/plain part: what a mail reader shows as is, so plain text, never markdown."""

from __future__ import annotations

import pytest

from dnl_ad.mail.plaintext import html_to_text


@pytest.mark.parametrize(("html", "text"), [
    ("<p>Your balance is <b>(5.50)</b>, <i>please</i> pay.</p>",
     "Your balance is (5.50), please pay.\n"),
    ("<h1>Title</h1><h2>Sub</h2><p>a\n   b</p>", "Title\n\nSub\n\na b\n"),
    ('<a href="https://x.example/a?b=1&amp;c=2">pay</a>', "pay (https://x.example/a?b=1&c=2)\n"),
    ('<a href="https://x.example/">https://x.example/</a>', "https://x.example/\n"),
    ('<a href="https://x.example/"></a>', "https://x.example/\n"),
    ('<a href="/relative/r.csv">rates</a>', "rates\n"),
    ('<a href="mailto:noc@x.example">noc@x.example</a>', "noc@x.example\n"),
    ('<a href="mailto:noc@x.example?subject=hi">our NOC</a>', "our NOC (noc@x.example)\n"),
    ("line 1<br>line 2<br/><br>line 3", "line 1\nline 2\n\nline 3\n"),
    ("<ul><li>one</li><li>two<li>three</ul>", "- one\n- two\n- three\n"),
    ("<ol><li>one</li><li>two</li></ol>", "1. one\n2. two\n"),
    ("<table><tr><th></th><th>Buy</th><th>Sell</th></tr>\n<tr><td>Calls</td><td>1</td>"
     "<td>2</td></tr></table>", "| Buy | Sell\nCalls | 1 | 2\n"),
    ("<table><tr><td>Balance:</td><td>1.00</td></tr><tr><td>Limit</td><td> 2.00 </td></tr>"
     "<tr><td></td><td></td></tr></table>", "Balance: 1.00\nLimit: 2.00\n"),
    ("<table><tr><td><table><tr><td>inner</td><td>x</td></tr></table></td></tr></table>",
     "inner: x\n"),
    ("<table><tr><td>unclosed<td>cells<tr><td>next</table>", "unclosed: cells\nnext\n"),
    ("<html><head><title>T</title><style>p { x: y }</style></head><body>"
     "<script>alert(1)</script><p>body</p></body></html>", "body\n"),
    ("&amp; &lt;tag&gt; &eacute; &#8364;", "& <tag> é €\n"),
    ("<td>5.00&nbsp;USD</td>", "5.00 USD\n"),
    ("", "\n"),
])
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_no_markdown_escapes_or_marks() -> None:
    text = html_to_text("<p>1. not a list * not a bullet _x_ [y](z) # no heading</p>")
    assert text == "1. not a list * not a bullet _x_ [y](z) # no heading\n"


def test_large_operator_html_is_converted() -> None:
    html = "<table>" + "<tr><td>row</td><td>1.00</td></tr>" * 5000 + "</table>"
    text = html_to_text(html)
    assert text.count("row: 1.00") == 5000
