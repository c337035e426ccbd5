"""The built-in ``python`` tool: a stateful, isolated Python sandbox."""

from ._session import Limits
from .tool import PythonTool

__all__ = ["Limits", "PythonTool"]
