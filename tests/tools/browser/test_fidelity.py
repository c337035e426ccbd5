"""Golden comparison against the reference browser itself (gpt-oss's simple_browser).

Every page of the corpus, every view of it (scrolling through the whole page, plus a
``num_lines`` view) and its ``find`` patterns: our text is byte-identical to the reference's,
except where a documented deviation applies; those cases assert the difference exactly.
"""

from __future__ import annotations

import re

import pytest

from .reference import (
    corpus_html,
    corpus_pages,
    our_find,
    our_page,
    our_view,
    ref_find,
    ref_lines,
    ref_page,
    ref_pc,
    ref_view,
    view_locs,
)

BASE = "http://127.0.0.1:8000"
# Pages where a documented deviation changes the text (see the browser module docstring).
DEVIATING = {"deviations"}
FIND = {
    "article": ["granite", "KEEPER", "visitor page", "no such phrase"],
    "code": ["fibonacci", "    a, b", "notes.txt", "\\-"],
    "definitions": ["lens", "~~", "NLB"],
    "deviations": ["office", "square metres"],
    "docs": ["station", "pip install", "#"],
    "images": ["[image", "photo archive", "figure"],
    "links": ["article", "example.org", "section 2"],
    "lists": ["jumper", "3. ", "paragraph"],
    "long": ["keeper", "note 4", "the end"],
    "messy": ["whitespace", "nested spans", "centred"],
    "news": ["ferry", "met office", "“"],
    "product": ["acme phone", "usd", "shipping"],
    "quotes": ["> ", "quotation", "* * *"],
    "tables": ["january", "total", "column"],
    "unicode": ["straße", "〖", "münchen", "東京"],
    "wiki": ["zürich", "citation needed", "^{", "[2]"],
}


def test_the_corpus_covers_what_the_issue_lists():
    pages = corpus_pages()
    assert len(pages) >= 15 and set(FIND) == set(pages)
    html = {name: corpus_html(name) for name in pages}
    everything = "".join(html.values())
    for needle in ("<pre", "<ol", "<table", "<img", "<sup", "<blockquote", "<dl", "【", "münchen"):
        assert needle in everything, needle
    assert re.search(r"<ul>\s*<li>[^<]*\s*<ul>", html["lists"])  # nested lists
    assert "127.0.0.2:8080" in html["links"] and "infobox" in html["wiki"]
    assert len(ref_lines(ref_page(html["long"], f"{BASE}/long.html"))) > 200  # several views


def _pages(name: str):
    html, url = corpus_html(name), f"{BASE}/{name}.html"
    return ref_page(html, url), our_page(html, url)


@pytest.mark.parametrize("name", sorted(set(FIND) - DEVIATING))
def test_every_view_is_byte_identical_to_the_reference(name):
    ref, ours = _pages(name)
    # a title differs only by its whitespace (ours is normalised)
    assert ours.title == " ".join(ref.title.split())
    ours.title = ref.title
    assert ours.lines == ref_lines(ref)
    assert ours.links == {int(k): v for k, v in ref.urls.items()}
    locs = view_locs(len(ours.lines), lambda loc: ref_view(ref, loc))
    for loc in locs:
        assert our_view(ours, loc) == ref_view(ref, loc), f"{name} view at L{loc}"
    assert our_view(ours, 3, 5) == ref_view(ref, 3, 5)
    if name == "long":
        assert len(locs) >= 3


@pytest.mark.parametrize("name", sorted(set(FIND) - DEVIATING))
def test_every_find_is_byte_identical_to_the_reference(name):
    ref, ours = _pages(name)
    ours.title = ref.title
    for pattern in FIND[name]:
        assert our_find(ours, pattern) == ref_find(ref, pattern), f"{name}: find {pattern!r}"


def test_messy_title_is_whitespace_normalised():
    ref, ours = _pages("messy")
    assert ref.title.startswith("\n") and ours.title == "Messy page title"
    ref_first = ref_view(ref).split("\n**viewing")[0]
    assert ref_first == f"[0] {ref.title} ({BASE}/messy.html)"
    assert our_view(ours).split("\n")[0] == f"[0] Messy page title ({BASE}/messy.html)"


def test_deviations_page_differs_exactly_as_documented():
    """tel:/ftp: links keep their text without a marker; the text after <math> is kept."""
    ref, ours = _pages("deviations")
    assert "【0†call the office†tel:+15550100】" in ref.text
    assert "【1†the FTP archive†ftp:】" in ref.text
    assert "The area is \n" in ref.text  # the reference lost the text after the formula
    expected_text = (
        ref.text.replace("【0†call the office†tel:+15550100】", "call the office")
        .replace("【1†the FTP archive†ftp:】", "the FTP archive")
        .replace("【2†contact form", "【0†contact form")
        .replace("The area is \n", "The area is square metres, as shown above.\n")
    )
    expected = ref_pc.PageContents(
        url=ref.url,
        text=expected_text,
        title=" ".join(ref.title.split()),
        urls={"0": ref.urls["2"]},
    )
    assert ours.lines == ref_lines(expected)
    assert ours.links == {0: "https://www.example.org/contact"}
    assert our_view(ours) == ref_view(expected)
    for pattern in FIND["deviations"]:
        assert our_find(ours, pattern) == ref_find(expected, pattern)


def test_find_across_a_wrap_is_the_one_find_difference():
    ref, ours = _pages("long")
    lines = ours.lines
    # a phrase the 80-column wrap splits: the end of one line and the start of the next
    i = next(
        i
        for i in sorted(ours.continued)
        if lines[i - 1].endswith(" ") and " " in lines[i] and len(lines[i - 1]) > 20
    )
    pattern = (lines[i - 1][-10:] + lines[i][: lines[i].index(" ")]).lower()
    assert not any(pattern in line.lower() for line in lines)
    assert ref_find(ref, pattern).endswith(f"No `find` results for pattern: `{pattern}`")
    found = our_find(ours, pattern)
    context = "\n".join(f"L{n}: {line}" for n, line in enumerate(lines[i - 1 : i + 3], 1))
    assert found.split("\n**viewing")[0] == (
        f"[1] Find results for text: `{pattern}` in `{ref.title}` "
        f"({BASE}/long.html/find?pattern={pattern})"  # the header shows URLs decoded
    )
    assert f"L0: # 【0†match at L{i - 1}】\n{context}" in found
