"""harmony-agent: an agent runtime for gpt-oss that speaks Harmony token for token.

Example::

    from harmony_agent import Agent, tool
    from harmony_agent.engine import ScriptedEngine

    @tool
    def add(a: int, b: int) -> int:
        "Add two integers."
        return a + b

    agent = Agent(tools=[add], engine=ScriptedEngine([
        '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
        "<|channel|>final<|message|>5<|return|>",
    ]))
    assert agent.run_sync("2+3?").final_text == "5"
"""

from typing import TYPE_CHECKING

from harmony_agent.tools import FunctionTool, RunContext, Tool, Toolset, tool

from . import errors, events
from ._context import Compaction
from ._hooks import Deny, Hooks, ReplaceArguments, StopRun, TurnInfo, UsageLimits
from ._otel import instrument, uninstrument
from ._state import RunState
from .agent import Agent, RunStream
from .errors import HarmonyAgentError
from .events import Event
from .result import RunResult, RunUsage, ToolCallRecord, ToolCallRequest

__version__ = "0.1.0"

if TYPE_CHECKING:  # what users' type checkers see; at run time they load on first use
    from harmony_agent.tools.mcp import MCPServerStdio, MCPServerStreamableHTTP

_MCP = ("MCPServerStdio", "MCPServerStreamableHTTP")


def __getattr__(name: str):  # MCP toolsets load on first use
    if name in _MCP:
        from harmony_agent.tools import mcp

        return getattr(mcp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Agent",
    "Compaction",
    "Deny",
    "Event",
    "FunctionTool",
    "HarmonyAgentError",
    "Hooks",
    "MCPServerStdio",
    "MCPServerStreamableHTTP",
    "ReplaceArguments",
    "RunContext",
    "RunResult",
    "RunState",
    "RunStream",
    "RunUsage",
    "StopRun",
    "Tool",
    "ToolCallRecord",
    "ToolCallRequest",
    "Toolset",
    "TurnInfo",
    "UsageLimits",
    "__version__",
    "errors",
    "events",
    "instrument",
    "tool",
    "uninstrument",
]
