"""The declared tools of an agent and the mapping from a sampled recipient to a tool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeGuard

from harmony_agent.errors import ConfigurationError, UnknownToolError
from harmony_agent.tools.base import Tool, Toolset

__all__ = ["NOT_A_TOOL", "ToolRegistry", "is_tool_recipient"]

#: recipients that address a person, not a tool
NOT_A_TOOL = frozenset({"assistant", "user", "all", "system", "developer"})


def is_tool_recipient(recipient: str | None) -> TypeGuard[str]:
    """Whether a message addressed to ``recipient`` is a tool call (on any channel)."""
    return bool(recipient) and recipient not in NOT_A_TOOL


class ToolRegistry:
    """Tools by recipient, plus what the system and developer messages must declare."""

    def __init__(self, items: Sequence[Tool | Toolset]) -> None:
        self.tools: dict[str, Tool] = {}
        self.namespaces: list[Any] = []
        self.toolsets: list[Toolset] = []
        for item in items:
            if isinstance(item, Toolset):
                self.toolsets.append(item)
                self.namespaces.extend(item.system_namespaces())
                members: Sequence[Tool] = item.tools()
            elif isinstance(item, Tool):
                members = [item]
            else:
                raise ConfigurationError(
                    f"tools must be Tool or Toolset instances (e.g. made with @tool), got "
                    f"{type(item).__name__}: {item!r}"
                )
            for t in members:
                if t.recipient in self.tools:
                    raise ConfigurationError(
                        f"two tools are named {t.recipient!r}; give one of them another name"
                    )
                self.tools[t.recipient] = t
        self.namespaces.sort(key=lambda ns: ns.name)  # harmony's order is alphabetical too

    @property
    def functions(self) -> list[Tool]:
        """Developer functions, declared in the developer message."""
        return [t for t in self.tools.values() if t.namespace == "functions"]

    def resolve(self, recipient: str) -> Tool:
        """The tool a sampled recipient means, tolerating known model slips.

        Accepted slips: ``json``/``code`` glued to the name (``functions.addjson``),
        ``functions.browser.search`` for ``browser.search`` and ``functions.python`` for
        ``python`` (gpt-oss emits both), and a function name without its namespace.
        """
        candidates = [recipient]
        for suffix in ("json", "code"):
            if recipient.endswith(suffix) and len(recipient) > len(suffix):
                candidates.append(recipient[: -len(suffix)])
        more = []
        for c in candidates:
            if c.startswith("functions."):
                more.append(c[len("functions.") :])
            elif "." not in c:
                more.append("functions." + c)
        for c in [*candidates, *more]:
            tool = self.tools.get(c)
            if tool is not None:
                return tool
        available = ", ".join(sorted(self.tools)) or "none"
        raise UnknownToolError(
            f"there is no tool named {recipient!r}. Available tools: {available}. "
            "Call one of these, or answer the user on the final channel."
        )
