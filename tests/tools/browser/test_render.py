"""The page renderer, find and citations, pure (no Chromium): one test per rule of the
trained format, with the text the reference browser produced for the same HTML."""

from __future__ import annotations

import random
import textwrap

import pytest
from harmony_agent._encoding import load_encoding
from harmony_agent.result import RunResult, ToolCallRecord
from harmony_agent.tools.browser import citations, link_citations
from harmony_agent.tools.browser._extract import page_from_html, search_page
from harmony_agent.tools.browser._htmltext import html_to_text
from harmony_agent.tools.browser._render import (
    PageSnapshot,
    find_in_page,
    render_view,
    view_end,
    wrap,
    wrap_line,
)

URL = "http://127.0.0.1:8000/p"


def body(html: str, url: str = URL) -> str:
    """The page text after ``L0`` (empty), ``L1: URL: ...`` and a first paragraph."""
    lines = page_from_html("<p>Start</p>" + html, url).lines
    assert lines[:2] == ["", f"URL: {url}"] and lines[2].rstrip() == "Start"
    return "\n".join(lines[4:])


@pytest.mark.parametrize(
    ("row", "html", "text"),
    [
        (1, "<pre>def f():\n    return 1</pre>", "    def f():\n        return 1"),
        (2, "<p>run <code>make</code> then <kbd>Enter</kbd></p>", "run `make` then `Enter`"),
        (3, '<ol start="7"><li>seven</li><li>eight</li></ol>', "  7. seven \n  8. eight"),
        (
            4,
            "<ul><li>a<ul><li>b<ol><li>c</li></ol></li></ul></li><li>d</li></ul>",
            "  * a \n    * b \n      1. c \n  * d",
        ),
        (5, "<ul><li><p>text</p></li></ul>", "  * text"),
        (6, "<dl><dt>Term</dt><dd>Definition</dd></dl>", "Term \n    Definition"),
        (
            7,
            "<table><tr><th>Month</th><th>mm</th></tr><tr><td>May</td><td>61</td></tr></table>",
            "Month mm   \nMay 61",
        ),
        (
            8,
            "<p>of Zürich.<sup>[2]</sup> x<sup>2</sup> H<sub>2</sub>O"
            "<sup><a href='/w'>citation needed</a></sup></p>",
            "of Zürich.[2] x^{2} H_{2}O【0†citation needed】",
        ),
        (9, "<blockquote><p>quoted</p></blockquote>", "> quoted"),
        (10, "<p>a</p><hr><p>b</p>", "a \n\n* * *\n\nb"),
        (
            11,
            "<p>" + "word " * 14 + "state-of-the-art</p>",
            "word " * 14 + "state-of-\nthe-art",
        ),
        (
            17,
            "<p><img alt='first'> <a href='/x'><img alt='in link'> Photos</a> <img alt='after'></p>",
            "[Image 0: first] 【0† Photos】 [Image 1: after]",
        ),
        (
            18,
            "<p><img alt='' title='t'> <img title='only title'></p>",
            "[Image 0] [Image 1: only title]",
        ),
        (
            19,
            "<figure><img alt='Map'><figcaption>Figure 1</figcaption></figure>",
            "[Image 0: Map]Figure 1",
        ),
        (
            20,
            "<p><a href='http://127.0.0.1:9000/a'>other port</a> <a href='/b'>same</a></p>",
            "【0†other port†127.0.0.1:9000】 【1†same】",
        ),
        (
            21,
            "<p><a href='https://www.münchen.de/'>München</a></p>",
            "【0†München†www.münchen.de】",
        ),
        (22, "<p>a\U0001f600b\U000e0067c\U00100000d</p>", "ab\U000e0067c\U00100000d"),
        (23, "<p><b>Acme</b><i>Phone</i> $999<span>USD</span></p>", "Acme Phone $999 USD"),
    ],
)
def test_format_rule(row, html, text):
    assert body(html) == text, f"row {row}"


def test_links_ids_domains_and_what_gets_no_marker():
    page = page_from_html(
        "<p><a href='/a'>one</a> <a href='/a'>again</a> <a href='#top'>top</a> "
        "<a href='mailto:x@example.org'>mail</a> <a href='tel:+1'>call</a> "
        "<a href='ftp://example.org/f'>ftp</a> <a href='https://example.org/x'>out</a> "
        "<a href='/d'>a † dagger</a> <a href='/img'><img alt='logo'></a></p>",
        URL,
    )
    assert page.lines[2] == (
        "【0†one】 【0†again】 top mail call ftp 【1†out†example.org】 【2†a ‡ dagger】 [Image 0:"
    )
    assert page.lines[3] == " logo]"  # the wrap keeps the space, at the start of the next line
    assert page.links == {
        0: "http://127.0.0.1:8000/a",
        1: "https://example.org/x",
        2: "http://127.0.0.1:8000/d",
    }


def test_same_site_ignores_case_and_idn_spelling():
    page = page_from_html(
        "<p><a href='https://www.münchen.de/rathaus'>Rathaus</a> <a href='/a'>A</a> "
        "<a href='http://WWW.XN--MNCHEN-3YA.DE:8080/'>port</a></p>",
        "https://www.xn--mnchen-3ya.de/",
    )
    assert page.lines[2] == "【0†Rathaus】 【1†A】 【2†port†WWW.XN--MNCHEN-3YA.DE:8080】"


def test_markers_in_page_text_are_escaped_and_titles_normalised():
    page = page_from_html(
        "<title>\n  A   【title】\n</title><p>【0†fake】 ◼ a\u200bb</p>", "http://h.example/"
    )
    assert page.title == "A 〖title〗"
    assert page.lines[2] == "〖0†fake〗 ◾ ab"
    assert page_from_html("<p>x</p>", "http://127.0.0.1:9/").title == "127.0.0.1:9"


def test_html_to_text_escapes_like_the_trained_text():
    assert html_to_text("<p>1. one</p><p>- two</p><p>+ three</p><p>a\\*b</p>") == (
        "1\\. one\n\n\\- two\n\n\\+ three\n\na\\\\*b"
    )
    assert html_to_text("<p>x<del>old</del>new <q>q</q></p>") == 'x~~old~~ new "q"'
    assert html_to_text("<p><abbr title='Hypertext'>HTML</abbr></p>") == (
        "HTML\n  *[HTML]: Hypertext"
    )


def test_empty_and_broken_html_give_a_page():
    for markup in ("", "   ", "<html>", "<p>unclosed <b>bold"):
        page = page_from_html(markup, URL)
        assert page.lines[:2] == ["", f"URL: {URL}"]
    assert page_from_html("<p>unclosed <b>bold", URL).lines[2] == "unclosed bold"
    xhtml = '<?xml version="1.0" encoding="utf-8"?><html><body><p>Grüße</p></body></html>'
    assert page_from_html(xhtml, URL).lines[2] == "Grüße"
    assert page_from_html("<!-- nothing -->", URL).lines == ["", f"URL: {URL}", ""]


def test_wrap_line_is_textwrap_as_the_reference_called_it():
    rng = random.Random(20)
    alphabet = ["a", "b", "é", "-", "--", " ", "  ", "\t", ".", "【", "†", "x" * 30, "co-op"]
    for _ in range(3000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120)))
        expected = textwrap.wrap(line, width=80, replace_whitespace=False, drop_whitespace=False)
        assert wrap_line(line) == expected, repr(line)
    for width in (1, 5, 17):
        assert wrap_line("ab-cd efg-hij " * 5, width) == textwrap.wrap(
            "ab-cd efg-hij " * 5, width=width, replace_whitespace=False, drop_whitespace=False
        )


def test_wrap_keeps_whitespace_and_breaks_after_hyphens():
    assert wrap("a  b\n\n" + "x" * 85) == ["a  b", "", "x" * 80, "x" * 5]
    assert wrap("well-" * 20) == ["well-" * 16, "well-" * 4]


class _CharEncoding:
    """One token per character: token k of a text is its character k."""

    def encode(self, text, allowed_special=()):
        return [ord(c) for c in text]

    def decode(self, tokens):
        return "".join(map(chr, tokens))


def test_a_view_ends_on_the_line_holding_the_token_past_the_budget():
    lines = [f"line {i:02d}" for i in range(10)]  # "L0: line 00" is 11 characters, + "\n"
    enc = _CharEncoding()
    assert view_end(lines, 0, enc, 11) == 1  # token 11 is the newline ending L0
    assert view_end(lines, 0, enc, 12) == 2  # token 12 starts L1: L1 is shown whole
    assert view_end(lines, 0, enc, 23) == 2
    assert view_end(lines, 0, enc, 24) == 3
    assert view_end(lines, 0, enc, 500) == 10  # the page is shorter than the budget
    assert view_end(lines, 8, enc, 12) == 10


def test_view_header_decodes_the_url_and_validates_loc():
    page = PageSnapshot(
        url="http://h.example/Z%C3%BCrich%20night%20train", title="Trains", lines=["a", "b", "c"]
    )
    enc = load_encoding()
    assert render_view(page, 4, 1, 1, enc) == (
        "[4] Trains (http://h.example/Zürich night train)\n**viewing lines [1 - 1] of 2**\n\nL1: b"
    )
    with pytest.raises(
        ValueError, match=r"Invalid location parameter: `3`\. Cannot exceed page maximum of 2\."
    ):
        render_view(page, 4, 3, None, enc)
    long = PageSnapshot(url="http://h.example/" + "a" * 2000, title="T", lines=["x"])
    header = render_view(long, 0, 0, None, enc).split("\n")[0]
    assert len(header) == len("[0] T ()") + 1024 and header.endswith("...)")


def test_find_results_format():
    text = "\n".join(f"line {i} {'needle' if i in (3, 5, 9) else 'hay'}" for i in range(12))
    page = PageSnapshot(url=URL, title="Hay", lines=wrap(text))
    found = find_in_page(page, 2, "NEEDLE")
    assert found.title == "Find results for text: `needle` in `Hay`"
    assert found.url == f"{URL}/find?pattern=needle"
    # the scan resumes 4 lines after a match: line 5 is inside the first result's context
    assert "\n".join(found.lines) == (
        "# 【0†match at L3】\nline 3 needle\nline 4 hay\nline 5 needle\nline 6 hay\n\n"
        "# 【1†match at L9】\nline 9 needle\nline 10 hay\nline 11 hay"
    )
    assert found.targets == {0: (2, 3), 1: (2, 9)}
    none = find_in_page(page, 2, "Zebra")
    assert none.lines == ["No `find` results for pattern: `zebra`"] and none.targets == {}


def test_find_strips_link_markers_and_matches_across_a_wrap():
    html = "<p>See <a href=/m>the harbour map</a> and " + "word " * 10 + "the lighthouse log.</p>"
    page = page_from_html(html, URL)
    assert page.lines[2:] == [
        "See 【0†the harbour map】 and word word word word word word word word word word ",
        "the lighthouse log.",
    ]
    found = find_in_page(page, 0, "harbour map and")
    assert found.lines[:2] == [
        "# 【0†match at L2】",
        "See the harbour map and word word word word word word word word word word ",
    ]
    across = find_in_page(page, 0, "word the lighthouse")  # split by the wrap
    assert across.lines[0] == "# 【0†match at L2】" and across.targets == {0: (0, 2)}
    assert find_in_page(page, 0, "log. see").targets == {}  # the page's end is no wrap


def test_search_page_lists_results_with_their_hosts():
    page = search_page(
        "tide <times>",
        [
            ("Tide tables", "https://tides.example.org/kerrow", "High water at 06:12."),
            ("Local <b>news</b>", "http://127.0.0.1:8000/news", "Ferry & storms"),
        ],
    )
    assert page.kind == "search" and page.url == "" and page.title == "tide <times>"
    assert page.lines == [
        "",
        "URL: ",
        "# Search Results",
        "",
        "  * 【0†Tide tables†tides.example.org】 High water at 06:12.",
        "  * 【1†Local <b>news</b>†127.0.0.1:8000】 Ferry & storms",
    ]
    assert page.links == {0: "https://tides.example.org/kerrow", 1: "http://127.0.0.1:8000/news"}
    empty = search_page("nothing", [])
    assert empty.lines[-1] == "No results for `nothing`."


def _result(*outputs: tuple[str, str], text: str) -> RunResult:
    calls = [
        ToolCallRecord(
            call_id=str(i),
            turn=0,
            recipient=name,
            name=name,
            channel="analysis",
            raw_arguments="{}",
            arguments={},
            output=output,
            ok=True,
        )
        for i, (name, output) in enumerate(outputs)
    ]
    return RunResult(run_id="r", final_text=text, tool_calls=calls)


def test_citations_resolve_views_with_decoded_urls_and_parentheses():
    enc = load_encoding()
    page = PageSnapshot(
        url="http://h.example/Night%20train",
        title="Trains (2024)",
        lines=["", "URL: x", "Fast.", "Cheap."],
    )
    search = search_page("trains", [("Trains", "http://h.example/t", "s")])
    views = [
        ("browser.search", render_view(search, 0, 0, None, enc)),
        ("browser.open", render_view(page, 1, 0, None, enc)),
    ]
    text = "It is fast 【1†L2-L3】 and listed 【0†L4】; unknown 【7†L1】."
    result = _result(*views, text=text)
    first, second, third = citations(text, result)
    assert (first.cursor, first.start, first.end) == (1, 2, 3)
    assert first.url == "http://h.example/Night train" and first.title == "Trains (2024)"
    assert first.lines == ("Fast.", "Cheap.")
    assert (
        second.url is None and second.title == "trains" and second.lines[0].startswith("  * 【0†")
    )
    assert third.url is None and third.lines == ()
    assert link_citations(text, result) == (
        "It is fast  ([Trains (2024)](http://h.example/Night%20train)) and listed 【0†L4】; "
        "unknown 【7†L1】."
    )
