"""The Engine contract: token ids in, an async stream of token-id chunks out.

An engine never sees messages or text. The agent renders the Harmony prompt as token ids,
the engine samples, and the agent parses the sampled ids. That is what keeps the transcript
token-exact and the server's prefix cache warm.

Example — any engine, driven by hand::

    import anyio
    from harmony_agent.engine import GenerationRequest, ScriptedEngine

    async def main():
        engine = ScriptedEngine(["<|channel|>final<|message|>Hi!<|return|>"])
        request = GenerationRequest(prompt_ids=[200006, 1428, 200008, 12194, 200007], max_tokens=64)
        ids = []
        async for chunk in engine.generate(request):
            ids.extend(chunk.token_ids)
            if chunk.finish_reason is not None:
                assert chunk.finish_reason == "stop" and chunk.stop_token_id == 200002
        assert ids[-1] == 200002

    anyio.run(main)
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harmony_agent._tokens import CALL, DEFAULT_STOP_TOKEN_IDS, RETURN

__all__ = [
    "CALL",
    "DEFAULT_STOP_TOKEN_IDS",
    "RETURN",
    "Chunk",
    "Engine",
    "FinishReason",
    "GenerationRequest",
    "TokenUsage",
]


FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sampling request.

    ``max_tokens`` is always set: servers default to tiny limits (vLLM's completions: 16).
    ``None`` sampling fields mean "the engine's default". ``constraint`` is an optional
    structured-output constraint passed through to engines that support one (for vLLM a
    ``structured_outputs`` dict); engines that do not must reject it, not ignore it.
    ``output_schema`` is the JSON schema a final-channel answer must match: engines with
    :attr:`Engine.constrains_output` hold final messages to it while decoding (reasoning and
    tool calls stay free); the agent sends it to no other engine.
    ``session_id`` lets an engine keep one conversation on one replica's cache.
    ``adapter`` names the LoRA adapter to sample with (``None``: the base model); an engine
    that does not serve that adapter, or none at all, refuses the request.
    """

    prompt_ids: Sequence[int]
    max_tokens: int
    stop_token_ids: tuple[int, ...] = DEFAULT_STOP_TOKEN_IDS
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    constraint: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    session_id: str | None = None
    request_id: str | None = None
    adapter: str | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one request. ``cached_prompt_tokens`` is None when the engine does not say."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_prompt_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """Newly sampled token ids. The last chunk of a request also carries how it ended.

    The stop token (``<|call|>`` or ``<|return|>``) is part of ``token_ids`` and is repeated
    in ``stop_token_id``. ``logprobs``: when the engine was asked for them, the log
    probability of each id in ``token_ids`` (``None`` for an id the server did not score,
    such as a stop token put back); ``None`` when not asked for.
    """

    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    stop_token_id: int | None = None
    usage: TokenUsage | None = field(default=None)
    logprobs: tuple[float | None, ...] | None = None

    @property
    def is_last(self) -> bool:
        return self.finish_reason is not None


class Engine(abc.ABC):
    """Samples token ids for a prompt of token ids.

    Subclasses implement :meth:`generate` as an async generator. Closing the generator early
    (the consumer stops or is cancelled) must abort the request on the engine. Failures are
    raised as :class:`harmony_agent.errors.EngineError` subclasses.
    """

    #: context window the engine serves, when known (the agent checks prompts against it)
    context_window: int | None = None
    #: whether the engine can hold final-channel answers to ``GenerationRequest.output_schema``
    #: while decoding; without it an agent with an output type relies on the prompt and
    #: validation (and says so in a warning)
    constrains_output: bool = False

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Stream the sampled ids of ``request``; the last chunk has ``finish_reason`` set.

        An async generator (``async def`` with ``yield``), so that callers can close it
        (``contextlib.aclosing``) to abort the request.
        """

    async def aclose(self) -> None:  # noqa: B027 — optional hook, most engines hold nothing
        """Release the engine's resources (processes, connections)."""

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
