"""Replay: a recorded run's model outputs, played back through the current tools.

The model's side comes from the trace (a :class:`~harmony_agent.engine.ReplayEngine`), the
tools' side is computed again, so a replay shows what changed in the tools since the run was
recorded.

Example::

    import tempfile
    from pathlib import Path

    from harmony_agent import Agent, tool
    from harmony_agent.engine import ScriptedEngine
    from harmony_agent.replay import Replay

    @tool
    def add(a: int, b: int) -> int:
        "Add two integers."
        return a + b

    replies = [
        '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
        "<|channel|>final<|message|>5<|return|>",
    ]
    trace = Path(tempfile.mkdtemp()) / "run.jsonl"
    Agent(tools=[add], engine=ScriptedEngine(replies)).run_sync("2+3?", trace=trace)

    replay = Replay(trace)
    outcome = replay.run_sync(Agent(tools=[add], engine=replay.engine))
    assert outcome.result.final_text == "5" and outcome.changes == []
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from harmony_agent.engine.replay import ReplayEngine

from ._run import Run
from ._state import LoopAgent
from .errors import ConfigurationError
from .events import Event, ToolResultEvent
from .result import RunResult
from .trace import Trace, load_trace

__all__ = ["OutputChange", "Replay", "ReplayOutcome", "compare_tool_results"]


@dataclass(frozen=True, slots=True)
class OutputChange:
    """A tool call whose output differs from the recorded one (calls matched in order)."""

    index: int
    recipient: str
    recorded: str
    replayed: str


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay produced: the run's result and the tool outputs that changed."""

    result: RunResult | None
    recorded: list[ToolResultEvent]
    replayed: list[ToolResultEvent]
    changes: list[OutputChange] = field(default_factory=list)


def compare_tool_results(
    recorded: Sequence[ToolResultEvent], replayed: Sequence[ToolResultEvent]
) -> list[OutputChange]:
    """The calls, matched in order, whose output text differs (extra calls on either side
    are not compared: the run itself fails when the replay asks for an unrecorded turn)."""
    return [
        OutputChange(i, now.recipient, then.output, now.output)
        for i, (then, now) in enumerate(zip(recorded, replayed, strict=False))
        if then.output != now.output
    ]


def _tool_results(events: Sequence[Event]) -> list[ToolResultEvent]:
    return [e for e in events if isinstance(e, ToolResultEvent)]


class Replay:
    """Plays back ``trace`` (a path or a loaded :class:`~harmony_agent.trace.Trace`).

    Build the agent with ``engine=replay.engine`` and the tools to check, then
    :meth:`stream` (events as they happen) or :meth:`run` it; :attr:`changes` and
    :meth:`outcome` compare its tool outputs with the recorded ones.
    """

    def __init__(self, trace: str | Path | Trace) -> None:
        self.trace = trace if isinstance(trace, Trace) else load_trace(trace)
        self.engine = ReplayEngine(self.trace)
        self.events: list[Event] = []
        self.result: RunResult | None = None

    @property
    def recorded(self) -> list[ToolResultEvent]:
        return _tool_results(self.trace.events)

    @property
    def replayed(self) -> list[ToolResultEvent]:
        return _tool_results(self.events)

    @property
    def changes(self) -> list[OutputChange]:
        return compare_tool_results(self.recorded, self.replayed)

    def _recorded_decision(self, ctx: Any, call: Any) -> bool:
        """A call that needs approval gets the decision it got when recorded: the n-th call
        of the replay is the n-th of the trace."""
        number = int(call.call_id.rsplit("-", 1)[1])
        recorded = self.recorded
        return number >= len(recorded) or recorded[number].error_kind != "rejected"

    def outcome(self) -> ReplayOutcome:
        return ReplayOutcome(self.result, self.recorded, self.replayed, self.changes)

    async def stream(self, agent: LoopAgent) -> AsyncGenerator[Event, None]:
        """Run the recorded conversation again on ``agent``, yielding its events."""
        if agent.engine is not self.engine:
            raise ConfigurationError(
                "the agent of a replay must play back the trace: build it with engine=replay.engine"
            )
        self.events, self.result = [], None
        state = self.trace.initial_state(run_id=self.trace.run_id + "-replay")
        run = Run(agent, state.task, resume=state, approver=self._recorded_decision)
        async with aclosing(run.events()) as events:
            async for event in events:
                self.events.append(event)
                yield event
        self.result = run.result

    async def run(
        self, agent: LoopAgent, *, on_event: Callable[[Event], Any] | None = None
    ) -> ReplayOutcome:
        """:meth:`stream` to the end; ``on_event`` sees every event (sync or async)."""
        async with aclosing(self.stream(agent)) as events:
            async for event in events:
                if on_event is not None:
                    outcome = on_event(event)
                    if inspect.isawaitable(outcome):
                        await outcome
        return self.outcome()

    def run_sync(self, agent: LoopAgent) -> ReplayOutcome:
        """:meth:`run` for synchronous code."""
        return anyio.run(lambda: self.run(agent))
