"""Public test doubles: run the real agent loop and parser with no model.

``ScriptedEngine`` takes replies as raw Harmony completion text — exactly what the model
samples after ``<|start|>assistant`` — encodes them with the real encoding and streams the ids
in small chunks. ``FunctionEngine`` lets a callable decide each reply from the request.

Both report usage like a server with a prefix cache would: ``cached_prompt_tokens`` is the
longest common prefix with any earlier prompt, so tests can check cache friendliness.

Example::

    from harmony_agent import Agent, tool
    from harmony_agent.engine import ScriptedEngine

    @tool
    def add(a: int, b: int) -> int:
        "Add two integers."
        return a + b

    engine = ScriptedEngine([
        '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a":2,"b":3}<|call|>',
        "<|channel|>final<|message|>2 + 3 = 5<|return|>",
    ])
    result = Agent(tools=[add], engine=engine).run_sync("What is 2 + 3?")
    assert result.final_text == "2 + 3 = 5"
    assert result.tool_calls[0].output == "5"
    assert engine.requests[1][: len(engine.requests[0])] == engine.requests[0]
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

import anyio
from harmony_agent.errors import ConfigurationError, ScriptExhaustedError

from .base import Chunk, Engine, GenerationRequest, TokenUsage

__all__ = ["FunctionEngine", "ScriptedEngine"]

Reply = str | Sequence[int]


def _encode(reply: Reply) -> list[int]:
    if isinstance(reply, str):
        from harmony_agent._encoding import load_encoding

        return load_encoding().encode(reply, allowed_special="all")
    return [int(t) for t in reply]


class _StreamingDouble(Engine):
    """Shared streaming, stop handling and usage of the test doubles."""

    def __init__(self, *, chunk_size: int = 3, delay: float = 0.0) -> None:
        if chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.delay = delay
        #: prompt ids of every request, in order
        self.requests: list[list[int]] = []
        self.aborted = 0
        self.context_window = 131_072

    def _cached(self, prompt: list[int]) -> int:
        best = 0
        for earlier in self.requests:
            n = 0
            for a, b in zip(earlier, prompt, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        return best

    async def _reply_for(self, request: GenerationRequest) -> list[int]:
        raise NotImplementedError

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        prompt = list(request.prompt_ids)
        ids = await self._reply_for(request)
        cached = self._cached(prompt)
        self.requests.append(prompt)
        # Stop at the first stop token, as an engine with stop_token_ids would.
        stop_at = next((i for i, t in enumerate(ids) if t in request.stop_token_ids), None)
        if stop_at is not None:
            ids = ids[: stop_at + 1]
        finish = "stop" if stop_at is not None else "length"
        if len(ids) > request.max_tokens:
            ids, finish = ids[: request.max_tokens], "length"
        stop_id = ids[-1] if finish == "stop" else None
        finished = False
        try:
            for start in range(0, max(len(ids), 1), self.chunk_size):
                piece = tuple(ids[start : start + self.chunk_size])
                if self.delay:
                    await anyio.sleep(self.delay)
                else:
                    await anyio.lowlevel.checkpoint()
                last = start + self.chunk_size >= len(ids)
                if last:
                    finished = True
                    usage = TokenUsage(len(prompt), len(ids), cached)
                    yield Chunk(piece, finish, stop_id, usage)  # type: ignore[arg-type]
                else:
                    yield Chunk(piece)
        finally:
            if not finished:
                self.aborted += 1


class ScriptedEngine(_StreamingDouble):
    """Replies, in order, from a list of raw Harmony completions (text or token ids).

    A reply that ends without ``<|call|>``/``<|return|>`` finishes with ``"length"``, like a
    model cut off by ``max_tokens``. Asking for more replies than given raises
    :class:`~harmony_agent.errors.ScriptExhaustedError`.
    """

    def __init__(self, replies: Sequence[Reply], *, chunk_size: int = 3, delay: float = 0.0):
        super().__init__(chunk_size=chunk_size, delay=delay)
        if isinstance(replies, str):
            raise ConfigurationError("ScriptedEngine takes a list of replies, not one string")
        self.replies: list[Reply] = list(replies)
        self._next = 0

    @property
    def remaining(self) -> int:
        return len(self.replies) - self._next

    async def _reply_for(self, request: GenerationRequest) -> list[int]:
        if self._next >= len(self.replies):
            raise ScriptExhaustedError(
                f"ScriptedEngine has no reply left: it was given {len(self.replies)} and this "
                f"is request {self._next + 1}. Add a reply for this turn to the script."
            )
        reply = self.replies[self._next]
        self._next += 1
        return _encode(reply)


class FunctionEngine(_StreamingDouble):
    """Each reply comes from ``fn(request, turn)`` (sync or async), as text or token ids."""

    def __init__(
        self,
        fn: Callable[[GenerationRequest, int], Reply | Awaitable[Reply]],
        *,
        chunk_size: int = 3,
        delay: float = 0.0,
    ) -> None:
        super().__init__(chunk_size=chunk_size, delay=delay)
        self.fn = fn

    async def _reply_for(self, request: GenerationRequest) -> list[int]:
        reply = self.fn(request, len(self.requests))
        if inspect.isawaitable(reply):
            reply = await reply
        return _encode(reply)  # type: ignore[arg-type]
