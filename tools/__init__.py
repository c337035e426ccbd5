"""Tools the model can call: the Tool contract, developer functions, and the built-ins."""

from typing import TYPE_CHECKING, Any

from .base import RunContext, Tool, ToolResult, Toolset, serialize_output
from .function import FunctionTool, tool

if TYPE_CHECKING:  # what users' type checkers see; at run time they load on first use
    from .browser import BrowserTool
    from .python import PythonTool


def __getattr__(name: str) -> Any:  # built-in tools load on first use
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
