"""Where a run stands (``RunState``), who watches it (``Recorder``) and what it runs
(``LoopAgent``, the part of ``Agent`` the loop reads).

A leaf module: the loop (``_run``), the trace writer and reader (``trace``) and the CLI import
it, and it imports none of them, so the run and its trace do not depend on each other.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harmony_agent.engine.base import Engine
from harmony_agent.tools.base import RunContext
from openai_harmony import HarmonyEncoding, Message

from ._output import OutputSpec
from ._registry import ToolRegistry
from .events import Event
from .result import RunResult, RunUsage, ToolCallRecord

__all__ = ["LoopAgent", "Recorder", "RunState"]


@dataclass
class RunState:
    """Where a run stands after a complete step: enough to go on from there (``Agent.resume``).

    ``prompt_ids`` is the prompt the next turn sends; ``next_turn`` its number. The state
    round-trips through JSON (:meth:`to_dict` / :meth:`from_dict`), so a run can be saved
    anywhere and resumed in another process.

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (messages as harmony message dicts)."""
        return {
            "run_id": self.run_id,
            "task": self.task,
            "messages": [m.to_dict() for m in self.messages],
            "prompt_ids": list(self.prompt_ids),
            "next_turn": self.next_turn,
            "tool_calls": [asdict(c) for c in self.tool_calls],
            "usage": asdict(self.usage),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """Inverse of :meth:`to_dict`; ``ValueError`` saying which field is wrong."""
        try:
            return cls(
                run_id=str(data["run_id"]),
                task=str(data["task"]),
                messages=[Message.from_dict(m) for m in data["messages"]],
                prompt_ids=[int(i) for i in data["prompt_ids"]],
                next_turn=int(data.get("next_turn", 0)),
                tool_calls=[ToolCallRecord(**c) for c in data.get("tool_calls", ())],
                usage=RunUsage(**data.get("usage", {})),
            )
        except KeyError as exc:
            raise ValueError(f"run state has no {exc.args[0]!r} field") from None
        except TypeError as exc:
            raise ValueError(f"run state has a malformed field: {exc}") from None


class Recorder(Protocol):
    """Receives a run as it happens (a trace writer). Methods may block briefly (fsync)."""

    async def start(self, state: RunState) -> None: ...
    async def event(self, event: Event) -> None: ...
    async def step(
        self, state: RunState, output_ids: list[int], appended_ids: list[int]
    ) -> None: ...


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
    context_window: int | None
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
