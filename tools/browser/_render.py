"""Page views and ``find`` in the format gpt-oss's browser was trained on. Pure: no I/O.

A page's text (see :mod:`._extract`) is split on newlines and each line wrapped at 80
columns (breaking at spaces and after hyphens, whitespace kept), numbered ``L{i}: ``. A view
is::

    [cursor] Title (url, percent-decoded)
    **viewing lines [a - b] of N**

    La: ...

from line ``loc`` through the line holding token 1,025 of the numbered text (o200k), or
exactly ``num_lines`` lines. ``find`` is a new page of ``# 【k†match at Ln】`` headers, each
with 4 lines of link-stripped context, a blank line between results, scanning on 4 lines
after each match, at most 50.

Deliberate deviations from the reference browser, each for a reason:

* **JavaScript-rendered content.** Pages are read from Chromium's DOM after load, not from
  the static HTML, so content that scripts build is there.
* **Hidden content dropped.** Elements the page does not render (``display: none``,
  ``[hidden]``, ``<noscript>``, closed dialogs) are left out: they are where pages keep
  prompt-injection text and boilerplate. ``aria-hidden`` text and the bodies of closed
  ``<details>`` are kept, as the reference keeps them.
* **``find`` across wrapped lines.** A pattern that the 80-column wrap split over two lines
  is found (at the line where it starts); the reference only matched within one line.
* **One site, however spelled.** A link is on the page's site when host and port match
  ignoring case and IDN spelling: Chromium reports ``www.xn--mnchen-3ya.de`` for a page whose
  links say ``www.münchen.de`` (the reference compared the strings).
* **No markers for links that cannot be opened.** ``tel:``, ``ftp:``, ``data:`` ... links keep
  their text without a ``【id†…】`` marker (the reference gave them ids and a bogus domain).
* **Text after a formula kept.** ``<math>`` is dropped, but not the text that follows it
  (the reference lost it with the element).
* **Error messages that name the fix**, and a ``No results for `query`.`` line on an empty
  search page.
* **Whitespace-normalised titles**, falling back to the host when a page has none.
* **``topn`` honoured** in ``search`` (the reference always asked for 20 results).
* **Each cursor keeps its own page.** Views are snapshots keyed by cursor, so ``open`` on an
  older search cursor follows that search's links (the reference kept pages by URL, and
  every search page has the URL ``""``); scrolling without ``loc`` resumes where that
  cursor's view began (the reference went back to line 0).
* **Search results are text.** Titles and snippets are HTML-escaped into the results page
  (the reference pasted the search API's strings in as HTML).
* **Links are opened as written.** ``arxiv.org`` is not rewritten to ``ar5iv.org`` (what the
  page shows is the same; only the fetched address differs).
* **Bounded pages.** Elements past ``max_nodes`` and HTML past ``max_text_chars`` are left
  out, so a huge DOM cannot stall the tool.
"""

from __future__ import annotations

import re
import textwrap
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["PageSnapshot", "find_in_page", "render_view", "view_end", "wrap"]

WIDTH = 80
FIND_CONTEXT = 4
_CHARS_PER_TOKEN = 128  # no o200k token decodes to more characters
# Link markers in page text, for find: the text of 【id†text】 / 【id†text†host】 is kept, a
# marker cut off at the very start or end of the page is dropped (or reduced to its text).
_LINK = re.compile(r"【\d+†([^†】]+)(?:†[^†】]+)?】")
_CUT_START = re.compile(r"\A[^【】]*】")
_CUT_END = re.compile(r"【\d*(?:†([^†】]*)(?:†[^†】]*)?)?(?=\n?\Z)")


@dataclass
class PageSnapshot:
    """One view target: an immutable text, its links, keyed by the cursor that shows it."""

    url: str
    title: str
    lines: list[str]
    links: dict[int, str] = field(default_factory=dict)
    kind: Literal["page", "search", "find"] = "page"
    # find results: link id -> (cursor of the searched page, line of the match)
    targets: dict[int, tuple[int, int]] = field(default_factory=dict)
    truncated: bool = False
    # lines that continue the line before them (the wrap broke a longer line there)
    continued: frozenset[int] = frozenset()


def wrap(text: str, width: int = WIDTH) -> list[str]:
    """``text`` split on newlines, each line wrapped at ``width`` with its whitespace kept."""
    return wrap_marked(text, width)[0]


def wrap_marked(text: str, width: int = WIDTH) -> tuple[list[str], frozenset[int]]:
    """:func:`wrap`, and the indices of the lines that continue the line before them."""
    lines: list[str] = []
    continued: set[int] = set()
    for raw in text.split("\n"):
        if not raw:
            lines.append("")
            continue
        pieces = wrap_line(raw, width)
        continued.update(range(len(lines) + 1, len(lines) + len(pieces)))
        lines.extend(pieces)
    return lines, frozenset(continued)


_CHUNK = textwrap.TextWrapper.wordsep_re


def wrap_line(line: str, width: int = WIDTH) -> list[str]:
    """``textwrap.wrap(line, width, replace_whitespace=False, drop_whitespace=False)``, the
    reference's wrap, without its per-chunk list shuffling (3x faster on long paragraphs):
    tabs expanded, the line cut into words, whitespace and hyphenated parts, packed greedily;
    a part longer than a line is cut at the width, or after its last hyphen that fits."""
    line = line.expandtabs()
    if len(line) <= width:
        return [line]
    chunks = [c for c in _CHUNK.split(line) if c]
    lines: list[str] = []
    i, n = 0, len(chunks)
    while i < n:
        start, used = i, 0
        while i < n and used + len(chunks[i]) <= width:
            used += len(chunks[i])
            i += 1
        current = chunks[start:i]
        if i < n and len(chunks[i]) > width:
            chunk, end = chunks[i], width - used
            hyphen = chunk.rfind("-", 0, end)
            if hyphen > 0 and chunk[:hyphen].strip("-"):
                end = hyphen + 1
            current.append(chunk[:end])
            chunks[i] = chunk[end:]
        lines.append("".join(current))
    return lines


def _token_lengths(encoding: Any, text: str) -> list[int]:
    """The number of characters each o200k token of ``text`` decodes to (alone)."""
    cache: dict[int, int] = _LENGTHS.setdefault(id(encoding), {})
    out = []
    for token in encoding.encode(text, allowed_special=set()):
        n = cache.get(token)
        if n is None:
            n = cache[token] = len(encoding.decode([token]))
        out.append(n)
    return out


_LENGTHS: dict[int, dict[int, int]] = {}


def view_end(lines: list[str], loc: int, encoding: Any, view_tokens: int = 1024) -> int:
    """One past the last line a view from ``loc`` shows: the line holding token ``view_tokens``
    (counting from 0) of the numbered text, or the page's end."""
    limit = (view_tokens + 1) * _CHARS_PER_TOKEN  # more text than view_tokens tokens can hold
    parts, size = [], -1
    for i in range(loc, len(lines)):
        if size >= limit:
            break
        parts.append(f"L{i}: {lines[i]}")
        size += len(parts[-1]) + 1
    numbered = "\n".join(parts)
    if len(numbered) <= view_tokens and loc + len(parts) == len(lines):
        return len(lines)  # at least one character per token: all of it fits
    lengths = _token_lengths(encoding, numbered[:limit])
    if len(lengths) <= view_tokens:
        return len(lines)
    offset = sum(lengths[:view_tokens])  # where token `view_tokens` starts
    return min(loc + numbered[:offset].count("\n") + 1, len(lines))


def _shown_url(url: str) -> str:
    url = urllib.parse.unquote(url)
    return url if len(url) <= 1024 else url[:1021] + "..."


def render_view(
    page: PageSnapshot,
    cursor: int,
    loc: int,
    num_lines: int | None,
    encoding: Any,
    view_tokens: int = 1024,
) -> str:
    """The ``[cursor] Title (url)`` view from line ``loc`` (``ValueError`` if out of range).

    ``encoding`` is the Harmony encoding (o200k tokens), used to size the view.
    """
    total = len(page.lines)
    loc = max(loc, 0)
    if loc >= total:
        raise ValueError(
            f"Invalid location parameter: `{loc}`. Cannot exceed page maximum of {total - 1}."
        )
    if num_lines is not None and num_lines > 0:
        end = min(loc + num_lines, total)
    else:
        end = view_end(page.lines, loc, encoding, view_tokens)
    header = f"[{cursor}] {page.title}" + (f" ({_shown_url(page.url)})" if page.url else "")
    body = "\n".join(f"L{i}: {page.lines[i]}" for i in range(loc, end))
    return f"{header}\n**viewing lines [{loc} - {end - 1}] of {total - 1}**\n\n{body}"


def strip_links(text: str) -> str:
    """``text`` with each link marker reduced to its text."""
    text = _CUT_START.sub("", text)
    text = _CUT_END.sub(lambda m: m.group(1) or "", text)
    return _LINK.sub(lambda m: m.group(1), text)


def _match_starts_here(lines: list[str], i: int, pattern: str, continued: frozenset[int]) -> bool:
    line = lines[i]
    if pattern in line.lower():
        return True
    # the wrap kept the whitespace, so a line and its continuations join back exactly
    joined, j = line, i + 1
    while j < len(lines) and j in continued and len(joined) - len(line) < len(pattern):
        joined += lines[j]
        j += 1
    return j > i + 1 and joined.lower().find(pattern, 0, len(line) - 1 + len(pattern)) != -1


def find_in_page(
    page: PageSnapshot, cursor: int, pattern: str, max_results: int = 50
) -> PageSnapshot:
    """The results page of a case-insensitive ``find`` of ``pattern`` in ``page``."""
    pattern = pattern.lower()
    lines = strip_links("\n".join(page.lines)).split("\n")
    # a wrap break inside a marker's †host part is gone after stripping: then line numbers
    # shift (as in the reference) and continuations are not known
    continued = page.continued if len(lines) == len(page.lines) else frozenset()
    chunks: list[str] = []
    targets: dict[int, tuple[int, int]] = {}
    i = 0
    while i < len(lines):
        if not _match_starts_here(lines, i, pattern, continued):
            i += 1
            continue
        k = len(chunks)
        snippet = "\n".join(lines[i : i + FIND_CONTEXT])
        chunks.append(f"# 【{k}†match at L{i}】\n{snippet}")
        targets[k] = (cursor, i)
        if len(chunks) == max_results:
            break
        i += FIND_CONTEXT
    text = "\n\n".join(chunks) if chunks else f"No `find` results for pattern: `{pattern}`"
    return PageSnapshot(
        url=f"{page.url}/find?pattern={urllib.parse.quote(pattern)}",
        title=f"Find results for text: `{pattern}` in `{page.title}`",
        lines=wrap(text),
        kind="find",
        targets=targets,
    )
