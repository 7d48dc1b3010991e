"""HTML -> the text/plain part, as a person reads it: no markdown.

The text part of an operator's HTML template (and of trusted HTML values such as the CDR
link list) is derived here. html2text writes markdown (`**(5.50)** ,`, `[name](url)`,
`# Title`), which a mail reader shows verbatim; this writes plain text instead:

- paragraphs and headings become blank-line separated blocks, `<br>` a line break;
- a link is its text followed by its absolute URL in parentheses (the URL alone when the
  text is the URL); a relative link is useless in a mail and is left out;
- list items start with "- " (or "1. " in an ordered list);
- a table row of two cells reads "label: value", a wider row "a | b | c";
- whitespace collapses as a browser collapses it; script, style and head are dropped.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_LINE = "\x00"    # a line break
_PARA = "\x01"    # a paragraph break (blank line)
_BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "hr", "section",
           "article", "header", "footer", "center", "form", "dl", "pre", "address", "ul", "ol",
           "table"}
_SKIP = {"script", "style", "head", "title", "template", "noscript"}
_ABSOLUTE = re.compile(r"(?i)^(https?|ftp)://[^\s/]+")


class _Table:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.row: list[list[str]] | None = None

    def flush_row(self) -> None:
        if self.row is None:
            return
        cells = [_clean_inline("".join(c)) for c in self.row]
        self.row = None
        filled = [c for c in cells if c.strip(" " + _LINE + _PARA)]
        if not filled:
            return
        if len(cells) == 2 and len(filled) == 2:
            label, value = cells
            line = f"{label}{' ' if label.endswith(':') else ': '}{value}"
        elif len(filled) == 1:
            line = filled[0]
        else:
            line = " | ".join(cells)
        self.lines.append(line)


def _clean_inline(text: str) -> str:
    text = re.sub(r"[ \t\r\n\f\v]+", " ", text)
    return re.sub(rf" *([{_LINE}{_PARA}]) *", r"\1", text).strip(" ")


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: list[str] = []
        self.tables: list[_Table] = []
        self.skip = 0
        self.links: list[tuple[str, list[str], int]] = []
        self.lists: list[list[int]] = []   # per open list: [next number] (ol) or [] (ul)

    # where text goes now: the open cell of the innermost table, else the document
    def target(self) -> list[str]:
        if self.tables:
            table = self.tables[-1]
            if table.row is None:
                table.row = []
            if not table.row:
                table.row.append([])
            return table.row[-1]
        return self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        if tag == "table":
            self.target().append(_PARA)
            self.tables.append(_Table())
        elif tag == "tr" and self.tables:
            self.tables[-1].flush_row()
            self.tables[-1].row = []
        elif tag in ("td", "th") and self.tables:
            table = self.tables[-1]
            if table.row is None:
                table.row = []
            table.row.append([])
        elif tag in _BLOCKS:
            self.target().append(_PARA)
            if tag == "ol":
                self.lists.append([1])
            elif tag == "ul":
                self.lists.append([])
        elif tag == "br":
            self.target().append(_LINE)
        elif tag == "li":
            numbering = self.lists[-1] if self.lists else []
            mark = f"{numbering[0]}. " if numbering else "- "
            if numbering:
                numbering[0] += 1
            self.target().extend([_LINE, mark])
        elif tag == "a":
            target = self.target()
            self.links.append((dict(attrs).get("href") or "", target, len(target)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag == "table" and self.tables:
            table = self.tables.pop()
            table.flush_row()
            self.target().extend([_PARA, _LINE.join(table.lines), _PARA])
        elif tag == "tr" and self.tables:
            self.tables[-1].flush_row()
        elif tag in _BLOCKS:
            if tag in ("ol", "ul") and self.lists:
                self.lists.pop()
            self.target().append(_PARA)
        elif tag == "a" and self.links:
            href, target, start = self.links.pop()
            self._link(href.strip(), target, start)

    @staticmethod
    def _link(href: str, target: list[str], start: int) -> None:
        text = _clean_inline("".join(target[start:]))
        if href.lower().startswith("mailto:"):
            address = href[7:].split("?", 1)[0]
            if address and address not in text:
                target.append(f" ({address})" if text else address)
        elif _ABSOLUTE.match(href) and href != text:
            target.append(f" ({href})" if text else href)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.target().append(data)

    def text(self) -> str:
        while self.tables:
            self.handle_endtag("table")
        body = _clean_inline("".join(self.root))
        body = re.sub(rf"[{_LINE}{_PARA}]+",
                      lambda m: "\n\n" if _PARA in m.group(0) or len(m.group(0)) > 1 else "\n",
                      body)
        body = body.replace("\xa0", " ")  # &nbsp; keeps words together on screen only
        return "\n".join(line.strip() for line in body.strip().splitlines())


def html_to_text(html: str) -> str:
    """Plain text for the text/plain part of an HTML mail (see the module docstring)."""
    parser = _Parser()
    parser.feed(str(html))
    parser.close()
    return parser.text() + "\n"
