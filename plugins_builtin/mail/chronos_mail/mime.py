"""Building the MIME message, and the plain-text part derived from HTML."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from html.parser import HTMLParser
from typing import Any

_BLOCK = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "div",
        "dl",
        "dt",
        "dd",
        "fieldset",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    }
)
_SKIP = frozenset({"head", "script", "style", "title", "template", "noscript"})
_KEEP = "\x00"  # marks preformatted lines; NUL never survives into the output


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.links: list[str | None] = []
        self.link_text: list[list[str]] = []

    def _emit(self, text: str) -> None:
        if self.link_text:
            self.link_text[-1].append(text)
        else:
            self.out.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag == "br":
            self._emit("\n")
        elif tag == "li":
            self._emit("\n- ")
        elif tag in ("td", "th"):
            self._emit(" ")
        elif tag == "pre":
            self.pre += 1
            self._emit("\n\n" + _KEEP)
        elif tag == "a":
            self.links.append(dict(attrs).get("href"))
            self.link_text.append([])
        elif tag in _BLOCK:
            self._emit("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self._emit("\n\n")
        elif tag == "a" and self.link_text:
            text = "".join(self.link_text.pop()).strip()
            href = self.links.pop()
            label = text or (href or "")
            if href and not href.startswith(("#", "javascript:", "mailto:")) and href != text:
                label = f"{label} ({href})" if text else href
            self._emit(label)
        elif tag in _BLOCK:
            self._emit("\n\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        # Inside <pre> every line is marked so the final clean-up keeps its indentation.
        self._emit(data.replace("\n", "\n" + _KEEP) if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of ``html``: blocks become paragraphs,
    list items ``- `` lines, links ``text (url)``; scripts and styles vanish."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    while parser.link_text:  # an <a> never closed
        parser.handle_endtag("a")
    text = "".join(parser.out)
    lines = [line[1:].rstrip() if line.startswith(_KEEP) else line.strip() for line in text.split("\n")]
    text = "\n".join(lines).replace(_KEEP, "")
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def build_message(
    *,
    sender: Address,
    to: Sequence[Address],
    cc: Sequence[Address],
    subject: str,
    html: str | None,
    text: str | None,
    attachments: Sequence[Any],
    message_id: str,
    date: datetime,
) -> EmailMessage:
    """multipart/alternative (text + html), wrapped in multipart/mixed when
    there are attachments. Bcc recipients are envelope-only, never a header."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = tuple(to)
    if cc:
        msg["Cc"] = tuple(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html or "", subtype="html")
    for att in attachments:
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(att.content, maintype=maintype, subtype=subtype, filename=att.filename)
    return msg
