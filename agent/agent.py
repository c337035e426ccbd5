"""The Agent: the token-exact Harmony loop.

    render prompt (ids) → engine samples ids → parse → tool call? → run tool →
    append tool result ids → sample again … → final answer

Within a run the prompt is append-only: the next prompt is the previous prompt, plus the ids
the model sampled (stop token included), plus the rendered tool message, plus
``<|start|>assistant``. Nothing is re-rendered, so the engine's prefix cache always hits and
the model sees exactly what it wrote.

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
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
from harmony_agent.engine.base import Chunk, Engine, GenerationRequest
from harmony_agent.tools.base import RunContext, Tool, Toolset
from openai_harmony import Conversation, Message, RenderConversationConfig, Role

from . import _harmony as hm
from ._encoding import load_encoding
from ._parse import Delta, MessageStart, TurnParser
from ._registry import NOT_A_TOOL, ToolRegistry
from ._transcript import Transcript
from .errors import (
    ConfigurationError,
    ContextOverflowError,
    EngineError,
    HarmonyAgentError,
    MaxTurnsError,
    OutputTruncatedError,
    ToolErrorBudgetError,
    UnknownToolError,
)
from .events import (
    ErrorEvent,
    Event,
    PreambleDelta,
    ReasoningDelta,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallEvent,
    ToolCallStarted,
    ToolResultEvent,
    TurnFinished,
    WarningEvent,
)
from .result import RunResult, RunUsage, ToolCallRecord

__all__ = ["Agent", "Recorder", "RunState"]

DEFAULT_CONTEXT_WINDOW = 131_072  # gpt-oss-20b


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
        self.registry = ToolRegistry(tools)
        self.settings = hm.PromptSettings(
            reasoning_effort=reasoning_effort,
            model_identity=model_identity,
            knowledge_cutoff=knowledge_cutoff,
            conversation_start_date=conversation_start_date,
        )
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

    # --- prompts ---------------------------------------------------------------------------

    def initial_messages(self, task: str, history: RunResult | None = None) -> list[Message]:
        """The conversation the first prompt of a run renders."""
        user = Message.from_role_and_content(Role.USER, task)
        if history is not None:
            return [*hm.drop_stale_analysis(history.messages), user]
        messages = [hm.build_system_message(self.settings, self.registry.namespaces)]
        developer = hm.build_developer_message(self.instructions, self.registry.functions)
        if developer is not None:
            messages.append(developer)
        messages.append(user)
        return messages

    def first_prompt(self, task: str) -> list[int]:
        """The first prompt of a new run: the system and developer messages (rendered once
        per agent) followed by the user's task and ``<|start|>assistant``."""
        if self._prefix is None:
            head = self.initial_messages("")[:-1]
            self._prefix = self.encoding.render_conversation(
                Conversation.from_messages(head),
                RenderConversationConfig(auto_drop_analysis=False),
            )
        user = Message.from_role_and_content(Role.USER, task)
        return [*self._prefix, *self.encoding.render(user), *hm.assistant_start_ids(self.encoding)]

    # --- running ---------------------------------------------------------------------------

    def stream(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
    ) -> AsyncIterator[Event]:
        """Run and yield events as they happen; the last is ``RunFinished`` or ``ErrorEvent``.

        Errors that end the run are raised after their ``ErrorEvent``. Close the iterator
        (``async with contextlib.aclosing(agent.stream(task)) as events``) to stop early; the
        engine request is aborted and the run's tools are closed.
        """
        return _Run(self, task, history, deps, recorder=_recorder(trace)).events()

    async def run(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
        on_event: Callable[[Event], Any] | None = None,
    ) -> RunResult:
        """Run ``task`` to its final answer.

        ``history``: a previous result to continue the conversation (its analysis before the
        last final answer is dropped, as the Harmony format prescribes). ``deps`` is handed to
        tools as ``ctx.deps``. ``trace``: a file to write the run to as JSON lines, one record
        per event and per step, fsynced per step (see :mod:`harmony_agent.trace`).
        ``on_event``: called with every event as it happens (sync or async), e.g. to show
        progress while still getting the whole result.
        """
        run = _Run(self, task, history, deps, recorder=_recorder(trace))
        return await _finish(run, on_event)

    def run_sync(
        self,
        task: str,
        *,
        history: RunResult | None = None,
        deps: Any = None,
        trace: str | Path | Recorder | None = None,
    ) -> RunResult:
        """:meth:`run` for synchronous code (starts its own event loop)."""
        return anyio.run(lambda: self.run(task, history=history, deps=deps, trace=trace))

    def resume_stream(
        self, state: RunState, *, deps: Any = None, trace: str | Path | Recorder | None = None
    ) -> AsyncIterator[Event]:
        """Go on with a run from ``state`` (e.g. ``load_trace(path).resume_state()``)."""
        return _Run(self, state.task, None, deps, resume=state, recorder=_recorder(trace)).events()

    async def resume(
        self, state: RunState, *, deps: Any = None, trace: str | Path | Recorder | None = None
    ) -> RunResult:
        """:meth:`resume_stream` to the final answer."""
        run = _Run(self, state.task, None, deps, resume=state, recorder=_recorder(trace))
        return await _finish(run)


async def _finish(run: _Run, on_event: Callable[[Event], Any] | None = None) -> RunResult:
    async with aclosing(run.events()) as events:
        async for event in events:
            if on_event is not None:
                outcome = on_event(event)
                if inspect.isawaitable(outcome):
                    await outcome
    assert run.result is not None
    return run.result


def _recorder(trace: str | Path | Recorder | None) -> Recorder | None:
    if trace is None or not isinstance(trace, str | Path):
        return trace
    from .trace import TraceWriter

    return TraceWriter(trace)


@dataclass
class RunState:
    """Where a run stands after a complete step: enough to go on from there (``Agent.resume``)."""

    run_id: str
    task: str
    messages: list[Message]
    prompt_ids: list[int]
    next_turn: int = 0
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: RunUsage = field(default_factory=RunUsage)


class Recorder(Protocol):
    """Receives a run as it happens (a trace writer). Methods may block briefly (fsync)."""

    async def start(self, state: RunState) -> None: ...
    async def event(self, event: Event) -> None: ...
    async def step(
        self, state: RunState, output_ids: list[int], appended_ids: list[int]
    ) -> None: ...


class _Run:
    """The state of one run. ``events()`` drives it."""

    def __init__(
        self,
        agent: Agent,
        task: str,
        history: RunResult | None,
        deps: Any,
        *,
        resume: RunState | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.agent = agent
        self.task = task
        self.history = history
        self.deps = deps
        self.resume = resume
        self.recorder = recorder
        self.run_id = resume.run_id if resume else uuid.uuid4().hex[:12]
        self.result: RunResult | None = None
        self.usage = resume.usage if resume else RunUsage()
        self.calls: list[ToolCallRecord] = list(resume.tool_calls) if resume else []
        self.events_seen: list[Event] = []
        self.messages: list[Message] = []
        self.turn = -1

    async def _emit(self, event: Event) -> Event:
        self.events_seen.append(event)
        if self.recorder is not None:
            await self.recorder.event(event)
        return event

    def state(self, prompt: Sequence[int], next_turn: int) -> RunState:
        return RunState(
            self.run_id,
            self.task,
            list(self.messages),
            list(prompt),
            next_turn,
            list(self.calls),
            self.usage,
        )

    async def events(self) -> AsyncIterator[Event]:
        agent = self.agent
        try:
            if self.resume is not None:
                self.messages = list(self.resume.messages)
                prompt = list(self.resume.prompt_ids)
                first_turn = self.resume.next_turn
            else:
                self.messages = agent.initial_messages(self.task, self.history)
                if self.history is None:
                    prompt = agent.first_prompt(self.task)
                else:
                    prompt = hm.render_prompt(agent.encoding, self.messages)
                first_turn = 0
            if self.recorder is not None:
                await self.recorder.start(self.state(prompt, first_turn))
            yield await self._emit(
                RunStarted(run_id=self.run_id, task=self.task, tools=tuple(agent.registry.tools))
            )
            async with RunContext.open(
                run_id=self.run_id, files_dir=agent.files_dir, deps=self.deps
            ) as ctx:
                async with aclosing(self._loop(prompt, ctx, first_turn)) as loop:
                    async for event in loop:
                        self.events_seen.append(event)
                        if self.recorder is not None:
                            await self.recorder.event(event)
                        yield event
        except HarmonyAgentError as exc:
            yield await self._emit(
                ErrorEvent(
                    run_id=self.run_id, turn=self.turn, error=type(exc).__name__, message=str(exc)
                )
            )
            raise

    def _window(self) -> int:
        return (
            self.agent.context_window
            or getattr(self.agent.engine, "context_window", None)
            or DEFAULT_CONTEXT_WINDOW
        )

    def _request(self, prompt: Sequence[int]) -> GenerationRequest:
        agent = self.agent
        room = self._window() - len(prompt)
        if room < 16:
            raise ContextOverflowError(
                f"the prompt is {len(prompt)} tokens and the context window {self._window()}: "
                "no room left to answer. Start a new run, or use fewer/shorter tool outputs."
            )
        return GenerationRequest(
            prompt_ids=prompt,
            max_tokens=min(agent.max_tokens_per_turn, room),
            stop_token_ids=tuple(agent.encoding.stop_tokens_for_assistant_actions()),
            temperature=agent.temperature,
            top_p=agent.top_p,
            seed=agent.seed,
            session_id=self.run_id,
            request_id=f"{self.run_id}-{self.turn}",
        )

    def _visible(self, item: MessageStart | Delta) -> Event | None:
        if isinstance(item, MessageStart):
            if item.recipient and item.recipient not in NOT_A_TOOL:
                return ToolCallStarted(
                    run_id=self.run_id,
                    turn=self.turn,
                    call_id=f"{self.run_id}-{len(self.calls)}",
                    recipient=item.recipient,
                    channel=item.channel,
                )
            return None
        if item.recipient and item.recipient not in NOT_A_TOOL:
            return None  # arguments of a call: reported whole in ToolCallEvent
        channel = item.channel
        if channel == "analysis":
            return ReasoningDelta(run_id=self.run_id, turn=self.turn, delta=item.text)
        if channel == "commentary":
            return PreambleDelta(run_id=self.run_id, turn=self.turn, delta=item.text)
        return TextDelta(run_id=self.run_id, turn=self.turn, delta=item.text)

    async def _loop(
        self, prompt: Sequence[int], ctx: RunContext, first_turn: int
    ) -> AsyncIterator[Event]:
        agent = self.agent
        enc = agent.encoding
        consecutive_errors = 0
        transcript = Transcript(prompt)
        for turn in range(first_turn, agent.max_turns):
            self.turn = turn
            prompt = transcript.view()
            parser = TurnParser(enc)
            output: list[int] = []
            logprobs: list[float | None] | None = []  # None once a chunk comes without
            started = time.perf_counter()
            last: Chunk | None = None
            engine = agent.engine
            try:
                async with aclosing(engine.generate(self._request(prompt))) as chunks:
                    async for chunk in chunks:
                        output.extend(chunk.token_ids)
                        if logprobs is not None:
                            if chunk.logprobs is None:
                                logprobs = None
                            else:
                                logprobs.extend(chunk.logprobs)
                        for item in parser.feed_many(chunk.token_ids):
                            event = self._visible(item)
                            if event is not None:
                                yield event
                        if chunk.finish_reason is not None:
                            last = chunk
                            break
            except HarmonyAgentError:
                raise
            except Exception as exc:  # an engine that did not map its own failure
                raise EngineError(
                    f"{type(engine).__name__} failed: {type(exc).__name__}: {exc}"
                ) from exc
            if last is None:
                raise EngineError(
                    f"{type(engine).__name__} ended the stream without a finish reason"
                )
            if last.finish_reason == "length":
                parser.finish_eos()
            usage = last.usage
            self.usage.turns += 1
            if usage is not None:
                self.usage.prompt_tokens += usage.prompt_tokens
                self.usage.output_tokens += usage.output_tokens
                if usage.cached_prompt_tokens is not None:
                    self.usage.cache_reported = True
                    self.usage.cached_prompt_tokens += usage.cached_prompt_tokens
            else:
                self.usage.prompt_tokens += len(prompt)
                self.usage.output_tokens += len(output)
            yield TurnFinished(
                run_id=self.run_id,
                turn=turn,
                finish_reason=last.finish_reason or "stop",
                prompt_tokens=usage.prompt_tokens if usage else len(prompt),
                output_tokens=usage.output_tokens if usage else len(output),
                cached_prompt_tokens=usage.cached_prompt_tokens if usage else None,
                duration_s=time.perf_counter() - started,
                output_ids=tuple(output),
                output_logprobs=tuple(logprobs) if logprobs else None,
            )
            if last.finish_reason == "abort":
                raise EngineError(
                    f"the engine aborted the request of turn {turn}; check the engine's logs"
                )
            new = list(parser.messages)
            if parser.error is not None:
                # Unparseable output: sample the turn again (same prompt, so still a cache hit).
                consecutive_errors += 1
                yield WarningEvent(
                    run_id=self.run_id,
                    turn=turn,
                    message=f"unparseable model output, sampling the turn again: {parser.error}",
                )
                if consecutive_errors >= agent.max_tool_errors:
                    raise ToolErrorBudgetError(
                        f"the model's output could not be parsed {consecutive_errors} times in a "
                        f"row (last: {parser.error}). Sample with temperature > 0 or check the "
                        "engine's output."
                    )
                continue
            self.messages.extend(new)
            call = new[-1] if new else None
            is_call = (
                call is not None and call.recipient is not None and call.recipient not in NOT_A_TOOL
            )
            if is_call and last.finish_reason != "length":
                assert call is not None and call.recipient is not None
                call_id = f"{self.run_id}-{len(self.calls)}"
                raw = _text(call)
                tool, arguments = self._resolve(call.recipient, raw)
                yield ToolCallEvent(
                    run_id=self.run_id,
                    turn=turn,
                    call_id=call_id,
                    recipient=call.recipient,
                    tool=tool.recipient if isinstance(tool, Tool) else None,
                    channel=call.channel,
                    raw_arguments=raw,
                    arguments=arguments,
                )
                record = await self._invoke(call_id, call, raw, arguments, tool, ctx)
                self.calls.append(record)
                yield ToolResultEvent(
                    run_id=self.run_id,
                    turn=turn,
                    call_id=call_id,
                    recipient=record.recipient,
                    ok=record.ok,
                    output=record.output,
                    error_kind=record.error_kind,
                    duration_s=record.duration_s,
                )
                for message in ctx.take_notices():
                    yield WarningEvent(run_id=self.run_id, turn=turn, message=message)
                consecutive_errors = 0 if record.ok else consecutive_errors + 1
                if consecutive_errors >= agent.max_tool_errors:
                    raise ToolErrorBudgetError(
                        f"{consecutive_errors} tool calls failed in a row (last: "
                        f"{record.recipient}: {record.output[:300]}). The model is stuck; check "
                        f"the tool descriptions or raise max_tool_errors."
                    )
                result_msg = hm.tool_result_message(
                    record.name or record.recipient, call.channel, record.output
                )
                self.messages.append(result_msg)
                appended = hm.render_tool_result(enc, result_msg)
                transcript.extend(output)
                transcript.extend(appended)
                if self.recorder is not None:
                    await self.recorder.step(
                        self.state(transcript.view(), turn + 1), output, appended
                    )
                continue
            # No tool call: this turn ends the run.
            text, warning = self._final_text(new, last)
            if warning:
                yield WarningEvent(run_id=self.run_id, turn=turn, message=warning)
            self.result = RunResult(
                run_id=self.run_id,
                final_text=text,
                tool_calls=self.calls,
                usage=self.usage,
                events=self.events_seen,
                messages=self.messages,
                prompt_ids=prompt.tolist(),
                token_ids=[*prompt, *output],
                finish_reason=last.finish_reason or "stop",
                truncated=last.finish_reason == "length",
            )
            yield RunFinished(
                run_id=self.run_id,
                turn=turn,
                final_text=text,
                turns=self.usage.turns,
                prompt_tokens=self.usage.prompt_tokens,
                cached_prompt_tokens=self.usage.cached_prompt_tokens,
                output_tokens=self.usage.output_tokens,
            )
            return
        raise MaxTurnsError(
            f"no final answer after {agent.max_turns} turns ({len(self.calls)} tool calls). "
            "Raise max_turns, or make the task or the tools' descriptions clearer."
        )

    def _final_text(self, new: list[Message], last: Chunk) -> tuple[str, str | None]:
        finals = [_text(m) for m in new if m.channel == "final"]
        if last.finish_reason == "length":
            if finals:
                return "".join(finals), (
                    f"the answer was cut at max_tokens_per_turn={self.agent.max_tokens_per_turn}"
                )
            what = "a tool call" if new and new[-1].recipient else "its reasoning"
            raise OutputTruncatedError(
                f"turn {self.turn} hit max_tokens_per_turn={self.agent.max_tokens_per_turn} "
                f"while the model was writing {what}, before any answer. Raise "
                "max_tokens_per_turn or lower reasoning_effort."
            )
        if finals:
            return "".join(finals), None
        if new and new[-1].channel is None:
            return _text(new[-1]), "the model answered without a Harmony header; kept as the answer"
        if new:
            return _text(new[-1]), (
                f"the model stopped without a final-channel message (last channel: "
                f"{new[-1].channel}); its last message is kept as the answer"
            )
        return "", "the model stopped without writing anything"

    def _resolve(self, recipient: str, raw: str) -> tuple[Tool | UnknownToolError, Any]:
        try:
            tool = self.agent.registry.resolve(recipient)
        except UnknownToolError as exc:
            return exc, _maybe_json(raw)
        return tool, (raw if tool.parameters is None else _maybe_json(raw))

    async def _invoke(
        self,
        call_id: str,
        call: Message,
        raw: str,
        arguments: Any,
        tool: Tool | UnknownToolError,
        ctx: RunContext,
    ) -> ToolCallRecord:
        recipient = call.recipient or ""
        if isinstance(tool, UnknownToolError):
            return ToolCallRecord(
                call_id,
                self.turn,
                recipient,
                None,
                call.channel,
                raw,
                arguments,
                str(tool),
                False,
                tool.kind,
            )
        result = await tool.invoke(raw, ctx)
        return ToolCallRecord(
            call_id,
            self.turn,
            recipient,
            tool.recipient,
            call.channel,
            raw,
            arguments,
            result.text,
            result.ok,
            result.error_kind,
            result.duration_s,
        )


def _text(message: Message) -> str:
    return "".join(getattr(c, "text", "") for c in message.content)


def _maybe_json(raw: str) -> Any:
    try:
        return json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        return None
