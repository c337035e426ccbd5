"""``OpenAICompatibleEngine``: token ids over HTTP to a vLLM server or Fireworks.

The prompt goes to ``POST {base_url}/completions`` as token ids, with ``stream``, the stop
tokens and a request for the sampled ids; the sampled ids come back in the SSE chunks. No
chat template, no re-rendering: the server sees exactly the prompt the agent built. How each
server spells that request is a :class:`~harmony_agent.engine._flavor.Flavor` (data);
the event stream is cut into payloads by a pure framer (``_sse``); httpx's exceptions are
mapped in one place (``_errors``).

Example::

    from harmony_agent.engine import OpenAICompatibleEngine

    engine = OpenAICompatibleEngine("http://127.0.0.1:8000/v1")        # vLLM: vllm serve ...
    fireworks = OpenAICompatibleEngine(
        "https://api.fireworks.ai/inference/v1",
        model="accounts/fireworks/models/gpt-oss-20b",
        api_key_env="FIREWORKS_API_KEY",
        flavor="fireworks",
    )

Every fault ends in bounded time:

- ``connect_timeout`` to open a connection;
- ``first_token_timeout`` from sending the request to the first sampled id: the wait for
  the response headers and the reading of an error body count against it;
- ``token_timeout`` between sampled ids: comments (``: keep-alive``) and events without ids
  do not reset it;
- ``turn_timeout`` for the whole request, retries included (``None``: no limit);
- a server that streams more than the request's ``max_tokens`` (plus a small margin) is cut
  off, so a stream that never stops ends too.

Failures before the first id (refused, reset, 5xx, 429) are retried ``max_retries`` times
with exponential backoff; after it nothing is retried, since ids were already streamed.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import anyio
import anyio.to_thread
import httpx
from harmony_agent.errors import (
    ConfigurationError,
    ContextOverflowError,
    EngineProtocolError,
    EngineRequestError,
    EngineTimeoutError,
)

from ._errors import RETRY_STATUS, Retryable, map_transport_errors, status_error, with_settings
from ._flavor import FLAVORS, Flavor
from ._sse import DEFAULT_MAX_LINE, SSEFramer
from ._wire import Delta, final_chunk, parse_json, token_ids
from .base import Chunk, Engine, GenerationRequest

__all__ = ["OpenAICompatibleEngine"]

#: ids a server may send past ``max_tokens`` before it is cut off (a stop token put back,
#: an off-by-one in a server's accounting)
TOKEN_MARGIN = 16
#: the most of an error body that is read (it is only quoted, in one line)
_ERROR_BODY_BYTES = 64 * 1024


class _Clock:
    """The deadlines of one attempt: the first id, the next id, the whole turn."""

    def __init__(self, engine: OpenAICompatibleEngine, turn_deadline: float) -> None:
        self.first_token_timeout = engine.first_token_timeout
        self.token_timeout = engine.token_timeout
        self.turn_timeout = engine.turn_timeout
        self.turn_deadline = turn_deadline
        self.where = engine.base_url
        self.token_deadline = anyio.current_time() + self.first_token_timeout
        self.tokens = 0

    def deadline(self) -> float:
        return min(self.token_deadline, self.turn_deadline)

    def sampled(self, count: int) -> None:
        """``count`` new ids arrived: the next one has ``token_timeout``."""
        if count:
            self.tokens += count
            self.token_deadline = anyio.current_time() + self.token_timeout

    def expired(self, waiting_for: str | None = None) -> EngineTimeoutError:
        if self.turn_deadline <= self.token_deadline:
            return EngineTimeoutError(
                f"{self.where} did not finish the turn within turn_timeout={self.turn_timeout:g} s "
                f"({self.tokens} tokens so far); raise turn_timeout if the server is just slow"
            )
        if self.tokens:
            what, limit, name = "the next token", self.token_timeout, "token_timeout"
        else:
            what = waiting_for or "the first token"
            limit, name = self.first_token_timeout, "first_token_timeout"
        return with_settings(
            EngineTimeoutError(
                f"{self.where} sent nothing for {limit:g} s while waiting for {what}; the "
                f"server is stalled or overloaded (raise {name} if it is just slow)"
            ),
            name,
        )


class OpenAICompatibleEngine(Engine):
    """An OpenAI-compatible ``/completions`` endpoint that takes and returns token ids."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        flavor: str | Flavor = "vllm",
        stream: bool = True,
        connect_timeout: float = 10.0,
        first_token_timeout: float = 300.0,
        token_timeout: float = 60.0,
        turn_timeout: float | None = 900.0,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        max_line_bytes: int = DEFAULT_MAX_LINE,
        context_window: int | None = None,
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise with_settings(
                ConfigurationError(
                    f"base_url must start with http:// or https://, got {base_url!r} "
                    "(e.g. http://127.0.0.1:8000/v1)"
                ),
                "base_url",
            )
        if isinstance(flavor, str):
            if flavor not in FLAVORS:
                raise ConfigurationError(
                    f"flavor must be one of {', '.join(map(repr, FLAVORS))} or a Flavor, "
                    f"got {flavor!r}"
                )
            flavor = FLAVORS[flavor]
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("first_token_timeout", first_token_timeout),
            ("token_timeout", token_timeout),
            ("turn_timeout", turn_timeout),
        ):
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
        if api_key is None and api_key_env is not None:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise with_settings(
                    ConfigurationError(
                        f"the API key variable {api_key_env} is not set; export it, or pass "
                        "api_key_env=None for a server without keys"
                    ),
                    "api_key_env",
                )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.flavor = flavor
        self.stream = stream
        self.first_token_timeout = first_token_timeout
        self.token_timeout = token_timeout
        self.turn_timeout = turn_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_line_bytes = max_line_bytes
        self.context_window = context_window
        self.extra_body = extra_body or {}
        self._headers = {"accept": "text/event-stream" if stream else "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._headers.update(headers or {})
        # No read timeout of httpx's: the deadlines of the first and next token are ours.
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=None, write=connect_timeout, pool=None
        )
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._model_lock = anyio.Lock()
        self._client_lock = anyio.Lock()
        self._discovered = False

    # --- plumbing --------------------------------------------------------------------------

    async def _http(self) -> httpx.AsyncClient:
        # Building the client loads the CA bundle (40-60 ms): done in a worker thread, so the
        # first request of many concurrent runs does not stall the event loop. Idle
        # connections are kept (for httpx's 5 s expiry) as many as were in use, so the next
        # turn of every concurrent run reuses its connection instead of connecting again.
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await anyio.to_thread.run_sync(
                        functools.partial(
                            httpx.AsyncClient,
                            timeout=self._timeout,
                            transport=self._transport,
                            limits=httpx.Limits(
                                max_connections=None, max_keepalive_connections=None
                            ),
                        )
                    )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _model_name(self) -> str:
        """The model to ask for; asks ``/models`` once when it is not given, or to learn the
        server's context window (vLLM reports ``max_model_len``)."""
        wants_window = self.context_window is None and self.flavor.models_report_context
        if self.model is not None and not wants_window:
            return self.model
        async with self._model_lock:
            if self.model is None or (wants_window and not self._discovered):
                await self._discover()
        if self.model is None:  # _discover sets it or raises
            raise EngineRequestError(f"{self.base_url}/models named no model")
        return self.model

    async def _discover(self) -> None:
        self._discovered = True
        url = f"{self.base_url}/models"
        try:
            with map_transport_errors(url, ()):
                with anyio.fail_after(min(30.0, self.first_token_timeout)):
                    response = await (await self._http()).get(url, headers=self._headers)
        except (Retryable, TimeoutError) as exc:
            if self.model is not None:
                return  # the completions request will say what is wrong, with retries
            if isinstance(exc, Retryable):
                raise exc.error from exc.__cause__
            raise with_settings(
                EngineTimeoutError(f"{url} did not answer within 30 s; is the server up?"),
                "base_url",
            ) from None
        if response.status_code != 200:
            if self.model is not None:
                return  # only the context window was missing: not worth failing for
            raise status_error(
                url,
                response.status_code,
                response.content[:_ERROR_BODY_BYTES],
                response.headers.get("content-type", ""),
                None,
            )
        data = parse_json(response.text, url).get("data")
        cards = [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []
        if self.model is None:
            if len(cards) != 1 or not isinstance(cards[0].get("id"), str):
                names = ", ".join(str(c.get("id")) for c in cards)
                raise with_settings(
                    ConfigurationError(
                        f"{url} serves {len(cards)} models ({names}); choose one with model="
                    ),
                    "model",
                )
            self.model = cards[0]["id"]
        card = next((c for c in cards if c.get("id") == self.model), None)
        window = card.get("max_model_len") if card is not None else None
        if self.context_window is None and type(window) is int and window > 0:
            self.context_window = window

    def _body(self, request: GenerationRequest, model: str) -> dict[str, Any]:
        body = self.flavor.body(request, model, stream=self.stream)
        body.update(self.extra_body)
        return body

    # --- the contract ----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        turn_deadline = anyio.current_time() + (self.turn_timeout or math.inf)
        model = await self._model_name()
        body = self._body(request, model)
        if self.context_window is not None:
            room = self.context_window - len(request.prompt_ids)
            if room < 1:
                raise ContextOverflowError(
                    f"the prompt is {len(request.prompt_ids)} tokens and {model} serves "
                    f"{self.context_window}; start a new run or shorten the tool outputs"
                )
            body["max_tokens"] = min(request.max_tokens, room)
        url = f"{self.base_url}/completions"
        headers = {**self._headers, **self.flavor.headers(request)}
        attempt = 0
        while True:
            streamed = False
            clock = _Clock(self, turn_deadline)
            try:
                async with aclosing(self._attempt(url, body, headers, request, clock)) as chunks:
                    async for chunk in chunks:
                        streamed = True
                        yield chunk
                return
            except Retryable as retry:
                pause = self.retry_backoff * 2**attempt
                late = anyio.current_time() + pause >= turn_deadline
                if streamed or attempt >= self.max_retries or late:
                    raise retry.error from retry.__cause__
                await anyio.sleep(pause)
                attempt += 1

    async def _attempt(
        self,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        request: GenerationRequest,
        clock: _Clock,
    ) -> AsyncGenerator[Chunk, None]:
        sampled: list[int] = []  # the whole completion so far
        limit = body["max_tokens"] + TOKEN_MARGIN
        with map_transport_errors(url, sampled):
            client = await self._http()
            response = await self._send(client, url, body, headers, clock)
            try:
                if response.status_code != 200:
                    text = await self._error_body(response, clock)
                    error = status_error(
                        url,
                        response.status_code,
                        text,
                        response.headers.get("content-type", ""),
                        body.get("model"),
                    )
                    if response.status_code in RETRY_STATUS:
                        raise Retryable(error)
                    raise error
                cached_header = None
                if self.flavor.cached_tokens_header:
                    cached_header = response.headers.get(self.flavor.cached_tokens_header)
                source = (
                    self._streamed(response, clock) if self.stream else self._whole(response, clock)
                )
                async with aclosing(source) as deltas:
                    async for delta in deltas:
                        sampled += delta.ids
                        if len(sampled) > limit:
                            raise EngineProtocolError(
                                f"{url} streamed {len(sampled)} tokens for a request of "
                                f"max_tokens={body['max_tokens']}: the server does not "
                                "honour max_tokens; cut off"
                            )
                        if delta.finish is None:
                            if delta.ids:
                                yield Chunk(tuple(delta.ids))
                            continue
                        yield final_chunk(delta, sampled, cached_header, request)
                        return
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()

    async def _send(
        self,
        client: httpx.AsyncClient,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        clock: _Clock,
    ) -> httpx.Response:
        """Send the request; the wait for its response headers is under the first-token
        deadline (a server that accepts and never answers must not hang the run)."""
        prepared = client.build_request("POST", url, json=body, headers=headers)
        with anyio.CancelScope(deadline=clock.deadline()):
            return await client.send(prepared, stream=True)
        # only the deadline ends the block without a return
        raise clock.expired("the response headers") from None

    async def _error_body(self, response: httpx.Response, clock: _Clock) -> bytes:
        """The start of an error body, read under the same deadline (a 500 whose body never
        ends must not hang either); what arrived in time is enough to quote."""
        body = bytearray()
        with anyio.CancelScope(deadline=clock.deadline()):
            async for data in response.aiter_bytes():
                body += data
                if len(body) >= _ERROR_BODY_BYTES:
                    break
        return bytes(body[:_ERROR_BODY_BYTES])

    def _wrong_content(self, response: httpx.Response) -> str | None:
        """Why a 200 answer to a streaming request is no event stream, if it is not one."""
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not kind or kind == "text/event-stream":
            return None
        if kind == "application/json":
            return (
                "answered the streaming request with plain JSON, not an event stream: the "
                "server (or a proxy before it) does not stream /completions; use stream=False"
            )
        if "html" in kind:
            return "answered with an HTML page, not an event stream; check the base URL"
        return f"answered with {kind}, not an event stream (text/event-stream)"

    async def _payloads(self, response: httpx.Response, clock: _Clock) -> AsyncGenerator[str, None]:
        """The ``data`` payloads of the event stream, each network read under the clock."""
        framer = SSEFramer(self.max_line_bytes)
        reads = response.aiter_bytes()  # closed with the response
        while True:
            with anyio.CancelScope(deadline=clock.deadline()) as scope:
                try:
                    data = await reads.__anext__()
                except StopAsyncIteration:
                    break
            if scope.cancelled_caught:
                raise clock.expired()
            for payload in framer.feed(data):
                yield payload
        for payload in framer.close():
            yield payload

    async def _streamed(
        self, response: httpx.Response, clock: _Clock
    ) -> AsyncGenerator[Delta, None]:
        wrong = self._wrong_content(response)
        if wrong is not None:
            body = await self._error_body(response, clock)
            raise with_settings(
                EngineProtocolError(f"{self.base_url} {wrong} (it sent {body[:120]!r})"),
                "base_url",
            )
        finish: Delta | None = None
        tail: list[int] = []
        usage: dict[str, Any] | None = None
        async with aclosing(self._payloads(response, clock)) as payloads:
            async for payload in payloads:
                if payload == "[DONE]":
                    break
                event = parse_json(payload, self.base_url)
                if "error" in event and not event.get("choices"):
                    raise EngineRequestError(
                        f"{self.base_url} reported an error mid-stream: {event['error']!s:.300}"
                    )
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                choices = event.get("choices") or []
                if not isinstance(choices, list):
                    raise EngineProtocolError(f"{self.base_url} sent choices that are not a list")
                for choice in choices:
                    if not isinstance(choice, dict):
                        raise EngineProtocolError(
                            f"{self.base_url} sent a choice that is not an object"
                        )
                    ids = token_ids(choice, self.base_url)
                    clock.sampled(len(ids))
                    if choice.get("finish_reason"):
                        finish = Delta([], choice["finish_reason"], choice.get("stop_reason"))
                        clock.sampled(1)  # the end came in time: the usage may follow
                        tail.extend(ids)
                    elif finish is None:
                        yield Delta(ids)
                    else:
                        tail.extend(ids)
        if finish is None:
            raise EngineProtocolError(
                f"{self.base_url} closed the stream without a finish reason after "
                f"{clock.tokens} tokens; check its logs"
            )
        yield finish._replace(ids=tail, usage=usage)

    async def _whole(self, response: httpx.Response, clock: _Clock) -> AsyncGenerator[Delta, None]:
        body = bytearray()
        with anyio.CancelScope(deadline=clock.deadline()) as scope:
            async for data in response.aiter_bytes():
                body += data
                if len(body) > self.max_line_bytes:
                    raise EngineProtocolError(
                        f"{self.base_url} sent a response over {self.max_line_bytes} bytes; "
                        "that is no completion (raise max_line_bytes if it really is one)"
                    )
        if scope.cancelled_caught:
            raise clock.expired("the response")
        data = parse_json(body.decode("utf-8", errors="replace"), self.base_url)
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        if not isinstance(choice, dict):
            raise EngineProtocolError(f"{self.base_url} sent a choice that is not an object")
        usage = data.get("usage")
        yield Delta(
            token_ids(choice, self.base_url),
            choice.get("finish_reason") or "stop",
            choice.get("stop_reason"),
            usage if isinstance(usage, dict) else None,
        )
