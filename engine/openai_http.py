"""``OpenAICompatibleEngine``: token ids over HTTP to a vLLM or SGLang server, or Fireworks.

The prompt goes to ``POST {base_url}/completions`` as token ids, with ``stream``, the stop
tokens and a request for the sampled ids; the sampled ids come back in the SSE chunks. No
chat template, no re-rendering: the server sees exactly the prompt the agent built. How each
server spells that request is a :class:`~harmony_agent.engine._flavor.Flavor` (data);
the answer is read under deadlines (``_stream``), its event stream cut into payloads by a
pure framer (``_sse``) and its payloads read into our types (``_wire``); the HTTP client
is aiohttp on asyncio, httpx elsewhere or with an httpx ``transport`` (``_http``), each
library's exceptions mapped to ours in one place (``_errors``, ``_http``). This module keeps the settings, the client, model
discovery and the retry loop.

Example::

    from harmony_agent.engine import OpenAICompatibleEngine

    engine = OpenAICompatibleEngine("http://127.0.0.1:8000/v1")        # vLLM: vllm serve ...
    sglang = OpenAICompatibleEngine("http://127.0.0.1:30000/v1", flavor="sglang")
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

Session affinity: every request of a run carries its session id in the flavor's affinity
headers (vLLM ``X-Session-ID`` for vllm-router, SGLang ``X-SMG-Routing-Key`` for its model
gateway, Fireworks ``x-session-affinity``); ``affinity_headers=`` names others (the header of
production-stack's ``--session-key``), ``()`` sends none. ``affinity_echo="x-session-token"``
(llm-d) keeps the token a router names in that response header for a session and sends it
back on the session's later requests. ``cache_salt=`` namespaces the server's prefix cache
(vLLM and SGLang), so tenants never share cached prefixes.

``logprobs=True`` asks the server for the log probability of each sampled id
(``"logprobs": 0``); the chunks carry them (``Chunk.logprobs``) and traces record them.

Failures before the first id (refused, reset, 5xx, 429) are retried ``max_retries`` times
with exponential backoff; after it nothing is retried, since ids were already streamed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import httpx
from harmony_agent.errors import (
    ConfigurationError,
    ContextOverflowError,
    EngineRequestError,
    EngineTimeoutError,
)

from ._affinity import SessionTokens, check_header_names
from ._errors import RETRY_STATUS, Retryable, server_message, status_error, with_settings
from ._flavor import FLAVORS, Flavor
from ._http import Answer, HttpClient, make_client
from ._sse import DEFAULT_MAX_LINE
from ._stream import ERROR_BODY_BYTES, Clock, error_body, send, stream_deltas, whole_delta
from ._wire import final_chunk, parse_json
from .base import Chunk, Engine, GenerationRequest

__all__ = ["OpenAICompatibleEngine"]

#: ids a server may send past ``max_tokens`` before it is cut off (a stop token put back,
#: an off-by-one in a server's accounting)
TOKEN_MARGIN = 16


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
        logprobs: bool = False,
        affinity_headers: Sequence[str] | None = None,
        affinity_echo: str | None = None,
        cache_salt: str | None = None,
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
        if affinity_headers is not None:
            affinity_headers = check_header_names(affinity_headers, "affinity_headers")
        if affinity_echo is not None:
            check_header_names([affinity_echo], "affinity_echo")
        if cache_salt is not None:
            if not isinstance(cache_salt, str) or not cache_salt:
                raise ConfigurationError(
                    f"cache_salt must be a non-empty string, got {cache_salt!r}"
                )
            if not flavor.takes_cache_salt:
                raise with_settings(
                    ConfigurationError(
                        f"a {flavor.name} server takes no cache_salt (vLLM and SGLang do); "
                        "leave cache_salt unset"
                    ),
                    "cache_salt",
                )
        flavor.check_fields(extra_body or {}, "extra_body")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.flavor = flavor
        self.constrains_output = flavor.constrains_turns
        self.stream = stream
        self.first_token_timeout = first_token_timeout
        self.token_timeout = token_timeout
        self.turn_timeout = turn_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_line_bytes = max_line_bytes
        self.context_window = context_window
        self.extra_body = extra_body or {}
        self.logprobs = logprobs
        self.affinity_headers = affinity_headers  # None: the flavor's own
        self.cache_salt = cache_salt
        self._session_tokens = SessionTokens(affinity_echo) if affinity_echo else None
        self._headers = {"accept": "text/event-stream" if stream else "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._headers.update(headers or {})
        self._connect_timeout = connect_timeout
        self._transport = transport
        self._client: HttpClient | None = None
        self._model_lock = anyio.Lock()
        self._discovered = False

    # --- plumbing --------------------------------------------------------------------------

    def _http(self) -> HttpClient:
        # Chosen on first use, inside the event loop: aiohttp on asyncio (the cheapest per
        # streamed event), httpx on other loops or when an httpx transport was given.
        if self._client is None:
            self._client = make_client(self._connect_timeout, self._transport)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

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
        client = self._http()
        try:
            with client.errors(url, ()):
                with anyio.fail_after(min(30.0, self.first_token_timeout)):
                    status, content, content_type = await client.get(url, self._headers)
        except (Retryable, TimeoutError) as exc:
            if self.model is not None:
                return  # the completions request will say what is wrong, with retries
            if isinstance(exc, Retryable):
                raise exc.error from exc.__cause__
            raise with_settings(
                EngineTimeoutError(f"{url} did not answer within 30 s; is the server up?"),
                "base_url",
            ) from None
        if status != 200:
            if self.model is not None:
                return  # only the context window was missing: not worth failing for
            raise status_error(url, status, content[:ERROR_BODY_BYTES], content_type, None)
        data = parse_json(content.decode("utf-8", errors="replace"), url).get("data")
        cards = [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []
        # LoRA adapters (vLLM's --lora-modules) are listed as models with a parent: the model
        # and its context window are the base model's
        cards = [c for c in cards if not c.get("parent")]
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
        if self.logprobs:
            body["logprobs"] = 0  # the sampled id's own logprob, no alternatives
            if self.flavor.name == "vllm":
                # ids, not text, for the scored tokens: no detokenizing on the server (a
                # server run with --skip-tokenizer-init could not)
                body["return_tokens_as_token_ids"] = True
        if self.cache_salt is not None:
            body["cache_salt"] = self.cache_salt
        body.update(self.extra_body)
        self.flavor.check_fields(body)
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
        headers = {**self._headers, **self.flavor.headers(request, self.affinity_headers)}
        if self._session_tokens is not None:
            headers.update(self._session_tokens.headers(request.session_id))
        attempt = 0
        while True:
            # one attempt, inline: the chunks pass through no generator of ours but the
            # deltas' (each hop between socket and agent costs CPU on every chunk)
            sampled: list[int] = []  # the whole completion of this attempt so far
            clock = Clock(
                self.base_url,
                first_token_timeout=self.first_token_timeout,
                token_timeout=self.token_timeout,
                turn_timeout=self.turn_timeout,
                turn_deadline=turn_deadline,
                max_ids=body["max_tokens"] + TOKEN_MARGIN,
                max_tokens=body["max_tokens"],
            )
            client = self._http()
            try:
                with client.errors(url, sampled):
                    response = await self._open(client, url, body, headers, clock, request.adapter)
                    if self._session_tokens is not None:
                        tokens = self._session_tokens
                        tokens.remember(request.session_id, response.header(tokens.header))
                    try:
                        cached_header = None
                        if self.flavor.cached_tokens_header:
                            cached_header = response.header(self.flavor.cached_tokens_header)
                        if self.stream:
                            source = stream_deltas(
                                response,
                                clock,
                                self.max_line_bytes,
                                self.logprobs,
                                self.flavor.stop_reason_field,
                            )
                        else:
                            source = whole_delta(
                                response,
                                clock,
                                self.max_line_bytes,
                                self.logprobs,
                                self.flavor.stop_reason_field,
                            )
                        async with aclosing(source) as deltas:
                            async for delta in deltas:
                                sampled += delta.ids
                                if delta.finish is None:
                                    yield Chunk(
                                        tuple(delta.ids),
                                        logprobs=None
                                        if delta.logprobs is None
                                        else tuple(delta.logprobs),
                                    )
                                else:
                                    yield final_chunk(delta, sampled, cached_header, request)
                                    return
                    finally:
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                return
            except Retryable as retry:
                pause = self.retry_backoff * 2**attempt
                late = anyio.current_time() + pause >= turn_deadline
                if sampled or attempt >= self.max_retries or late:
                    raise retry.error from retry.__cause__
                await anyio.sleep(pause)
                attempt += 1

    async def _open(
        self,
        client: HttpClient,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        clock: Clock,
        adapter: str | None = None,
    ) -> Answer:
        """Send the request; a 200 answer whose body is still to read, else the error
        (a :class:`Retryable` one for the statuses worth another try)."""
        response = await send(client, url, body, headers, clock)
        if response.status == 200:
            return response
        try:
            content = await error_body(response, clock)
            content_type = response.header("content-type") or ""
            error = status_error(
                url,
                response.status,
                content,
                content_type,
                body.get("model"),
                None if adapter is None else (adapter, self.flavor.adapter_hint),
            )
            overflow = self.flavor.overflow_message
            if response.status == 400 and overflow:
                message = server_message(content, content_type)
                if re.search(overflow, message):
                    raise ContextOverflowError(
                        f"the prompt ({len(body['prompt'])} tokens) does not fit the context "
                        f"window of {body.get('model')!r} at {self.base_url}: {message} Start a "
                        "new run or shorten the tool outputs"
                    )
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        if response.status in RETRY_STATUS:
            raise Retryable(error)
        raise error
