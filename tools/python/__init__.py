"""The built-in ``python`` tool: a stateful, isolated Python sandbox."""

from ._files import FileEntry, RunFiles, SandboxFileError
from ._session import Limits
from .tool import PythonTool

__all__ = ["FileEntry", "Limits", "PythonTool", "RunFiles", "SandboxFileError"]
