"""``BrowserTool``: gpt-oss's ``browser.search/open/find`` on a real Chromium.

Example::

    from harmony_agent import Agent
    from harmony_agent.tools import BrowserTool
    from harmony_agent.tools.browser import LocalSearch

    browser = BrowserTool(search=LocalSearch("site/", "http://127.0.0.1:8000/"),
                          allow_private_network=True)     # the site is served locally
    agent = Agent(tools=[browser], engine=...)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import anyio
import anyio.to_thread
from harmony_agent._controls import strip_controls
from harmony_agent.errors import ConfigurationError, ToolExecutionError, ToolPolicyError
from harmony_agent.tools.base import (
    ApprovalPolicy,
    RunContext,
    Tool,
    Toolset,
    check_approval_policy,
)
from openai_harmony import ToolNamespaceConfig

from ._automation import automation_tools
from ._extract import EXTRACT_JS, page_from_dom, search_page
from ._policy import PolicyViolation, UrlPolicy
from ._proxy import POLICY_HEADER
from ._render import PageSnapshot, find_in_page, render_view
from ._search import SearchBackend
from ._session import browser_session, new_tab
from ._state import BrowserState

__all__ = ["BrowserTool"]


Handler = Callable[..., Awaitable[str]]


class _BrowserFn(Tool):
    namespace = "browser"
    timeout = None  # the browser enforces its own page timeout
    ALIASES: ClassVar[dict[str, str]] = {}

    def __init__(self, name: str, parameters: dict[str, Any], handler: Handler) -> None:
        self.name = name
        self.parameters = parameters
        self.description = f"browser.{name}"
        self.handler = handler

    def normalize_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        out = dict(arguments)
        for alias, real in self.ALIASES.items():
            if alias in out and real not in out:
                out[real] = out.pop(alias)
        return out

    async def call(self, arguments: Any, ctx: RunContext) -> Any:
        # page text is the page's to choose: no terminal controls reach the model or a log
        return strip_controls(await self.handler(ctx, **arguments))


class _Search(_BrowserFn):
    ALIASES: ClassVar[dict[str, str]] = {
        "q": "query",
        "top_n": "topn",
        "n": "topn",
        "num_results": "topn",
    }


class _Open(_BrowserFn):
    ALIASES: ClassVar[dict[str, str]] = {
        "url": "id",
        "link": "id",
        "href": "id",
        "line": "loc",
        "lineno": "loc",
    }


class _Find(_BrowserFn):
    ALIASES: ClassVar[dict[str, str]] = {"query": "pattern", "text": "pattern", "q": "pattern"}


_INT = {"type": "integer"}
SEARCH_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["query"],
    "properties": {"query": {"type": "string"}, "topn": _INT, "source": {"type": "string"}},
}
OPEN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "id": {"type": ["integer", "string"]},
        "cursor": _INT,
        "loc": _INT,
        "num_lines": _INT,
        "view_source": {"type": "boolean"},
        "source": {"type": "string"},
    },
}
FIND_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["pattern"],
    "properties": {"pattern": {"type": "string"}, "cursor": _INT},
}


class BrowserTool(Toolset):
    """The built-in ``browser`` namespace (``search``, ``open``, ``find``) on Chromium.

    Args:
        search: a search backend (``LocalSearch``, ``SearxngSearch``); without one,
            ``browser.search`` answers with an error saying how to configure it.
        allow_private_network: allow addresses that are not global (loopback, private,
            link-local, ...; off by default; needed for sites served on 127.0.0.1). A list of
            hosts or addresses allows just those (e.g. ``["127.0.0.1"]`` for a local site).
        allow_domains / deny_domains: domain lists, subdomains included.

    Every connection a page opens goes through the run's egress proxy, which applies this
    policy before connecting (see ``_proxy.py``); a page's redirect chain stops at
    ``max_redirects``.
        automation: also declare developer functions that act on the same page (an
            accessibility snapshot with element refs, click, type, select, press, back,
            viewport screenshot).
        page_timeout: seconds a page may take to load; max_redirects, max_nodes,
            max_text_chars: limits on a page.
        needs_approval: ``True`` or a callable ``(ctx, call) -> bool`` for every browser
            function, or a mapping from function name (``"open"``, ``"browser_click"``, ...) to
            one of those, per function: the run pauses before such a call until it is
            approved (``Agent.resume``).
    """

    def __init__(
        self,
        *,
        search: SearchBackend | None = None,
        allow_private_network: bool | Sequence[str] = False,
        allow_domains: Sequence[str] | None = None,
        deny_domains: Sequence[str] = (),
        automation: bool = False,
        page_timeout: float = 20.0,
        max_redirects: int = 10,
        max_nodes: int = 100_000,
        max_text_chars: int = 2_000_000,
        view_tokens: int = 1024,
        snapshot_tokens: int = 2000,
        settle: float = 0.1,
        needs_approval: ApprovalPolicy | Mapping[str, ApprovalPolicy] = False,
    ) -> None:
        _check_backend(search)
        self.search_backend = search
        self.policy = UrlPolicy(
            allow_domains=tuple(allow_domains) if allow_domains is not None else None,
            deny_domains=tuple(deny_domains),
            allow_private_network=allow_private_network is True,
            private_exceptions=tuple(allow_private_network)
            if not isinstance(allow_private_network, bool)
            else (),
        )
        self.page_timeout = page_timeout
        self.max_redirects = max_redirects
        self.max_nodes = max_nodes
        self.max_text_chars = max_text_chars
        self.view_tokens = view_tokens
        self.snapshot_tokens = snapshot_tokens
        self.settle = settle
        self._tools: list[Tool] = [
            _Search("search", SEARCH_SCHEMA, self._search),
            _Open("open", OPEN_SCHEMA, self._open),
            _Find("find", FIND_SCHEMA, self._find),
        ]
        if automation:
            self._tools += automation_tools(self.state, snapshot_tokens)
        self._set_approval(needs_approval)
        from harmony_agent._encoding import load_encoding

        self._encoding = load_encoding()

    def tools(self) -> Sequence[Tool]:
        return self._tools

    def _set_approval(self, policy: ApprovalPolicy | Mapping[str, ApprovalPolicy]) -> None:
        if not isinstance(policy, Mapping):
            for t in self._tools:
                t.needs_approval = check_approval_policy(policy, "the browser")
            return
        names = {t.name: t for t in self._tools}
        unknown = sorted(set(policy) - set(names))
        if unknown:
            raise ConfigurationError(
                f"needs_approval names {', '.join(map(repr, unknown))}, which this browser does "
                f"not have; its functions are {', '.join(sorted(names))}"
                + ("" if "browser_click" in names else " (automation=True adds the page actions)")
            )
        for name, value in policy.items():
            names[name].needs_approval = check_approval_policy(value, name)

    def system_namespaces(self) -> Sequence[Any]:
        config = ToolNamespaceConfig.browser()
        source = (
            "local"
            if self.search_backend is not None
            and self.search_backend.__class__.__name__ == "LocalSearch"
            else "web"
        )
        description = re.sub(
            r"// sources=.*$",
            f"// sources={source} (default: {source})",
            config.description or "",
            flags=re.M,
        )
        return [ToolNamespaceConfig(name="browser", description=description, tools=config.tools)]

    # --- the run's browser -----------------------------------------------------------------

    def _session(self) -> contextlib.AbstractAsyncContextManager[BrowserState]:
        return browser_session(
            self.policy, page_timeout=self.page_timeout, max_redirects=self.max_redirects
        )

    async def state(self, ctx: RunContext) -> BrowserState:
        key = f"browser:{id(self)}"
        state = await ctx.resource(key, self._session)
        if not state.context.browser or not state.context.browser.is_connected():
            await ctx.drop_resource(key)  # the browser crashed: a new one, a new context
            ctx.notice("the browser had crashed and was restarted; earlier pages are gone")
            state = await ctx.resource(key, self._session)
        return state

    def _count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def _view(self, state: BrowserState, cursor: int, loc: int, num_lines: int | None) -> str:
        try:
            return render_view(
                state.stack[cursor], cursor, loc, num_lines, self._encoding, self.view_tokens
            )
        except ValueError as exc:
            raise ToolExecutionError(str(exc)) from None

    async def _fresh_page(self, state: BrowserState) -> None:
        old, state.page = state.page, await new_tab(state)
        with anyio.move_on_after(2, shield=True), contextlib.suppress(Exception):
            await old.close(run_before_unload=False)

    async def _fetch(self, state: BrowserState, url: str) -> PageSnapshot:
        from playwright.async_api import Error as PlaywrightError

        try:
            target = await anyio.to_thread.run_sync(self.policy.check, url)
        except PolicyViolation as violation:
            error = ToolExecutionError if violation.rule == "resolve" else ToolPolicyError
            raise error(f"Error fetching URL `{url}`: {violation}") from None
        state.proxy.new_navigation()
        page = state.page
        try:
            response = await page.goto(target.url, wait_until="load")
        except PlaywrightError as exc:
            message = str(exc).splitlines()[0]
            if "Timeout" in message:
                await self._fresh_page(state)  # the old page may still be spinning
            raise self._navigation_error(state, url, message) from None
        if response is not None and POLICY_HEADER in response.headers:
            # the egress proxy refused a hop (a redirect to a refused host, or one too many)
            refused = next(iter(reversed(state.blocked)), None)
            await self._fresh_page(state)
            raise ToolPolicyError(f"Error fetching URL `{url}`: redirected to {refused}")
        hops = 0
        request = response.request if response is not None else None
        while request is not None and request.redirected_from is not None:
            hops += 1
            request = request.redirected_from
        if hops > self.max_redirects:  # a backstop: the tab's guard stops chains at the limit
            raise ToolPolicyError(
                f"Error fetching URL `{url}`: {hops} redirects (the limit is {self.max_redirects})"
            )
        final = page.url
        try:
            await anyio.to_thread.run_sync(self.policy.check, final)
        except PolicyViolation as violation:
            await self._fresh_page(state)
            raise ToolPolicyError(
                f"Error fetching URL `{url}`: redirected to {violation}"
            ) from None
        # A short settle for content that scripts add just after load (waiting for full
        # network idleness would cost half a second on every page).
        with anyio.move_on_after(self.settle), contextlib.suppress(PlaywrightError):
            await page.wait_for_load_state("networkidle")
        try:
            with anyio.fail_after(self.page_timeout):
                data = await page.evaluate(EXTRACT_JS, [self.max_nodes, self.max_text_chars])
        except (TimeoutError, PlaywrightError) as exc:
            await self._fresh_page(state)
            raise ToolExecutionError(
                f"Error fetching URL `{url}`: the page did not respond ({type(exc).__name__})"
            ) from None
        return await anyio.to_thread.run_sync(page_from_dom, final, data)

    def _navigation_error(self, state: BrowserState, url: str, message: str) -> Exception:
        """What a failed ``goto`` means, in words the model can act on."""
        refused = next(iter(reversed(state.blocked)), None)
        if refused is not None and (
            "ERR_TUNNEL_CONNECTION_FAILED" in message or "ERR_BLOCKED_BY_CLIENT" in message
        ):
            return ToolPolicyError(f"Error fetching URL `{url}`: {refused}")
        if "Download is starting" in message or "download" in message.lower():
            return ToolPolicyError(
                f"Error fetching URL `{url}`: it is a file download, and downloads are disabled"
            )
        if "Timeout" in message:
            return ToolExecutionError(
                f"Error fetching URL `{url}`: the page did not load within {self.page_timeout:g} s"
            )
        if "ERR_TOO_MANY_REDIRECTS" in message:
            return ToolExecutionError(f"Error fetching URL `{url}`: too many redirects")
        return ToolExecutionError(f"Error fetching URL `{url}`: {message}")

    # --- the trained functions -------------------------------------------------------------

    async def _search(
        self, ctx: RunContext, query: str, topn: int = 10, source: str | None = None
    ) -> str:
        if self.search_backend is None:
            raise ToolExecutionError(
                "Search is not available: no search backend is configured. The operator can pass "
                "BrowserTool(search=LocalSearch(folder, base_url)) or "
                "BrowserTool(search=SearxngSearch('http://host:8888')). You can still open URLs "
                "with browser.open."
            )
        state = await self.state(ctx)
        results = await self.search_backend.search(query, max(1, min(topn, 50)))
        page = search_page(query, [(r.title, r.url, r.snippet) for r in results])
        cursor = state.push(page, 0)
        return self._view(state, cursor, 0, None)

    async def _open(
        self,
        ctx: RunContext,
        id: int | str = -1,
        cursor: int = -1,
        loc: int = -1,
        num_lines: int = -1,
        view_source: bool = False,
        source: str | None = None,
    ) -> str:
        state = await self.state(ctx)
        lines = num_lines if num_lines > 0 else None
        if isinstance(id, str):
            if id.lstrip("-").isdigit():
                id = int(id)
            else:
                page = await self._fetch(state, id)
                return self._view(state, state.push(page, max(loc, 0)), max(loc, 0), lines)
        if id < 0:  # scroll: the same page under a new cursor
            base, page = state.get(cursor)
            start = loc if loc >= 0 else state.locs[base]
            self._view(state, base, start, lines)  # validates loc before a cursor is spent
            return self._view(state, state.push(page, start), start, lines)
        _, page = state.get(cursor)
        if page.kind == "find":
            if id not in page.targets:
                raise ToolExecutionError(f"Invalid link id `{id}`.")
            origin, line = page.targets[id]
            target = state.stack[origin]
            start = loc if loc >= 0 else (line - 4 if line > 4 else line)
            return self._view(state, state.push(target, start), start, lines)
        url = page.links.get(id)
        if url is None:
            raise ToolExecutionError(f"Invalid link id `{id}`.")
        fetched = await self._fetch(state, url)
        start = max(loc, 0)
        return self._view(state, state.push(fetched, start), start, lines)

    async def _find(self, ctx: RunContext, pattern: str, cursor: int = -1) -> str:
        state = await self.state(ctx)
        index, page = state.get(cursor)
        if page.kind == "find":
            raise ToolExecutionError(
                "Cannot run `find` on a find results page; pass the `cursor` of the page to search."
            )
        results = find_in_page(page, index, pattern)
        return self._view(state, state.push(results, 0), 0, None)

    def __repr__(self) -> str:
        return f"BrowserTool(search={self.search_backend!r}, policy={self.policy!r})"


def _check_backend(value: Any) -> None:
    if value is not None and not isinstance(value, SearchBackend):
        raise ConfigurationError(f"search must be a SearchBackend, got {value!r}")
