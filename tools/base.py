"""The Tool contract: one async method; the base class does the shared work.

A :class:`Tool` has a recipient (``functions.add``, ``browser.open``, ``python``), a
description and a JSON schema for its arguments (``None`` for free-text input such as Python
code). Subclasses implement :meth:`Tool.call`. The base class parses and validates the
arguments (jsonschema, one cached validator per tool), applies the timeout, and turns every failure into a
:class:`ToolResult` whose text the model reads — a tool never crashes the run.

A :class:`Toolset` groups tools that share a namespace and per-run state (the browser, the
Python sandbox) and says how the namespace is declared in the system message. Its
:meth:`Toolset.prepare` runs when a run starts (an MCP server lists its tools there) and
:meth:`Toolset.aclose` when the agent is closed.

Example — a tool written by hand::

    import anyio
    from harmony_agent.tools import RunContext, Tool

    class Shout(Tool):
        name = "shout"
        description = "Upper-cases a text."
        parameters = {"type": "object", "properties": {"text": {"type": "string"}},
                      "required": ["text"]}

        async def call(self, arguments, ctx):
            return arguments["text"].upper()

    async def main():
        async with RunContext.open() as ctx:
            ok = await Shout().invoke('{"text": "hi"}', ctx)
            bad = await Shout().invoke('{"txt": "hi"}', ctx)
        assert ok.text == "HI" and ok.ok
        assert not bad.ok and "'text' is a required property" in bad.text

    anyio.run(main)
"""

from __future__ import annotations

import abc
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import jsonschema
import pydantic
import pydantic_core
from harmony_agent import _json
from harmony_agent.errors import (
    ConfigurationError,
    ToolArgumentsError,
    ToolError,
    ToolExecutionError,
    ToolTimeoutError,
)
from jsonschema.protocols import Validator
from openai_harmony import ToolNamespaceConfig

__all__ = [
    "ApprovalPolicy",
    "RunContext",
    "Tool",
    "ToolResult",
    "Toolset",
    "check_approval_policy",
    "serialize_output",
]

T = TypeVar("T")

#: Whether a call must be approved before it runs: a bool, or a callable (sync or async) taking
#: the run's context and the call (a ``harmony_agent.result.ToolCallRequest``).
ApprovalPolicy = bool | Callable[[Any, Any], bool | Awaitable[bool]]


def check_approval_policy(policy: Any, name: str) -> ApprovalPolicy:
    """``policy`` if it is one (a bool or a callable), else a :class:`ConfigurationError`."""
    if isinstance(policy, bool) or callable(policy):
        return policy  # pyright: ignore[reportReturnType]  # a callable's return is checked per call
    raise ConfigurationError(
        f"needs_approval of {name} must be True, False or a callable (ctx, call) -> bool, "
        f"got {policy!r}"
    )


#: Tool output longer than this is cut (head and tail kept) before the model sees it.
DEFAULT_MAX_OUTPUT_CHARS = 60_000


@dataclass
class RunContext:
    """Per-run state handed to every tool call.

    ``files_dir`` is where tools put files for the host program (screenshots, plots).
    ``deps`` is whatever the caller passed to ``Agent.run(..., deps=...)``. Toolsets keep
    per-run resources (a browser context, a sandbox session) with :meth:`resource`; they are
    closed when the run ends or is cancelled.
    """

    run_id: str
    #: the folder the caller named; None: a temporary one, made on first use of ``files_dir``
    #: (most runs write no file, and making and removing a folder costs every run)
    given_files_dir: Path | None = None
    deps: Any = None
    #: a task group that outlives the run's resources, for background tasks such as a server
    #: connection: the agent's inside ``async with agent:`` (then ``shared`` is true and what
    #: it runs may serve later runs), else one that ends with this run
    task_group: anyio.abc.TaskGroup | None = None
    shared: bool = False
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack, repr=False)
    _resources: dict[str, Any] = field(default_factory=dict, repr=False)
    _locks: dict[str, anyio.Lock] = field(default_factory=dict, repr=False)
    _notices: list[str] = field(default_factory=list, repr=False)
    _temp_files: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    _files_dir: Path | None = field(default=None, repr=False)

    @property
    def files_dir(self) -> Path:
        """Where tools put files for the host program: the folder the caller named, else a
        temporary folder made on first use and removed when the run's context closes."""
        if self._files_dir is None:
            if self.given_files_dir is not None:
                folder = self.given_files_dir
                folder.mkdir(parents=True, exist_ok=True)
            else:
                self._temp_files = tempfile.TemporaryDirectory(prefix="ha-run-")
                folder = Path(self._temp_files.name)
                # others may traverse (not list) it: sandboxed tools run as unprivileged users
                folder.chmod(0o711)
            self._files_dir = folder
        return self._files_dir

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        *,
        run_id: str | None = None,
        files_dir: Path | None = None,
        deps: Any = None,
        task_group: anyio.abc.TaskGroup | None = None,
        shared: bool = False,
    ) -> AsyncIterator[RunContext]:
        """A context whose resources are closed on exit (the agent opens one per run)."""
        run_id = run_id or uuid.uuid4().hex[:12]
        ctx = cls(
            run_id=run_id,
            given_files_dir=files_dir,
            deps=deps,
            task_group=task_group,
            shared=shared,
        )
        try:
            yield ctx
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await ctx._stack.aclose()
            finally:
                if ctx._temp_files is not None:
                    ctx._temp_files.cleanup()

    async def resource(self, key: str, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        """The run's resource ``key``, entered from ``factory()`` on first use."""
        if key in self._resources:
            return self._resources[key]
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            if key not in self._resources:
                self._resources[key] = await self._stack.enter_async_context(factory())
        return self._resources[key]

    async def drop_resource(self, key: str) -> None:
        """Forget ``key`` so the next :meth:`resource` call makes a new one (after a crash).

        The old resource is still closed when the run ends.
        """
        self._resources.pop(key, None)

    def notice(self, message: str) -> None:
        """Report something the user should know (weaker isolation, a restart) as a warning event."""
        self._notices.append(message)

    def take_notices(self) -> list[str]:
        notices, self._notices = self._notices, []
        return notices


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call produced: the text the model reads, and whether it was an error."""

    text: str
    ok: bool = True
    error_kind: str | None = None
    duration_s: float = 0.0
    value: Any = None


def serialize_output(value: Any) -> str:
    """Text for the model: strings as they are, pydantic models and JSON-able values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json()
    try:
        return pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError:
        return str(value)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n…[{cut} characters cut]…\n{text[-tail:]}"


class Tool(abc.ABC):
    """One thing the model can call. Subclasses set the class attributes and implement :meth:`call`.

    ``namespace`` is ``"functions"`` for developer functions (declared in the developer
    message); built-in tools use their own namespace and belong to a :class:`Toolset`.
    ``parameters`` is the JSON schema of the arguments object, or ``None`` when the tool takes
    the message text as is (the python tool). ``timeout`` is in seconds (``None``: no limit).
    ``needs_approval`` (a bool or a callable of ``(ctx, call)``): the run pauses before the
    call runs, until it is approved (see ``Agent.resume``); the wait is not part of the timeout.
    """

    namespace: str = "functions"
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    timeout: float | None = 60.0
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    needs_approval: ApprovalPolicy = False
    _validator_cache: tuple[Any, Validator] | None = None

    @property
    def recipient(self) -> str:
        """The ``to=`` value the model writes to call this tool."""
        return self.name if self.name == self.namespace else f"{self.namespace}.{self.name}"

    @abc.abstractmethod
    async def call(self, arguments: Any, ctx: RunContext) -> Any:
        """Do the work. ``arguments`` is the validated dict (or the raw text); return text or JSON-able."""

    def normalize_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Hook to accept known aliases before validation (e.g. ``url`` for ``id``)."""
        return arguments

    def parse_arguments(self, raw: str) -> Any:
        """Raw message content → validated arguments, or :class:`ToolArgumentsError`."""
        if self.parameters is None:
            return raw
        text = raw.strip()
        if not text:
            arguments: Any = {}
        else:
            try:
                arguments = _json.loads(text)
            except json.JSONDecodeError as exc:
                raise ToolArgumentsError(
                    f"arguments for {self.recipient} are not valid JSON ({exc.msg} at line "
                    f"{exc.lineno} column {exc.colno}). Send one JSON object that matches the "
                    f"tool's parameters."
                ) from None
            except _json.JSONLimitError as exc:
                raise ToolArgumentsError(
                    f"arguments for {self.recipient} were refused: {exc}."
                ) from None
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(
                f"arguments for {self.recipient} must be a JSON object, got "
                f'{type(arguments).__name__}. Send an object such as {{"name": value}}.'
            )
        arguments = self.normalize_arguments(arguments)
        self.validate_arguments(arguments)
        return arguments

    def validate_arguments(self, arguments: dict[str, Any]) -> None:
        """Check ``arguments`` against :attr:`parameters` (jsonschema); the one validation pass.

        Subclasses that convert the arguments themselves (``FunctionTool``'s pydantic model)
        override this to validate there instead, so arguments are validated once.
        """
        errors = sorted(
            self._validator().iter_errors(arguments), key=lambda e: list(e.absolute_path)
        )
        if errors:
            lines = []
            for err in errors[:5]:
                where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
                lines.append(f"- at {where}: {err.message}")
            raise ToolArgumentsError(
                f"arguments for {self.recipient} do not match its schema:\n"
                + "\n".join(lines)
                + "\nFix these and call the tool again."
            )

    def _validator(self) -> Validator:
        # Built once per tool (building one checks and compiles the schema); replacing
        # ``parameters`` gets a new one.
        cached = self._validator_cache
        if cached is None or cached[0] is not self.parameters:
            cached = (self.parameters, jsonschema.Draft202012Validator(self.parameters or {}))
            self._validator_cache = cached
        return cached[1]

    async def invoke(self, raw: str, ctx: RunContext) -> ToolResult:
        """Parse, validate, run with the timeout; every failure becomes an error result.

        Only this tool's own deadline counts as a timeout: a ``TimeoutError`` the tool raises
        itself (an upstream client giving up, say) is that tool's failure, reported as such.
        """
        start = time.perf_counter()
        try:
            arguments = self.parse_arguments(raw)
            value: Any = None
            with anyio.move_on_after(self.timeout) as deadline:  # None: no limit
                value = await self.call(arguments, ctx)
            if deadline.cancelled_caught:
                raise ToolTimeoutError(
                    f"{self.recipient} timed out after {self.timeout:g} s and was stopped. "
                    "Try a smaller request or a different approach."
                )
            text = _clip(serialize_output(value), self.max_output_chars)
            return ToolResult(text, True, None, time.perf_counter() - start, value)
        except ToolError as exc:
            return ToolResult(str(exc), False, exc.kind, time.perf_counter() - start)
        except Exception as exc:  # the tool's own bug must not end the run
            failed = ToolExecutionError(f"{self.recipient} failed: {type(exc).__name__}: {exc}")
            return ToolResult(str(failed), False, failed.kind, time.perf_counter() - start)


class Toolset(abc.ABC):
    """Tools sharing a namespace (and usually per-run state), e.g. the browser.

    :meth:`system_namespaces` lists the ``ToolNamespaceConfig`` declared in the system message
    (built-in tools the model was trained on); tools in the ``functions`` namespace are
    declared in the developer message like any function.
    """

    @abc.abstractmethod
    def tools(self) -> Sequence[Tool]:
        """Every tool of the set."""

    def system_namespaces(self) -> Sequence[ToolNamespaceConfig]:
        """``openai_harmony.ToolNamespaceConfig`` objects for the system message."""
        return ()

    async def prepare(self, ctx: RunContext) -> None:
        """Called when a run starts, before its first prompt is rendered.

        A set whose tools live elsewhere (an MCP server) connects and lists them here, so
        that :meth:`tools` is complete when the prompt declares them.
        """
        return None

    async def aclose(self) -> None:
        """Release what the set keeps across runs (``Agent.aclose`` calls it)."""
        return None
