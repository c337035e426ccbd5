"""One run of the loop, as named steps over explicit run state.

    (compact?) → sample → decide ─┬─ Resample     → resample    ─┐
                                  ├─ CallTool     → tool_step   ─┤
                                  ├─ ForceFinal   → force_final ─┤
                                  ├─ RepairOutput → repair      ─┼→ (compact?) → sample …
                                  ├─ Pause        → pause       ─┘  (approved by the approver)
                                  │                  or the run ends paused → resume_step → …
                                  └─ Finish       → finish        (the run ends)

:meth:`Run.sample` makes one engine request and parses the sampled ids as they stream.
:meth:`Run.decide` looks at what came back and returns what happens next, as a small typed
value (:data:`NextStep`); it does no I/O. Each value has one step function that carries it out.
Before each sample, :meth:`Run.plan_context` decides whether the prompt must be compacted
first (a :class:`Compact` step; see ``_context``): the one deliberate break of the prefix.
Steps are async generators of events; the driver (:meth:`Run.events`) is the one place where
events are recorded (the run's list, the trace) before the caller sees them.

Whether a call needs approval is asked (the policies may be async) before :meth:`Run.decide`,
which gets the answer as data. A paused run's state holds the call's sampled ids; the resumed
run starts with :meth:`Run.resume_step`, which appends the call's result to them.

A new step (context compaction, a structured-output repair) is one more
``NextStep`` class (in ``_turn``), one step function here, one branch in :meth:`Run.decide`
and one ``case`` in :meth:`Run._turns`; the type checker flags a ``NextStep`` with no ``case``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass, field, replace
from typing import Any, assert_never

import anyio.to_thread
from harmony_agent.engine.base import FinishReason, TokenUsage
from harmony_agent.tools.base import RunContext, Tool, ToolResult
from openai_harmony import Message, Role

from . import _context as cx
from . import _harmony as hm
from . import _otel
from ._encoding import third_party_error
from ._hooks import (
    Approver,
    Decision,
    Hooks,
    TurnInfo,
    UsageLimits,
    call_hook,
    declined_result,
    needs_approval,
)
from ._output import OutputInvalid, OutputSpec, repair_message
from ._parse import TurnParser
from ._registry import is_tool_recipient
from ._state import LoopAgent, Recorder, RunState
from ._tokens import END, RETURN
from ._transcript import Transcript
from ._turn import (
    DEFAULT_CONTEXT_WINDOW,
    CallTool,
    Finish,
    ForceFinal,
    NextStep,
    Pause,
    RepairOutput,
    Resample,
    Sampled,
    call_request,
    final_text,
    request_for,
    visible_event,
)
from .errors import (
    EngineError,
    HarmonyAgentError,
    MaxTurnsError,
    OutputValidationError,
    RunStoppedError,
    ToolErrorBudgetError,
    UnknownToolError,
)
from .events import (
    ApprovalRequested,
    Compacted,
    ErrorEvent,
    Event,
    ForcedTokens,
    RunFinished,
    RunPaused,
    RunStarted,
    ToolCallEvent,
    ToolResultEvent,
    TurnFinished,
    WarningEvent,
)
from .result import RunResult, RunUsage, ToolCallRecord, ToolCallRequest

__all__ = [
    "CallTool",
    "Compact",
    "Finish",
    "ForceFinal",
    "NextStep",
    "Pause",
    "RepairOutput",
    "Resample",
    "Run",
]

#: outcomes of user decisions, not tool failures: they do not count against max_tool_errors
_DECIDED = frozenset({"rejected", "denied"})

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
    ``task`` (after ``history``, a previous result, when given). ``decisions`` decide the
    resumed state's pending calls (checked by ``Agent.resume``). ``approval`` is the agent's
    approval policy for every tool, ``approver`` decides calls that need approval instead
    of pausing. :attr:`sampled` is the latest turn's output, set by :meth:`sample`.
    ``output`` is the run's output type (None: the agent's, if it has one).
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
    hooks: Hooks = field(default_factory=Hooks)
    limits: UsageLimits = field(default_factory=UsageLimits)
    approval: Any = False
    approver: Approver | None = None
    decisions: Mapping[str, Decision] = field(default_factory=dict)
    wall_before: float = 0.0
    started: float = field(default_factory=time.monotonic)
    pending: list[ToolCallRequest] = field(default_factory=list)
    #: this run's reasoning budget per turn (None: the agent's)
    max_reasoning_tokens: int | None = None
    compactions: int = 0
    warned: set[float] = field(default_factory=set)
    output: OutputSpec | None = None
    output_repairs: int = 0

    def __post_init__(self) -> None:
        self.output = self.output or self.agent.output
        if self.resume is not None:
            self.run_id = self.resume.run_id
            self.usage = RunUsage(**asdict(self.resume.usage))
            self.calls = list(self.resume.tool_calls)
            self.wall_before = self.resume.wall_s
        self.run_id = self.run_id or uuid.uuid4().hex[:12]

    def wall_s(self) -> float:
        """Wall time of the run so far (a pause between processes not counted)."""
        return self.wall_before + time.monotonic() - self.started

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
            if exc.result is None:
                exc.result = self.result = self.partial_result()
            yield await self._record(
                ErrorEvent(
                    run_id=self.run_id,
                    turn=self.turn,
                    error=type(exc).__name__,
                    message=str(exc),
                    partial_result=exc.result is not None,
                )
            )
            raise
        finally:
            if self.observer is not None:
                self.observer.close()

    def partial_result(self) -> RunResult:
        """The run up to now, for the error that ends it: ``status == "error"``.

        ``prompt_ids`` is the prompt of the last turn (sent, or being sent when that failed),
        ``token_ids`` the transcript as it stands, with the last sampled output when no step
        appended it.
        """
        sampled = self.sampled
        transcript = self.transcript.view().tolist()
        if sampled is None:
            prompt, tokens = transcript, transcript
        else:
            prompt = sampled.prompt.tolist()
            end = len(prompt) + len(sampled.output)
            appended = transcript[len(prompt) : end] == sampled.output
            tokens = transcript if appended else [*prompt, *sampled.output]
        return RunResult(
            run_id=self.run_id,
            final_text="",
            tool_calls=self.calls,
            usage=self.usage,
            events=self.events_seen,
            messages=self.messages,
            prompt_ids=prompt,
            token_ids=tokens,
            finish_reason=sampled.finish_reason if sampled is not None else "error",
            truncated=sampled is not None and sampled.finish_reason == "length",
            status="error",
        )

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
        if self.resume is not None and self.resume.pending:
            async with aclosing(self.resume_step(ctx)) as events:
                async for event in events:
                    yield event
        for turn in range(first_turn, self.agent.max_turns):
            self.turn = turn
            compact = await self.plan_context()
            if compact is not None:
                async with aclosing(self.compact(compact)) as events:
                    async for event in events:
                        yield event
            self.limits.check_before_turn(self.usage, len(self.transcript), self.wall_s())
            async with aclosing(self.sample()) as steps:
                async for event in steps:
                    yield event
            if self.sampled is None:  # sample() sets it or raises
                raise RuntimeError(f"turn {turn} ended without output")
            self.limits.check_after_turn(self.usage, self.wall_s())
            calls_before = len(self.calls)
            approval = await self.approval_needed(self.sampled, ctx)
            step = self.decide(self.sampled, needs_approval=approval)
            match step:
                case Resample():
                    carried_out = self.resample(step)
                case CallTool():
                    carried_out = self.tool_step(step, ctx)
                case Pause():
                    carried_out = self.pause(step, ctx)
                case ForceFinal():
                    carried_out = self.force_final(step)
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
            call = self.calls[-1] if len(self.calls) > calls_before else None
            await self._turn_end(ctx, TurnInfo(turn, self._usage_now(), call))
        raise MaxTurnsError(
            f"no final answer after {self.agent.max_turns} turns ({len(self.calls)} tool calls). "
            "Raise max_turns, or make the task or the tools' descriptions clearer."
        )

    def _usage_now(self) -> RunUsage:
        return RunUsage(**asdict(self.usage))

    async def _turn_end(self, ctx: RunContext, info: TurnInfo) -> None:
        stop = await self.hooks.turn_end(ctx, info)
        if stop is not None:
            raise RunStoppedError(
                f"on_turn_end stopped the run after turn {info.turn}: {stop.reason}"
            )

    def state(self, next_turn: int) -> RunState:
        """A snapshot to resume from: the transcript as it stands is the next prompt (or,
        when calls are pending, the prompt that their results extend)."""
        return RunState(
            run_id=self.run_id,
            task=self.task,
            messages=list(self.messages),
            prompt_ids=self.transcript.view().tolist(),
            next_turn=next_turn,
            tool_calls=list(self.calls),
            usage=self._usage_now(),
            pending=list(self.pending),
            wall_s=self.wall_s(),
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
        logprobs: list[float | None] | None = []  # None once a chunk comes without
        started = time.perf_counter()
        engine = self.agent.engine
        finish: FinishReason | None = None
        usage: TokenUsage | None = None
        self._check_room(prompt)
        try:
            schema = self.output.schema if self.output and engine.constrains_output else None
            request = request_for(self.agent, prompt, self.run_id, self.turn, schema)
            async with aclosing(engine.generate(request)) as chunks:
                async for chunk in chunks:
                    output.extend(chunk.token_ids)
                    if logprobs is not None:
                        if chunk.logprobs is None:
                            logprobs = None
                        else:
                            logprobs.extend(chunk.logprobs)
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
        duration = time.perf_counter() - started
        turn_finished = self._count(prompt, output, finish, usage, duration, logprobs or None)
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
        logprobs: Sequence[float | None] | None = None,
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
            output_logprobs=tuple(logprobs) if logprobs else None,
            context_tokens=len(prompt) + len(output),
            context_window=self.window,
        )

    # --- decide: what happens next --------------------------------------------------------

    async def approval_needed(self, sampled: Sampled, ctx: RunContext) -> bool:
        """Whether the call ``sampled`` ends in must be approved before it runs (the tool's or
        the agent's policy says so). Calls that cannot run (unknown tool, invalid arguments)
        need none: the model is told why instead."""
        last = sampled.messages[-1] if sampled.messages else None
        if (
            sampled.parse_error is not None
            or sampled.finish_reason != "stop"
            or last is None
            or not is_tool_recipient(last.recipient)
        ):
            return False
        request, tool = self._request(last, last.recipient)
        if not isinstance(tool, Tool):
            return False
        try:  # the policy sees the arguments the tool would run with (aliases resolved)
            arguments = tool.parse_arguments(request.raw_arguments)
        except Exception:  # the tool will refuse them, with the reason, without running
            return False
        return await needs_approval(tool, self.approval, ctx, replace(request, arguments=arguments))

    def decide(self, sampled: Sampled, *, needs_approval: bool = False) -> NextStep:
        """The next step for what ``sampled`` holds (``needs_approval``: whether its call must
        be approved first). No I/O; raises when the run cannot go on."""
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
            if needs_approval:
                return Pause(sampled, last, last.recipient)
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

    def _request(
        self, call: Message, recipient: str
    ) -> tuple[ToolCallRequest, Tool | UnknownToolError]:
        return call_request(
            self.agent.registry, call, recipient, self.run_id, self.turn, self.calls
        )

    def _announce(self, request: ToolCallRequest) -> ToolCallEvent:
        return ToolCallEvent(
            run_id=self.run_id,
            turn=self.turn,
            call_id=request.call_id,
            recipient=request.recipient,
            tool=request.tool,
            channel=request.channel,
            raw_arguments=request.raw_arguments,
            arguments=request.arguments,
        )

    async def tool_step(self, step: CallTool, ctx: RunContext) -> Steps:
        """Resolve the recipient, invoke the tool (it validates its arguments), and append the
        sampled ids and the rendered tool message to the transcript: the next prompt."""
        self.messages.extend(step.sampled.messages)
        request, tool = self._request(step.call, step.recipient)
        yield self._announce(request)
        async with aclosing(self._carry_out(request, tool, True, ctx, step.sampled.output)) as ev:
            async for event in ev:
                yield event

    async def _carry_out(
        self,
        request: ToolCallRequest,
        tool: Tool | UnknownToolError,
        decision: Decision,
        ctx: RunContext,
        sampled_output: list[int],
    ) -> Steps:
        """Run (or decline) the call, report it, and append its ids: ``sampled_output`` (the
        call's ids, unless they are in the transcript already) and the tool message."""
        record = await self._invoke(request, tool, decision, ctx)
        self.calls.append(record)
        yield ToolResultEvent(
            run_id=self.run_id,
            turn=self.turn,
            call_id=request.call_id,
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
            record.name or record.recipient, request.channel, record.output
        )
        self.messages.append(result)
        appended = await hm.off_loop(
            len(record.output), hm.render_tool_result, self.agent.encoding, result
        )
        self.transcript.extend(sampled_output)
        self.transcript.extend(appended)
        self.pending = []
        if self.recorder is not None:
            await self.recorder.step(self.state(self.turn + 1), sampled_output, appended)

    def _check_error_budget(self, record: ToolCallRecord) -> None:
        if record.error_kind in _DECIDED:
            return
        self.consecutive_errors = 0 if record.ok else self.consecutive_errors + 1
        if self.consecutive_errors >= self.agent.max_tool_errors:
            raise ToolErrorBudgetError(
                f"{self.consecutive_errors} tool calls failed in a row (last: "
                f"{record.recipient}: {record.output[:300]}). The model is stuck; check "
                f"the tool descriptions or raise max_tool_errors."
            )

    async def _invoke(
        self,
        request: ToolCallRequest,
        tool: Tool | UnknownToolError,
        decision: Decision,
        ctx: RunContext,
    ) -> ToolCallRecord:
        arguments = request.arguments
        if isinstance(tool, UnknownToolError):
            result = ToolResult(str(tool), ok=False, error_kind=tool.kind)
        elif decision is not True:
            result = declined_result(decision)
        else:
            self.limits.check_before_tool(len(self.calls), request, self.wall_s())
            result, arguments = await self.hooks.around(tool, request, ctx)
        return ToolCallRecord(
            call_id=request.call_id,
            turn=request.turn,
            recipient=request.recipient,
            name=request.tool,
            channel=request.channel,
            raw_arguments=request.raw_arguments,
            arguments=arguments,
            output=result.text,
            ok=result.ok,
            error_kind=result.error_kind,
            duration_s=result.duration_s,
        )

    # --- pause: the call needs approval --------------------------------------------------

    async def pause(self, step: Pause, ctx: RunContext) -> Steps:
        """Ask the approver and carry on, or end the run paused before the tool runs: the
        call's sampled ids are kept in the transcript and the state (never sampled again)."""
        sampled = step.sampled
        self.messages.extend(sampled.messages)
        request, tool = self._request(step.call, step.recipient)
        yield self._announce(request)
        yield ApprovalRequested(
            run_id=self.run_id,
            turn=self.turn,
            call_id=request.call_id,
            recipient=request.recipient,
            tool=request.tool,
            raw_arguments=request.raw_arguments,
            arguments=request.arguments,
        )
        if self.approver is not None:
            decision = await call_hook("approver", self.approver, ctx, request)
            if not isinstance(decision, bool | str):
                decision = bool(decision)
            async with aclosing(
                self._carry_out(request, tool, decision, ctx, sampled.output)
            ) as ev:
                async for event in ev:
                    yield event
            return
        self.transcript.extend(sampled.output)
        self.pending = [request]
        state = self.state(self.turn + 1)
        if self.recorder is not None:
            await self.recorder.step(state, sampled.output, [])
        self.result = RunResult(
            run_id=self.run_id,
            final_text="",
            tool_calls=self.calls,
            usage=self.usage,
            events=self.events_seen,
            messages=self.messages,
            prompt_ids=sampled.prompt.tolist(),
            token_ids=state.prompt_ids,
            finish_reason=sampled.finish_reason,
            status="paused",
            interruptions=list(self.pending),
            state=state,
        )
        yield RunPaused(run_id=self.run_id, turn=self.turn, call_ids=(request.call_id,))

    async def resume_step(self, ctx: RunContext) -> Steps:
        """The first step of a resumed paused run: carry out the decisions on its pending
        calls, appending their results to the call ids the state ends with."""
        assert self.resume is not None
        self.pending = list(self.resume.pending)
        for request in list(self.pending):
            self.turn = request.turn
            tool: Tool | UnknownToolError
            try:
                tool = self.agent.registry.resolve(request.recipient)
            except UnknownToolError as exc:
                tool = exc
            decision = self.decisions[request.call_id]
            async with aclosing(self._carry_out(request, tool, decision, ctx, [])) as events:
                async for event in events:
                    yield event
            if self.calls:
                await self._turn_end(ctx, TurnInfo(request.turn, self._usage_now(), self.calls[-1]))

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
