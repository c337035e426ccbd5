"""What a run returns: the answer, the tool calls, usage, events and the exact token ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from openai_harmony import Message

from .events import Event

__all__ = ["RunResult", "RunUsage", "ToolCallRecord"]

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
    output: OutputT | None = None
