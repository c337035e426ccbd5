"""What an OpenAI-compatible ``/completions`` server sends back, read into our types (pure).

The payloads of its stream (or its one JSON body) become :class:`Delta` values; the last one
becomes the final :class:`~harmony_agent.engine.base.Chunk` with the stop token put back
where the server left it out. Token ids are checked here, at the engine's edge: only ints in
the vocabulary get past it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from harmony_agent._tokens import (
    CALL,
    MESSAGE,
    MODEL_STOP_TOKEN_IDS,
    RETURN,
    START,
    STOP_STRINGS,
    VOCAB_SIZE,
)
from harmony_agent.errors import EngineProtocolError, EngineRequestError

from .base import Chunk, FinishReason, GenerationRequest, TokenUsage

__all__ = [
    "Delta",
    "check_token_ids",
    "final_chunk",
    "parse_json",
    "token_ids",
    "token_logprobs",
]


class Delta(NamedTuple):
    """Newly sampled ids; ``finish`` (and the rest) only on the last one of a completion."""

    ids: list[int]
    finish: str | None = None
    #: what the server named as the stop: a token id or a stop string (the flavor's
    #: ``stop_reason_field``: vLLM's ``stop_reason``, SGLang's ``matched_stop``)
    stop_reason: Any = None
    usage: dict[str, Any] | None = None
    logprobs: list[float | None] | None = None  # one per id, when they were asked for


def parse_json(text: str, where: str) -> dict[str, Any]:
    """One JSON object from the server, or a typed error quoting what came instead."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise EngineProtocolError(
            f"{where} sent something that is not JSON: {text[:200]!r}; is it an "
            "OpenAI-compatible server?"
        ) from None
    if not isinstance(data, dict):
        raise EngineProtocolError(f"{where} sent an unexpected response: {text[:200]!r}")
    return data


def check_token_ids(ids: Sequence[object], where: str) -> list[int]:
    """``ids`` as a list of ints, each in gpt-oss's vocabulary; a typed error otherwise.

    A float (``200002.0``) is refused, not truncated: a server that sends floats is not
    sending the ids it sampled, and the transcript must hold exactly those.
    """
    for token in ids:
        if type(token) is not int or not 0 <= token < VOCAB_SIZE:
            raise EngineProtocolError(
                f"{where} sent the token id {token!r}: ids must be integers in "
                f"[0, {VOCAB_SIZE}) (gpt-oss's vocabulary); is the server serving gpt-oss?"
            )
    return list(ids)  # type: ignore[arg-type]  # every item was checked to be an int


def token_ids(choice: dict[str, Any], where: str) -> list[int]:
    """The sampled ids of one streamed or returned choice (vLLM and SGLang ``token_ids``,
    Fireworks ``raw_output``)."""
    ids = choice.get("token_ids")
    raw = choice.get("raw_output")
    if ids is None and isinstance(raw, dict):
        ids = raw.get("completion_token_ids")
    if ids is None:
        if choice.get("text"):
            raise EngineRequestError(
                f"{where} returned text but no token ids: the server must support "
                "`return_token_ids` (vLLM ≥ 0.10.2; SGLang ≥ 0.5.23; Fireworks with "
                "raw_output). Upgrade "
                "the server or use another engine."
            )
        return []
    if not isinstance(ids, list):
        raise EngineProtocolError(f"{where} sent token ids that are not a list: {ids!r:.200}")
    return check_token_ids(ids, where)


def token_logprobs(choice: dict[str, Any], count: int) -> list[float | None]:
    """The log probabilities of a choice's ``count`` sampled ids (OpenAI completions'
    ``logprobs.token_logprobs``); ``None`` for each id the server did not score."""
    logprobs = choice.get("logprobs")
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(values, list) or len(values) != count:
        return [None] * count
    return [float(v) if isinstance(v, int | float) else None for v in values]


def final_chunk(
    last: Delta,
    sampled: Sequence[int],
    cached_header: str | None,
    request: GenerationRequest,
) -> Chunk:
    """The last chunk: ``last``'s ids (plus the stop token when the server left it out),
    how the completion ended and its usage. ``sampled`` is the whole completion so far."""
    finish = last.finish
    reason: FinishReason = (
        "length" if finish == "length" else "abort" if finish == "abort" else "stop"
    )
    ids = list(last.ids)
    logprobs = list(last.logprobs) if last.logprobs is not None else None
    stop_id = None
    if reason == "stop":
        # The stop token is already there when the server returns it (vLLM does, whether it
        # stopped on a requested stop id or on the model's own end-of-sequence ids, possibly
        # in an earlier chunk than the one with the finish reason): look at the whole
        # completion, not at the last chunk.
        if sampled and sampled[-1] in (*request.stop_token_ids, *MODEL_STOP_TOKEN_IDS):
            stop_id = sampled[-1]
        else:
            # string stops (Fireworks) come back without the stop token: put it back, so the
            # transcript holds what the model really sampled.
            stop_reason = last.stop_reason
            if type(stop_reason) is int and stop_reason in (
                *request.stop_token_ids,
                *MODEL_STOP_TOKEN_IDS,
            ):
                stop_id = stop_reason
            elif isinstance(stop_reason, str) and stop_reason in STOP_STRINGS:
                stop_id = STOP_STRINGS[stop_reason]
            else:
                stop_id = CALL if _ends_in_call(sampled) else RETURN
            ids.append(stop_id)
            if logprobs is not None:
                logprobs.append(None)  # put back by us: the server scored no such id
    usage = last.usage or {}
    cached = None
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        cached = _count(details["cached_tokens"])
    if cached is None and cached_header is not None and cached_header.isdigit():
        cached = int(cached_header)
    token_usage = TokenUsage(
        prompt_tokens=_count(usage.get("prompt_tokens")) or len(request.prompt_ids),
        output_tokens=_count(usage.get("completion_tokens")) or 0,
        cached_prompt_tokens=cached,
    )
    return Chunk(
        tuple(ids),
        reason,
        stop_id,
        token_usage,
        tuple(logprobs) if logprobs is not None else None,
    )


def _count(value: object) -> int | None:
    """A usage count, or None when the server sent none (or nonsense)."""
    return value if type(value) is int and value >= 0 else None


def _ends_in_call(ids: Sequence[int]) -> bool:
    """Whether the last message of a completion addresses a tool (its header has ``to=``)."""
    from harmony_agent._encoding import load_encoding

    start = max((i for i, t in enumerate(ids) if t == START), default=-1)
    try:
        message = list(ids).index(MESSAGE, start + 1)
    except ValueError:
        return False
    return "to=" in load_encoding().decode(list(ids[start + 1 : message]))
