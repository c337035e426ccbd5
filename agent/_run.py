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

Where each step lives: this module holds :class:`Run` (its fields and the driver),
:meth:`Run.sample` and :meth:`Run.decide`. The steps are mixins that ``Run`` inherits, each
typed against the run's fields in ``_steps_base.RunCore``:

- ``_steps_tools``: ``approval_needed``, ``tool_step``, ``pause``, ``resume_step``;
- ``_steps_context``: ``plan_context`` and ``compact`` (the :class:`Compact` step), the
  context warnings, ``force_final``;
- ``_steps_output``: ``finish``, ``repair``, ``resample``, the unconstrained-output warning.

A new step (context compaction, a structured-output repair) is one more
``NextStep`` class (in ``_turn``), one step function in the mixin of its concern (or a new
one that ``Run`` inherits; a mixin never imports this module), one branch in
:meth:`Run.decide` and one ``case`` in :meth:`Run._turns`; the type checker flags a
``NextStep`` with no ``case``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, assert_never

from harmony_agent.engine.base import Engine, FinishReason, TokenUsage
from harmony_agent.tools.base import RunContext
from openai_harmony import Message

from . import _context as cx
from . import _harmony as hm
from . import _otel
from ._encoding import third_party_error
from ._hooks import Approver, Decision, Hooks, TurnInfo, UsageLimits
from ._output import OutputInvalid, OutputSpec
from ._parse import TurnParser
from ._registry import is_tool_recipient
from ._state import LoopAgent, Recorder, RunState
from ._steps_base import Steps
from ._steps_context import Compact, ContextSteps
from ._steps_output import OutputSteps
from ._steps_tools import ToolSteps
from ._transcript import Transcript
from ._turn import (
    CallTool,
    Finish,
    ForceFinal,
    NextStep,
    Pause,
    RepairOutput,
    Resample,
    Sampled,
    final_text,
    request_for,
    visible_event,
)
from .errors import EngineError, HarmonyAgentError, MaxTurnsError
from .events import ErrorEvent, Event, RunStarted, TurnFinished, WarningEvent
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


@dataclass
class Run(ToolSteps, ContextSteps, OutputSteps):
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
    #: this run's LoRA adapter (None: the resumed state's, else the agent's)
    adapter: str | None = None

    def __post_init__(self) -> None:
        self.output = self.output or self.agent.output
        if self.adapter is None and self.resume is not None:
            self.adapter = self.resume.adapter
        self.adapter = self.adapter or self.agent.adapter
        if self.resume is not None:
            self.run_id = self.resume.run_id
            self.usage = RunUsage(**asdict(self.resume.usage))
            self.calls = list(self.resume.tool_calls)
            self.wall_before = self.resume.wall_s
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
            adapter=self.adapter,
        )

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
        call_id = f"{self.run_id}-{len(self.calls)}"  # of a call this turn may start
        analysis = ("analysis", None)
        with _engine_failures(engine):
            schema = self.output.schema if self.output and engine.constrains_output else None
            request = request_for(self.agent, prompt, self.run_id, self.turn, schema, self.adapter)
            async with aclosing(engine.generate(request)) as chunks:
                async for chunk in chunks:
                    output.extend(chunk.token_ids)
                    if logprobs is not None:
                        if chunk.logprobs is None:
                            logprobs = None
                        else:
                            logprobs.extend(chunk.logprobs)
                    for item in parser.feed_many(chunk.token_ids):
                        event = visible_event(item, self.run_id, self.turn, call_id)
                        if event is not None:
                            yield event
                    reasoning_now = parser.current == analysis
                    if reasoning_now:
                        reasoning += len(chunk.token_ids)
                    if chunk.finish_reason is not None:
                        finish, usage = chunk.finish_reason, chunk.usage
                        break
                    if budget and reasoning >= budget and reasoning_now:
                        finish, cut = "length", True  # closing the stream aborts the request
                        break
        if finish is None:
            raise EngineError(f"{type(engine).__name__} ended the stream without a finish reason")
        if finish == "length":
            parser.finish_eos()
        duration = time.perf_counter() - started
        turn_finished = self._count(prompt, output, finish, usage, duration, logprobs or None)
        yield turn_finished
        for warning in self._context_warnings(turn_finished.context_tokens):
            yield warning
        messages, error = _turn_messages(parser)
        if parser.salvaged:
            yield WarningEvent(
                run_id=self.run_id, turn=self.turn, message=f"salvaged: {parser.salvaged}"
            )
        self.sampled = Sampled(self.turn, prompt, output, messages, finish, error, reasoning, cut)

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


@contextmanager
def _engine_failures(engine: Engine) -> Iterator[None]:
    """An engine failure that the engine did not map itself, as :class:`EngineError`."""
    try:
        yield
    except HarmonyAgentError:
        raise
    except BaseException as exc:  # an engine that did not map its own failure
        if not third_party_error(exc):  # cancellation, KeyboardInterrupt
            raise
        raise EngineError(f"{type(engine).__name__} failed: {type(exc).__name__}: {exc}") from exc


def _turn_messages(parser: TurnParser) -> tuple[list[Message], str | None]:
    """The turn's messages and its parse error, or the part kept before the error."""
    messages, error = list(parser.messages), parser.error
    kept = parser.salvage() if error is not None else None
    if kept is not None:  # a complete call or final answer came before the broken part
        messages, error = kept, None
    return messages, error
