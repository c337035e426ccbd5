"""Tools the model can call: the Tool contract, developer functions, and the built-ins."""

from .base import RunContext, Tool, ToolResult, Toolset, serialize_output
from .function import FunctionTool, tool

__all__ = [
    "FunctionTool",
    "RunContext",
    "Tool",
    "ToolResult",
    "Toolset",
    "serialize_output",
    "tool",
]
