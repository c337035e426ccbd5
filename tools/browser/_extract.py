"""A fetched page (its HTML) to the numbered text gpt-oss's browser was trained on.

Two halves. :data:`EXTRACT_JS` runs in the page: it copies the rendered DOM (so content that
scripts built is there), leaves out what the page does not show, and returns the copy's
HTML. :func:`page_from_html` is pure: it turns HTML (that copy, or a static file) into a
:class:`PageSnapshot` the way the reference browser did:

1. characters U+10000-U+1FFFF are removed; ``【``/``】`` become ``〖``/``〗``, ``◼`` ``◾``, and
   zero-width spaces go, so page text cannot imitate link or citation markers;
2. each ``<a href>`` becomes ``【id†text】`` (same host and port as the page, in any case or
   IDN spelling) or
   ``【id†text†host:port】`` (another one), the host as written (``www.münchen.de``), its text
   the anchor's text nodes joined by single spaces, ``†`` written ``‡``; an anchor with no
   text (an image link) stays as it is, a ``#fragment`` link becomes its text; each distinct
   absolute URL gets the next id;
3. the images left (not those inside replaced links) become ``[Image n: alt]``, ``[Image n]``
   when ``alt`` is empty; ``<math>`` is dropped;
4. ``<sup>``/``<sub>`` holding only letters, digits, ``_`` and ``-`` become ``^{x}``/``_{x}``; a
   space is put before a run of tags that sits between two word characters;
5. the HTML becomes text (:mod:`._htmltext`), blank lines collapse, and ``\\nURL: {url}\\n``
   is put in front.
"""

from __future__ import annotations

import html as html_lib
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import lxml.etree
import lxml.html

from ._htmltext import html_to_text
from ._render import PageSnapshot, wrap_marked

__all__ = [
    "EXTRACT_JS",
    "page_from_dom",
    "page_from_html",
    "sanitize",
    "search_html",
    "search_page",
]

# Runs in the page. Hidden elements (not rendered: display:none, [hidden], closed dialogs,
# noscript) are marked, the document is cloned, the marked copies removed, scripts and styles
# emptied (they show nothing and only cost size), and the clone serialised. Closed <details>
# are opened while visibility is measured, so their bodies count as shown (the reference
# reads them); aria-hidden does not hide text on screen, so it is kept. Bounded: elements
# after the first `maxNodes` are left out, and the HTML is cut at `maxChars`.
EXTRACT_JS = r"""
([maxNodes, maxChars]) => {
  const MARK = "data-harmony-agent-hidden";
  const title = document.title || "";
  const body = document.body;
  if (!body) return {title, html: document.documentElement ? document.documentElement.outerHTML : "", truncated: false};
  const closed = [...body.querySelectorAll("details:not([open])")];
  for (const d of closed) d.open = true;
  const marked = [];
  let count = 0, truncated = false;
  // a hidden element is marked and its subtree not visited
  const walker = document.createTreeWalker(body, NodeFilter.SHOW_ELEMENT, {acceptNode(el) {
    count += 1;
    let hide = false;
    if (count > maxNodes) { hide = true; truncated = true; }
    else if (typeof el.checkVisibility === "function" && !el.checkVisibility()) hide = true;
    if (!hide) return NodeFilter.FILTER_ACCEPT;
    el.setAttribute(MARK, ""); marked.push(el);
    return NodeFilter.FILTER_REJECT;
  }});
  while (walker.nextNode()) {}
  for (const d of closed) d.open = false;
  const copy = document.documentElement.cloneNode(true);
  for (const el of marked) el.removeAttribute(MARK);
  for (const el of copy.querySelectorAll("[" + MARK + "]")) el.remove();
  for (const el of copy.querySelectorAll("script, style")) el.textContent = "";
  let html = copy.outerHTML;
  if (html.length > maxChars) { html = html.slice(0, maxChars); truncated = true; }
  return {title, html, truncated};
}
"""

_ASTRAL = re.compile("[\U00010000-\U0001ffff]")
_SPECIAL = {"【": "〖", "】": "〗", "◼": "◾", "\u200b": ""}
_SPECIAL_RE = re.compile("|".join(map(re.escape, _SPECIAL)))
_SUP = re.compile(r"<sup( [^>]*)?>([\w\-]+)</sup>")
_SUB = re.compile(r"<sub( [^>]*)?>([\w\-]+)</sub>")
_TAGS_BETWEEN_WORDS = re.compile(r"(?<=\w)((<[^>]*>)+)(?=\w)")
_BLANK_LINE = re.compile(r"^\s+$", re.M)
_NEWLINES = re.compile(r"\n(\s*\n)+")
_IMAGE_MARK = re.compile(r"【@[^】]+】")
_WS = re.compile(r"\s+")
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*\?>")
_PASS_THROUGH = ("mailto:", "javascript:")


def sanitize(text: str) -> str:
    """Page text that cannot imitate markers: astral-plane emoji dropped, 【】 escaped."""
    return _SPECIAL_RE.sub(lambda m: _SPECIAL[m.group(0)], _ASTRAL.sub("", text))


def host(url: str) -> str:
    """The host and port of ``url`` as written (``127.0.0.1:8000``, ``www.münchen.de``)."""
    return urllib.parse.urlsplit(url if "http" in url else "http://" + url).netloc


def _site(netloc: str) -> str:
    """``netloc`` compared as one site: lower case, IDN labels decoded (Chromium reports a
    page's address as ``www.xn--mnchen-3ya.de`` while its links say ``www.münchen.de``)."""
    netloc = netloc.lower()
    if "xn--" in netloc:
        try:
            netloc = netloc.encode("ascii").decode("idna")
        except UnicodeError:
            pass
    return netloc


def _replace_with_text(node: Any, text: str) -> None:
    """Put ``text`` where ``node`` was (keeping the text after it) and drop the node."""
    parent, previous = node.getparent(), node.getprevious()
    text += node.tail or ""
    if previous is None:
        parent.text = (parent.text or "") + text
    else:
        previous.tail = (previous.tail or "") + text
    parent.remove(node)


def _drop(node: Any) -> None:
    """Remove ``node`` but keep the text that follows it."""
    _replace_with_text(node, "")


def _link_text(node: Any) -> str:
    return _WS.sub(" ", " ".join(node.itertext())).replace("†", "‡")


def _links(root: Any, page_url: str) -> dict[int, str]:
    page_site = _site(host(page_url))
    ids: dict[str, int] = {}
    for a in list(root.iter("a")):
        href = a.get("href")
        if href is None or a.getparent() is None or href.startswith(_PASS_THROUGH):
            continue
        text = _link_text(a)
        if not _IMAGE_MARK.sub("", text):
            continue  # nothing but an image: left to the image rule
        if href.startswith("#"):
            _replace_with_text(a, text)
            continue
        try:
            target = urllib.parse.urljoin(page_url, href)
            scheme = urllib.parse.urlsplit(target).scheme
        except ValueError:
            continue
        if scheme not in ("http", "https") or not host(target):
            continue  # tel:, ftp:, data: ... cannot be opened: the text stays, unmarked
        link_id = ids.setdefault(target, len(ids))
        target_host = host(target)
        marker = (
            f"【{link_id}†{text}】"
            if _site(target_host) == page_site
            else f"【{link_id}†{text}†{target_host}】"
        )
        _replace_with_text(a, marker)
    return {i: url for url, i in ids.items()}


def _images(root: Any) -> None:
    for n, img in enumerate(list(root.iter("img"))):
        name = img.get("alt", img.get("title"))
        _replace_with_text(img, f"[Image {n}: {name}]" if name else f"[Image {n}]")


def _title(root: Any, given: str | None, page_url: str) -> str:
    title = given
    if not title:
        element = root.find(".//title")
        title = (element.text or "") if element is not None else ""
    return " ".join(sanitize(title).split()) or (host(page_url) if page_url else "")


def page_from_html(
    markup: str, url: str, title: str | None = None, *, truncated: bool = False
) -> PageSnapshot:
    """The page the model sees for ``markup`` fetched from ``url`` (pure; see the module doc)."""
    # lxml refuses a str that declares its own encoding: the text is decoded already
    markup = _XML_DECLARATION.sub("", sanitize(markup))
    try:
        root = lxml.html.fromstring(markup) if markup.strip() else None
    except lxml.etree.ParserError:  # nothing but comments or whitespace
        root = None
    if root is None:
        root = lxml.html.fromstring("<html><body></body></html>")
    final_title = _title(root, title, url)
    links = _links(root, url)
    _images(root)
    for node in list(root.iter("math")):
        _drop(node)
    cleaned = lxml.etree.tostring(root, encoding="UTF-8").decode()
    cleaned = _SUP.sub(r"^{\2}", cleaned)
    cleaned = _SUB.sub(r"_{\2}", cleaned)
    cleaned = _TAGS_BETWEEN_WORDS.sub(r" \1", cleaned)
    text = _NEWLINES.sub("\n\n", _BLANK_LINE.sub("", html_to_text(cleaned)))
    lines, continued = wrap_marked(f"\nURL: {url}\n{text}")
    return PageSnapshot(
        url=url,
        title=final_title,
        lines=lines,
        links=links,
        truncated=truncated,
        continued=continued,
    )


def page_from_dom(url: str, data: Mapping[str, Any]) -> PageSnapshot:
    """The page for what :data:`EXTRACT_JS` returned from the document at ``url``."""
    return page_from_html(
        data.get("html") or "",
        url,
        data.get("title") or None,
        truncated=bool(data.get("truncated")),
    )


def search_html(results: list[tuple[str, str, str]]) -> str:
    """The results page as the reference's backends wrote it: one ``<li>`` link per result."""
    items = "".join(
        f"<li><a href='{html_lib.escape(url)}'>{html_lib.escape(title)}</a> "
        f"{html_lib.escape(snippet)}</li>"
        for title, url, snippet in results
    )
    return f"\n<html><body>\n<h1>Search Results</h1>\n<ul>\n{items}\n</ul>\n</body></html>\n"


def search_page(query: str, results: list[tuple[str, str, str]]) -> PageSnapshot:
    """The page of search ``results`` (title, url, snippet): ``【id†title†host】 snippet``."""
    page = page_from_html(search_html(results), "", query)
    page.kind = "search"
    if not results:
        page.lines.append(f"No results for `{sanitize(query)}`.")
    return page
