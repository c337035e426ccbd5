"""Traces → training data: token ids with a loss mask for RL trainers, chat JSONL for SFT.

``tokens`` — one JSON line per run, read by verl's agent loop and SkyRL's generator without
glue (their field names, both kept where they differ):

* ``prompt_ids`` — the first prompt (system, developer, user, ``<|start|>assistant``);
* ``response_ids`` — everything after it, in order: each turn's sampled ids (stop token
  included) and the ids the runtime appended (tool result, ``<|start|>assistant``);
* ``response_mask`` (verl ``AgentLoopOutput``) = ``loss_mask`` (SkyRL ``TrajectoryOutput``):
  1 for each id the model sampled, 0 for tool, user and runtime-forced ids;
* ``response_logprobs`` (verl) = ``rollout_logprobs`` (SkyRL): the sampled ids' log
  probabilities (0.0 where the mask is 0), or null when the engine returned none;
* ``num_turns`` (verl: user + assistant + tool messages), ``stop_reason`` (SkyRL);
* ``turns`` — the boundaries: ``{"turn", "kind": "sampled"|"appended", "start", "end"}``,
  offsets into ``response_ids`` (a step-wise trainer cuts one sample per turn from them).

``chat`` — OpenAI-style fine-tuning JSONL (LoRA services such as Fireworks): ``messages``
(``system`` = the developer instructions, ``user``, ``assistant`` with ``reasoning_content``,
``content`` and ``tool_calls``, ``tool`` with ``tool_call_id``), ``tools`` (the functions)
and ``reasoning_effort``. Every run is converted back to Harmony messages and checked to
render the same tokens as the trace's messages; a run that would not round-trip is reported
and left out, never written half right.

Example::

    harmony-agent export traces/*.jsonl --format tokens -o rollouts.jsonl
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from openai_harmony import Conversation, Message, RenderConversationConfig, Role

from ._encoding import load_encoding
from .errors import ConfigurationError
from .trace import Trace, load_trace

__all__ = [
    "ExportError",
    "ExportReport",
    "chat_record",
    "chat_to_harmony",
    "export",
    "run_messages",
    "tokens_record",
]

Format = Literal["tokens", "chat"]
_BUILTIN = ("browser.", "python", "container.")


class ExportError(ConfigurationError):
    """A trace that cannot be exported (unfinished, inconsistent, or not round-tripping)."""


# --- tokens --------------------------------------------------------------------------------


def _turn_events(trace: Trace) -> dict[int, Any]:
    return {e.turn: e for e in trace.events if e.type == "turn_finished"}


def _final_turn(trace: Trace) -> Any:
    """The turn_finished event of the turn that answered."""
    if not trace.finished:
        raise ExportError(
            f"{trace.path}: the run has no final answer (it stopped or is still running); "
            "resume it first (harmony-agent resume), or pass include_unfinished"
        )
    last_step = max((s["turn"] for s in trace.steps), default=-1)
    finals = [e for e in trace.events if e.type == "turn_finished" and e.turn > last_step]
    if not finals:
        raise ExportError(f"{trace.path}: the answering turn is missing from the trace")
    return finals[-1]


def tokens_record(trace: Trace, *, include_unfinished: bool = False) -> dict[str, Any]:
    """One run as token ids, loss mask, logprobs and turn boundaries."""
    prompt = list(trace.header["prompt_ids"])
    response: list[int] = []
    mask: list[int] = []
    logprobs: list[float] | None = []
    turns: list[dict[str, Any]] = []
    events = _turn_events(trace)

    def add(turn: int, kind: str, ids: Sequence[int], lps: Sequence[Any] | None, forced=()):
        nonlocal logprobs
        start = len(response)
        response.extend(ids)
        sampled = kind == "sampled"
        flags = [1 if sampled else 0] * len(ids)
        for a, b in forced:  # ids the runtime wrote into the model's turn: not sampled
            flags[a:b] = [0] * len(flags[a:b])
        mask.extend(flags)
        if logprobs is not None:
            if not sampled:
                logprobs.extend([0.0] * len(ids))
            elif lps is None or len(lps) != len(ids) or any(v is None for v in lps):
                logprobs = None  # the engine did not score every sampled id
            else:
                logprobs.extend(float(v) if f else 0.0 for v, f in zip(lps, flags, strict=True))
        turns.append({"turn": turn, "kind": kind, "start": start, "end": len(response)})

    def scored(turn: int, ids: Sequence[int]) -> Sequence[Any] | None:
        event = events.get(turn)
        if event is None or list(event.output_ids) != list(ids):
            return None
        return event.output_logprobs

    for step in trace.steps:
        add(step["turn"], "sampled", step["output_ids"], scored(step["turn"], step["output_ids"]),
            step.get("forced", ()))  # fmt: skip
        add(step["turn"], "appended", step["appended_ids"], None)
        if len(prompt) + len(response) != step["prompt_len"]:
            raise ExportError(
                f"{trace.path}: the step of turn {step['turn']} does not continue the previous "
                "one (token counts disagree); the trace is corrupt"
            )
    stop_reason = "unfinished"
    final_text = None
    if trace.finished or not include_unfinished:
        final = _final_turn(trace)
        add(final.turn, "sampled", final.output_ids, final.output_logprobs)
        stop_reason = final.finish_reason
        final_text = next(e.final_text for e in trace.events if e.type == "run_finished")
    sampled_turns = sum(1 for t in turns if t["kind"] == "sampled")
    return {
        "run_id": trace.run_id,
        "task": trace.task,
        "prompt_ids": prompt,
        "response_ids": response,
        "response_mask": mask,
        "loss_mask": mask,
        "response_logprobs": logprobs,
        "rollout_logprobs": logprobs,
        "num_turns": 1 + sampled_turns + len(trace.steps),
        "stop_reason": stop_reason,
        "turns": turns,
        "final_text": final_text,
    }


# --- chat ------------------------------------------------------------------------------------


def run_messages(trace: Trace) -> list[Message]:
    """Every Harmony message of a finished run: the first prompt's, each step's, and the
    answering turn's (parsed from its sampled ids)."""
    messages = [Message.from_dict(m) for m in trace.header["messages"]]
    for step in trace.steps:
        messages += [Message.from_dict(m) for m in step["messages"]]
    final = _final_turn(trace)
    messages += load_encoding().parse_messages_from_completion_tokens(
        list(final.output_ids), Role.ASSISTANT, strict=False
    )
    return messages


def _text(message: Message) -> str:
    return "".join(getattr(c, "text", "") for c in message.content)


def _is_builtin(recipient: str) -> bool:
    return recipient.startswith(_BUILTIN)


def _tool_name(recipient: str) -> str:
    return recipient if _is_builtin(recipient) else recipient.removeprefix("functions.")


def _recipient(name: str) -> str:
    return name if _is_builtin(name) else f"functions.{name}"


def chat_record(trace: Trace) -> dict[str, Any]:
    """One finished run as an OpenAI-style fine-tuning example."""
    messages = run_messages(trace)
    system, rest = messages[0], messages[1:]
    record: dict[str, Any] = {"messages": [], "tools": []}
    effort = getattr(system.content[0], "reasoning_effort", None)
    record["reasoning_effort"] = str(getattr(effort, "value", effort) or "medium").lower()
    if rest and rest[0].author.role == Role.DEVELOPER:
        developer, rest = rest[0], rest[1:]
        content = developer.content[0]
        instructions = getattr(content, "instructions", None)
        if instructions:
            record["messages"].append({"role": "system", "content": instructions})
        namespace = (getattr(content, "tools", None) or {}).get("functions")
        for tool in getattr(namespace, "tools", None) or []:
            record["tools"].append(
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                }
            )
    chat = record["messages"]
    group: dict[str, Any] | None = None
    calls = 0
    for message in rest:
        role = message.author.role
        if role == Role.ASSISTANT:
            if group is None:
                group = {"role": "assistant", "content": None}
                chat.append(group)
            text = _text(message)
            if message.recipient and message.recipient != "assistant":
                call = {
                    "id": f"call_{calls}",
                    "type": "function",
                    "function": {"name": _tool_name(message.recipient), "arguments": text},
                }
                calls += 1
                group.setdefault("tool_calls", []).append(call)
            elif message.channel == "analysis":
                group["reasoning_content"] = group.get("reasoning_content", "") + text
            else:
                group["content"] = (group["content"] or "") + text
            continue
        group = None
        if role == Role.USER:
            chat.append({"role": "user", "content": _text(message)})
        elif role == Role.TOOL:
            chat.append(
                {
                    "role": "tool",
                    "tool_call_id": f"call_{calls - 1}",
                    "name": _tool_name(message.author.name or ""),
                    "content": _text(message),
                }
            )
        else:
            raise ExportError(f"{trace.path}: a {role.value} message mid-run cannot be chat")
    return record


def chat_to_harmony(record: dict[str, Any]) -> list[Message]:
    """The Harmony messages (after system and developer) a chat record stands for: the
    inverse of :func:`chat_record`, used to check that an export round-trips."""
    out: list[Message] = []
    channels: dict[str, str] = {}  # tool_call_id → the channel the call was made on
    for chat in record["messages"]:
        role = chat["role"]
        if role == "system":
            continue  # the developer instructions: part of the prompt, not of the run
        if role == "user":
            out.append(Message.from_role_and_content(Role.USER, chat["content"]))
        elif role == "assistant":
            if chat.get("reasoning_content"):
                out.append(
                    Message.from_role_and_content(
                        Role.ASSISTANT, chat["reasoning_content"]
                    ).with_channel("analysis")
                )
            calls = chat.get("tool_calls") or []
            if chat.get("content"):
                channel = "commentary" if calls else "final"
                out.append(
                    Message.from_role_and_content(Role.ASSISTANT, chat["content"]).with_channel(
                        channel
                    )
                )
            for call in calls:
                name = call["function"]["name"]
                builtin = _is_builtin(name)
                channel = "analysis" if builtin else "commentary"
                message = (
                    Message.from_role_and_content(Role.ASSISTANT, call["function"]["arguments"])
                    .with_channel(channel)
                    .with_recipient(_recipient(name))
                )
                if not builtin:
                    message = message.with_content_type("<|constrain|>json")
                channels[call["id"]] = channel
                out.append(message)
        elif role == "tool":
            message = Message.from_author_and_content(
                _author(_recipient(chat["name"])), chat["content"]
            )
            out.append(
                message.with_channel(channels.get(chat["tool_call_id"], "commentary"))
                .with_recipient("assistant")
            )  # fmt: skip
        else:
            raise ExportError(f"a chat message with role {role!r} has no Harmony form")
    return out


def _author(name: str) -> Any:
    from openai_harmony import Author

    return Author.new(Role.TOOL, name)


def check_round_trip(trace: Trace, record: dict[str, Any]) -> None:
    """The chat record, turned back into Harmony, renders the tokens the trace's messages
    render; :class:`ExportError` saying where it differs otherwise."""
    original = run_messages(trace)[1:]
    if original and original[0].author.role == Role.DEVELOPER:
        original = original[1:]
    back = chat_to_harmony(record)
    enc = load_encoding()
    config = RenderConversationConfig(auto_drop_analysis=False)

    def render(messages: list[Message]) -> list[int]:
        return enc.render_conversation(Conversation.from_messages(messages), config)

    if render(back) != render(original):
        for i, (a, b) in enumerate(zip(original, back, strict=False)):
            if a.to_dict() != b.to_dict():
                raise ExportError(
                    f"{trace.path}: message {i} does not survive the chat format "
                    f"(trace: {_brief(a)}; from chat: {_brief(b)}); left out of the export"
                )
        raise ExportError(
            f"{trace.path}: {len(original)} messages in the trace, {len(back)} from chat; left "
            "out of the export"
        )


def _brief(message: Message) -> str:
    data = message.to_dict()
    data["content"] = _text(message)[:60]
    return json.dumps({k: v for k, v in data.items() if v is not None}, default=str)


# --- the files -------------------------------------------------------------------------------


@dataclass
class ExportReport:
    """What an export wrote and what it left out (with why)."""

    written: int = 0
    left_out: list[str] = field(default_factory=list)


def export(
    traces: Iterable[str | Path],
    fmt: Format,
    output: str | Path,
    *,
    include_unfinished: bool = False,
) -> ExportReport:
    """Write one line per usable trace to ``output``; the others are reported, not fatal."""
    if fmt not in ("tokens", "chat"):
        raise ConfigurationError(f"format must be 'tokens' or 'chat', got {fmt!r}")
    report = ExportReport()
    lines: list[str] = []
    for path in traces:
        try:
            trace = load_trace(path)
            if fmt == "tokens":
                record = tokens_record(trace, include_unfinished=include_unfinished)
            else:
                record = chat_record(trace)
                check_round_trip(trace, record)
        except ConfigurationError as exc:  # TraceError and ExportError
            report.left_out.append(str(exc))
            continue
        lines.append(json.dumps(record, ensure_ascii=False))
        report.written += 1
    Path(output).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return report
