"""One model turn, in data and pure functions: the request, the events its output shows, what
happens next (:data:`NextStep`), the tool it calls, the answer.

The run's steps (``_run``) use these; none of them does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harmony_agent.engine.base import FinishReason, GenerationRequest
from harmony_agent.tools.base import Tool
from openai_harmony import Message

from . import _json
from ._harmony import message_text
from ._output import OutputInvalid
from ._parse import Delta, MessageStart
from ._registry import ToolRegistry, is_tool_recipient
from ._state import LoopAgent
from ._tokens import DEFAULT_STOP_TOKEN_IDS
from ._transcript import PromptView
from .errors import ContextOverflowError, OutputTruncatedError, UnknownToolError
from .events import Event, PreambleDelta, ReasoningDelta, TextDelta, ToolCallStarted
from .result import ToolCallRequest

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "CallTool",
    "Finish",
    "ForceFinal",
    "NextStep",
    "Pause",
    "RepairOutput",
    "Resample",
    "Sampled",
    "call_request",
    "final_text",
    "maybe_json",
    "request_for",
    "resolve_call",
    "visible_event",
]

DEFAULT_CONTEXT_WINDOW = 131_072  # gpt-oss-20b

#: the least room a turn needs to say anything
_MIN_ROOM = 16


@dataclass(slots=True)
class Sampled:
    """What one engine request produced: the ids, the messages parsed from them, how it ended."""

    turn: int
    prompt: PromptView
    output: list[int]
    messages: list[Message]
    finish_reason: FinishReason
    parse_error: str | None
    #: analysis tokens of this request, and whether it was ended at max_reasoning_tokens
    reasoning_tokens: int = 0
    reasoning_cut: bool = False


# --- what happens next: the values `Run.decide` returns -----------------------------------


@dataclass(frozen=True, slots=True)
class Resample:
    """The output did not parse: sample the same turn again (same prompt, still cached)."""

    reason: str


@dataclass(frozen=True, slots=True)
class CallTool:
    """The turn ended in a tool call: run it and sample the next turn."""

    sampled: Sampled
    call: Message
    recipient: str


@dataclass(frozen=True, slots=True)
class Pause:
    """The turn ended in a tool call that needs approval: ask for it before the tool runs."""

    sampled: Sampled
    call: Message
    recipient: str


@dataclass(frozen=True, slots=True)
class Finish:
    """No tool call: this turn's messages are the answer (``output``: its validated value,
    when the run has an output type)."""

    sampled: Sampled
    output: Any = None


@dataclass(frozen=True, slots=True)
class ForceFinal:
    """The turn was cut while reasoning (``reason``: the budget it reached): close the analysis,
    open the final channel with ids the model did not sample, and let it continue."""

    sampled: Sampled
    reason: str


@dataclass(frozen=True, slots=True)
class RepairOutput:
    """The answer does not match the run's output type: tell the model where and why, and
    sample again (within ``output_retries``)."""

    sampled: Sampled
    text: str
    error: OutputInvalid


NextStep = Resample | CallTool | Pause | ForceFinal | RepairOutput | Finish


def request_for(
    agent: LoopAgent,
    prompt: Sequence[int],
    run_id: str,
    turn: int,
    output_schema: dict[str, Any] | None = None,
    adapter: str | None = None,
) -> GenerationRequest:
    """The engine request of one turn: as many tokens as the context window has room for
    (``output_schema``: the final answer's, for an engine that constrains decoding;
    ``adapter``: the run's LoRA adapter)."""
    window = agent.context_window or agent.engine.context_window or DEFAULT_CONTEXT_WINDOW
    room = window - len(prompt)
    if room < _MIN_ROOM:
        raise ContextOverflowError(
            f"the prompt is {len(prompt)} tokens and the context window {window}: "
            "no room left to answer. Start a new run, or use fewer/shorter tool outputs."
        )
    return GenerationRequest(
        prompt_ids=prompt,
        max_tokens=min(agent.max_tokens_per_turn, room),
        stop_token_ids=DEFAULT_STOP_TOKEN_IDS,  # <|return|> and <|call|>: the encoding's
        temperature=agent.temperature,
        top_p=agent.top_p,
        seed=agent.seed,
        output_schema=output_schema,
        session_id=run_id,
        request_id=f"{run_id}-{turn}",
        adapter=adapter,
    )


def visible_event(item: MessageStart | Delta, run_id: str, turn: int, call_id: str) -> Event | None:
    """The event a parsed item shows, if any (tool arguments are reported whole, later)."""
    if isinstance(item, MessageStart):
        if not is_tool_recipient(item.recipient):
            return None
        return ToolCallStarted(
            run_id=run_id,
            turn=turn,
            call_id=call_id,
            recipient=item.recipient,
            channel=item.channel,
        )
    if is_tool_recipient(item.recipient):
        return None
    if item.channel == "analysis":
        return ReasoningDelta(run_id=run_id, turn=turn, delta=item.text)
    if item.channel == "commentary":
        return PreambleDelta(run_id=run_id, turn=turn, delta=item.text)
    return TextDelta(run_id=run_id, turn=turn, delta=item.text)


def final_text(sampled: Sampled, max_tokens_per_turn: int) -> tuple[str, str | None]:
    """The answer of a turn that called no tool, and a warning when it is not a clean
    final-channel message; :class:`OutputTruncatedError` when it was cut before any answer."""
    new = sampled.messages
    finals = [message_text(m) for m in new if m.channel == "final"]
    if sampled.finish_reason == "length":
        if finals:
            return "".join(
                finals
            ), f"the answer was cut at max_tokens_per_turn={max_tokens_per_turn}"
        what = "a tool call" if new and new[-1].recipient else "its reasoning"
        raise OutputTruncatedError(
            f"turn {sampled.turn} hit max_tokens_per_turn={max_tokens_per_turn} while the model "
            f"was writing {what}, before any answer. Raise max_tokens_per_turn or lower "
            "reasoning_effort."
        )
    if finals:
        return "".join(finals), None
    if not new:
        return "", "the model stopped without writing anything"
    last = new[-1]
    if last.channel is None:
        return message_text(last), "the model answered without a Harmony header; kept as the answer"
    return message_text(last), (
        f"the model stopped without a final-channel message (last channel: {last.channel}); "
        "its last message is kept as the answer"
    )


def resolve_call(
    registry: ToolRegistry, recipient: str, raw: str
) -> tuple[Tool | UnknownToolError, Any]:
    """The tool a call addresses (or why there is none) and its arguments as JSON for events."""
    try:
        tool = registry.resolve(recipient)
    except UnknownToolError as exc:
        return exc, maybe_json(raw)
    return tool, (raw if tool.parameters is None else maybe_json(raw))


def call_request(
    registry: ToolRegistry,
    call: Message,
    recipient: str,
    run_id: str,
    turn: int,
    calls_done: Sequence[object],
) -> tuple[ToolCallRequest, Tool | UnknownToolError]:
    """The request of a run's next call (its id numbers the run's calls) and its tool."""
    raw = message_text(call)
    tool, arguments = resolve_call(registry, recipient, raw)
    request = ToolCallRequest(
        call_id=f"{run_id}-{len(calls_done)}",
        turn=turn,
        recipient=recipient,
        tool=tool.recipient if isinstance(tool, Tool) else None,
        channel=call.channel,
        raw_arguments=raw,
        arguments=arguments,
    )
    return request, tool


def maybe_json(raw: str) -> Any:
    """Tool-call arguments as JSON for events and records (None when they do not parse)."""
    try:
        return _json.loads(raw) if raw.strip() else {}
    except ValueError:  # malformed or past a limit: the tool's own parse says which
        return None
