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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import anyio.to_thread
from harmony_agent.errors import ConfigurationError, ToolExecutionError, ToolPolicyError
from harmony_agent.tools.base import (
    ApprovalPolicy,
    RunContext,
    Tool,
    Toolset,
    check_approval_policy,
)
from openai_harmony import ToolNamespaceConfig

from ._chromium import chromium_for_this_loop
from ._extract import EXTRACT_JS, page_from_dom, search_page
from ._policy import PolicyViolation, UrlPolicy
from ._render import PageSnapshot, find_in_page, render_view
from ._search import SearchBackend

__all__ = ["BrowserTool"]


@dataclass
class _State:
    """A run's browser: its own context (cookies, storage), one tab, the cursor stack."""

    context: Any
    page: Any
    stack: list[PageSnapshot] = field(default_factory=list)
    locs: list[int] = field(default_factory=list)
    blocked: list[PolicyViolation] = field(default_factory=list)
    popups: int = 0
    screenshots: int = 0

    def get(self, cursor: int | None) -> tuple[int, PageSnapshot]:
        if not self.stack:
            raise ToolExecutionError("No pages to access! Search or open a URL first.")
        if cursor is None or cursor == -1:
            cursor = len(self.stack) - 1
        if not 0 <= cursor < len(self.stack):
            raise ToolExecutionError(
                f"Cursor `{cursor}` is out of range. Available cursor indices: "
                f"[0 - {len(self.stack) - 1}]."
            )
        return cursor, self.stack[cursor]

    def push(self, page: PageSnapshot, loc: int) -> int:
        self.stack.append(page)
        self.locs.append(loc)
        return len(self.stack) - 1


class _BrowserFn(Tool):
    namespace = "browser"
    timeout = None  # the browser enforces its own page timeout
    ALIASES: ClassVar[dict[str, str]] = {}

    def __init__(self, owner: BrowserTool, name: str, parameters: dict[str, Any]) -> None:
        self.owner = owner
        self.name = name
        self.parameters = parameters
        self.description = f"browser.{name}"

    def normalize_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        out = dict(arguments)
        for alias, real in self.ALIASES.items():
            if alias in out and real not in out:
                out[real] = out.pop(alias)
        return out

    async def call(self, arguments: Any, ctx: RunContext) -> Any:
        return await getattr(self.owner, f"_{self.name}")(ctx, **arguments)


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
        allow_private_network: allow loopback, private and link-local addresses (off by
            default; needed for sites served on 127.0.0.1). A list of hosts or addresses
            allows just those (e.g. ``["127.0.0.1"]`` for a local test site).
        allow_domains / deny_domains: domain lists, subdomains included.
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
            _Search(self, "search", SEARCH_SCHEMA),
            _Open(self, "open", OPEN_SCHEMA),
            _Find(self, "find", FIND_SCHEMA),
        ]
        if automation:
            from ._automation import automation_tools

            self._tools += automation_tools(self)
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

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_State]:
        chromium = chromium_for_this_loop()
        browser = await chromium.acquire()
        try:
            context = await browser.new_context(
                accept_downloads=False, viewport={"width": 1280, "height": 900}
            )
            context.set_default_timeout(self.page_timeout * 1000)
            context.set_default_navigation_timeout(self.page_timeout * 1000)
            state = _State(context, None)

            async def guard(route: Any) -> None:
                url = route.request.url
                try:
                    await anyio.to_thread.run_sync(self.policy.check, url)
                except PolicyViolation as violation:
                    state.blocked.append(violation)
                    await route.abort("blockedbyclient")
                    return
                await route.fallback()

            async def popup(page: Any) -> None:
                if await page.opener() is not None:  # opened by a page, not by us
                    state.popups += 1
                    await page.close()

            await context.route("**/*", guard)
            context.on("page", popup)
            state.page = await context.new_page()
            try:
                yield state
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await context.close()
        finally:
            await chromium.release()

    async def state(self, ctx: RunContext) -> _State:
        key = f"browser:{id(self)}"
        state = await ctx.resource(key, self._session)
        if not state.context.browser or not state.context.browser.is_connected():
            await ctx.drop_resource(key)  # the browser crashed: a new one, a new context
            ctx.notice("the browser had crashed and was restarted; earlier pages are gone")
            state = await ctx.resource(key, self._session)
        return state

    def _count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def _view(self, state: _State, cursor: int, loc: int, num_lines: int | None) -> str:
        try:
            return render_view(
                state.stack[cursor], cursor, loc, num_lines, self._encoding, self.view_tokens
            )
        except ValueError as exc:
            raise ToolExecutionError(str(exc)) from None

    async def _fresh_page(self, state: _State) -> None:
        old, state.page = state.page, await state.context.new_page()
        with anyio.move_on_after(2, shield=True), contextlib.suppress(Exception):
            await old.close(run_before_unload=False)

    async def _fetch(self, state: _State, url: str) -> PageSnapshot:
        from playwright.async_api import Error as PlaywrightError

        try:
            await anyio.to_thread.run_sync(self.policy.check, url)
        except PolicyViolation as violation:
            raise ToolPolicyError(f"Error fetching URL `{url}`: {violation}") from None
        state.blocked.clear()
        page = state.page
        try:
            response = await page.goto(url, wait_until="load")
        except PlaywrightError as exc:
            message = str(exc).splitlines()[0]
            first = next((b for b in state.blocked if b.url.rstrip("/") == url.rstrip("/")), None)
            redirected = next((b for b in state.blocked), None)
            if first is not None or ("ERR_BLOCKED_BY_CLIENT" in message and redirected):
                raise ToolPolicyError(
                    f"Error fetching URL `{url}`: {first or redirected}"
                ) from None
            if "Download is starting" in message or "download" in message.lower():
                raise ToolPolicyError(
                    f"Error fetching URL `{url}`: it is a file download, and downloads are disabled"
                ) from None
            if "Timeout" in message:
                await self._fresh_page(state)
                raise ToolExecutionError(
                    f"Error fetching URL `{url}`: the page did not load within "
                    f"{self.page_timeout:g} s"
                ) from None
            if "ERR_TOO_MANY_REDIRECTS" in message:
                raise ToolExecutionError(
                    f"Error fetching URL `{url}`: too many redirects"
                ) from None
            raise ToolExecutionError(f"Error fetching URL `{url}`: {message}") from None
        hops = 0
        request = response.request if response is not None else None
        while request is not None and request.redirected_from is not None:
            hops += 1
            request = request.redirected_from
        if hops > self.max_redirects:
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
