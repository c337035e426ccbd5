"""The browser tool on real Chromium, pages served by a local HTTP server."""

from __future__ import annotations

import os
import re
from pathlib import Path

import anyio
import pytest
from harmony_agent import Agent, RunContext
from harmony_agent.engine import ScriptedEngine
from harmony_agent.tools import BrowserTool
from harmony_agent.tools.browser import LocalSearch, citations, link_citations

pytestmark = [pytest.mark.browser, pytest.mark.anyio]
GOLDEN = Path(__file__).parent / "golden"
SITE = Path(__file__).parent / "site"


def tools_of(browser: BrowserTool) -> dict[str, object]:
    return {t.name: t for t in browser.tools()}


async def call(browser, ctx, name, args, ok=True):
    import json

    result = await tools_of(browser)[name].invoke(json.dumps(args), ctx)
    assert result.ok is ok, result.text
    return result.text


def normalise(text: str, base: str) -> str:
    return text.replace(base, "http://site")


@pytest.fixture
async def browser(site):
    base, _ = site
    tool = BrowserTool(
        allow_private_network=True, page_timeout=5, search=LocalSearch(SITE, base + "/")
    )
    async with RunContext.open() as ctx:
        yield tool, ctx, base


@pytest.mark.parametrize("page", ["links", "article", "table", "js"])
async def test_rendering_matches_golden(browser, page):
    tool, ctx, base = browser
    view = normalise(await call(tool, ctx, "open", {"id": f"{base}/{page}.html"}), base)
    golden = GOLDEN / f"{page}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(view + "\n")
    assert view + "\n" == golden.read_text()


async def test_links_and_format_details(browser):
    tool, ctx, base = browser
    view = await call(tool, ctx, "open", {"id": f"{base}/links.html"})
    assert view.startswith(f"[0] Links page ({base}/links.html)\n**viewing lines [0 - ")
    assert "【0†article】" in view and "【1†table】" in view
    assert "【2†an outside page†example.org】" in view
    assert "【" not in view.split("Tricky text")[1].split("\n")[0].replace("〖", "")  # escaped
    assert "〖brackets〗" in view and "‡" not in view and "🙂" not in view
    assert (
        "mailto" not in view
        and "script link" in view
        and "【3" not in view.split("Tricky")[0].replace("【3", "", 0)
    )
    again = await call(tool, ctx, "open", {"id": 0})  # follow link 0 of the latest page
    assert again.startswith(f"[1] An article ({base}/article.html)")
    assert "[Image 0: The tower at dusk]" in again and "[Image 1]" in again


async def test_scroll_and_cursors(browser):
    tool, ctx, base = browser
    first = await call(tool, ctx, "open", {"id": f"{base}/long.html"})
    total = int(re.search(r"of (\d+)\*\*", first).group(1))
    assert total > 30
    shown = int(re.search(r"viewing lines \[0 - (\d+)\]", first).group(1))
    assert shown < total  # about 1024 tokens, not the whole page
    scrolled = await call(tool, ctx, "open", {"loc": 10, "num_lines": 5})
    assert scrolled.startswith("[1] Long page") and "**viewing lines [10 - 14]" in scrolled
    assert scrolled.count("\nL") == 5
    again = await call(tool, ctx, "open", {"cursor": 0, "loc": 20, "num_lines": 2})
    assert again.startswith("[2] Long page") and "L20: " in again
    bad = await call(tool, ctx, "open", {"loc": 9999}, ok=False)
    assert f"Cannot exceed page maximum of {total}" in bad
    assert "out of range. Available cursor indices: [0 - 2]" in await call(
        tool, ctx, "open", {"cursor": 7, "id": 0}, ok=False
    )
    assert "Invalid link id `42`" in await call(
        tool, ctx, "open", {"id": 42, "cursor": 0}, ok=False
    )


async def test_find_across_wrapped_lines_and_back(browser):
    tool, ctx, base = browser
    page = await call(tool, ctx, "open", {"id": f"{base}/long.html", "num_lines": 200})
    # find a phrase that is split by the 80-column wrap
    lines = re.findall(r"^L(\d+): (.*)$", page, re.M)
    split = next((n, text) for n, text in lines if re.search(r"Sentence \d+$", text.rstrip()))
    number = re.search(r"Sentence (\d+)$", split[1].rstrip()).group(1)
    found = await call(tool, ctx, "find", {"pattern": f"sentence {number} about"})
    assert found.startswith("[1] Find results for text: `sentence")
    assert f"# 【0†match at L{split[0]}】" in found
    back = await call(tool, ctx, "open", {"id": 0})
    assert (
        back.startswith("[2] Long page")
        and f"**viewing lines [{max(int(split[0]) - 4, 0)} -" in back
    )
    none = await call(tool, ctx, "find", {"pattern": "zebra crossing", "cursor": 0})
    assert "No `find` results for pattern: `zebra crossing`" in none
    assert "Cannot run `find` on a find results page" in await call(
        tool, ctx, "find", {"pattern": "x"}, ok=False
    )


async def test_search_local_backend_with_its_own_cursor(browser):
    tool, ctx, base = browser
    results = await call(tool, ctx, "search", {"query": "lighthouse granite tower"})
    assert results.startswith("[0] lighthouse granite tower\n")
    host = base.removeprefix("http://")  # the link's domain keeps the port, as in the reference
    assert "# Search Results" in results and f"L4:   * 【0†An article†{host}】" in results
    second = await call(tool, ctx, "search", {"query": "rainfall january", "topn": 1})
    assert "Rainfall" in second and second.count("  * 【") == 1
    # cursor 0 still opens the first search's results (the reference's bug would open the second's)
    opened = await call(tool, ctx, "open", {"cursor": 0, "id": 0})
    assert f"({base}/article.html)" in opened.split("\n")[0]


async def test_no_backend_says_how_to_configure(site):
    async with RunContext.open() as ctx:
        text = await call(BrowserTool(), ctx, "search", {"query": "x"}, ok=False)
    assert "no search backend is configured" in text and "LocalSearch" in text


async def test_argument_aliases_and_unknown_names(browser):
    tool, ctx, base = browser
    assert (await call(tool, ctx, "open", {"url": f"{base}/table.html"})).startswith("[0] Rainfall")
    bad = await call(tool, ctx, "open", {"idx": 3}, ok=False)
    assert "Additional properties are not allowed ('idx' was unexpected)" in bad
    assert (await call(tool, ctx, "find", {"text": "january"})).startswith("[1] Find results")


async def test_two_runs_are_isolated(site):
    base, _ = site
    tool = BrowserTool(allow_private_network=True)
    async with RunContext.open() as one, RunContext.open() as two:
        await call(tool, one, "open", {"id": f"{base}/links.html"})
        state_one, state_two = await tool.state(one), await tool.state(two)
        await state_one.page.evaluate("localStorage.setItem('k', 'v'); document.cookie = 'c=1'")
        await call(tool, two, "open", {"id": f"{base}/links.html"})
        assert await state_two.page.evaluate("localStorage.getItem('k')") is None
        assert await state_two.page.evaluate("document.cookie") == ""
        assert "No pages" not in await call(tool, one, "open", {"loc": 1, "num_lines": 1})
        assert state_one.context is not state_two.context


# --- policy ------------------------------------------------------------------------------------


async def test_private_addresses_are_blocked_by_default(site, blocked_base):
    base, hits = site
    blocked = blocked_base
    async with RunContext.open() as ctx:
        tool = BrowserTool()
        for url, rule in [
            (f"{base}/links.html", "private_network"),
            (f"{blocked}/latest/", "private_network"),
            ("http://localhost:1/", "private_network"),
            ("file:///etc/passwd", "scheme"),
            ("ftp://127.0.0.3/", "scheme"),
        ]:
            text = await call(tool, ctx, "open", {"id": url}, ok=False)
            assert f"blocked by the `{rule}` rule" in text, text
    assert hits["blocked"] == []


async def test_domain_lists(site):
    base, _ = site
    async with RunContext.open() as ctx:
        denied = await call(
            BrowserTool(allow_private_network=True, deny_domains=["127.0.0.1"]),
            ctx,
            "open",
            {"id": f"{base}/links.html"},
            ok=False,
        )
        assert "`deny_domains` rule" in denied
        allowed = await call(
            BrowserTool(allow_private_network=True, allow_domains=["example.org"]),
            ctx,
            "open",
            {"id": f"{base}/links.html"},
            ok=False,
        )
        assert "`allow_domains` rule" in allowed


async def test_every_request_of_a_page_is_checked(site):
    base, hits = site
    # only the test site's own address is allowed among private ones
    tool = BrowserTool(allow_private_network=["127.0.0.1"])
    async with RunContext.open() as ctx:
        view = await call(tool, ctx, "open", {"id": f"{base}/private.html"})
        await anyio.sleep(0.5)
        assert hits["other"] == []  # neither the image nor the fetch() reached 127.0.0.2
        assert "router admin" in view
        text = await call(tool, ctx, "open", {"id": 0}, ok=False)  # the link to 127.0.0.3
        assert "blocked by the `private_network` rule" in text and "127.0.0.3" in text
        redirect = await call(tool, ctx, "open", {"id": f"{base}/to-private"}, ok=False)
        assert "private_network" in redirect and "127.0.0.3" in redirect
    denied = BrowserTool(allow_private_network=True, deny_domains=["127.0.0.2"])
    async with RunContext.open() as ctx:
        await call(denied, ctx, "open", {"id": f"{base}/private.html"})
        await anyio.sleep(0.5)
        assert hits["other"] == []


async def test_redirects(browser):
    tool, ctx, base = browser
    assert (await call(tool, ctx, "open", {"id": f"{base}/redirect/3"})).startswith(
        "[0] An article"
    )
    too_many = await call(tool, ctx, "open", {"id": f"{base}/redirect/14"}, ok=False)
    assert "redirects" in too_many
    loop = await call(tool, ctx, "open", {"id": f"{base}/loop"}, ok=False)
    assert "redirect" in loop.lower()


# --- hostile pages ----------------------------------------------------------------------------


async def test_infinite_js_loop_times_out_and_the_tool_recovers(browser):
    tool, ctx, base = browser
    text = await call(tool, ctx, "open", {"id": f"{base}/loop.html"}, ok=False)
    assert "did not load within 5 s" in text or "did not respond" in text
    assert (await call(tool, ctx, "open", {"id": f"{base}/table.html"})).startswith("[0] Rainfall")


async def test_five_megabyte_dom_is_capped(browser):
    tool, ctx, base = browser
    tool.page_timeout = 60  # the cap is under test, not the speed: 5 MB can take >5 s on 2 cores
    view = await call(tool, ctx, "open", {"id": f"{base}/big.html"})
    assert view.startswith("[0] Big DOM") and "cell 0" in view
    total = int(re.search(r"of (\d+)\*\*", view).group(1))
    assert total > 1000


async def test_downloads_and_popups_are_contained(browser):
    tool, ctx, base = browser
    text = await call(tool, ctx, "open", {"id": f"{base}/download.bin"}, ok=False)
    assert "download" in text
    view = await call(tool, ctx, "open", {"id": f"{base}/popup.html"})
    assert "Opening a popup" in view
    state = await tool.state(ctx)
    await anyio.sleep(0.3)
    assert len(state.context.pages) == 1 and state.popups >= 1
    assert not any(p.url.endswith("/ad") for p in state.context.pages)


async def test_a_crashed_browser_is_restarted(browser):
    tool, ctx, base = browser
    await call(tool, ctx, "open", {"id": f"{base}/table.html"})
    state = await tool.state(ctx)
    await state.context.browser.close()  # what a crash looks like from here
    view = await call(tool, ctx, "open", {"id": f"{base}/article.html"})
    assert view.startswith("[0] An article")
    assert any("restarted" in n for n in ctx.take_notices())


# --- automation -------------------------------------------------------------------------------


async def test_automation_fills_a_form(site):
    base, _hits = site
    tool = BrowserTool(allow_private_network=True, automation=True)
    fns = tools_of(tool)
    async with RunContext.open() as ctx:
        await call(tool, ctx, "open", {"id": f"{base}/form.html"})
        snap = (await fns["browser_snapshot"].invoke("{}", ctx)).text
        name_ref = re.search(r'textbox "Name" \[ref=(e\d+)\]', snap).group(1)
        size_ref = re.search(r'combobox "Size" \[ref=(e\d+)\]', snap).group(1)
        button_ref = re.search(r'button "Send" \[ref=(e\d+)\]', snap).group(1)
        import json

        assert (
            await fns["browser_type"].invoke(json.dumps({"ref": name_ref, "text": "Ada"}), ctx)
        ).ok
        assert (
            await fns["browser_select"].invoke(
                json.dumps({"ref": size_ref, "values": ["Large"]}), ctx
            )
        ).ok
        clicked = await fns["browser_click"].invoke(json.dumps({"ref": button_ref}), ctx)
        assert clicked.ok and "thanks.html?name=Ada&size=l" in clicked.text
        shot = await fns["browser_screenshot"].invoke("{}", ctx)
        assert (
            shot.ok and (ctx.files_dir / "screenshots" / "screenshot-1.png").stat().st_size > 1000
        )
        assert (await fns["browser_back"].invoke("{}", ctx)).text.endswith("/form.html")
        bad = await fns["browser_click"].invoke(json.dumps({"ref": "e9999"}), ctx)
        assert not bad.ok and "take a new browser_snapshot" in bad.text


# --- end to end ---------------------------------------------------------------------------------


def b(fn: str, args: str) -> str:
    return f"<|channel|>analysis to=browser.{fn} code<|message|>{args}<|call|>"


async def test_agent_searches_opens_finds_and_cites(site):
    base, _ = site
    browser = BrowserTool(allow_private_network=True, search=LocalSearch(SITE, base + "/"))
    engine = ScriptedEngine(
        [
            b("search", '{"query": "lighthouse height"}'),
            b("open", '{"id": 0}'),
            b("find", '{"pattern": "31 metres"}'),
            "PLACEHOLDER",
        ]
    )
    agent = Agent(tools=[browser], engine=engine)

    # the last reply cites the lines find reported: computed from the real tool output
    async def run():
        result = None
        replies = engine.replies
        async for event in agent.stream("How tall is the lighthouse?"):
            if event.type == "tool_result" and event.recipient == "browser.find":
                line = int(re.search(r"match at L(\d+)", event.output).group(1))
                replies[3] = (
                    "<|channel|>final<|message|>The tower is 31 metres tall "
                    f"【1†L{line}-L{line + 1}】.<|return|>"
                )
            if event.type == "run_finished":
                result = event
        return result

    finished = await run()
    text = finished.final_text
    assert "【1†L" in text
    # resolve the citation against what the browser showed
    from harmony_agent.result import RunResult

    fake = RunResult(run_id="x", final_text=text, tool_calls=[])
    assert citations(text, fake)[0].url is None  # no views: unresolvable
    result = await Agent(
        tools=[BrowserTool(allow_private_network=True, search=LocalSearch(SITE, base + "/"))],
        engine=ScriptedEngine([*engine.replies]),
    ).run("How tall is the lighthouse?")
    (cite,) = citations(result.final_text, result)
    assert cite.url == f"{base}/article.html" and cite.cursor == 1
    assert any("31 metres" in line for line in cite.lines)
    assert f"([An article]({base}/article.html))" in link_citations(result.final_text, result)
    names = [c.name for c in result.tool_calls]
    assert names == ["browser.search", "browser.open", "browser.find"]
    assert all(c.ok for c in result.tool_calls)
