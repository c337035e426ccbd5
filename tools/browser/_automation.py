"""Developer functions that act on the browser tool's page: the accessibility snapshot with
element refs, click, type, select, press, back and a viewport screenshot."""

from __future__ import annotations

from typing import Any

import anyio
from harmony_agent._controls import strip_controls
from harmony_agent.errors import ToolExecutionError
from harmony_agent.tools.base import RunContext, Tool
from harmony_agent.tools.function import tool
from playwright.async_api import Error as PlaywrightError

from ._state import BrowserState, StateGetter

__all__ = ["automation_tools"]


_SETTLE_MS = 10_000  # how long an action waits for the navigation it started to load
_SHOT_TRIES = 4  # a page still being swapped in after a navigation has no frame to capture yet


async def _settle(page: Any) -> None:
    """Wait until a navigation the last action started has loaded (a page that keeps loading
    is left as it is: the next action sees it as it stands)."""
    try:
        await page.wait_for_load_state("load", timeout=_SETTLE_MS)
    except PlaywrightError:
        pass


async def _screenshot(page: Any, path: str) -> None:
    """A viewport screenshot; retried briefly while a freshly navigated page has no frame yet
    (Chromium answers "Unable to capture screenshot" until its compositor has painted)."""
    await _settle(page)
    for attempt in range(_SHOT_TRIES):
        try:
            await page.screenshot(path=path, full_page=False)
            return
        except PlaywrightError as exc:
            if "captureScreenshot" not in str(exc) or attempt == _SHOT_TRIES - 1:
                raise
            await anyio.sleep(0.25 * (attempt + 1))


def automation_tools(get_state: StateGetter, snapshot_tokens: int) -> list[Tool]:
    """The functions, acting on the page of the run's state that ``get_state`` returns."""

    async def page_of(ctx: RunContext) -> tuple[BrowserState, Any]:
        state = await get_state(ctx)
        if state.page.url in ("", "about:blank"):
            raise ToolExecutionError("no page is open: open one with browser.open first")
        return state, state.page

    async def locate(ctx: RunContext, ref: str) -> tuple[Any, Any]:
        _state, page = await page_of(ctx)
        locator = page.get_by_ref(ref)
        if await locator.count() == 0:
            raise ToolExecutionError(
                f"no element has ref {ref!r} on {page.url}; take a new browser_snapshot"
            )
        return page, locator

    @tool
    async def browser_snapshot(ctx: RunContext) -> str:
        """The open page's accessibility tree, each element with a [ref=…] to act on."""
        _, page = await page_of(ctx)
        tree = await page.aria_snapshot(mode="ai")
        budget = snapshot_tokens * 4  # about 4 characters a token
        if len(tree) > budget:
            tree = tree[:budget] + f"\n…[snapshot cut: {len(tree) - budget} more characters]"
        return strip_controls(f"Page: {await page.title()} ({page.url})\n{tree}")

    @tool
    async def browser_click(ref: str, ctx: RunContext) -> str:
        """Click the element with this ref (from browser_snapshot).

        Args:
            ref: the element's ref, e.g. e12
        """
        page, locator = await locate(ctx, ref)
        await locator.click()
        await _settle(page)
        return f"clicked {ref}; now at {page.url}"

    @tool
    async def browser_type(ref: str, text: str, ctx: RunContext, submit: bool = False) -> str:
        """Fill a text field with text.

        Args:
            ref: the field's ref
            text: what to type (replaces the field's content)
            submit: press Enter afterwards
        """
        page, locator = await locate(ctx, ref)
        await locator.fill(text)
        if submit:
            await locator.press("Enter")
            await _settle(page)
        return f"typed into {ref}" + (f"; submitted, now at {page.url}" if submit else "")

    @tool
    async def browser_select(ref: str, values: list[str], ctx: RunContext) -> str:
        """Choose options of a select element.

        Args:
            ref: the select's ref
            values: option values or labels
        """
        _, locator = await locate(ctx, ref)
        chosen = await locator.select_option(values)
        return f"selected {chosen} in {ref}"

    @tool
    async def browser_press(key: str, ctx: RunContext) -> str:
        """Press a key on the page, e.g. Enter, Tab, ArrowDown.

        Args:
            key: the key name
        """
        _, page = await page_of(ctx)
        await page.keyboard.press(key)
        await _settle(page)
        return f"pressed {key}"

    @tool
    async def browser_back(ctx: RunContext) -> str:
        """Go back to the previous page."""
        _, page = await page_of(ctx)
        await page.go_back()
        return f"now at {page.url}"

    @tool
    async def browser_screenshot(ctx: RunContext) -> str:
        """Save a screenshot of the visible part of the page; returns where it was saved."""
        state, page = await page_of(ctx)
        state.screenshots += 1
        path = ctx.files_dir / "screenshots" / f"screenshot-{state.screenshots}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        await _screenshot(page, str(path))
        return f"saved {path.name} ({path.stat().st_size} bytes) to the run's files"

    return [
        browser_snapshot,
        browser_click,
        browser_type,
        browser_select,
        browser_press,
        browser_back,
        browser_screenshot,
    ]
