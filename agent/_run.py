"""One run of the loop, as named steps over explicit run state.

    (compact?) → sample → decide ─┬─ Resample   → resample    ─┐
                                  ├─ CallTool   → tool_step   ─┼→ (compact?) → sample …
                                  ├─ ForceFinal → force_final ─┘
                                  └─ Finish     → finish        (the run ends)

:meth:`Run.sample` makes one engine request and parses the sampled ids as they stream.
:meth:`Run.decide` looks at what came back and returns what happens next, as a small typed
value (:data:`NextStep`); it does no I/O. Each value has one step function that carries it out.
Before each sample, :meth:`Run.plan_context` decides whether the prompt must be compacted
first (a :class:`Compact` step; see ``_context``): the one deliberate break of the prefix.
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

import anyio.to_thread
from harmony_agent.engine.base import FinishReason, TokenUsage
from harmony_agent.tools.base import RunContext, Tool, ToolResult
from openai_harmony import Message

from . import _context as cx
from . import _harmony as hm
from . import _otel
from ._encoding import third_party_error
from ._parse import TurnParser
from ._registry import is_tool_recipient
from ._state import LoopAgent, Recorder, RunState
from ._transcript import Transcript
from ._turn import (
    DEFAULT_CONTEXT_WINDOW,
    CallTool,
    Finish,
    ForceFinal,
    NextStep,
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
    ToolErrorBudgetError,
    UnknownToolError,
)
from .events import (
    Compacted,
    ErrorEvent,
    Event,
    ForcedTokens,
    RunFinished,
    RunStarted,
    ToolCallEvent,
    ToolResultEvent,
    TurnFinished,
    WarningEvent,
)
from .result import RunResult, RunUsage, ToolCallRecord

__all__ = ["CallTool", "Compact", "Finish", "ForceFinal", "NextStep", "Resample", "Run"]

Steps = AsyncGenerator[Event, None]

#: the least room a turn needs to say anything (as ``request_for``)
_MIN_ROOM = 16


@dataclass(frozen=True, slots=True)
class Compact:
    """The next prompt would pass the compaction limit: carry out ``plan`` before sampling."""

    plan: cx.CompactionPlan


@dataclass
class Run:
    """The state of one run; :meth:`events` drives it.

    ``resume`` is the state a resumed run goes on from; without it the run starts at
    ``task`` (after ``history``, a previous result, when given). :attr:`sampled` is the
    latest turn's output, set by :meth:`sample`.
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
    #: this run's reasoning budget per turn (None: the agent's)
    max_reasoning_tokens: int | None = None
    compactions: int = 0
    warned: set[float] = field(default_factory=set)

    def __post_init__(self) -> None:
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
        self.messages = agent.initial_messages(self.task, self.history)
        # Encoding is CPU work that grows with the text: long tasks off the event loop.
        if self.history is None:
            prompt = await hm.off_loop(len(self.task), agent.first_prompt, self.task)
        else:
            size = len(self.task) + hm.OFF_LOOP_CHARS
            prompt = await hm.off_loop(size, hm.render_prompt, agent.encoding, self.messages)
        self.transcript = Transcript(prompt)
        return 0

    async def _turns(self, ctx: RunContext, first_turn: int) -> Steps:
        for turn in range(first_turn, self.agent.max_turns):
            self.turn = turn
            compact = await self.plan_context()
            if compact is not None:
                async with aclosing(self.compact(compact)) as events:
                    async for event in events:
                        yield event
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
                case ForceFinal():
                    carried_out = self.force_final(step)
                case Finish():
                    carried_out = self.finish(step)
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

    # --- the context: its window, compaction -------------------------------------------

    @property
    def window(self) -> int:
        agent = self.agent
        return agent.context_window or agent.engine.context_window or DEFAULT_CONTEXT_WINDOW

    async def plan_context(self) -> Compact | None:
        """A :class:`Compact` step when the next prompt would pass the policy's limit and
        compaction can remove something; else None. Planning scans the whole transcript, so
        it runs in a worker thread."""
        policy = self.agent.compaction
        if policy is None:
            return None
        window = self.window
        if len(self.transcript) <= policy.limit(window, self.agent.max_tokens_per_turn):
            return None
        ids = self.transcript.view().tolist()
        plan = await anyio.to_thread.run_sync(
            cx.plan_to_target, self.agent.encoding, ids, policy, window
        )
        return None if plan.empty else Compact(plan)

    async def compact(self, step: Compact) -> Steps:
        """Replace the transcript and the messages by their compacted form (rendered once;
        later turns append to it) and record it: a ``Compacted`` event and a trace record."""
        encoding, ids = self.agent.encoding, self.transcript.view().tolist()
        summary = await self._summary(step.plan, ids) if step.plan.summary_range else None
        outcome = await anyio.to_thread.run_sync(
            cx.apply_plan, encoding, ids, list(self.messages), step.plan, summary
        )
        self.transcript = Transcript(outcome.prompt_ids)
        self.messages = outcome.messages
        self.compactions += 1
        window = self.window
        self.warned = {t for t in self.warned if t * window <= outcome.tokens_after}
        event = Compacted(
            run_id=self.run_id,
            turn=self.turn,
            tokens_before=outcome.tokens_before,
            tokens_after=outcome.tokens_after,
            context_window=window,
            dropped_reasoning=outcome.dropped_reasoning,
            stubbed_outputs=outcome.stubbed_outputs,
            summarized=outcome.summarized,
            removed=outcome.removed,
        )
        yield event
        recorded = getattr(self.recorder, "compacted", None)
        if recorded is not None:
            await recorded(self.state(self.turn), event)

    async def _summary(self, plan: cx.CompactionPlan, ids: list[int]) -> str:
        summarize = self.agent.compaction.summarize if self.agent.compaction else None
        if summarize is None:
            raise RuntimeError("a summary plan without a summarize callable")
        old = cx.summary_messages(self.agent.encoding, ids, self.messages, plan)
        return await cx.call_summarizer(summarize, old)

    def _check_room(self, prompt: Sequence[int]) -> None:
        """:class:`ContextOverflowError`, saying what filled the context, when the prompt
        leaves no room to answer."""
        window = self.window
        if window - len(prompt) >= _MIN_ROOM:
            return
        how = (
            "even after compaction"
            if self.compactions
            else "with compaction off"
            if self.agent.compaction is None
            else "and compaction found nothing more to remove"
        )
        raise cx.overflow_error(self.agent.encoding, prompt, window, how)

    # --- sample: one engine request, parsed as it streams --------------------------------

    async def sample(self) -> Steps:
        """Stream one turn from the engine; sets :attr:`sampled`.

        A prompt that ends inside a message the runtime opened (the forced final channel)
        primes the parser with it, so the continuation parses as that message. A turn whose
        analysis reaches the reasoning budget is ended here (the request is aborted)."""
        self.sampled = None
        prompt = self.transcript.view()
        parser = TurnParser(self.agent.encoding)
        parser.feed_many(cx.continuation(self.agent.encoding, prompt))
        budget = self.max_reasoning_tokens or self.agent.max_reasoning_tokens
        reasoning, cut = 0, False
        output: list[int] = []
        started = time.perf_counter()
        engine = self.agent.engine
        finish: FinishReason | None = None
        usage: TokenUsage | None = None
        self._check_room(prompt)
        try:
            request = request_for(self.agent, prompt, self.run_id, self.turn)
            async with aclosing(engine.generate(request)) as chunks:
                async for chunk in chunks:
                    output.extend(chunk.token_ids)
                    for item in parser.feed_many(chunk.token_ids):
                        call_id = f"{self.run_id}-{len(self.calls)}"
                        event = visible_event(item, self.run_id, self.turn, call_id)
                        if event is not None:
                            yield event
                    if parser.current == ("analysis", None):
                        reasoning += len(chunk.token_ids)
                    if chunk.finish_reason is not None:
                        finish, usage = chunk.finish_reason, chunk.usage
                        break
                    if budget and reasoning >= budget and parser.current == ("analysis", None):
                        finish, cut = "length", True  # closing the stream aborts the request
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
        turn_finished = self._count(prompt, output, finish, usage, time.perf_counter() - started)
        yield turn_finished
        for warning in self._context_warnings(turn_finished.context_tokens):
            yield warning
        messages, error = list(parser.messages), parser.error
        kept = parser.salvage() if error is not None else None
        if kept is not None:  # a complete call or final answer came before the broken part
            messages, error = kept, None
        if parser.salvaged:
            yield WarningEvent(
                run_id=self.run_id, turn=self.turn, message=f"salvaged: {parser.salvaged}"
            )
        self.sampled = Sampled(self.turn, prompt, output, messages, finish, error, reasoning, cut)

    def _context_warnings(self, tokens: int) -> list[WarningEvent]:
        window = self.window
        out = []
        for threshold in cx.crossed(self.agent.context_warnings, self.warned, tokens / window):
            self.warned.add(threshold)
            message = cx.warning_text(tokens, window, threshold, self.agent.compaction)
            out.append(WarningEvent(run_id=self.run_id, turn=self.turn, message=message))
        return out

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
            context_tokens=len(prompt) + len(output),
            context_window=self.window,
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
        if sampled.finish_reason == "length" and cx.cut_while_reasoning(sampled, last):
            reason = "max_reasoning_tokens" if sampled.reasoning_cut else "max_tokens_per_turn"
            return ForceFinal(sampled, reason)
        if (
            last is not None
            and is_tool_recipient(last.recipient)
            and sampled.finish_reason != "length"
        ):
            return CallTool(sampled, last, last.recipient)
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

    # --- force final: the turn was cut while reasoning -----------------------------------

    async def force_final(self, step: ForceFinal) -> Steps:
        """Close the cut analysis and open the final channel with ids the model did not
        sample; the next turn continues inside that message."""
        sampled, encoding = step.sampled, self.agent.encoding
        self.messages.extend(sampled.messages)
        forced = cx.forced_final_ids(encoding, sampled.output)
        self.transcript.extend(sampled.output)
        self.transcript.extend(forced)
        yield ForcedTokens(
            run_id=self.run_id,
            turn=self.turn,
            reason=step.reason,
            token_ids=tuple(forced),
            text=encoding.decode(forced),
            reasoning_tokens=sampled.reasoning_tokens,
        )
        recorded = getattr(self.recorder, "forced", None)
        if recorded is not None:
            await recorded(self.state(self.turn + 1), sampled.output, forced)

    # --- finish: this turn's messages are the answer -------------------------------------

    async def finish(self, step: Finish) -> Steps:
        """The answer: :attr:`result` and ``RunFinished``."""
        sampled = step.sampled
        self.messages.extend(sampled.messages)
        text, warning = final_text(sampled, self.agent.max_tokens_per_turn)
        if warning:
            yield WarningEvent(run_id=self.run_id, turn=self.turn, message=warning)
        self.result = RunResult(
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
        )
        yield RunFinished(
            run_id=self.run_id,
            turn=self.turn,
            final_text=text,
            turns=self.usage.turns,
            prompt_tokens=self.usage.prompt_tokens,
            cached_prompt_tokens=self.usage.cached_prompt_tokens,
            output_tokens=self.usage.output_tokens,
        )
