"""What a run returns: the answer, the tool calls, usage, events and the exact token ids."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Literal, TypeVar

from openai_harmony import Message

from .events import Event

__all__ = ["RunResult", "RunStatus", "RunUsage", "ToolCallRecord", "ToolCallRequest"]

#: how a run ended: with its answer, waiting for approval of a tool call, or with an error
RunStatus = Literal["finished", "paused", "error"]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A complete tool call the model made, before it runs: what hooks and approval policies
    see, and what a paused run waits on (``RunResult.interruptions``).

    ``tool`` is the resolved tool's recipient (None when no tool has that name), ``arguments``
    the parsed JSON arguments (the raw text for the python tool; None when they do not parse)
    and ``raw_arguments`` the message text the model wrote.
    """

    call_id: str
    turn: int
    recipient: str
    tool: str | None
    channel: str | None
    raw_arguments: str
    arguments: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


OutputT = TypeVar("OutputT")


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool call and its outcome. ``name`` is the resolved tool's recipient (None if unknown)."""

    call_id: str
    turn: int
    recipient: str
    name: str | None
    channel: str | None
    raw_arguments: str
    arguments: Any
    output: str
    ok: bool
    error_kind: str | None = None
    duration_s: float = 0.0

    @property
    def error(self) -> str | None:
        return None if self.ok else self.output


@dataclass(slots=True)
class RunUsage:
    """Token usage summed over a run's model turns.

    ``cached_prompt_tokens`` counts prompt tokens the engine served from its prefix cache
    (0 when the engine does not report it: see ``cache_reported``).
    """

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    output_tokens: int = 0
    turns: int = 0
    cache_reported: bool = False

    @property
    def cached_ratio(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass(slots=True)
class RunResult(Generic[OutputT]):
    """The outcome of ``Agent.run``.

    ``output`` is the validated answer when the run has an ``output_type`` (a pydantic model
    instance, a dataclass, a dict for a JSON schema, ...), else None; ``final_text`` is always
    the answer's raw text.

    ``messages`` is the conversation as harmony ``Message`` objects (system, developer, user,
    assistant and tool messages); ``prompt_ids`` the last prompt sent to the engine and
    ``token_ids`` that prompt plus the last sampled output — the exact token transcript.
    Pass a result as ``history=`` to continue the conversation.

    ``status`` says how the run ended. ``"paused"``: a tool call needs approval; it is in
    ``interruptions`` and ``state`` is what ``Agent.resume`` goes on from (``state.to_json()``
    to keep it anywhere). ``"error"``: the result an error carries (``exc.result``), the run
    up to the failure.
    """

    run_id: str
    final_text: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: RunUsage = field(default_factory=RunUsage)
    events: list[Event] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "stop"
    truncated: bool = False
    status: RunStatus = "finished"
    interruptions: list[ToolCallRequest] = field(default_factory=list)
    #: a ``RunState`` (typed loosely: the state module imports this one)
    state: Any = None
    output: OutputT | None = None
