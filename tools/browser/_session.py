"""A run's browser: a context behind the run's egress proxy, and tabs whose document
navigations are paused at every redirect hop so the hop past the limit is never sent.

The proxy checks every hop's host (see _proxy.py), but inside an ``https`` tunnel it cannot see
redirects; Chromium's own interception (the DevTools ``Fetch`` domain at the request stage) can:
it reports each hop of a document's redirect chain before sending it, with the id of the
request that redirected. Playwright's routing does not pass hops on, so the tab has its own
DevTools session for this.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio

from ._chromium import chromium_for_this_loop
from ._policy import PolicyViolation, UrlPolicy
from ._proxy import EgressProxy
from ._state import BrowserState

__all__ = ["browser_session", "new_tab"]


@contextlib.asynccontextmanager
async def browser_session(
    policy: UrlPolicy, *, page_timeout: float, max_redirects: int
) -> AsyncIterator[BrowserState]:
    """The run's context, its egress proxy and its tab; all closed on exit."""
    chromium = chromium_for_this_loop()
    proxy = EgressProxy(policy, connect_timeout=page_timeout, max_redirects=max_redirects)
    async with proxy.running() as proxy_url:
        browser = await chromium.acquire()
        try:
            # every request of this context goes through the run's egress proxy, loopback
            # included (`<-loopback>` removes Chromium's implicit loopback bypass)
            context = await browser.new_context(
                accept_downloads=False,
                viewport={"width": 1280, "height": 900},
                proxy={"server": proxy_url, "bypass": "<-loopback>"},
                service_workers="block",
            )
            context.set_default_timeout(page_timeout * 1000)
            context.set_default_navigation_timeout(page_timeout * 1000)
            state = BrowserState(context, None, proxy, max_redirects=max_redirects)

            async def popup(page: Any) -> None:
                if await page.opener() is not None:  # opened by a page, not by us
                    state.popups += 1
                    await page.close()

            context.on("page", popup)
            state.page = await new_tab(state)
            try:
                yield state
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await context.close()
        finally:
            await chromium.release()


async def new_tab(state: BrowserState) -> Any:
    """A page of the run's context whose document redirects stop at ``max_redirects``."""
    from playwright.async_api import Error as PlaywrightError

    page = await state.context.new_page()
    devtools = await state.context.new_cdp_session(page)
    hops: dict[str, int] = {}  # paused request id -> redirects that led to it

    async def paused(event: dict[str, Any]) -> None:
        request_id = event["requestId"]
        with contextlib.suppress(PlaywrightError):  # the tab may be gone meanwhile
            redirected_from = event.get("redirectedRequestId")
            if redirected_from is not None:
                count = hops[request_id] = hops.pop(redirected_from, 0) + 1
                if count > state.max_redirects:
                    state.proxy.record(
                        PolicyViolation(
                            event["request"]["url"],
                            "max_redirects",
                            f"{count} redirects (the limit is {state.max_redirects})",
                        )
                    )
                    await devtools.send(
                        "Fetch.failRequest",
                        {"requestId": request_id, "errorReason": "BlockedByClient"},
                    )
                    return
            await devtools.send("Fetch.continueRequest", {"requestId": request_id})

    devtools.on("Fetch.requestPaused", paused)
    pattern = {"urlPattern": "*", "resourceType": "Document", "requestStage": "Request"}
    await devtools.send("Fetch.enable", {"patterns": [pattern]})
    return page
