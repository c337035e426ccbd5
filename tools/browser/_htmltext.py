"""HTML to the plain text gpt-oss's browser showed in training. Pure: no I/O.

The reference browser turned pages into text with the ``html2text`` package, set to drop link
targets, images, tables' markup and emphasis, with no wrapping, and with only its
section-level Markdown escaping left on (``1\\. item``, ``\\- item``, a doubled ``\\``). The
model learned that exact text: its paragraph breaks, list indents, trailing spaces and all.
:func:`html_to_text` writes the same text from the same events (this module's own code, not
that package: its licence does not suit this project, and only one fixed set of its options
matters here).

The rules, for the record:

* blocks (``p``, ``div``, headings, lists at the outer level, ``pre``, ``blockquote``, ``hr``,
  ``dl``) are separated by one blank line; headings start with ``#`` per level;
* list items are ``* `` or ``N. `` (``<ol start>`` honoured), indented 2 spaces per enclosing
  list (3 under an ``ol``), nested lists with no blank line around them;
* ``<pre>`` keeps its lines, each indented 4 spaces (plus the list indent inside a list);
* inline ``code``/``kbd``/``tt`` in backticks, ``del``/``s``/``strike`` in ``~~``, ``q`` in
  double quotes, ``<br>`` as two spaces and a newline;
* blockquote lines prefixed ``> ``; ``<hr>`` is ``* * *``; ``<dd>`` indented 4 spaces on
  its own line under its ``<dt>``; each table row on its own line;
* whitespace in text collapsed to single spaces; ``head``, ``script`` and ``style`` silent;
  ``abbr`` titles listed at the end as ``  *[ABBR]: title``.
"""

from __future__ import annotations

import html.entities
import html.parser
import re

__all__ = ["html_to_text"]

_WS = re.compile(r"\s+")
# Section escaping: a backslash before a Markdown character, and list- or heading-like starts.
_BACKSLASH = re.compile(r"(\\)(?=[\\`*_{}\[\]()#+\-.!])")
_DOT = re.compile(r"^(\s*\d+)(\.)(?=\s)", re.M)
_PLUS = re.compile(r"^(\s*)(\+)(?=\s)", re.M)
_DASH = re.compile(r"^(\s*)(-)(?=\s|-)", re.M)
_STRESS_SPACE = re.compile(r"[^\]\[(){}\s.!?]")
_NBSP_HOLDER = "&nbsp_place_holder;"
# Windows-1252 code points that HTML maps numeric references in 0x80-0x9f to.
_C1 = dict(
    zip(
        [0x80, *range(0x82, 0x8D), 0x8E, *range(0x91, 0x9D), 0x9E, 0x9F],
        "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ",
        strict=True,
    )
)


def _escape(text: str) -> str:
    text = _BACKSLASH.sub(r"\\\1", text)
    text = _DOT.sub(r"\1\\\2", text)
    text = _PLUS.sub(r"\1\\\2", text)
    return _DASH.sub(r"\1\\\2", text)


def _heading(tag: str) -> int:
    if len(tag) == 2 and tag[0] == "h" and "1" <= tag[1] <= "9":
        return int(tag[1])
    return 0


class _Writer(html.parser.HTMLParser):
    """Writes text as tags and data arrive; ``pending`` is how many line breaks are owed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.parts: list[str] = []
        self.last_nl = False
        self.quiet = 0
        self.pending = 0  # 1: a line break owed before the next output, 2: a blank line
        self.at_start = True
        self.space = False
        self.lists: list[list] = []  # [name, last number]
        self.last_was_list = False
        self.blockquote = 0
        self.pre = False
        self.pre_start = False
        self.pre_indent = ""
        self.list_indent = ""
        self.code = False
        self.quote = False
        self.br_toggle = ""
        self.stressed = False
        self.after_stressed = False
        self.preceding = ""
        self.tag = ""
        self.abbr_title: str | None = None
        self.abbr_data: str | None = None
        self.abbrs: dict[str, str] = {}

    # --- output --------------------------------------------------------------------------

    def _out(self, s: str) -> None:
        self.parts.append(s)
        if s:
            self.last_nl = s[-1] == "\n"

    def _line(self) -> None:
        if self.pending == 0:
            self.pending = 1

    def _para(self) -> None:
        self.pending = 2

    def _soft_line(self) -> None:
        self._line()
        self.br_toggle = "  "

    def _emit(self, data: str, pure: bool = False, force: bool | str = False) -> None:
        if self.abbr_data is not None:
            self.abbr_data += data
        if self.quiet:
            return
        if pure and not self.pre:
            data = _WS.sub(" ", data)
            if data[:1] == " ":
                self.space = True
                data = data[1:]
        if not data and not force:
            return
        if self.pre_start and not data.startswith(("\n", "\r\n")):
            data = "\n" + data
        prefix = ">" * self.blockquote
        if self.blockquote and not (force and data[:1] == ">"):
            prefix += " "
        if self.pre:
            if self.lists:
                prefix += self.list_indent
            prefix += "    "
            data = data.replace("\n", "\n" + prefix)
            self.pre_indent = prefix
        if self.pre_start:
            self.pre_start = False
            if self.lists:
                data = data.lstrip("\n" + self.pre_indent)
        if self.at_start:
            self.space = False
            self.pending = 0
            self.at_start = False
        if force == "end":
            self.pending = 0
            self._out("\n")
            self.space = False
        if self.pending:
            self._out((self.br_toggle + "\n" + prefix) * self.pending)
            self.space = False
            self.br_toggle = ""
        if self.space:
            if not self.last_nl:
                self._out(" ")
            self.space = False
        if self.abbrs and force == "end":
            for abbr, title in self.abbrs.items():
                self._out(f"  *[{abbr}]: {title}\n")
        self.pending = 0
        self._out(data)

    # --- parser events -------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, dict(attrs), True)

    def handle_endtag(self, tag: str) -> None:
        self._tag(tag, {}, False)

    def handle_charref(self, name: str) -> None:
        code = int(name[1:], 16) if name[0] in "xX" else int(name)
        if not 0 < code < 0x110000 or 0xD800 <= code < 0xE000:
            code = 0xFFFD
        self.handle_data(_C1.get(code, chr(code)), entity=True)

    def handle_entityref(self, name: str) -> None:
        if name == "nbsp":
            ref = _NBSP_HOLDER
        else:
            ref = html.entities.html5.get(name + ";", f"&{name};")
        if ref:
            self.handle_data(ref, entity=True)

    def handle_data(self, data: str, entity: bool = False) -> None:
        if not data:
            return
        if self.stressed:
            data = data.strip()
            self.stressed = False
            self.after_stressed = True
        elif self.after_stressed:
            if (
                _STRESS_SPACE.match(data[0])
                and not _heading(self.tag)
                and self.tag not in ("a", "code", "pre")
            ):
                data = " " + data
            self.after_stressed = False
        if not self.code and not self.pre and not entity:
            data = _escape(data)
        self.preceding = data
        self._emit(data, pure=True)

    def _tag(self, tag: str, attrs: dict[str, str | None], start: bool) -> None:
        self.tag = tag
        level = _heading(tag)
        if level:
            self._para()
            if not start:
                return  # a heading's end leaves the list state as it was
            self._emit("#" * level + " ")
        elif tag in ("p", "div"):
            self._para()
        elif tag == "br" and start:
            self._emit("  \n> " if self.blockquote else "  \n")
        elif tag == "hr" and start:
            self._para()
            self._emit("* * *")
            self._para()
        elif tag in ("head", "style", "script"):
            self.quiet += 1 if start else -1
        elif tag == "body":
            self.quiet = 0
        elif tag == "blockquote":
            if start:
                self._para()
                self._emit("> ", force=True)
                self.at_start = True
                self.blockquote += 1
            else:
                self.blockquote -= 1
                self._para()
        elif tag in ("del", "strike", "s"):
            if start and self.preceding.endswith("~"):
                mark = " ~~"
                self.preceding += " "
            else:
                mark = "~~"
            self._emit(mark)
            if start:
                self.stressed = True
        elif tag in ("kbd", "code", "tt") and not self.pre:
            self._emit("`")
            self.code = not self.code
        elif tag == "abbr":
            if start:
                self.abbr_title = attrs.get("title")
                self.abbr_data = ""
            else:
                if self.abbr_title is not None and self.abbr_data is not None:
                    self.abbrs[self.abbr_data] = self.abbr_title
                    self.abbr_title = None
                self.abbr_data = None
        elif tag == "q":
            self._emit('"')
            self.quote = not self.quote
        elif tag == "dl" and start:
            self._para()
        elif tag == "dt" and not start:
            self._line()
        elif tag == "dd":
            if start:
                self._emit("    ")
            else:
                self._line()

        if tag in ("ol", "ul"):
            if not self.lists and not self.last_was_list:
                self._para()
            if start:
                self.lists.append([tag, _numbering_start(attrs)])
            elif self.lists:
                self.lists.pop()
                if not self.lists:
                    self._emit("\n")
            self.last_was_list = True
        else:
            self.last_was_list = False

        if tag == "li":
            self.list_indent = ""
            self._line()
            if start:
                item = self.lists[-1] if self.lists else ["ul", 0]
                parent = None
                for name, _ in self.lists:
                    self.list_indent += "   " if parent == "ol" else "  "
                    parent = name
                self._emit(self.list_indent)
                if item[0] == "ul":
                    self.list_indent += "  "
                    self._emit("* ")
                else:
                    item[1] += 1
                    self.list_indent += "   "
                    self._emit(f"{item[1]}. ")
                self.at_start = True
        elif tag == "tr" and not start:
            self._soft_line()
        elif tag == "pre":
            if start:
                self.pre_start = True
                self.pre = True
                self.pre_indent = ""
            else:
                self.pre = False
            self._para()

    def text(self) -> str:
        self.close()
        self._line()
        self._emit("", force="end")
        return "".join(self.parts).replace(_NBSP_HOLDER, "\xa0")


def _numbering_start(attrs: dict[str, str | None]) -> int:
    try:
        return int(attrs.get("start") or "1") - 1
    except ValueError:
        return 0


def html_to_text(markup: str) -> str:
    """The text of ``markup`` (serialised HTML), blocks apart, unwrapped, stripped."""
    writer = _Writer()
    writer.feed(markup)
    return writer.text().strip()
