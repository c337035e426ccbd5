"""What :class:`harmony_agent.Agent` delegates to: the checks of its arguments and of a state
to resume, the stream of a run's events (:class:`RunStream`), running a run to its result,
and the task group a run's connections live in."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc
from harmony_agent.engine.base import Engine
from harmony_agent.tools.base import RunContext, Toolset
from openai_harmony import (
    Conversation,
    HarmonyEncoding,
    Message,
    RenderConversationConfig,
    Role,
)

from . import _harmony as hm
from . import _tokens as tk
from ._context import Compaction
from ._hooks import Decision, check_decisions
from ._registry import ToolRegistry
from ._run import Run
from ._state import Recorder, RunState
from .errors import ConfigurationError, RunStateError
from .events import Event
from .result import RunResult
from .trace import TraceWriter

OnEvent = Callable[[Event], Any]

_T = TypeVar("_T")


def check_engine(engine: object, reasoning_effort: object) -> None:
    """:class:`ConfigurationError` for an engine that is not one, or an unknown effort."""
    if not isinstance(engine, Engine):
        raise ConfigurationError(
            f"engine must be an Engine (e.g. ScriptedEngine, VLLMEngine), got {engine!r}"
        )
    if reasoning_effort not in ("low", "medium", "high"):
        raise ConfigurationError(
            f"reasoning_effort must be 'low', 'medium' or 'high', got {reasoning_effort!r}"
        )


def retries(value: int) -> int:
    """``output_retries``, checked."""
    if not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"output_retries must be 0 or more, got {value!r}")
    return value


def checked(name: str, value: _T | None, kind: type[_T]) -> _T | None:
    """``value`` when it is None or a ``kind``, else :class:`ConfigurationError`."""
    if value is not None and not isinstance(value, kind):
        raise ConfigurationError(f"{name} must be a {kind.__name__}, got {value!r}")
    return value


def check_resume(
    state: RunState,
    approve: Mapping[str, Decision] | None,
    *,
    settings: hm.PromptSettings,
    registry: ToolRegistry,
    instructions: str | None,
    encoding: HarmonyEncoding,
) -> dict[str, Decision]:
    """The decisions for ``state``'s pending calls, after checking that this agent renders
    the prompt the state extends; :class:`RunStateError` saying what differs."""
    if not isinstance(state, RunState):
        raise RunStateError(
            f"resume takes a RunState (RunState.from_json(text), a paused result's .state), "
            f"got {type(state).__name__}"
        )
    decisions = check_decisions(state.pending, approve)
    messages = state.messages
    if not messages or messages[0].author.role != Role.SYSTEM:
        raise RunStateError(
            "the state's conversation does not start with a system message; it was not "
            "saved by a harmony-agent run. Nothing was run."
        )
    date = getattr(messages[0].content[0], "conversation_start_date", None)
    settings = dataclasses.replace(settings, conversation_start_date=date)
    head = [hm.build_system_message(settings, registry.namespaces)]
    developer = hm.build_developer_message(instructions, registry.functions)
    if developer is not None:
        head.append(developer)
    rendered = encoding.render_conversation(
        Conversation.from_messages(head), RenderConversationConfig(auto_drop_analysis=False)
    )
    if state.prompt_ids[: len(rendered)] != rendered:
        raise RunStateError(
            "this state was saved by a different agent: "
            f"{what_differs(head, messages)}, so resuming would not extend the prompt it "
            "was sampled from. Resume with an agent of the same instructions, tools and "
            "settings. Nothing was run."
        )
    if state.pending and (not state.prompt_ids or state.prompt_ids[-1] != tk.CALL):
        raise RunStateError(
            "the state waits on a tool call but its token ids do not end with the call "
            "(<|call|>); it is corrupt. Nothing was run."
        )
    return decisions


def what_differs(expected: list[Message], saved: list[Message]) -> str:
    system_ok = saved[0].to_dict() == expected[0].to_dict()
    saved_dev = saved[1] if len(saved) > 1 and saved[1].author.role == Role.DEVELOPER else None
    expected_dev = expected[1] if len(expected) > 1 else None
    dev_ok = (saved_dev.to_dict() if saved_dev else None) == (
        expected_dev.to_dict() if expected_dev else None
    )
    parts = []
    if not system_ok:
        parts.append(
            "the system message differs (reasoning effort, model identity, knowledge cutoff "
            "or built-in tools: browser, python)"
        )
    if not dev_ok:
        parts.append("the developer message differs (instructions or function tools)")
    return "; ".join(parts) or "the rendered system and developer messages differ"


class RunStream:
    """The events of one run, as an async iterator, and its :attr:`result` at the end.

    Made by :meth:`Agent.stream` and :meth:`Agent.resume_stream`. Use it as ``async with
    agent.stream(task) as stream: async for event in stream: ...``; leaving the block early
    stops the run (the engine request is aborted, the run's tools closed).
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._events = run.events()

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop the run if it is still going (what leaving ``async with`` does)."""
        await self._events.aclose()

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def result(self) -> RunResult:
        """The run's result: the answer, a pause (``status == "paused"``), or, after an error,
        the partial run (``status == "error"``, also the error's ``result``)."""
        if self._run.result is None:
            raise RuntimeError(
                "the run has no result yet: iterate the stream to its end first "
                "(async for event in stream: ...)"
            )
        return self._run.result


async def finish(run: Run, on_event: OnEvent | None = None) -> RunResult:
    async with aclosing(run.events()) as events:
        async for event in events:
            if on_event is not None:
                outcome = on_event(event)
                if inspect.isawaitable(outcome):
                    await outcome
    if run.result is None:  # events() either finishes with a result or raises
        raise RuntimeError("the run ended without a result or an error")
    return run.result


def declared(registry: ToolRegistry) -> list[tuple[str, str, Any]]:
    return [(t.recipient, t.description, t.parameters) for t in registry.tools.values()]


@asynccontextmanager
async def task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group for a run's background tasks (they never raise), which lets the run's
    own exception through as it is instead of wrapped in an ExceptionGroup."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            (exc,) = group.exceptions
            raise exc from exc.__cause__
        raise


def recorder(trace: str | Path | Recorder | None) -> Recorder | None:
    if trace is None or not isinstance(trace, str | Path):
        return trace
    return TraceWriter(trace)


def compaction_policy(value: Compaction | bool | None, has_tools: bool) -> Compaction | None:
    if value is None:
        return Compaction() if has_tools else None
    if value is True:
        return Compaction()
    if value is False:
        return None
    if not isinstance(value, Compaction):
        raise ConfigurationError(
            f"compaction must be a Compaction policy, True or False, got {value!r:.80}"
        )
    return value


def positive(name: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"{name} must be a positive number of tokens, got {value!r}")
    return value


def fractions(values: Sequence[float]) -> tuple[float, ...]:
    out = tuple(values)
    if not all(isinstance(v, int | float) and 0 < v <= 1 for v in out):
        raise ConfigurationError(
            f"context_warnings are fractions of the window in (0, 1], e.g. (0.75, 0.9); got {out!r}"
        )
    return tuple(sorted(out))


async def close_toolsets(toolsets: Sequence[Toolset], stack: AsyncExitStack | None) -> None:
    """Close what ``toolsets`` keep across runs, then ``stack`` (an agent's lifetime)."""
    try:
        with anyio.CancelScope(shield=True):
            for toolset in toolsets:
                await toolset.aclose()
    finally:
        if stack is not None:  # the task group, now empty (left outside the shield)
            await stack.aclose()


@asynccontextmanager
async def open_run_context(
    run_id: str,
    deps: Any,
    files_dir: Path | None,
    lifetime: anyio.abc.TaskGroup | None,
    *,
    prepare: Callable[[RunContext], Awaitable[None]],
) -> AsyncIterator[RunContext]:
    """A run's context, ``prepare``d; in the ``lifetime`` task group when there is one (the
    agent's, inside ``async with agent:``), else in the run's own."""
    async with AsyncExitStack() as host:
        group = lifetime or await host.enter_async_context(task_group())
        async with RunContext.open(
            run_id=run_id,
            files_dir=files_dir,
            deps=deps,
            task_group=group,
            shared=lifetime is not None,
        ) as ctx:
            await prepare(ctx)
            yield ctx
