"""Tools the model can call: the Tool contract, developer functions, and the built-ins."""

from .base import RunContext, Tool, ToolResult, Toolset, serialize_output
from .function import FunctionTool, tool


def __getattr__(name: str):  # built-in tools load on first use
    if name == "PythonTool":
        from .python import PythonTool

        return PythonTool
    if name == "BrowserTool":
        from .browser import BrowserTool

        return BrowserTool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BrowserTool",
    "FunctionTool",
    "PythonTool",
    "RunContext",
    "Tool",
    "ToolResult",
    "Toolset",
    "serialize_output",
    "tool",
]
