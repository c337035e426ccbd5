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

from harmony_agent.tools import FunctionTool, RunContext, Tool, Toolset, tool

from . import errors, events
from ._hooks import Deny, Hooks, ReplaceArguments, StopRun, TurnInfo, UsageLimits
from ._state import RunState
from .agent import Agent, RunStream
from .errors import HarmonyAgentError
from .events import Event
from .result import RunResult, RunUsage, ToolCallRecord, ToolCallRequest

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "Deny",
    "Event",
    "FunctionTool",
    "HarmonyAgentError",
    "Hooks",
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
    "tool",
]
