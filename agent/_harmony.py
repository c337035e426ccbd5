"""Harmony prompt building: system and developer messages, tool results. Pure, no I/O."""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
    ToolDescription,
)

from ._tokens import CHANNEL, END, MESSAGE, START

__all__ = [
    "Effort",
    "PromptSettings",
    "assistant_start_ids",
    "build_developer_message",
    "build_system_message",
    "drop_stale_analysis",
    "message_text",
    "render_prompt",
    "render_tool_result",
    "tool_result_message",
]

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


def build_developer_message(instructions: str | None, functions: Sequence[Tool]) -> Message | None:
    """The developer message, or None when there are neither instructions nor functions."""
    if not instructions and not functions:
        return None
    content = DeveloperContent.new()
    if instructions:
        content = content.with_instructions(instructions)
    if functions:
        content = content.with_function_tools([_describe(t) for t in functions])
    return Message.from_role_and_content(Role.DEVELOPER, content)


def render_prompt(encoding: Any, messages: Sequence[Message]) -> list[int]:
    """Render a whole conversation for the assistant's next turn (analysis kept as given)."""
    return encoding.render_conversation_for_completion(
        Conversation.from_messages(list(messages)),
        Role.ASSISTANT,
        RenderConversationConfig(auto_drop_analysis=False),
    )


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
    ``<|end|>`` cannot end the message.
    """
    text = message_text(message)
    plain = functools.partial(encoding.encode, disallowed_special=())
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
