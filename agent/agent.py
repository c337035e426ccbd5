"""The Agent: the token-exact Harmony loop.

    render prompt (ids) → engine samples ids → parse → tool call? → run tool →
    append tool result ids → sample again … → final answer

Within a run the prompt is append-only: the next prompt is the previous prompt, plus the ids
the model sampled (stop token included), plus the rendered tool message, plus
``<|start|>assistant``. Nothing is re-rendered, so the engine's prefix cache always hits and
the model sees exactly what it wrote. The loop itself, as named steps (sample → decide →
tool step / finish), is :class:`harmony_agent._run.Run`; this module is its public face.

Example::

    from harmony_agent import Agent, tool
    from harmony_agent.engine import ScriptedEngine

    @tool
    def get_weather(city: str) -> dict:
        "Current weather for a city."
        return {"city": city, "temp_c": 21}

    agent = Agent(
        instructions="Answer briefly.",
        tools=[get_weather],
        engine=ScriptedEngine([
            '<|channel|>analysis<|message|>Need the weather.<|end|>'
            '<|start|>assistant<|channel|>commentary to=functions.get_weather '
            '<|constrain|>json<|message|>{"city":"Paris"}<|call|>',
            "<|channel|>final<|message|>21 °C in Paris.<|return|>",
        ]),
    )
    result = agent.run_sync("Weather in Paris?")
    assert result.final_text == "21 °C in Paris."
    assert result.tool_calls[0].arguments == {"city": "Paris"}
    assert result.usage.turns == 2
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

import anyio
import anyio.abc
from harmony_agent.engine.base import Engine
from harmony_agent.tools.base import RunContext, Tool, Toolset
from openai_harmony import Conversation, Message, RenderConversationConfig, Role

from . import _harmony as hm
from ._encoding import load_encoding
from ._output import OutputSpec, output_spec, response_formats_text
from ._registry import ToolRegistry
from ._run import Run
from ._state import Recorder, RunState
from .errors import ConfigurationError
from .events import Event
from .result import RunResult
from .trace import TraceWriter

__all__ = ["Agent", "Recorder", "RunState"]

T = TypeVar("T")


class Agent:
    """A gpt-oss agent: instructions, tools and an engine.

    Args:
        instructions: developer instructions (the developer message).
        tools: ``@tool`` functions, ``Tool`` instances and toolsets (``BrowserTool``, ``PythonTool``).
        engine: where tokens come from (``VLLMEngine``, ``OpenAICompatibleEngine``, ``ScriptedEngine``).
        reasoning_effort: ``"low"``, ``"medium"`` or ``"high"`` (system message).
        max_turns: model turns per run before :class:`MaxTurnsError`.
        max_tokens_per_turn: sampling limit of one turn (clamped to the context left).
        max_tool_errors: consecutive failed tool calls before :class:`ToolErrorBudgetError`.
        temperature, top_p, seed: sampling; ``None`` leaves the engine's default.
        model_identity, knowledge_cutoff, conversation_start_date: system message fields;
            the date defaults to today.
        context_window: tokens the model can attend to (default: the engine's, else 131,072).
        files_dir: where tools put files (screenshots, sandbox outputs); a temporary
            directory per run when None.
        tracer_provider: an OpenTelemetry ``TracerProvider`` to record runs to (GenAI
            semantic conventions); default: the one :func:`harmony_agent.instrument` set, if any.
        trace_content: put prompts, arguments, outputs and reasoning on the spans (default:
            what :func:`harmony_agent.instrument` said; off).
        output_type: the answer's type: a pydantic model, dataclass, TypedDict, a type such
            as ``int`` or ``list[str]``, or a JSON schema dict. The developer message gets a
            ``# Response Formats`` section, engines that can hold the final channel to the
            schema do, and ``RunResult.output`` is the validated value.
        output_retries: answers that fail validation the model may correct (each gets a
            message naming the path and the reason) before :class:`OutputValidationError`.

    Toolsets that hold connections (MCP servers) share one per server across runs inside
    ``async with agent:`` (or until ``await agent.aclose()``); a run outside it connects
    for itself and disconnects when it ends.
    """

    def __init__(
        self,
        instructions: str | None = None,
        *,
        tools: Sequence[Tool | Toolset] = (),
        engine: Engine,
        reasoning_effort: hm.Effort = "medium",
        max_turns: int = 30,
        max_tokens_per_turn: int = 8192,
        max_tool_errors: int = 5,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        model_identity: str | None = None,
        knowledge_cutoff: str | None = "2024-06",
        conversation_start_date: str | None = None,
        context_window: int | None = None,
        files_dir: str | Path | None = None,
        tracer_provider: Any = None,
        trace_content: bool | None = None,
        output_type: Any = None,
        output_retries: int = 1,
    ) -> None:
        if not isinstance(engine, Engine):
            raise ConfigurationError(
                f"engine must be an Engine (e.g. ScriptedEngine, VLLMEngine), got {engine!r}"
            )
        if reasoning_effort not in ("low", "medium", "high"):
            raise ConfigurationError(
                f"reasoning_effort must be 'low', 'medium' or 'high', got {reasoning_effort!r}"
            )
        for name, value in (("max_turns", max_turns), ("max_tokens_per_turn", max_tokens_per_turn)):
            if value < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {value}")
        self.instructions = instructions
        self.engine = engine
        self._tool_items = list(tools)
        self.registry = ToolRegistry(self._tool_items)
        self.settings = hm.PromptSettings(
            reasoning_effort=reasoning_effort,
            model_identity=model_identity,
            knowledge_cutoff=knowledge_cutoff,
            conversation_start_date=conversation_start_date,
        )
        if output_retries < 0:
            raise ConfigurationError(f"output_retries must be 0 or more, got {output_retries}")
        self.output: OutputSpec | None = None if output_type is None else output_spec(output_type)
        self.output_retries = output_retries
        self.max_turns = max_turns
        self.max_tokens_per_turn = max_tokens_per_turn
        self.max_tool_errors = max_tool_errors
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.context_window = context_window
        self.files_dir = Path(files_dir) if files_dir is not None else None
        self.encoding = load_encoding()
        self._prefix: list[int] | None = None
        self.tracer_provider = tracer_provider
        self.trace_content = trace_content
        self._lifetime: AsyncExitStack | None = None
        self._lifetime_tg: anyio.abc.TaskGroup | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Agent:
        if self._lifetime is not None:
            raise ConfigurationError("this agent is already entered (async with agent: ...)")
        stack = AsyncExitStack()
        self._lifetime_tg = await stack.enter_async_context(anyio.create_task_group())
        self._lifetime = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close what the tools keep across runs (MCP connections, their subprocesses)."""
        stack, self._lifetime, self._lifetime_tg = self._lifetime, None, None
        try:
            with anyio.CancelScope(shield=True):
                for toolset in self.registry.toolsets:
                    await toolset.aclose()
        finally:
            if stack is not None:  # the task group, now empty (left outside the shield)
                await stack.aclose()

    @asynccontextmanager
    async def run_context(self, run_id: str, deps: Any) -> AsyncIterator[RunContext]:
        """The context of one run, its toolsets prepared (tools listed) before the prompt is
        rendered. Connections live in the agent's task group inside ``async with agent:``,
        else in the run's own."""
        async with AsyncExitStack() as host:
            group = self._lifetime_tg or await host.enter_async_context(_task_group())
            async with RunContext.open(
                run_id=run_id,
                files_dir=self.files_dir,
                deps=deps,
                task_group=group,
                shared=self._lifetime_tg is not None,
            ) as ctx:
                await self._prepare_tools(ctx)
                yield ctx

    async def _prepare_tools(self, ctx: RunContext) -> None:
        """Let toolsets list their tools before the prompt is rendered; re-declare on change."""
        for toolset in self.registry.toolsets:
            await toolset.prepare(ctx)
        if self.registry.toolsets:
            registry = ToolRegistry(self._tool_items)
            if list(registry.tools.values()) != list(self.registry.tools.values()):
                if _declared(registry) != _declared(self.registry):
                    self._prefix = None  # the developer message changes
                self.registry = registry

    # --- prompts ---------------------------------------------------------------------------

    def initial_messages(
        self, task: str, history: RunResult | None = None, output: OutputSpec | None = None
    ) -> list[Message]:
        """The conversation the first prompt of a run renders (``output``: the run's own
        output type, when it overrides the agent's)."""
        user = Message.from_role_and_content(Role.USER, task)
        if history is not None:
            return [*hm.drop_stale_analysis(history.messages), user]
        messages = [hm.build_system_message(self.settings, self.registry.namespaces)]
        output = output or self.output
        formats = None
        if output is not None:
            before = bool(self.instructions or self.registry.functions)
            formats = response_formats_text(output, after_other_content=before)
        developer = hm.build_developer_message(self.instructions, self.registry.functions, formats)
        if developer is not None:
            messages.append(developer)
        messages.append(user)
        return messages

    def first_prompt(self, task: str, output: OutputSpec | None = None) -> list[int]:
        """The first prompt of a new run: the system and developer messages (rendered once
        per agent) followed by the user's task and ``<|start|>assistant``. A run's own
        ``output`` type renders its own developer message."""
        if output is not None and output is not self.output:
            prefix = self._render_head(output)
        else:
            if self._prefix is None:
                self._prefix = self._render_head(None)
            prefix = self._prefix
        return [
            *prefix,
            *hm.render_user(self.encoding, task),
            *hm.assistant_start_ids(self.encoding),
        ]

    def _render_head(self, output: OutputSpec | None) -> list[int]:
        head = self.initial_messages("", output=output)[:-1]
        return hm.guard_render(
            "the system and developer messages",
            self.encoding.render_conversation,
            Conversation.from_messages(head),
            RenderConversationConfig(auto_drop_analysis=False),
        )

    def _output_for(self, output_type: Any) -> OutputSpec | None:
        """A run's output type: its own, else the agent's (None: inherit)."""
        return None if output_type is None else output_spec(output_type)

    # --- running ---------------------------------------------------------------------------

    def stream(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        output_type: Any = None,
    ) -> AsyncGenerator[Event, None]:
        """Run and yield events as they happen; the last is ``RunFinished`` or ``ErrorEvent``.

        Errors that end the run are raised after their ``ErrorEvent``. Close the iterator
        (``async with contextlib.aclosing(agent.stream(task)) as events``) to stop early; the
        engine request is aborted and the run's tools are closed. ``output_type``: this run's
        own (see :class:`Agent`); None keeps the agent's.
        """
        output = self._output_for(output_type)
        return Run(self, task, history, deps, recorder=_recorder(trace), output=output).events()

    @overload
    async def run(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        on_event: Callable[[Event], Any] | None = None,
        output_type: type[T],
    ) -> RunResult[T]: ...

    @overload
    async def run(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        on_event: Callable[[Event], Any] | None = None,
        output_type: Any = None,
    ) -> RunResult[Any]: ...

    async def run(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        on_event: Callable[[Event], Any] | None = None,
        output_type: Any = None,
    ) -> RunResult[Any]:
        """Run ``task`` to its final answer.

        ``history``: a previous result to continue the conversation (its analysis before the
        last final answer is dropped, as the Harmony format prescribes). ``deps`` is handed to
        tools as ``ctx.deps``. ``trace``: a file to write the run to as JSON lines, one record
        per event and per step, fsynced per step (see :mod:`harmony_agent.trace`).
        ``on_event``: called with every event as it happens (sync or async), e.g. to show
        progress while still getting the whole result. ``output_type``: this run's own (see
        :class:`Agent`; ``result.output`` is then typed); None keeps the agent's.
        """
        output = self._output_for(output_type)
        run = Run(self, task, history, deps, recorder=_recorder(trace), output=output)
        return await _finish(run, on_event)

    def run_sync(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        output_type: Any = None,
    ) -> RunResult[Any]:
        """:meth:`run` for synchronous code (starts its own event loop)."""
        return anyio.run(
            lambda: self.run(task, history=history, deps=deps, trace=trace, output_type=output_type)
        )

    def resume_stream(
        self, state: RunState, *, deps: Any = None, trace: str | Path | Recorder | None = None
    ) -> AsyncGenerator[Event, None]:
        """Go on with a run from ``state`` (e.g. ``load_trace(path).resume_state()``)."""
        return Run(self, state.task, resume=state, deps=deps, recorder=_recorder(trace)).events()

    async def resume(
        self, state: RunState, *, deps: Any = None, trace: str | Path | Recorder | None = None
    ) -> RunResult:
        """:meth:`resume_stream` to the final answer."""
        run = Run(self, state.task, resume=state, deps=deps, recorder=_recorder(trace))
        return await _finish(run)


async def _finish(run: Run, on_event: Callable[[Event], Any] | None = None) -> RunResult:
    async with aclosing(run.events()) as events:
        async for event in events:
            if on_event is not None:
                outcome = on_event(event)
                if inspect.isawaitable(outcome):
                    await outcome
    if run.result is None:  # events() either finishes with a result or raises
        raise RuntimeError("the run ended without a result or an error")
    return run.result


def _declared(registry: ToolRegistry) -> list[tuple[str, str, Any]]:
    return [(t.recipient, t.description, t.parameters) for t in registry.tools.values()]


@asynccontextmanager
async def _task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
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


def _recorder(trace: str | Path | Recorder | None) -> Recorder | None:
    if trace is None or not isinstance(trace, str | Path):
        return trace
    return TraceWriter(trace)
