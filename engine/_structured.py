"""The decode-side constraint of a structured final answer: an xgrammar structural tag.

Only the final channel is constrained. Reasoning and tool calls stay free text; the grammar
starts when the model writes ``<|channel|>final`` and holds the message to the JSON schema,
whichever header form follows (``final``, ``final json``, ``final <|constrain|>json``). After
the JSON the grammar is done (``stop_after_first``), and the stop token (``<|return|>``)
comes from the request's stop ids, as xgrammar does not emit stop tokens under a constraint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from harmony_agent._tokens import CHANNEL, FINAL_WORD, MESSAGE, START

__all__ = [
    "FINAL_HEADERS",
    "constraint_for",
    "final_channel_tag",
    "json_only_tag",
    "prompt_in_final",
    "vllm_structured_outputs",
]

#: the header forms gpt-oss writes before a JSON final answer
FINAL_HEADERS = (
    "<|channel|>final<|message|>",
    "<|channel|>final json<|message|>",
    "<|channel|>final <|constrain|>json<|message|>",
)


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    # A bounded run of whitespace: left free, a model can write blank lines until max_tokens
    # inside an object that is never closed, which no schema check then accepts.
    return {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": 1}


def final_channel_tag(schema: dict[str, Any]) -> dict[str, Any]:
    """A ``structural_tag`` response format that constrains final-channel messages to ``schema``."""
    content = _content(schema)
    return {
        "type": "structural_tag",
        "format": {
            "type": "triggered_tags",
            "triggers": ["<|channel|>final"],
            "tags": [
                {"type": "tag", "begin": begin, "content": content, "end": ""}
                for begin in FINAL_HEADERS
            ],
            "at_least_one": False,
            "stop_after_first": True,
        },
    }


def json_only_tag(schema: dict[str, Any]) -> dict[str, Any]:
    """A ``structural_tag`` response format holding the whole output to ``schema``."""
    return {"type": "structural_tag", "format": _content(schema)}


def prompt_in_final(prompt_ids: Sequence[int]) -> bool:
    """Whether the prompt ends inside a final-channel header (``…<|channel|>final…<|message|>``):
    then the grammar must hold the output from its first token."""
    if not prompt_ids or prompt_ids[-1] != MESSAGE:
        return False
    tail = list(prompt_ids[-8:])
    for i in range(len(tail) - 2, -1, -1):
        if tail[i] == START:
            return False
        if tail[i] == CHANNEL:
            return tail[i + 1] == FINAL_WORD
    return False


def constraint_for(schema: dict[str, Any], prompt_ids: Sequence[int]) -> dict[str, Any]:
    """The structural tag for a request: from the first token when the prompt already opened
    the final message, else triggered by the final header."""
    return json_only_tag(schema) if prompt_in_final(prompt_ids) else final_channel_tag(schema)


def vllm_structured_outputs(schema: dict[str, Any], prompt_ids: Sequence[int]) -> dict[str, Any]:
    """vLLM's ``structured_outputs`` (``StructuredOutputsParams`` fields) for the request."""
    return {"structural_tag": json.dumps(constraint_for(schema, prompt_ids), separators=(",", ":"))}
