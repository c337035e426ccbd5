"""Typed events streamed by ``Agent.stream``: frozen dataclasses joined in one union.

Every event has a ``Literal`` ``type``, the ``run_id`` and a ``turn`` number (0-based model
turn; ``-1`` before the first turn), and serialises with :func:`event_to_dict` /
:func:`event_to_json` into one JSON object (one line per event in traces and ``--json``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ApprovalRequested",
    "Compacted",
    "ErrorEvent",
    "Event",
    "ForcedTokens",
    "PreambleDelta",
    "ReasoningDelta",
    "RunFinished",
    "RunPaused",
    "RunStarted",
    "TextDelta",
    "ToolCallEvent",
    "ToolCallStarted",
    "ToolResultEvent",
    "TurnFinished",
    "WarningEvent",
    "event_from_dict",
    "event_to_dict",
    "event_to_json",
]


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    run_id: str
    task: str
    turn: int = -1
    tools: tuple[str, ...] = ()
    time: float = field(default_factory=_now)
    type: Literal["run_started"] = "run_started"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningDelta:
    """Chain of thought (``analysis`` channel). Not for end users by default."""

    run_id: str
    turn: int
    delta: str
    type: Literal["reasoning_delta"] = "reasoning_delta"


@dataclass(frozen=True, slots=True, kw_only=True)
class PreambleDelta:
    """User-visible commentary written before tool calls (``commentary`` with no recipient)."""

    run_id: str
    turn: int
    delta: str
    type: Literal["preamble_delta"] = "preamble_delta"


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """The final answer, as it streams (``final`` channel)."""

    run_id: str
    turn: int
    delta: str
    type: Literal["text_delta"] = "text_delta"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStarted:
    """The model addressed a tool; arguments are still streaming."""

    run_id: str
    turn: int
    call_id: str
    recipient: str
    channel: str | None
    type: Literal["tool_call_started"] = "tool_call_started"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallEvent:
    """A complete tool call. ``arguments`` is the parsed JSON (None when it did not parse)."""

    run_id: str
    turn: int
    call_id: str
    recipient: str
    tool: str | None
    channel: str | None
    raw_arguments: str
    arguments: Any = None
    type: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResultEvent:
    run_id: str
    turn: int
    call_id: str
    recipient: str
    ok: bool
    output: str
    error_kind: str | None = None
    duration_s: float = 0.0
    type: Literal["tool_result"] = "tool_result"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequested:
    """A complete tool call needs approval before it runs (the tool has not run yet)."""

    run_id: str
    turn: int
    call_id: str
    recipient: str
    tool: str | None
    raw_arguments: str
    arguments: Any = None
    type: Literal["approval_requested"] = "approval_requested"


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnFinished:
    run_id: str
    turn: int
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    cached_prompt_tokens: int | None
    duration_s: float
    output_ids: tuple[int, ...] = ()
    #: the log probability of each of ``output_ids`` when the engine returned them
    output_logprobs: tuple[float | None, ...] | None = None
    #: how full the context was after this turn (its prompt plus output) and the window
    context_tokens: int = 0
    context_window: int = 0
    type: Literal["turn_finished"] = "turn_finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class Compacted:
    """The context was compacted before ``turn``: the one deliberate break of the prefix.

    ``removed`` lists what went (``"reasoning (312)"``, ``"browser.open output (1,043)"``).
    """

    run_id: str
    turn: int
    tokens_before: int
    tokens_after: int
    context_window: int
    dropped_reasoning: int = 0
    stubbed_outputs: int = 0
    summarized: bool = False
    removed: tuple[str, ...] = ()
    type: Literal["compacted"] = "compacted"


@dataclass(frozen=True, slots=True, kw_only=True)
class ForcedTokens:
    """The runtime appended ids the model did not sample (``token_ids``, ``text``): after a
    turn's reasoning reached ``max_reasoning_tokens`` or ``max_tokens_per_turn``
    (``reason``), the analysis is closed and the final channel opened for the model."""

    run_id: str
    turn: int
    reason: str
    token_ids: tuple[int, ...]
    text: str
    reasoning_tokens: int = 0
    type: Literal["forced_tokens"] = "forced_tokens"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    """The run's answer. ``output``: the validated structured answer as JSON (a run with an
    ``output_type``), else None."""

    run_id: str
    turn: int
    final_text: str
    turns: int
    prompt_tokens: int
    cached_prompt_tokens: int
    output_tokens: int
    output: Any = None
    type: Literal["run_finished"] = "run_finished"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPaused:
    """The run stopped before running ``call_ids``, waiting for approval (``Agent.resume``)."""

    run_id: str
    turn: int
    call_ids: tuple[str, ...]
    type: Literal["run_paused"] = "run_paused"


@dataclass(frozen=True, slots=True, kw_only=True)
class WarningEvent:
    run_id: str
    turn: int
    message: str
    type: Literal["warning"] = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent:
    """The run ended with an error (raised to the caller right after this event).

    ``partial_result``: the raised error carries the run up to here in ``exc.result``.
    """

    run_id: str
    turn: int
    error: str
    message: str
    partial_result: bool = False
    type: Literal["error"] = "error"


Event = (
    RunStarted
    | ReasoningDelta
    | PreambleDelta
    | TextDelta
    | ToolCallStarted
    | ToolCallEvent
    | ToolResultEvent
    | ApprovalRequested
    | TurnFinished
    | Compacted
    | ForcedTokens
    | RunFinished
    | RunPaused
    | WarningEvent
    | ErrorEvent
)

_BY_TYPE: dict[str, type] = {
    cls.__dataclass_fields__["type"].default: cls  # type: ignore[attr-defined]
    for cls in Event.__args__  # type: ignore[attr-defined]
}


def event_to_dict(event: Event) -> dict[str, Any]:
    data = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    for key, value in data.items():
        if isinstance(value, tuple):
            data[key] = list(value)
    return data


def event_to_json(event: Event) -> str:
    return json.dumps(event_to_dict(event), ensure_ascii=False, default=str)


def event_from_dict(data: dict[str, Any]) -> Event:
    """Inverse of :func:`event_to_dict` (unknown keys are an error)."""
    cls = _BY_TYPE.get(data.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    kwargs = {k: v for k, v in data.items() if k != "type"}
    for f in dataclasses.fields(cls):
        if f.name in kwargs and isinstance(kwargs[f.name], list):
            kwargs[f.name] = tuple(kwargs[f.name])
    return cls(**kwargs)
