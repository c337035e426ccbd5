"""Where a run stands (``RunState``), who watches it (``Recorder``) and what it runs
(``LoopAgent``, the part of ``Agent`` the loop reads).

A leaf module: the loop (``_run``), the trace writer and reader (``trace``) and the CLI import
it, and it imports none of them, so the run and its trace do not depend on each other.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harmony_agent.engine.base import Engine
from harmony_agent.tools.base import RunContext
from openai_harmony import HarmonyEncoding, Message

from ._context import Compaction
from ._output import OutputSpec
from ._registry import ToolRegistry
from .errors import RunStateError
from .events import Event
from .result import RunResult, RunUsage, ToolCallRecord, ToolCallRequest

__all__ = ["STATE_FORMAT", "STATE_VERSION", "LoopAgent", "Recorder", "RunState"]

STATE_FORMAT = "harmony-agent-run-state"
STATE_VERSION = 1


@dataclass
class RunState:
    """Where a run stands after a complete step: enough to go on from there (``Agent.resume``).

    ``prompt_ids`` is the prompt the next turn sends; ``next_turn`` its number. The state
    round-trips through JSON (:meth:`to_json` / :meth:`from_json`, or :meth:`to_dict` /
    :meth:`from_dict`), so a run can be saved anywhere and resumed in another process.

    A paused run's state has the calls waiting for approval in ``pending``; its
    ``prompt_ids`` end with the call the model sampled (``<|call|>`` included), to which the
    resumed run appends the tool's result. ``wall_s`` is the wall time the run has taken so
    far, not counting the pause. ``adapter`` is the LoRA adapter the run samples with (None:
    the base model, or a state saved before adapters were recorded); a resumed run keeps it.

    Example::

        import json
        from harmony_agent.agent import RunState
        from openai_harmony import Message, Role

        state = RunState("run1", "hi", [Message.from_role_and_content(Role.USER, "hi")], [1, 2])
        again = RunState.from_dict(json.loads(json.dumps(state.to_dict())))
        assert again == state
    """

    run_id: str
    task: str
    messages: list[Message]
    prompt_ids: list[int]
    next_turn: int = 0
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: RunUsage = field(default_factory=RunUsage)
    pending: list[ToolCallRequest] = field(default_factory=list)
    wall_s: float = 0.0
    adapter: str | None = None

    def to_json(self) -> str:
        """The state as one JSON document (:meth:`from_json` reads it back)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunState:
        """Inverse of :meth:`to_json`; :class:`RunStateError` saying what is wrong."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunStateError(
                f"the run state is not JSON ({exc}); pass what to_json() wrote"
            ) from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise RunStateError(
                f'this JSON is not a harmony-agent run state (no "format": "{STATE_FORMAT}"); '
                "pass what RunState.to_json() or RunResult.state.to_json() wrote"
            )
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (messages as harmony message dicts)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "run_id": self.run_id,
            "task": self.task,
            "messages": [m.to_dict() for m in self.messages],
            "prompt_ids": list(self.prompt_ids),
            "next_turn": self.next_turn,
            "tool_calls": [asdict(c) for c in self.tool_calls],
            "usage": asdict(self.usage),
            "pending": [p.to_dict() for p in self.pending],
            "wall_s": self.wall_s,
            **({"adapter": self.adapter} if self.adapter is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """Inverse of :meth:`to_dict`; :class:`RunStateError` (a ``ValueError``) saying which
        field is wrong."""
        if not isinstance(data, dict):
            raise RunStateError(f"a run state is a JSON object, got {type(data).__name__}")
        if data.get("format", STATE_FORMAT) != STATE_FORMAT:
            raise RunStateError(
                f"this is not a harmony-agent run state (format {data['format']!r})"
            )
        if data.get("version", STATE_VERSION) != STATE_VERSION:
            raise RunStateError(
                f"run state version {data['version']!r}; this harmony-agent reads version "
                f"{STATE_VERSION}: resume it with the release that saved it"
            )
        for name in ("run_id", "task", "messages", "prompt_ids"):
            if name not in data:
                raise RunStateError(f"run state has no {name!r} field")
        field_name = ""
        try:
            field_name = "messages"
            messages = [Message.from_dict(m) for m in data["messages"]]
            field_name = "prompt_ids"
            prompt_ids = data["prompt_ids"]
            if not isinstance(prompt_ids, list) or not all(
                type(i) is int and i >= 0 for i in prompt_ids
            ):
                raise TypeError("expected a list of token ids (non-negative integers)")
            field_name = "tool_calls"
            calls = [ToolCallRecord(**c) for c in data.get("tool_calls", ())]
            field_name = "usage"
            usage = RunUsage(**data.get("usage", {}))
            field_name = "pending"
            pending = [ToolCallRequest(**p) for p in data.get("pending", ())]
            field_name = "next_turn"
            next_turn = int(data.get("next_turn", 0))
            field_name = "wall_s"
            wall_s = float(data.get("wall_s", 0.0))
            field_name = "adapter"
            adapter = data.get("adapter")
            if adapter is not None and not isinstance(adapter, str):
                raise TypeError("expected the adapter's name (a string) or null")
        except Exception as exc:  # harmony's and the dataclasses' errors, on foreign data
            raise RunStateError(
                f"run state has a malformed {field_name!r} field: {type(exc).__name__}: {exc}"
            ) from None
        return cls(
            run_id=str(data["run_id"]),
            task=str(data["task"]),
            messages=messages,
            prompt_ids=prompt_ids,
            next_turn=next_turn,
            tool_calls=calls,
            usage=usage,
            pending=pending,
            wall_s=wall_s,
            adapter=adapter,
        )


class Recorder(Protocol):
    """Receives a run as it happens (a trace writer). Methods may block briefly (fsync)."""

    async def start(self, state: RunState) -> None: ...
    async def event(self, event: Event) -> None: ...
    async def step(
        self, state: RunState, output_ids: list[int], appended_ids: list[int]
    ) -> None: ...

    # Optional (a recorder without them is not told): ``compacted(state, event)`` after a
    # compaction replaced the transcript, ``forced(state, output_ids, forced_ids)`` after the
    # runtime appended ids the model did not sample.


class LoopAgent(Protocol):
    """What a run reads from its agent; :class:`harmony_agent.Agent` is the implementation.

    The loop depends on this, not on ``Agent``, so the agent module can import the loop.
    """

    engine: Engine
    encoding: HarmonyEncoding
    registry: ToolRegistry
    max_turns: int
    max_tokens_per_turn: int
    max_tool_errors: int
    temperature: float | None
    top_p: float | None
    seed: int | None
    adapter: str | None
    context_window: int | None
    compaction: Compaction | None
    max_reasoning_tokens: int | None
    context_warnings: tuple[float, ...]
    files_dir: Path | None
    tracer_provider: Any
    trace_content: bool | None
    output: OutputSpec | None
    output_retries: int

    def run_context(self, run_id: str, deps: Any) -> AbstractAsyncContextManager[RunContext]:
        """The context of one run, its toolsets prepared before the prompt is rendered."""
        ...

    def initial_messages(
        self, task: str, history: RunResult | None = None, output: OutputSpec | None = None
    ) -> list[Message]:
        """The conversation the first prompt of a run renders."""
        ...

    def first_prompt(self, task: str, output: OutputSpec | None = None) -> list[int]:
        """The first prompt of a new run, as token ids."""
        ...
