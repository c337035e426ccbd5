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
    assert engine.generation_requests[0].max_tokens == 8192  # Agent's max_tokens_per_turn
    engine.assert_all_used()

A reply may also start with ``<|start|>assistant`` (a whole message as the model would write
it in a transcript): that prefix is dropped, since the prompt already ends with it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

import anyio
from harmony_agent._tokens import ENDOFTEXT, START, VOCAB_SIZE
from harmony_agent.errors import ConfigurationError, ScriptExhaustedError

from .base import Chunk, Engine, GenerationRequest, TokenUsage

__all__ = ["FunctionEngine", "ScriptedEngine"]

Reply = str | Sequence[int]
_ASSISTANT_START = "<|start|>assistant"
# Roles that are never the model's: a reply that starts their message is a mistake in the
# script. A ``<|start|>`` followed by anything else (``to=``, ``<|channel|>``) is a malformation
# the model itself produces, and the script may want to reproduce it.
_OTHER_ROLES = ("user", "system", "developer")


def _check_text(reply: str) -> str:
    """A reply as the model samples it after ``<|start|>assistant``."""
    if reply.startswith(_ASSISTANT_START):
        return reply[len(_ASSISTANT_START) :]  # the prompt already ends with it
    if reply.startswith("<|start|>") and reply[len("<|start|>") :].startswith(_OTHER_ROLES):
        raise ConfigurationError(
            f"a scripted reply is what the assistant samples after <|start|>assistant, but "
            f"this one starts another message: {reply[:60]!r}. Start it with <|channel|> "
            "(or <|start|>assistant)."
        )
    return reply


def _encode(reply: Reply) -> list[int]:
    from harmony_agent._encoding import load_encoding

    if isinstance(reply, str):
        return load_encoding().encode(_check_text(reply), allowed_special="all")
    if not isinstance(reply, Sequence):
        raise ConfigurationError(
            f"a scripted reply is raw Harmony text or a list of token ids, got {reply!r:.80}"
        )
    ids = list(reply)
    for token in ids:
        if type(token) is not int or not 0 <= token < VOCAB_SIZE:
            raise ConfigurationError(
                f"a scripted reply holds the token id {token!r}: ids are integers in "
                f"[0, {VOCAB_SIZE})"
            )
    if ids[:1] == [START]:
        encoding = load_encoding()
        assistant = encoding.encode("assistant", allowed_special="all")
        role = encoding.decode_utf8(ids[1:4]) if len(ids) > 1 else ""
        if ids[1 : 1 + len(assistant)] != assistant and role.startswith(_OTHER_ROLES):
            raise ConfigurationError(
                "a scripted reply of token ids starts a message that is not the assistant's; "
                "give what the assistant samples after <|start|>assistant"
            )
        ids = ids[1 + len(assistant) :]
    return ids


class _StreamingDouble(Engine):
    """Shared streaming, stop handling and usage of the test doubles."""

    def __init__(self, *, chunk_size: int = 3, delay: float = 0.0) -> None:
        if chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.delay = delay
        #: prompt ids of every request, in order
        self.requests: list[list[int]] = []
        #: every request whole (sampling settings, stop ids, session and request ids), in order
        self.generation_requests: list[GenerationRequest] = []
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
        self.generation_requests.append(request)
        # Stop at the first stop token, as an engine with stop_token_ids would, or at the
        # model's end of sequence, where every engine stops (gpt-oss's <|endoftext|>).
        stops = {*request.stop_token_ids, ENDOFTEXT}
        stop_at = next((i for i, t in enumerate(ids) if t in stops), None)
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

    A reply that ends without ``<|call|>``/``<|return|>`` (or the model's end of sequence,
    ``<|endoftext|>``) finishes with ``"length"``, like a model cut off by ``max_tokens``. Asking for more replies than given raises
    :class:`~harmony_agent.errors.ScriptExhaustedError`.
    """

    def __init__(self, replies: Sequence[Reply], *, chunk_size: int = 3, delay: float = 0.0):
        super().__init__(chunk_size=chunk_size, delay=delay)
        if isinstance(replies, str):
            raise ConfigurationError("ScriptedEngine takes a list of replies, not one string")
        self.replies: list[Reply] = list(replies)
        for reply in self.replies:
            if isinstance(reply, str):
                _check_text(reply)  # a wrong start is reported now, not at its turn
        self._next = 0

    @property
    def remaining(self) -> int:
        """Replies not asked for yet."""
        return len(self.replies) - self._next

    def assert_all_used(self) -> None:
        """Raise AssertionError, naming them, if some replies were never asked for (a test
        whose run ended earlier than its script expected)."""
        if self.remaining:
            unused = "; ".join(
                repr(r[:60] if isinstance(r, str) else list(r)[:12])
                for r in self.replies[self._next :]
            )
            raise AssertionError(
                f"{self.remaining} of {len(self.replies)} scripted replies were never used "
                f"({len(self.requests)} requests came): {unused}"
            )

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
