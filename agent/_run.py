"""One run of the loop, as named steps over explicit run state.

    sample → decide ─┬─ Resample     → resample   ─┐
                     ├─ CallTool     → tool_step  ─┤
                     ├─ RepairOutput → repair     ─┴→ sample (next turn) …
                     └─ Finish       → finish        (the run ends)

:meth:`Run.sample` makes one engine request and parses the sampled ids as they stream.
:meth:`Run.decide` looks at what came back and returns what happens next, as a small typed
value (:data:`NextStep`); it does no I/O. Each value has one step function that carries it out.
Steps are async generators of events; the driver (:meth:`Run.events`) is the one place where
events are recorded (the run's list, the trace) before the caller sees them.

A new step (an approval pause, context compaction, a structured-output repair) is one more
``NextStep`` class (in ``_turn``), one step function here, one branch in :meth:`Run.decide`
and one ``case`` in :meth:`Run._turns`; the type checker flags a ``NextStep`` with no ``case``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, assert_never

from harmony_agent.engine.base import FinishReason, TokenUsage
from harmony_agent.tools.base import RunContext, Tool, ToolResult
from openai_harmony import Message, Role

from . import _harmony as hm
from . import _otel
from ._encoding import third_party_error
from ._output import OutputInvalid, OutputSpec, repair_message
from ._parse import TurnParser
from ._registry import is_tool_recipient
from ._state import LoopAgent, Recorder, RunState
from ._tokens import END, RETURN
from ._transcript import Transcript
from ._turn import (
    CallTool,
    Finish,
    NextStep,
    RepairOutput,
    Resample,
    Sampled,
    final_text,
    request_for,
    resolve_call,
    visible_event,
)
from .errors import (
    EngineError,
    HarmonyAgentError,
    MaxTurnsError,
    OutputValidationError,
    ToolErrorBudgetError,
    UnknownToolError,
)
from .events import (
    ErrorEvent,
    Event,
    RunFinished,
    RunStarted,
    ToolCallEvent,
    ToolResultEvent,
    TurnFinished,
    WarningEvent,
)
from .result import RunResult, RunUsage, ToolCallRecord

__all__ = ["CallTool", "Finish", "NextStep", "RepairOutput", "Resample", "Run"]

Steps = AsyncGenerator[Event, None]


@dataclass
class Run:
    """The state of one run; :meth:`events` drives it.

    ``resume`` is the state a resumed run goes on from; without it the run starts at
    ``task`` (after ``history``, a previous result, when given). :attr:`sampled` is the
    latest turn's output, set by :meth:`sample`. ``output`` is the run's output type (None:
    the agent's, if it has one).
    """

    agent: LoopAgent
    task: str
    history: RunResult | None = None
    deps: Any = None
    resume: RunState | None = None
    recorder: Recorder | None = None
    run_id: str = ""
    turn: int = -1
    consecutive_errors: int = 0
    usage: RunUsage = field(default_factory=RunUsage)
    calls: list[ToolCallRecord] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    events_seen: list[Event] = field(default_factory=list)
    transcript: Transcript = field(default_factory=Transcript)
    sampled: Sampled | None = None
    result: RunResult | None = None
    observer: _otel.RunObserver | None = None
    output: OutputSpec | None = None
    output_repairs: int = 0

    def __post_init__(self) -> None:
        self.output = self.output or self.agent.output
        if self.resume is not None:
            self.run_id = self.resume.run_id
            self.usage = self.resume.usage
            self.calls = list(self.resume.tool_calls)
        self.run_id = self.run_id or uuid.uuid4().hex[:12]

    # --- the driver --------------------------------------------------------------------

    async def events(self) -> Steps:
        """The run's events; the one place where they are recorded."""
        self.observer = _otel.run_observer(self.agent)
        try:
            # the context first: toolsets list their tools before the prompt declares them
            async with self.agent.run_context(self.run_id, self.deps) as ctx:
                first_turn = await self._start()
                if self.recorder is not None:
                    await self.recorder.start(self.state(first_turn))
                yield await self._record(
                    RunStarted(
                        run_id=self.run_id, task=self.task, tools=tuple(self.agent.registry.tools)
                    )
                )
                if self.output is not None and not self.agent.engine.constrains_output:
                    yield await self._record(self._unconstrained_warning())
                async with aclosing(self._turns(ctx, first_turn)) as steps:
                    async for event in steps:
                        yield await self._record(event)
        except HarmonyAgentError as exc:
            yield await self._record(
                ErrorEvent(
                    run_id=self.run_id, turn=self.turn, error=type(exc).__name__, message=str(exc)
                )
            )
            raise
        finally:
            if self.observer is not None:
                self.observer.close()

    async def _record(self, event: Event) -> Event:
        self.events_seen.append(event)
        if self.observer is not None:
            self.observer.on_event(event)
        if self.recorder is not None:
            await self.recorder.event(event)
        return event

    async def _start(self) -> int:
        """Messages and transcript of the first prompt; returns the first turn's number."""
        agent = self.agent
        if self.resume is not None:
            self.messages = list(self.resume.messages)
            self.transcript = Transcript(self.resume.prompt_ids)
            return self.resume.next_turn
        self.messages = agent.initial_messages(self.task, self.history, self.output)
        # Encoding is CPU work that grows with the text: long tasks off the event loop.
        if self.history is None and self.output is not agent.output:
            prompt = await hm.off_loop(len(self.task), agent.first_prompt, self.task, self.output)
        elif self.history is None:
            prompt = await hm.off_loop(len(self.task), agent.first_prompt, self.task)
        else:
            size = len(self.task) + hm.OFF_LOOP_CHARS
            prompt = await hm.off_loop(size, hm.render_prompt, agent.encoding, self.messages)
        self.transcript = Transcript(prompt)
        return 0

    async def _turns(self, ctx: RunContext, first_turn: int) -> Steps:
        for turn in range(first_turn, self.agent.max_turns):
            self.turn = turn
            async with aclosing(self.sample()) as steps:
                async for event in steps:
                    yield event
            if self.sampled is None:  # sample() sets it or raises
                raise RuntimeError(f"turn {turn} ended without output")
            step = self.decide(self.sampled)
            match step:
                case Resample():
                    carried_out = self.resample(step)
                case CallTool():
                    carried_out = self.tool_step(step, ctx)
                case Finish():
                    carried_out = self.finish(step)
                case RepairOutput():
                    carried_out = self.repair(step)
                case _:
                    assert_never(step)
            async with aclosing(carried_out) as events:
                async for event in events:
                    yield event
            if self.result is not None:
                return
        raise MaxTurnsError(
            f"no final answer after {self.agent.max_turns} turns ({len(self.calls)} tool calls). "
            "Raise max_turns, or make the task or the tools' descriptions clearer."
        )

    def state(self, next_turn: int) -> RunState:
        """A snapshot to resume from: the transcript as it stands is the next prompt."""
        return RunState(
            run_id=self.run_id,
            task=self.task,
            messages=list(self.messages),
            prompt_ids=self.transcript.view().tolist(),
            next_turn=next_turn,
            tool_calls=list(self.calls),
            usage=self.usage,
        )

    # --- sample: one engine request, parsed as it streams --------------------------------

    async def sample(self) -> Steps:
        """Stream one turn from the engine; sets :attr:`sampled`."""
        self.sampled = None
        prompt = self.transcript.view()
        parser = TurnParser(self.agent.encoding)
        output: list[int] = []
        started = time.perf_counter()
        engine = self.agent.engine
        finish: FinishReason | None = None
        usage: TokenUsage | None = None
        try:
            schema = self.output.schema if self.output and engine.constrains_output else None
            request = request_for(self.agent, prompt, self.run_id, self.turn, schema)
            async with aclosing(engine.generate(request)) as chunks:
                async for chunk in chunks:
                    output.extend(chunk.token_ids)
                    for item in parser.feed_many(chunk.token_ids):
                        call_id = f"{self.run_id}-{len(self.calls)}"
                        event = visible_event(item, self.run_id, self.turn, call_id)
                        if event is not None:
                            yield event
                    if chunk.finish_reason is not None:
                        finish, usage = chunk.finish_reason, chunk.usage
                        break
        except HarmonyAgentError:
            raise
        except BaseException as exc:  # an engine that did not map its own failure
            if not third_party_error(exc):  # cancellation, KeyboardInterrupt
                raise
            raise EngineError(
                f"{type(engine).__name__} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if finish is None:
            raise EngineError(f"{type(engine).__name__} ended the stream without a finish reason")
        if finish == "length":
            parser.finish_eos()
        yield self._count(prompt, output, finish, usage, time.perf_counter() - started)
        messages, error = list(parser.messages), parser.error
        kept = parser.salvage() if error is not None else None
        if kept is not None:  # a complete call or final answer came before the broken part
            messages, error = kept, None
        if parser.salvaged:
            yield WarningEvent(
                run_id=self.run_id, turn=self.turn, message=f"salvaged: {parser.salvaged}"
            )
        self.sampled = Sampled(self.turn, prompt, output, messages, finish, error)

    def _count(
        self,
        prompt: Sequence[int],
        output: Sequence[int],
        finish: FinishReason,
        usage: TokenUsage | None,
        duration_s: float,
    ) -> TurnFinished:
        """Add the turn to the run's usage (the engine's counts, else the ids we saw)."""
        if usage is None:
            usage = TokenUsage(prompt_tokens=len(prompt), output_tokens=len(output))
        self.usage.turns += 1
        self.usage.prompt_tokens += usage.prompt_tokens
        self.usage.output_tokens += usage.output_tokens
        if usage.cached_prompt_tokens is not None:
            self.usage.cache_reported = True
            self.usage.cached_prompt_tokens += usage.cached_prompt_tokens
        return TurnFinished(
            run_id=self.run_id,
            turn=self.turn,
            finish_reason=finish,
            prompt_tokens=usage.prompt_tokens,
            output_tokens=usage.output_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            duration_s=duration_s,
            output_ids=tuple(output),
        )

    # --- decide: what happens next --------------------------------------------------------

    def decide(self, sampled: Sampled) -> NextStep:
        """The next step for what ``sampled`` holds. No I/O; raises when the run cannot go on."""
        if sampled.finish_reason == "abort":
            raise EngineError(
                f"the engine aborted the request of turn {sampled.turn}; check the engine's logs"
            )
        if sampled.parse_error is not None:
            return Resample(sampled.parse_error)
        last = sampled.messages[-1] if sampled.messages else None
        if (
            last is not None
            and is_tool_recipient(last.recipient)
            and sampled.finish_reason != "length"
        ):
            return CallTool(sampled, last, last.recipient)
        if self.output is not None:
            text, _ = final_text(sampled, self.agent.max_tokens_per_turn)
            try:
                return Finish(sampled, self.output.validate(text))
            except OutputInvalid as error:
                return RepairOutput(sampled, text, error)
        return Finish(sampled)

    # --- resample: the output did not parse ----------------------------------------------

    async def resample(self, step: Resample) -> Steps:
        """Warn and go round again, within the error budget (the next sample is the same
        prompt; nothing is appended)."""
        self.consecutive_errors += 1
        yield WarningEvent(
            run_id=self.run_id,
            turn=self.turn,
            message=f"unparseable model output, sampling the turn again: {step.reason}",
        )
        if self.consecutive_errors >= self.agent.max_tool_errors:
            raise ToolErrorBudgetError(
                f"the model's output could not be parsed {self.consecutive_errors} times in a "
                f"row (last: {step.reason}). Sample with temperature > 0 or check the "
                "engine's output."
            )

    # --- tool step: resolve, validate, invoke, append the result ids ---------------------

    async def tool_step(self, step: CallTool, ctx: RunContext) -> Steps:
        """Resolve the recipient, invoke the tool (it validates its arguments), and append the
        sampled ids and the rendered tool message to the transcript: the next prompt."""
        sampled = step.sampled
        self.messages.extend(sampled.messages)
        call_id = f"{self.run_id}-{len(self.calls)}"
        raw = hm.message_text(step.call)
        tool, arguments = resolve_call(self.agent.registry, step.recipient, raw)
        yield ToolCallEvent(
            run_id=self.run_id,
            turn=self.turn,
            call_id=call_id,
            recipient=step.recipient,
            tool=tool.recipient if isinstance(tool, Tool) else None,
            channel=step.call.channel,
            raw_arguments=raw,
            arguments=arguments,
        )
        record = await self._invoke(call_id, step, raw, arguments, tool, ctx)
        self.calls.append(record)
        yield ToolResultEvent(
            run_id=self.run_id,
            turn=self.turn,
            call_id=call_id,
            recipient=record.recipient,
            ok=record.ok,
            output=record.output,
            error_kind=record.error_kind,
            duration_s=record.duration_s,
        )
        for message in ctx.take_notices():
            yield WarningEvent(run_id=self.run_id, turn=self.turn, message=message)
        self._check_error_budget(record)
        result = hm.tool_result_message(
            record.name or record.recipient, step.call.channel, record.output
        )
        self.messages.append(result)
        appended = await hm.off_loop(
            len(record.output), hm.render_tool_result, self.agent.encoding, result
        )
        self.transcript.extend(sampled.output)
        self.transcript.extend(appended)
        if self.recorder is not None:
            await self.recorder.step(self.state(self.turn + 1), sampled.output, appended)

    def _check_error_budget(self, record: ToolCallRecord) -> None:
        self.consecutive_errors = 0 if record.ok else self.consecutive_errors + 1
        if self.consecutive_errors >= self.agent.max_tool_errors:
            raise ToolErrorBudgetError(
                f"{self.consecutive_errors} tool calls failed in a row (last: "
                f"{record.recipient}: {record.output[:300]}). The model is stuck; check "
                f"the tool descriptions or raise max_tool_errors."
            )

    async def _invoke(
        self,
        call_id: str,
        step: CallTool,
        raw: str,
        arguments: Any,
        tool: Tool | UnknownToolError,
        ctx: RunContext,
    ) -> ToolCallRecord:
        name: str | None = None
        if isinstance(tool, UnknownToolError):
            result = ToolResult(str(tool), ok=False, error_kind=tool.kind)
        else:
            name, result = tool.recipient, await tool.invoke(raw, ctx)
        return ToolCallRecord(
            call_id=call_id,
            turn=self.turn,
            recipient=step.recipient,
            name=name,
            channel=step.call.channel,
            raw_arguments=raw,
            arguments=arguments,
            output=result.text,
            ok=result.ok,
            error_kind=result.error_kind,
            duration_s=result.duration_s,
        )

    # --- finish: this turn's messages are the answer -------------------------------------

    async def finish(self, step: Finish) -> Steps:
        """The answer: :attr:`result` and ``RunFinished``."""
        sampled = step.sampled
        self.messages.extend(sampled.messages)
        text, warning = final_text(sampled, self.agent.max_tokens_per_turn)
        if warning:
            yield WarningEvent(run_id=self.run_id, turn=self.turn, message=warning)
        self.result = self._result(sampled, text, step.output)
        yield RunFinished(
            run_id=self.run_id,
            turn=self.turn,
            final_text=text,
            turns=self.usage.turns,
            prompt_tokens=self.usage.prompt_tokens,
            cached_prompt_tokens=self.usage.cached_prompt_tokens,
            output_tokens=self.usage.output_tokens,
            output=None if self.output is None else self.output.to_json(step.output),
        )

    def _result(self, sampled: Sampled, text: str, output: Any) -> RunResult:
        return RunResult(
            run_id=self.run_id,
            final_text=text,
            tool_calls=self.calls,
            usage=self.usage,
            events=self.events_seen,
            messages=self.messages,
            prompt_ids=sampled.prompt.tolist(),
            token_ids=[*sampled.prompt, *sampled.output],
            finish_reason=sampled.finish_reason,
            truncated=sampled.finish_reason == "length",
            output=output,
        )

    # --- repair: the answer does not match the output type -------------------------------

    async def repair(self, step: RepairOutput) -> Steps:
        """Tell the model what is wrong with its answer and let it answer again: the sampled
        ids and a user message are appended (nothing is re-rendered, the prefix stays cached).
        Past ``output_retries``: :class:`OutputValidationError` with the run so far."""
        spec, sampled, error = self.output, step.sampled, step.error
        if spec is None:  # decide() repairs only runs with an output type
            raise RuntimeError("a repair step in a run without an output type")
        self.messages.extend(sampled.messages)
        if self.output_repairs >= self.agent.output_retries:
            raise OutputValidationError(
                f"the answer does not match {spec.name} at {error.where}: {error.reason} "
                f"(after {self.output_repairs} repair turns). Raise output_retries, make the "
                "instructions say what each field holds, or use an engine that constrains "
                "decoding (VLLMEngine, a vLLM server).",
                result=self._result(sampled, step.text, None),
                where=error.where,
                reason=error.reason,
            )
        self.output_repairs += 1
        yield WarningEvent(
            run_id=self.run_id,
            turn=self.turn,
            message=(
                f"the answer does not match {spec.name} ({error}); asking the model to correct "
                f"it ({self.output_repairs}/{self.agent.output_retries})"
            ),
        )
        text = repair_message(spec, error)
        self.messages.append(Message.from_role_and_content(Role.USER, text))
        # a finished answer is stored with <|end|>, as harmony renders it in a conversation
        output = list(sampled.output)
        if output and output[-1] == RETURN:
            output[-1] = END
        appended = [
            *hm.render_user(self.agent.encoding, text),
            *hm.assistant_start_ids(self.agent.encoding),
        ]
        self.transcript.extend(output)
        self.transcript.extend(appended)
        if self.recorder is not None:
            await self.recorder.step(self.state(self.turn + 1), output, appended)

    def _unconstrained_warning(self) -> WarningEvent:
        engine = type(self.agent.engine).__name__
        return WarningEvent(
            run_id=self.run_id,
            turn=self.turn,
            message=(
                f"{engine} cannot constrain decoding to the output type; the answer is held "
                "to it by the prompt's response format and validation only"
            ),
        )
