"""``OpenAICompatibleEngine``: token ids over HTTP to a vLLM server or Fireworks.

The prompt goes to ``POST {base_url}/completions`` as token ids, with ``stream``, the stop
token ids and ``return_token_ids``; the sampled ids come back in the SSE chunks. No chat
template, no re-rendering: the server sees exactly the prompt the agent built.

Example::

    from harmony_agent.engine import OpenAICompatibleEngine

    engine = OpenAICompatibleEngine("http://127.0.0.1:8000/v1")        # vLLM: vllm serve ...
    fireworks = OpenAICompatibleEngine(
        "https://api.fireworks.ai/inference/v1",
        model="accounts/fireworks/models/gpt-oss-20b",
        api_key_env="FIREWORKS_API_KEY",
        flavor="fireworks",
    )

Timeouts: ``connect_timeout`` to open a connection, ``first_token_timeout`` until the first
sampled id, ``token_timeout`` between ids. Failures before the first id (refused, reset, 5xx,
429) are retried ``max_retries`` times with exponential backoff; after it nothing is retried,
since ids were already streamed.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Literal

import anyio
import anyio.to_thread
import httpx
from harmony_agent._tokens import CALL, MESSAGE, MODEL_STOP_TOKEN_IDS, RETURN, START, STOP_STRINGS
from harmony_agent.errors import (
    ConfigurationError,
    ContextOverflowError,
    EngineError,
    EngineRequestError,
    EngineTimeoutError,
    EngineUnavailableError,
)

from .base import Chunk, Engine, GenerationRequest, TokenUsage

__all__ = ["OpenAICompatibleEngine"]

Flavor = Literal["vllm", "fireworks"]
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class _Retryable(Exception):
    """A failure before the first token: worth another try."""

    def __init__(self, error: EngineError) -> None:
        self.error = error


class OpenAICompatibleEngine(Engine):
    """An OpenAI-compatible ``/completions`` endpoint that takes and returns token ids."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        flavor: Flavor = "vllm",
        stream: bool = True,
        connect_timeout: float = 10.0,
        first_token_timeout: float = 300.0,
        token_timeout: float = 60.0,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        context_window: int | None = None,
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"base_url must start with http:// or https://, got {base_url!r} "
                "(e.g. http://127.0.0.1:8000/v1)"
            )
        if flavor not in ("vllm", "fireworks"):
            raise ConfigurationError(f"flavor must be 'vllm' or 'fireworks', got {flavor!r}")
        if api_key is None and api_key_env is not None:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise ConfigurationError(
                    f"the API key variable {api_key_env} is not set; export it or drop --api-key-env"
                )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.flavor = flavor
        self.stream = stream
        self.first_token_timeout = first_token_timeout
        self.token_timeout = token_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.context_window = context_window
        self.extra_body = extra_body or {}
        self._headers = {"accept": "text/event-stream" if stream else "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._headers.update(headers or {})
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
        if self.model is not None and (self.context_window is not None or self.flavor != "vllm"):
            return self.model
        async with self._model_lock:
            if self.model is None or (self.context_window is None and not self._discovered):
                await self._discover()
        assert self.model is not None
        return self.model

    async def _discover(self) -> None:
        self._discovered = True
        url = f"{self.base_url}/models"
        try:
            response = await (await self._http()).get(url, headers=self._headers, timeout=30)
        except httpx.HTTPError as exc:
            if self.model is not None:
                return  # the completions request will say what is wrong, with retries
            raise EngineUnavailableError(
                f"cannot reach {url}: {type(exc).__name__}: {exc}. Is the server running? "
                "Start one with `vllm serve openai/gpt-oss-20b`, or pass another --engine."
            ) from exc
        if response.status_code != 200:
            if self.model is not None:
                return  # only the context window was missing: not worth failing for
            raise _status_error(url, response.status_code, response.text, None)
        cards = [c for c in response.json().get("data", []) if isinstance(c, dict)]
        if self.model is None:
            if len(cards) != 1:
                names = ", ".join(str(c.get("id")) for c in cards)
                raise ConfigurationError(
                    f"{url} serves {len(cards)} models ({names}); choose one with model= (--model)"
                )
            self.model = cards[0].get("id")
        card = next((c for c in cards if c.get("id") == self.model), None)
        if card is not None and self.context_window is None and card.get("max_model_len"):
            self.context_window = int(card["max_model_len"])

    def _body(self, request: GenerationRequest, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "prompt": list(request.prompt_ids),
            "max_tokens": request.max_tokens,
            "stream": self.stream,
            "return_token_ids": True,
        }
        for key in ("temperature", "top_p", "seed"):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        if self.flavor == "vllm":
            body["stop_token_ids"] = list(request.stop_token_ids)
            body["skip_special_tokens"] = False
            if self.stream:
                body["stream_options"] = {"include_usage": True}
            if request.constraint is not None:
                body["structured_outputs"] = request.constraint
        else:
            names = {v: k for k, v in STOP_STRINGS.items()}
            body["stop"] = [names[t] for t in request.stop_token_ids if t in names]
            body["raw_output"] = True
            if request.session_id:
                body["prompt_cache_key"] = request.session_id
            if request.constraint is not None:
                body["response_format"] = request.constraint
        if request.request_id and self.flavor == "vllm":
            body["request_id"] = request.request_id
        body.update(self.extra_body)
        return body

    def _request_headers(self, request: GenerationRequest) -> dict[str, str]:
        headers = dict(self._headers)
        if request.session_id:
            name = "x-session-affinity" if self.flavor == "fireworks" else "x-session-id"
            headers[name] = request.session_id
        return headers

    # --- the contract ----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
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
        headers = self._request_headers(request)
        attempt = 0
        while True:
            streamed = False
            try:
                async with aclosing(self._attempt(url, body, headers, request)) as chunks:
                    async for chunk in chunks:
                        streamed = True
                        yield chunk
                return
            except _Retryable as retry:
                if streamed or attempt >= self.max_retries:
                    raise retry.error from None
                await anyio.sleep(self.retry_backoff * 2**attempt)
                attempt += 1

    async def _attempt(
        self, url: str, body: dict[str, Any], headers: dict[str, str], request: GenerationRequest
    ) -> AsyncGenerator[Chunk, None]:
        sampled: list[int] = []  # the whole completion so far
        try:
            client = await self._http()
            async with client.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")
                    error = _status_error(url, response.status_code, text, body.get("model"))
                    if response.status_code in _RETRY_STATUS:
                        raise _Retryable(error)
                    raise error
                cached_header = response.headers.get("fireworks-cached-prompt-tokens")
                if self.stream:
                    source = self._sse(response, request)
                else:
                    source = self._whole(response, request)
                async with aclosing(source) as parts:
                    async for ids, finish, stop_reason, usage in parts:
                        sampled += ids
                        if finish is None:
                            if ids:
                                yield Chunk(tuple(ids))
                            continue
                        yield self._last(
                            ids, sampled, finish, stop_reason, usage, cached_header, request
                        )
                        return
            raise EngineError(
                f"{url} ended the stream after {len(sampled)} tokens without a finish reason"
            )
        except httpx.ConnectError as exc:
            raise _Retryable(
                EngineUnavailableError(
                    f"cannot connect to {url}: {exc}. Is the server running and the URL "
                    "right? (vLLM: `vllm serve openai/gpt-oss-20b`, then --engine "
                    "http://HOST:8000/v1)"
                )
            ) from exc
        except httpx.ConnectTimeout as exc:
            raise _Retryable(
                EngineTimeoutError(f"connecting to {url} timed out; is the host reachable?")
            ) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            error = EngineError(
                f"the connection to {url} broke after {len(sampled)} tokens "
                f"({type(exc).__name__}: {exc}); check the server's logs"
            )
            if not sampled:
                raise _Retryable(error) from exc
            raise error from exc

    async def _events(self, response: httpx.Response) -> AsyncGenerator[str, None]:
        """The ``data:`` payloads of the SSE stream. One timeout per network read (not per
        line): the first read may take ``first_token_timeout``, later ones ``token_timeout``."""
        reads = response.aiter_bytes()  # closed with the response
        buffer = b""
        first = True
        while True:
            limit = self.first_token_timeout if first else self.token_timeout
            try:
                with anyio.fail_after(limit):
                    data = await reads.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                what = "the first token" if first else "the next token"
                raise EngineTimeoutError(
                    f"{self.base_url} sent nothing for {limit:g} s while waiting for {what}; "
                    "the server is stalled or overloaded (raise first_token_timeout / "
                    "token_timeout if it is just slow)"
                ) from None
            buffer += data.replace(b"\r\n", b"\n")
            *complete, buffer = buffer.split(b"\n\n")
            for event in complete:
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        first = False
                        yield line[5:].strip().decode()
        for line in buffer.split(b"\n"):
            if line.startswith(b"data:"):
                yield line[5:].strip().decode()

    async def _sse(self, response: httpx.Response, request: GenerationRequest):
        finish = stop_reason = usage = None
        tail: list[int] = []
        async with aclosing(self._events(response)) as events:
            async for payload in events:
                if payload == "[DONE]":
                    break
                event = _json(payload, self.base_url)
                if "error" in event and not event.get("choices"):
                    raise EngineRequestError(
                        f"{self.base_url} reported an error mid-stream: {event['error']}"
                    )
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    ids = self._ids(choice)
                    if choice.get("finish_reason"):
                        finish, stop_reason = choice["finish_reason"], choice.get("stop_reason")
                        tail.extend(ids)
                    elif finish is None:
                        yield ids, None, None, None
                    else:
                        tail.extend(ids)
        if finish is None:
            raise EngineError(
                f"{self.base_url} closed the stream without a finish reason; check its logs"
            )
        yield tail, finish, stop_reason, usage

    async def _whole(self, response: httpx.Response, request: GenerationRequest):
        with anyio.fail_after(self.first_token_timeout):
            data = _json((await response.aread()).decode(errors="replace"), self.base_url)
        choice = (data.get("choices") or [{}])[0]
        yield (
            self._ids(choice),
            choice.get("finish_reason") or "stop",
            choice.get("stop_reason"),
            data.get("usage"),
        )

    def _ids(self, choice: dict[str, Any]) -> list[int]:
        ids = choice.get("token_ids")
        if ids is None and isinstance(choice.get("raw_output"), dict):
            ids = choice["raw_output"].get("completion_token_ids")
        if ids is None:
            if choice.get("text"):
                raise EngineRequestError(
                    f"{self.base_url} returned text but no token ids: the server must support "
                    "`return_token_ids` (vLLM ≥ 0.10.2; Fireworks with raw_output). Upgrade "
                    "the server or use another engine."
                )
            return []
        return [int(t) for t in ids]

    def _last(
        self,
        ids: list[int],
        sampled: list[int],
        finish: str,
        stop_reason: Any,
        usage: dict[str, Any] | None,
        cached_header: str | None,
        request: GenerationRequest,
    ) -> Chunk:
        reason = "length" if finish == "length" else "abort" if finish == "abort" else "stop"
        stop_id = None
        if reason == "stop":
            # The stop token is already there when the server returns it (vLLM does, whether
            # it stopped on a requested stop id or on the model's own end-of-sequence ids,
            # possibly in an earlier chunk than the one with the finish reason): look at the
            # whole completion, not at the last chunk.
            if sampled and sampled[-1] in (*request.stop_token_ids, *MODEL_STOP_TOKEN_IDS):
                stop_id = sampled[-1]
            else:
                # string stops (Fireworks) come back without the stop token: put it back, so the
                # transcript holds what the model really sampled.
                if isinstance(stop_reason, int):
                    stop_id = stop_reason
                elif isinstance(stop_reason, str) and stop_reason in STOP_STRINGS:
                    stop_id = STOP_STRINGS[stop_reason]
                else:
                    stop_id = CALL if _ends_in_call(sampled) else RETURN
                ids = [*ids, stop_id]
        cached = None
        if usage:
            details = usage.get("prompt_tokens_details") or {}
            if details.get("cached_tokens") is not None:
                cached = int(details["cached_tokens"])
        if cached is None and cached_header is not None and cached_header.isdigit():
            cached = int(cached_header)
        token_usage = TokenUsage(
            prompt_tokens=int((usage or {}).get("prompt_tokens") or len(request.prompt_ids)),
            output_tokens=int((usage or {}).get("completion_tokens") or 0),
            cached_prompt_tokens=cached,
        )
        return Chunk(tuple(ids), reason, stop_id, token_usage)  # type: ignore[arg-type]


def _ends_in_call(ids: list[int]) -> bool:
    """Whether the last message of a completion addresses a tool (its header has ``to=``)."""
    from harmony_agent._encoding import load_encoding

    start = max((i for i, t in enumerate(ids) if t == START), default=-1)
    try:
        message = ids.index(MESSAGE, start + 1)
    except ValueError:
        return False
    return "to=" in load_encoding().decode(ids[start + 1 : message])


def _json(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise EngineRequestError(
            f"{where} sent something that is not JSON: {text[:200]!r}; is it an "
            "OpenAI-compatible server?"
        ) from None
    if not isinstance(data, dict):
        raise EngineRequestError(f"{where} sent an unexpected response: {text[:200]!r}")
    return data


def _server_message(text: str) -> str:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:500]
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:500]
    return str(error)[:500]


def _status_error(url: str, status: int, text: str, model: str | None) -> EngineError:
    message = _server_message(text)
    if status in (401, 403):
        return EngineRequestError(
            f"{url} refused the credentials ({status}: {message}); check the API key "
            "(--api-key-env)"
        )
    if status == 404:
        return EngineRequestError(
            f"{url} answered 404 ({message}); check the base URL (it ends in /v1) and the "
            f"model name{f' {model!r}' if model else ''} (--model)"
        )
    if status in _RETRY_STATUS:
        return EngineUnavailableError(f"{url} failed with {status}: {message}")
    return EngineRequestError(f"{url} rejected the request ({status}): {message}")
