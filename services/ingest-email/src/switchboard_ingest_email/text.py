"""Readable text from email bodies: HTML to text, and the new part of a reply.

Pure functions over strings. ``html_to_text`` drops scripts, styles and the document
head, keeps paragraphs and list items on their own lines and marks ``<blockquote>``
content with ``> `` so quoted history in HTML mail is recognised like quoted plain text.
``split_reply`` returns the part a customer wrote in this message: the text before the
first recognised quote header ("On … wrote:", Outlook's "-----Original Message-----" or
"From:/Sent:" block), trailing ``>``-quoted lines and the signature (``-- ``). The whole
text is always kept separately (the event's ``full_text``); nothing here is lossy for the
raw message, which stays in the raw store.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIP_TAGS = frozenset({"script", "style", "head", "title", "template", "noscript", "svg"})
# Blocks separated by a blank line, and blocks that only start a new line (Gmail writes
# every line as a <div>; list items and table rows are one line each).
_PARAGRAPH_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dl", "fieldset", "figure", "footer",
        "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p",
        "pre", "section", "table", "ul",
    }
)  # fmt: skip
_LINE_TAGS = frozenset({"div", "li", "tr", "dt", "dd", "figcaption", "body", "html"})
_BLOCK_TAGS = _PARAGRAPH_TAGS | _LINE_TAGS
_VOID_TAGS = frozenset({"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr"})
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0]+")
# C0 controls other than tab and newline, DEL, and the C1 block: noise from broken
# encodings that would bloat JSON (each becomes a 6-byte escape) and help no reader.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip_depth = 0
        self.quote_depth = 0
        self.pre_depth = 0

    def _flush(self, tag: str = "") -> None:
        text = "".join(self.current)
        if not self.pre_depth:
            text = _SPACES.sub(" ", text).strip()
        self.current = []
        prefix = "> " * self.quote_depth
        if text:
            self.lines.extend(prefix + line for line in text.split("\n"))
        last = self.lines[-1].replace(">", "").strip() if self.lines else ""
        if tag in _PARAGRAPH_TAGS and last:
            self.lines.append(prefix.rstrip())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            if tag not in _VOID_TAGS:
                self.skip_depth += 1
            return
        if self.skip_depth:
            return
        if tag == "br":
            self._flush_line()
        elif tag in _BLOCK_TAGS:
            self._flush(tag)
            if tag == "blockquote":
                self.quote_depth += 1
            elif tag == "pre":
                self.pre_depth += 1
            elif tag == "li":
                self.current.append("- ")
        elif tag in ("td", "th") and self.current:
            self.current.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.current.append(f"[{alt}]")

    def _flush_line(self) -> None:
        # A <br> ends a line without ending the paragraph.
        text = "".join(self.current)
        if not self.pre_depth:
            text = _SPACES.sub(" ", text).strip()
        self.current = []
        self.lines.append("> " * self.quote_depth + text)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if tag == "blockquote":
            # The quoted lines keep their "> "; the blank line after belongs outside.
            self._flush("div")
            self.quote_depth = max(0, self.quote_depth - 1)
            self._flush(tag)
        elif tag in _BLOCK_TAGS:
            self._flush(tag)
            if tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.current.append(data)

    def text(self) -> str:
        self._flush()
        return tidy("\n".join(self.lines))


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body (scripts, styles and head removed)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


def tidy(text: str) -> str:
    """Normalise line ends, drop control characters and trailing spaces, collapse blank runs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and out and not out[-1]:
            continue
        out.append(line)
    return "\n".join(out).strip("\n")


# "On Mon, 2 Mar 2026 at 09:30, Ana <ana@example.com> wrote:" and its common translations;
# clients wrap it over two lines, so it is matched on the text with one line end allowed.
_ATTRIBUTION = re.compile(
    r"^(?:>\s*)?(?:On|Am|Le|El|Il|Op|Em|Den|På)\s[^\n]{0,200}?(?:\n[^\n]{0,200}?)?"
    r"(?:wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|skrev)[^\n]{0,200}?:[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_OUTLOOK_SEPARATOR = re.compile(
    r"^\s*(?:-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|"
    r"Mensaje original|Forwarded message)\s*-{2,}|_{10,})\s*$",
    re.IGNORECASE | re.MULTILINE,
)
# Outlook without a separator line: a header block "From: …" followed by "Sent:" or "Date:".
_OUTLOOK_HEADERS = re.compile(
    r"^\s*\*?(?:From|Von|De)\s*:\*?\s.+\n\s*\*?(?:Sent|Date|Gesendet|Envoyé|Enviado)\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_SIGNATURE = re.compile(r"^-- ?$", re.MULTILINE)


def split_reply(text: str) -> str:
    """The new part of a message: text before quoted history and the signature.

    Returns ``text`` unchanged when no quote or signature marker is found, and also when
    cutting would leave nothing (a message that is only a forward keeps all its text).
    """
    cut = len(text)
    for pattern in (_ATTRIBUTION, _OUTLOOK_SEPARATOR, _OUTLOOK_HEADERS, _SIGNATURE):
        match = pattern.search(text, 0, cut)
        if match is not None:
            cut = min(cut, match.start())
    new = text[:cut]
    lines = new.rstrip().split("\n")
    # Trailing ">"-quoted lines are history even without an attribution line.
    while lines and lines[-1].lstrip().startswith(">"):
        lines.pop()
        while lines and not lines[-1].strip():
            lines.pop()
    new = "\n".join(lines).strip()
    return new if new else text.strip()
