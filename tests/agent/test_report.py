"""The HTML trace report, opened in real Chromium: what a person would see."""

from __future__ import annotations

import os

import pytest
from harmony_agent import Agent, tool
from harmony_agent.engine import ScriptedEngine
from harmony_agent.report import render_report
from harmony_agent.trace import load_trace

CHROMIUM = os.environ.get("PLAYWRIGHT_CHROMIUM_PATH", "/usr/lib/chromium/chromium")


@tool
def lookup(city: str) -> dict:
    """Population of a city."""
    if city == "Atlantis":
        raise KeyError("no such city")
    return {"city": city, "population": 700_000}


def make_engine(tmp_path):
    engine = ScriptedEngine(
        [
            "<|channel|>analysis<|message|>I need the population of Oslo.<|end|><|start|>assistant"
            '<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"city":"Atlantis"}<|call|>',
            '<|channel|>commentary<|message|>Trying Oslo instead.<|end|><|start|>assistant<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{"city":"Oslo"}<|call|>',
            "<|channel|>final<|message|>Oslo has about 700,000 people.<|return|>",
        ]
    )
    return engine, tmp_path / "run.jsonl"


def make_trace(tmp_path):
    engine, path = make_engine(tmp_path)
    Agent(tools=[lookup], engine=engine).run_sync("How many people live in Oslo?", trace=path)
    return load_trace(path)


def test_report_is_self_contained(tmp_path):
    page = render_report(make_trace(tmp_path))
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count('class="turn"') == 3


@pytest.mark.browser
@pytest.mark.anyio
async def test_report_renders_in_chromium(tmp_path):
    from playwright.async_api import async_playwright

    report = tmp_path / "report.html"
    engine, path = make_engine(tmp_path)
    await Agent(tools=[lookup], engine=engine).run("How many people live in Oslo?", trace=path)
    report.write_text(render_report(load_trace(path)), encoding="utf-8")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(report.as_uri())
            assert await page.title() == f"Trace {load_trace(tmp_path / 'run.jsonl').run_id}"
            assert await page.locator("header h1").inner_text() == "How many people live in Oslo?"
            assert await page.locator("section.turn").count() == 3
            answer = await page.locator(".answer").inner_text()
            assert "Oslo has about 700,000 people." in answer
            # the failed call is highlighted, the good one is not
            errors = page.locator(".result.error")
            assert await errors.count() == 1
            assert "KeyError" in await errors.inner_text()
            color = await errors.locator(".head").evaluate("e => getComputedStyle(e).color")
            assert color == "rgb(163, 21, 21)"
            # reasoning is collapsed until opened
            reasoning = page.locator("details.reasoning").first
            assert not await reasoning.evaluate("d => d.open")
            thought = reasoning.locator(".thought")
            assert not await thought.is_visible()
            await reasoning.locator("summary").click()
            assert await thought.is_visible()
            assert await thought.inner_text() == "I need the population of Oslo."
            stats = await page.locator(".totals").inner_text()
            assert "tool calls" in stats and "2 (1 failed)" in stats and "cached" in stats
            await page.screenshot(path=str(tmp_path / "report.png"))
            assert (tmp_path / "report.png").stat().st_size > 10_000
        finally:
            await browser.close()
