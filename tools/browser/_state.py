"""A run's browser state, shared by the trained functions (tool.py) and the automation
functions (_automation.py); it imports neither, so neither imports the other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from harmony_agent.errors import ToolExecutionError
from harmony_agent.tools.base import RunContext

from ._policy import PolicyViolation
from ._proxy import EgressProxy
from ._render import PageSnapshot

__all__ = ["BrowserState", "StateGetter"]


@dataclass
class BrowserState:
    """A run's browser: its own context (cookies, storage) behind its own egress proxy, one
    tab, the cursor stack."""

    context: Any
    page: Any
    proxy: EgressProxy
    max_redirects: int = 10
    stack: list[PageSnapshot] = field(default_factory=list)
    locs: list[int] = field(default_factory=list)
    popups: int = 0
    screenshots: int = 0

    @property
    def blocked(self) -> list[PolicyViolation]:
        """What the policy refused since the last ``open`` (requests of the page included)."""
        return self.proxy.blocked

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


StateGetter = Callable[[RunContext], Awaitable[BrowserState]]
