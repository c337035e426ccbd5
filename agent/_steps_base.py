"""What the step mixins of :class:`harmony_agent._run.Run` share: the run's fields they read
and write, and the few helpers every step group uses.

The step groups (``_steps_tools``, ``_steps_context``, ``_steps_output``) are mixins that
``Run`` inherits; they type ``self`` through :class:`RunCore` and never import ``_run``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import asdict
from typing import Any

from harmony_agent.tools.base import RunContext
from openai_harmony import Message

from . import _otel
from ._hooks import Approver, Decision, Hooks, TurnInfo, UsageLimits
from ._output import OutputSpec
from ._state import LoopAgent, Recorder, RunState
from ._transcript import Transcript
from ._turn import Sampled
from .errors import RunStoppedError
from .events import Event
from .result import RunResult, RunUsage, ToolCallRecord, ToolCallRequest

Steps = AsyncGenerator[Event, None]


class RunCore:
    """The fields of a run (declared here, set by the ``Run`` dataclass) and the helpers
    that the step groups share."""

    agent: LoopAgent
    task: str
    history: RunResult | None
    deps: Any
    resume: RunState | None
    recorder: Recorder | None
    run_id: str
    turn: int
    consecutive_errors: int
    usage: RunUsage
    calls: list[ToolCallRecord]
    messages: list[Message]
    events_seen: list[Event]
    transcript: Transcript
    sampled: Sampled | None
    result: RunResult | None
    observer: _otel.RunObserver | None
    hooks: Hooks
    limits: UsageLimits
    approval: Any
    approver: Approver | None
    decisions: Mapping[str, Decision]
    wall_before: float
    started: float
    pending: list[ToolCallRequest]
    max_reasoning_tokens: int | None
    compactions: int
    warned: set[float]
    output: OutputSpec | None
    output_repairs: int

    def state(self, next_turn: int) -> RunState:
        """A snapshot to resume from (``Run.state``)."""
        raise NotImplementedError

    def wall_s(self) -> float:
        """Wall time of the run so far (a pause between processes not counted)."""
        return self.wall_before + time.monotonic() - self.started

    def _usage_now(self) -> RunUsage:
        return RunUsage(**asdict(self.usage))

    async def _turn_end(self, ctx: RunContext, info: TurnInfo) -> None:
        stop = await self.hooks.turn_end(ctx, info)
        if stop is not None:
            raise RunStoppedError(
                f"on_turn_end stopped the run after turn {info.turn}: {stop.reason}"
            )
