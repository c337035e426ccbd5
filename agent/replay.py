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

import difflib
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
    """A tool call whose output differs from the recorded one (calls matched in order).

    ``index`` counts the run's tool calls from 0; ``call_id`` and ``turn`` (0-based, as in
    events) are the recorded call's; ``ok`` and ``replayed_ok`` say whether each side was a
    success. :meth:`diff` shows how the output changed.
    """

    index: int
    recipient: str
    recorded: str
    replayed: str
    call_id: str = ""
    turn: int = -1
    ok: bool = True
    replayed_ok: bool = True

    def diff(self, *, context: int = 3, max_lines: int = 40, width: int = 160) -> str:
        """A unified diff of the recorded output (``-``) against the replayed one (``+``),
        trimmed: at most ``max_lines`` lines of diff, each at most ``width`` characters
        (a long line is shown around where it first differs)."""
        old, new = self.recorded.splitlines(), self.replayed.splitlines()
        where = f"call {self.index} ({self.recipient}, turn {self.turn}"
        where += f", id {self.call_id})" if self.call_id else ")"
        lines = list(
            difflib.unified_diff(
                old or [""],
                new or [""],
                fromfile=f"recorded {where}",
                tofile="replayed",
                n=context,
                lineterm="",
            )
        )
        if old == new:  # only the status or trailing newlines differ
            lines += [f"  (the text is the same; ok {self.ok} -> {self.replayed_ok})"]
        focus = _first_difference(self.recorded, self.replayed)
        shown = [_clip(line, width, _column(line, focus, old, new)) for line in lines]
        if len(shown) > max_lines:
            left = len(shown) - max_lines
            shown = [*shown[:max_lines], f"… ({left} more diff lines)"]
        return "\n".join(shown)

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON (the outputs whole, and the trimmed diff)."""
        return {
            "index": self.index,
            "call_id": self.call_id,
            "turn": self.turn,
            "recipient": self.recipient,
            "recorded": self.recorded,
            "replayed": self.replayed,
            "ok": self.ok,
            "replayed_ok": self.replayed_ok,
            "diff": self.diff(),
        }


def _first_difference(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _column(line: str, focus: int, old: list[str], new: list[str]) -> int:
    """Where in a diff line the outputs first differ, when that line holds it (one-line
    outputs, the usual case for JSON), else 0."""
    if len(old) <= 1 and len(new) <= 1 and line[:1] in "-+" and not line.startswith(("---", "+++")):
        return focus
    return 0


def _clip(line: str, width: int, focus: int) -> str:
    if len(line) <= width:
        return line
    mark, body = line[:1], line[1:]
    start = max(0, min(focus - width // 3, len(body) - width))
    piece = body[start : start + width]
    head = "…" if start > 0 else ""
    tail = f"… ({len(body)} chars)" if start + width < len(body) else ""
    return f"{mark}{head}{piece}{tail}"


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What a replay produced: the run's result and the tool outputs that changed."""

    result: RunResult | None
    recorded: list[ToolResultEvent]
    replayed: list[ToolResultEvent]
    changes: list[OutputChange] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON summary: how many calls were replayed and each change with its diff."""
        return {
            "type": "replay_summary",
            "finished": self.result is not None,
            "recorded_calls": len(self.recorded),
            "replayed_calls": len(self.replayed),
            "changed": len(self.changes),
            "changes": [change.to_dict() for change in self.changes],
        }


def compare_tool_results(
    recorded: Sequence[ToolResultEvent], replayed: Sequence[ToolResultEvent]
) -> list[OutputChange]:
    """The calls, matched in order, whose output text (or success) differs (extra calls on
    either side are not compared: the run itself fails when the replay asks for an
    unrecorded turn)."""
    return [
        OutputChange(
            i,
            now.recipient,
            then.output,
            now.output,
            call_id=then.call_id,
            turn=then.turn,
            ok=then.ok,
            replayed_ok=now.ok,
        )
        for i, (then, now) in enumerate(zip(recorded, replayed, strict=False))
        if then.output != now.output or then.ok != now.ok
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
