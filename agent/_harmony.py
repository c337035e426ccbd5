"""Harmony prompt building: system and developer messages, tool results. Pure, no I/O."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import anyio.to_thread
from harmony_agent.tools.base import Tool
from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    Message,
    ReasoningEffort,
    RenderConversationConfig,
    Role,
    SystemContent,
    TextContent,
    ToolDescription,
)

from ._encoding import encode_text, third_party_error
from ._tokens import CHANNEL, END, MESSAGE, START
from .errors import PromptRenderError

__all__ = [
    "OFF_LOOP_CHARS",
    "Effort",
    "PromptSettings",
    "assistant_start_ids",
    "build_developer_message",
    "build_system_message",
    "drop_stale_analysis",
    "guard_render",
    "message_text",
    "off_loop",
    "render_prompt",
    "render_tool_result",
    "render_user",
    "tool_result_message",
]

T = TypeVar("T")

#: Texts longer than this are encoded in a worker thread (shorter ones cost less than the hop).
OFF_LOOP_CHARS = 4096

Effort = Literal["low", "medium", "high"]
_EFFORTS = {
    "low": ReasoningEffort.LOW,
    "medium": ReasoningEffort.MEDIUM,
    "high": ReasoningEffort.HIGH,
}


@dataclass(frozen=True, slots=True)
class PromptSettings:
    """What goes into the system message. ``None`` means harmony's default."""

    reasoning_effort: Effort = "medium"
    model_identity: str | None = None
    knowledge_cutoff: str | None = "2024-06"
    conversation_start_date: str | None = None  # None → today (UTC)


def build_system_message(settings: PromptSettings, namespaces: Sequence[Any]) -> Message:
    content = SystemContent.new().with_reasoning_effort(_EFFORTS[settings.reasoning_effort])
    if settings.model_identity is not None:
        content = content.with_model_identity(settings.model_identity)
    if settings.knowledge_cutoff is not None:
        content = content.with_knowledge_cutoff(settings.knowledge_cutoff)
    date = settings.conversation_start_date or _dt.datetime.now(_dt.UTC).date().isoformat()
    content = content.with_conversation_start_date(date)
    for namespace in namespaces:
        content = content.with_tools(namespace)
    return Message.from_role_and_content(Role.SYSTEM, content)


def _describe(tool: Tool) -> ToolDescription:
    params = tool.parameters
    if params is not None and not params.get("properties") and params.get("type") == "object":
        params = None  # harmony renders a parameterless function as `() => any`
    return ToolDescription.new(tool.name, tool.description, parameters=params)


def build_developer_message(
    instructions: str | None, functions: Sequence[Tool], response_formats: str | None = None
) -> Message | None:
    """The developer message, or None when there are neither instructions nor functions nor
    response formats. ``response_formats`` (the ``# Response Formats`` section) is a second
    text content: harmony renders a message's contents in order and has no API for it."""
    if not instructions and not functions and not response_formats:
        return None
    content = DeveloperContent.new()
    if instructions:
        content = content.with_instructions(instructions)
    if functions:
        content = content.with_function_tools([_describe(t) for t in functions])
    if response_formats:
        parts = [content, TextContent(text=response_formats)]
        return Message.from_role_and_contents(Role.DEVELOPER, parts)
    return Message.from_role_and_content(Role.DEVELOPER, content)


def guard_render(what: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with openai_harmony's failures (pyo3 panics included) as a typed error."""
    try:
        return fn(*args)
    except BaseException as exc:
        if not third_party_error(exc):
            raise
        raise PromptRenderError(
            f"openai_harmony could not render {what}: {type(exc).__name__}: {str(exc)[:300]}. "
            "Shorten the text (very long runs without spaces are the usual cause)."
        ) from None


async def off_loop(size: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, in a worker thread when ``size`` (characters to encode) is large."""
    if size <= OFF_LOOP_CHARS:
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args)


def render_prompt(encoding: Any, messages: Sequence[Message]) -> list[int]:
    """Render a whole conversation for the assistant's next turn (analysis kept as given)."""
    return guard_render(
        "the conversation",
        encoding.render_conversation_for_completion,
        Conversation.from_messages(list(messages)),
        Role.ASSISTANT,
        RenderConversationConfig(auto_drop_analysis=False),
    )


def render_user(encoding: Any, text: str) -> list[int]:
    """A user message, ``<|start|>user<|message|>{text}<|end|>``, as harmony renders it.

    The text is encoded by :func:`~harmony_agent._encoding.encode_text` (linear time, never a
    panic): the same ids as ``encoding.render`` unless the text has very long runs of one
    kind of character, which harmony's tokenizer handles in quadratic time or not at all.
    """
    return [
        START,
        *encoding.encode("user", disallowed_special=()),
        MESSAGE,
        *encode_text(encoding, text),
        END,
    ]


def assistant_start_ids(encoding: Any) -> list[int]:
    """``<|start|>assistant``: what every prompt ends with."""
    return encoding.encode("<|start|>assistant", allowed_special="all")


def message_text(message: Message) -> str:
    """The text of a message: its text contents joined (system/developer contents have none)."""
    return "".join(getattr(c, "text", "") for c in message.content)


def tool_result_message(author: str, channel: str | None, text: str) -> Message:
    return (
        Message.from_author_and_content(Author.new(Role.TOOL, author), text)
        .with_recipient("assistant")
        .with_channel(channel or "commentary")
    )


def render_tool_result(encoding: Any, message: Message) -> list[int]:
    """The tool message followed by ``<|start|>assistant`` — what is appended to the prompt.

    Rendered here, in the format's documented form
    (``<|start|>{tool} to=assistant<|channel|>{channel}<|message|>{output}<|end|>``), rather
    than by ``encoding.render``: builds of ``openai_harmony`` disagree on where ``to=`` goes
    (vLLM's ``oss-harmony`` puts it after the channel), and the transcript must not depend on
    which one is installed. Tool output is always plain text: a page that contains
    ``<|end|>`` cannot end the message. Linear in the text's length (see ``render_user``);
    for long outputs call it in a worker thread (:func:`off_loop`).
    """
    text = message_text(message)

    def plain(part: str) -> list[int]:
        return encode_text(encoding, part)

    return [
        START,
        *plain(f"{message.author.name} to={message.recipient or 'assistant'}"),
        CHANNEL,
        *plain(message.channel or "commentary"),
        MESSAGE,
        *plain(text),
        END,
        *assistant_start_ids(encoding),
    ]


def drop_stale_analysis(messages: Sequence[Message]) -> list[Message]:
    """Drop analysis-channel messages before the last assistant ``final`` message.

    harmony's own ``auto_drop_analysis`` only drops before the *first* final; the format's
    rule is to drop chain of thought from turns that ended with a final answer.
    """
    last_final = -1
    for i, m in enumerate(messages):
        if m.author.role == Role.ASSISTANT and m.channel == "final":
            last_final = i
    return [m for i, m in enumerate(messages) if not (i < last_final and m.channel == "analysis")]
