"""Citations ``【cursor†La-Lb】`` in an answer, resolved to the pages the browser showed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Citation", "citations", "link_citations"]

_CITE = re.compile(r"【(\d+)†L(\d+)(?:-L(\d+))?】")
# `[cursor] Title (url)`: the URL is shown percent-decoded, so it may hold spaces; the title may
# hold parentheses, hence the last ` (scheme://...)` of the line (greedy title). A search page
# has no URL.
_HEADER = re.compile(r"^\[(\d+)\] (?:(.*) \(([a-zA-Z][a-zA-Z0-9+.-]*://[^\n]*)\)|(.*))$", re.M)


@dataclass(frozen=True, slots=True)
class Citation:
    cursor: int
    start: int
    end: int
    url: str | None
    title: str | None
    lines: tuple[str, ...]  # the cited lines, as the model saw them (when it saw them)
    span: tuple[int, int]  # where the marker is in the text


def _views(result: Any) -> dict[int, tuple[str | None, str, dict[int, str]]]:
    views = {}
    for call in result.tool_calls:
        if not (call.name or "").startswith("browser.") or not call.ok:
            continue
        m = _HEADER.search(call.output)
        if m is None:
            continue
        lines = dict(re.findall(r"^L(\d+): (.*)$", call.output, re.M))
        views[int(m.group(1))] = (
            m.group(3) or None,
            m.group(2) if m.group(3) else m.group(4),
            {int(k): v for k, v in lines.items()},
        )
    return views


def citations(text: str, result: Any) -> list[Citation]:
    """Every citation in ``text``, with the URL and lines of the view it points at."""
    views = _views(result)
    out = []
    for m in _CITE.finditer(text):
        cursor, start = int(m.group(1)), int(m.group(2))
        end = int(m.group(3) or start)
        url, title, lines = views.get(cursor, (None, None, {}))
        cited = tuple(lines[i] for i in range(start, end + 1) if i in lines)
        out.append(Citation(cursor, start, end, url, title, cited, (m.start(), m.end())))
    return out


def link_citations(text: str, result: Any) -> str:
    """``text`` with each resolvable citation replaced by a Markdown link to its page."""
    parts, pos = [], 0
    for c in citations(text, result):
        if not c.url:
            continue
        parts.append(text[pos : c.span[0]])
        # the view showed the URL decoded: a space would end a Markdown link target
        parts.append(f" ([{c.title or c.url}]({c.url.replace(' ', '%20')}))")
        pos = c.span[1]
    parts.append(text[pos:])
    return "".join(parts)
