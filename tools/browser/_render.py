"""Page text in the format gpt-oss's browser was trained on. Pure: no I/O.

A page becomes text (headings as ``#``, list items as ``  * ``, table rows with ``|``), links
become ``【id†text】`` (same domain) or ``【id†text†domain】``, images ``[Image n: alt]``; the
text starts with ``\\nURL: {url}\\n``, is wrapped at 80 columns and numbered ``L{i}: ``, and a
view shows about 1024 tokens of it under a ``[cursor] Title (url)`` header and a
``**viewing lines [a - b] of N**`` line.
"""

from __future__ import annotations

import re
import textwrap
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["EXTRACT_JS", "PageSnapshot", "build_page", "find_in_page", "render_view", "sanitize"]

# Walks the rendered DOM (so JavaScript-built content is there) and marks links with control
# characters that Python replaces by 【id†text】 markers. Bounded: at most `maxNodes` elements
# and `maxChars` characters, so a huge DOM cannot stall the tool.
EXTRACT_JS = r"""
([maxNodes, maxChars]) => {
  const out = []; const links = []; let images = 0; let nodes = 0; let size = 0; let cut = false;
  const SKIP = new Set(["SCRIPT","STYLE","NOSCRIPT","TEMPLATE","SVG","MATH","HEAD","IFRAME",
                        "OBJECT","CANVAS","VIDEO","AUDIO","SELECT","OPTION","BUTTON"]);
  const BLOCK = new Set(["P","DIV","SECTION","ARTICLE","MAIN","HEADER","FOOTER","NAV","ASIDE",
    "UL","OL","TABLE","BLOCKQUOTE","PRE","FORM","FIGURE","FIGCAPTION",
    "DL","DT","DD","HR","ADDRESS","DETAILS","SUMMARY","CAPTION"]);
  const push = (s) => { if (cut) return; size += s.length; if (size > maxChars) { cut = true; return; } out.push(s); };
  const walk = (node) => {
    if (cut) return;
    if (node.nodeType === 3) { push(node.nodeValue.replace(/\s+/g, " ")); return; }
    if (node.nodeType !== 1) return;
    if (++nodes > maxNodes) { cut = true; return; }
    const tag = node.tagName;
    if (SKIP.has(tag) || node.hidden || node.getAttribute("aria-hidden") === "true") return;
    if (typeof node.checkVisibility === "function" && !node.checkVisibility()) return;
    const kids = () => { for (const c of node.childNodes) walk(c); };
    if (/^H[1-6]$/.test(tag)) { push("\n\n" + "#".repeat(+tag[1]) + " "); kids(); push("\n\n"); return; }
    if (tag === "LI") { push("\n\u0004* "); kids(); return; }
    if (tag === "BR") { push("\n"); return; }
    if (tag === "TR") { push("\n"); kids(); return; }
    if (tag === "TD" || tag === "TH") { kids(); push(" | "); return; }
    if (tag === "IMG") {
      const alt = (node.getAttribute("alt") || node.getAttribute("title") || "").trim();
      push(`[Image ${images++}${alt ? ": " + alt.replace(/\s+/g, " ") : ""}]`); return;
    }
    if (tag === "A" && node.hasAttribute("href")) {
      push("\u0001" + links.length + "\u0002"); links.push([node.href, node.getAttribute("href")]);
      kids(); push("\u0003"); return;
    }
    if (tag === "SUP") { push("^{"); kids(); push("}"); return; }
    if (tag === "SUB") { push("_{"); kids(); push("}"); return; }
    if (BLOCK.has(tag)) { push("\n\n"); kids(); push("\n\n"); return; }
    kids();
  };
  if (document.body) walk(document.body);
  return {title: document.title || "", text: out.join(""), links, truncated: cut};
}
"""

_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_LINK = re.compile("\x01(\\d+)\x02(.*?)\x03", re.S)
_MARKER = re.compile("【(\\d+)†([^】]*?)(?:†[^】]*)?】")
_STRAY = re.compile("[\x01\x02\x03]")
_ONLY_IMAGES = re.compile(r"^(\s*\[Image \d+(: [^\]]*)?\]\s*)+$")


def sanitize(text: str) -> str:
    """Keep page text from imitating markers: astral characters dropped, 【】 escaped."""
    text = _ASTRAL.sub("", text)
    return (
        text.replace("【", "〖")
        .replace("】", "〗")
        .replace("◼", "◾")
        .replace("\u200b", "")
        .replace("\u200c", "")
        .replace("\u200d", "")
        .replace("\ufeff", "")
    )


def _domain(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or ""


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


def wrap(text: str, width: int = 80) -> list[str]:
    lines: list[str] = []
    for raw in text.split("\n"):
        if not raw:
            lines.append("")
            continue
        lines.extend(
            textwrap.wrap(
                raw,
                width=width,
                replace_whitespace=False,
                drop_whitespace=False,
                break_on_hyphens=False,
            )
            or [""]
        )
    return lines


def _tidy(text: str) -> str:
    out: list[str] = []
    for line in text.split("\n"):
        line = re.sub(r"[ \t\r\f\v]+", " ", line).strip()
        line = re.sub(r"(\s*\|\s*)+$", "", line)  # the trailing cell separator of a row
        if line.startswith("\x04"):
            line = "  " + line[1:].lstrip()  # a list item: `  * text`
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def build_page(
    url: str, title: str, raw_text: str, raw_links: list[list[str]], truncated: bool = False
) -> PageSnapshot:
    """From :data:`EXTRACT_JS`'s output to a numbered page with link ids."""
    page_domain = _domain(url)
    ids: dict[str, int] = {}
    links: dict[int, str] = {}

    def marker(m: re.Match[str]) -> str:
        index, text = int(m.group(1)), _STRAY.sub("", m.group(2))
        text = re.sub(r"\s+", " ", text).strip().replace("†", "‡")
        if index >= len(raw_links):
            return text
        absolute, written = raw_links[index]
        scheme = urllib.parse.urlsplit(absolute).scheme
        if scheme not in ("http", "https") or not text or (written or "").startswith("#"):
            return text
        if _ONLY_IMAGES.match(text):
            return text  # image-only anchors get no link marker
        target = urllib.parse.urldefrag(absolute).url
        if target == urllib.parse.urldefrag(url).url and "#" in (written or ""):
            return text
        link_id = ids.setdefault(target, len(ids))
        links[link_id] = target
        domain = _domain(target)
        return (
            f"【{link_id}†{text}】" if domain == page_domain else f"【{link_id}†{text}†{domain}】"
        )

    body = _LINK.sub(marker, sanitize(raw_text))
    body = _tidy(_STRAY.sub("", body))
    title = sanitize(title).strip() or page_domain or url
    text = f"\nURL: {url}\n{body}"
    return PageSnapshot(url=url, title=title, lines=wrap(text), links=links, truncated=truncated)


def render_view(
    page: PageSnapshot,
    cursor: int,
    loc: int,
    num_lines: int | None,
    count_tokens: Callable[[str], int],
    view_tokens: int = 1024,
) -> str:
    """The ``[cursor] Title (url)`` view from line ``loc`` (``ValueError`` if out of range)."""
    last = len(page.lines) - 1
    if loc < 0:
        loc = 0
    if loc > last:
        raise ValueError(
            f"Invalid location parameter: `{loc}`. Cannot exceed page maximum of {last}."
        )
    if num_lines is not None and num_lines > 0:
        end = min(last, loc + num_lines - 1)
    else:
        end, used = loc, 0
        for i in range(loc, last + 1):
            used += count_tokens(f"L{i}: {page.lines[i]}\n")
            end = i
            if used >= view_tokens:
                break
    header = f"[{cursor}] {page.title}" + (f" ({page.url})" if page.url else "")
    body = "\n".join(f"L{i}: {page.lines[i]}" for i in range(loc, end + 1))
    return f"{header}\n**viewing lines [{loc} - {end}] of {last}**\n\n{body}"


def _plain(lines: list[str]) -> tuple[str, list[int]]:
    """The page's text without link syntax, with each character's line number."""
    joined = "\n".join(lines)
    line_of: list[int] = []
    n = 0
    for ch in joined:
        line_of.append(n)
        if ch == "\n":
            n += 1
    keep_text: list[str] = []
    keep_line: list[int] = []
    pos = 0
    for m in _MARKER.finditer(joined):
        keep_text.append(joined[pos : m.start()])
        keep_line.extend(line_of[pos : m.start()])
        text_start = m.start(2)
        keep_text.append(m.group(2))
        keep_line.extend(line_of[text_start : text_start + len(m.group(2))])
        pos = m.end()
    keep_text.append(joined[pos:])
    keep_line.extend(line_of[pos:])
    return "".join(keep_text), keep_line


def find_in_page(
    page: PageSnapshot, cursor: int, pattern: str, max_results: int = 50
) -> PageSnapshot:
    """Case-insensitive matches of ``pattern`` — also when it wraps across lines."""
    plain, line_of = _plain(page.lines)
    words = pattern.split()
    regex = re.compile(r"\s+".join(re.escape(w) for w in words), re.I) if words else None
    plain_lines = plain.split("\n")
    out: list[str] = []
    targets: dict[int, tuple[int, int]] = {}
    last_line = -10
    if regex is not None:
        for m in regex.finditer(plain):
            line = line_of[m.start()] if m.start() < len(line_of) else 0
            if line <= last_line + 4 and targets:
                continue  # already shown in the previous match's context
            k = len(targets)
            targets[k] = (cursor, line)
            out.append(f"# 【{k}†match at L{line}】")
            out.extend(plain_lines[line : line + 4])
            last_line = line
            if len(targets) >= max_results:
                break
    quoted = urllib.parse.quote(pattern)
    title = f"Find results for text: `{pattern}` in `{page.title}`"
    if not targets:
        lines = [f"No `find` results for pattern: `{pattern}`"]
    else:
        lines = out
    return PageSnapshot(
        url=f"{page.url}/find?pattern={quoted}",
        title=title,
        lines=lines,
        kind="find",
        targets=targets,
    )


def search_page(query: str, results: list[tuple[str, str, str]]) -> PageSnapshot:
    """A results page: each result a link ``【id†title†domain】`` and its snippet."""
    lines = ["", "URL: ", "# Search Results", ""]
    links: dict[int, str] = {}
    for i, (title, url, snippet) in enumerate(results):
        links[i] = url
        title = sanitize(re.sub(r"\s+", " ", title)).strip().replace("†", "‡") or url
        snippet = sanitize(re.sub(r"\s+", " ", snippet)).strip()
        lines.extend(wrap(f"  * 【{i}†{title}†{_domain(url)}】 {snippet}".rstrip()))
    if not results:
        lines.append(f"No results for `{query}`.")
    return PageSnapshot(url="", title=sanitize(query), lines=lines, links=links, kind="search")
