"""What the structured-output tests of every engine share: the prompts, the schema the tiny
random model's answers are held to, and how a sampled turn's final JSON is read and checked."""

from __future__ import annotations

import json

import jsonschema

USER = "<|start|>user<|message|>Rate it.<|end|><|start|>assistant"
IN_FINAL = USER + "<|channel|>final<|message|>"
SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"enum": ["good", "bad"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 9},
        "ok": {"type": "boolean"},
    },
    "required": ["verdict", "score", "ok"],
    "additionalProperties": False,
}
#: once the JSON is complete the grammar allows only end ids: the request's and the model's
#: own end of text, which vLLM and llama.cpp stop on as well
STOPS = ("<|return|>", "<|call|>", "<|endoftext|>")


def final_json(text: str) -> str | None:
    """The final message's text of a sampled turn (None when there is none)."""
    if "<|channel|>final" not in text or "<|message|>" not in text:
        return None
    body = text.split("<|channel|>final", 1)[1].split("<|message|>", 1)[1]
    for stop in STOPS:
        body = body.removesuffix(stop)
    return body


def valid(body: str | None, schema=SCHEMA) -> bool:
    """Whether ``body`` is JSON that ``schema`` accepts."""
    if body is None:
        return False
    try:
        jsonschema.validate(json.loads(body), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True
