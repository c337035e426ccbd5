"""``LlamaServerEngine``: llama.cpp's ``llama-server`` over its native ``POST /completion``.

Token ids in, token ids out: the prompt goes as an id array and each streamed chunk carries the
sampled id in ``tokens`` (the OpenAI-style ``/v1/completions`` of llama-server returns text
only, so it is not used). This is the engine for a 16 GB machine::

    llama-server -m gpt-oss-20b-mxfp4.gguf -ngl 99 -fa on -c 65536 -np 4 --cache-ram 8192

Example::

    from harmony_agent import Agent
    from harmony_agent.engine import LlamaServerEngine

    async with LlamaServerEngine("http://127.0.0.1:8080") as engine:
        result = await Agent(engine=engine).run("Say hi")

What it takes care of:

- **Sampling sent explicitly.** llama-server's defaults (temperature 0.8, top_k 40, min_p 0.05)
  are not gpt-oss's: every request carries temperature (1.0 unless set), top_p 1.0, top_k 0,
  min_p 0 and repeat_penalty 1.0 unless the caller sets them, and the seed when given.
- **Stops.** llama-server has no stop-id field; it ends generation on the GGUF's
  end-of-generation tokens, which for gpt-oss are ``<|return|>``, ``<|call|>`` and
  ``<|endoftext|>``. A request whose stop ids are not all in that set is refused. The stop id
  is the last sampled id; ``stop_type`` ``eos``/``limit`` become ``stop``/``length``.
- **Usage** from ``tokens_evaluated``, ``tokens_predicted`` and ``timings.cache_n`` (the prompt
  tokens served from the slot's cache).
- **The UTF-8 gap.** llama-server does not stream a token whose bytes leave an incomplete UTF-8
  character; the next chunk carries the whole character as text but only its own id. Every
  chunk's ``tokens_predicted`` is compared with the ids received; missing ids are rebuilt from
  the chunk's text bytes when exactly one split of those bytes into vocabulary tokens exists.
  Otherwise (two or more ids with an ambiguous split, or ids lost at the very end) the stream
  is dropped and the rest of the completion is sampled again from the last exact id with a
  non-streaming request, which returns every id (``gap_fallback=False`` fails the turn with an
  :class:`EngineError` instead) — never a silently wrong transcript.
- **Session affinity.** The ``id_slot`` the first response of a session reports is sent back
  with the session's later requests, so each run keeps its slot's prefix cache (``-np N``).
- **Checks at first use.** ``/props`` must answer like llama-server, and the loaded GGUF must
  tokenize the Harmony special tokens to gpt-oss's ids.
- **LoRA adapters** loaded at start (``--lora FILE.gguf``, listed at ``GET /lora-adapters``)
  are picked per request by name (``GenerationRequest.adapter``): the file's name with or
  without ``.gguf``, or its path. When the server has adapters, every request sends the scale
  of each (1 for the one asked for, 0 for the others), so a request without an adapter gets
  the base model whatever the server's global scales are.
- **Structured final answers** (``GenerationRequest.output_schema``, an agent's
  ``output_type``): a lazy grammar (``grammar_lazy`` + a ``grammar_triggers`` pattern) leaves
  reasoning and tool calls free and holds the message after a final-channel header
  (``final``, ``final json``, ``final <|constrain|>json``) to the schema; a prompt that already
  ends in that header gets the JSON grammar from the first token. The schema goes through
  llama-server's own converter once (a one-token ``json_schema`` request whose
  ``generation_settings`` return the grammar), so the grammar is what that server would build
  itself; see ``_llama_grammar`` for the header and the special tokens kept out of strings.
  Until the header the sampled ids are exactly the unconstrained ones (same seed); after the
  JSON the grammar lets any of the GGUF's end-of-generation ids end the answer.

Timeouts: ``connect_timeout`` to open a connection, ``first_token_timeout`` until the first
chunk, ``token_timeout`` between chunks. Failures before the first id (refused, reset, 503 while
the model loads) are retried ``max_retries`` times with exponential backoff.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
from harmony_agent._tokens import CALL, ENDOFTEXT, RETURN, START
from harmony_agent.errors import (
    ConfigurationError,
    ContextOverflowError,
    EngineError,
    EngineRequestError,
    EngineTimeoutError,
    EngineUnavailableError,
)

from ._llama_grammar import FINAL_TRIGGER, final_answer_grammar, harden_json_grammar
from ._structured import FINAL_HEADERS, prompt_in_final
from .base import Chunk, Engine, GenerationRequest, TokenUsage

__all__ = ["LLAMA_STOP_TOKEN_IDS", "LlamaServerEngine"]

#: the end-of-generation set of a gpt-oss GGUF: what llama.cpp stops on by itself
LLAMA_STOP_TOKEN_IDS: frozenset[int] = frozenset({RETURN, CALL, ENDOFTEXT})
#: sampling that gpt-oss wants, sent unless the caller overrides it
GPT_OSS_SAMPLING: dict[str, float] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repeat_penalty": 1.0,
}
#: Harmony markup that a gpt-oss GGUF must tokenize to the ids of our encoding
HARMONY_PROBE = "<|start|>assistant<|channel|>final<|message|>hi<|end|><|call|><|return|>"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_SESSIONS = 4096
_MAX_GAP_BYTES = 64
_MAX_GRAMMARS = 64
#: llama.cpp's grammar trigger type for a regular expression searched in the generated text
_TRIGGER_PATTERN = 2


class _Retryable(Exception):
    """A failure before the first token: worth another try."""

    def __init__(self, error: EngineError | ContextOverflowError) -> None:
        self.error = error


class _Gap(Exception):
    """The stream lost ids that its text cannot rebuild exactly."""

    def __init__(self, missing: int, text: str) -> None:
        self.missing = missing
        self.text = text


class LlamaServerEngine(Engine):
    """llama.cpp's ``llama-server`` through its native token-id ``/completion`` endpoint."""

    #: a lazy grammar holds final-channel answers only, whatever the prompt
    constrains_output = True

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        stream: bool = True,
        sampling: dict[str, float] | None = None,
        slot_affinity: bool = True,
        check_model: bool = True,
        gap_fallback: bool = True,
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
                "(e.g. http://127.0.0.1:8080, where llama-server listens by default)"
            )
        unknown = set(sampling or {}) - set(GPT_OSS_SAMPLING)
        if unknown:
            raise ConfigurationError(
                f"unknown sampling settings {sorted(unknown)}; the ones llama-server takes "
                f"here are {sorted(GPT_OSS_SAMPLING)} (temperature/top_p/seed per request)"
            )
        base = base_url.rstrip("/")
        # the native endpoints live at the root; /v1 is the OpenAI-style route without ids
        self.base_url = base[: -len("/v1")] if base.endswith("/v1") else base
        self.stream = stream
        self.sampling = {**GPT_OSS_SAMPLING, **(sampling or {})}
        self.slot_affinity = slot_affinity
        self.check_model = check_model
        self.gap_fallback = gap_fallback
        self.first_token_timeout = first_token_timeout
        self.token_timeout = token_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.context_window = context_window
        self.extra_body = extra_body or {}
        self.props: dict[str, Any] | None = None  # what /props said at first use
        self.lora_adapters: list[dict[str, Any]] = []  # what /lora-adapters said at first use
        self._headers = {"accept": "text/event-stream" if stream else "application/json"}
        self._headers.update(headers or {})
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=None, write=connect_timeout, pool=None
        )
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_lock = anyio.Lock()
        self._check_lock = anyio.Lock()
        self._checked = False
        self._slots: OrderedDict[str, int] = OrderedDict()  # session id -> id_slot
        self._grammars: OrderedDict[str, str] = OrderedDict()  # schema -> its JSON grammar

    # --- plumbing --------------------------------------------------------------------------

    async def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:  # loading the CA bundle takes 40-60 ms: off the loop
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

    def slot_of(self, session_id: str) -> int | None:
        """The llama-server slot a session is pinned to (None before its first response)."""
        return self._slots.get(session_id)

    async def _get_json(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base_url + path
        client = await self._http()
        try:
            if body is None:
                response = await client.get(url, headers=self._headers, timeout=30)
            else:
                response = await client.post(url, json=body, headers=self._headers, timeout=30)
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(
                f"cannot reach {url}: {type(exc).__name__}: {exc}. Is llama-server running? "
                "Start it with `llama-server -m gpt-oss-20b-mxfp4.gguf --port 8080`."
            ) from exc
        if response.status_code == 503:
            raise EngineUnavailableError(f"{url} answered 503: llama-server is still loading")
        if response.status_code != 200:
            raise EngineRequestError(
                f"{url} answered {response.status_code} ({_message(response.text)}): "
                f"{self.base_url} is not a llama-server. Point LlamaServerEngine at "
                "llama.cpp's llama-server (for vLLM or an OpenAI-compatible server use "
                "OpenAICompatibleEngine)."
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise EngineRequestError(
                f"{url} did not answer JSON ({response.text[:200]!r}): {self.base_url} is not "
                "a llama-server"
            )
        return data

    async def _check(self) -> None:
        """Once: is this llama-server, and does it serve a gpt-oss GGUF?"""
        if self._checked:
            return
        async with self._check_lock:
            if self._checked:
                return
            props = await self._get_json("/props")
            if "total_slots" not in props or "default_generation_settings" not in props:
                raise EngineRequestError(
                    f"{self.base_url}/props does not look like llama-server's (no total_slots): "
                    "point LlamaServerEngine at llama.cpp's llama-server"
                )
            self.props = props
            n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
            if self.context_window is None and isinstance(n_ctx, int) and n_ctx > 0:
                self.context_window = n_ctx
            if self.check_model:
                from harmony_agent._encoding import load_encoding

                expected = load_encoding().encode(HARMONY_PROBE, allowed_special="all")
                got = (await self._get_json("/tokenize", {"content": HARMONY_PROBE})).get("tokens")
                if got != expected:
                    raise EngineRequestError(
                        f"the model llama-server loaded ({props.get('model_path')}) is not "
                        f"gpt-oss: it tokenizes the Harmony markup {HARMONY_PROBE!r} as {got}, "
                        f"gpt-oss's o200k_harmony as {expected}. Load a gpt-oss GGUF "
                        "(e.g. gpt-oss-20b-mxfp4.gguf), or pass check_model=False."
                    )
            self.lora_adapters = await self._adapters()
            self._checked = True

    async def _adapters(self) -> list[dict[str, Any]]:
        """The LoRA adapters the server loaded (``GET /lora-adapters``; none when it has no
        such endpoint)."""
        client = await self._http()
        url = self.base_url + "/lora-adapters"
        try:
            response = await client.get(url, headers=self._headers, timeout=30)
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(
                f"cannot reach {url}: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code != 200:
            return []
        try:
            data = response.json()
        except ValueError:
            return []
        if not isinstance(data, list):
            return []
        return [a for a in data if isinstance(a, dict) and isinstance(a.get("id"), int)]

    def _lora(self, adapter: str | None) -> list[dict[str, Any]] | None:
        """The per-request ``lora`` field: every loaded adapter's scale (None: none loaded)."""
        if adapter is None and not self.lora_adapters:
            return None
        chosen = None
        if adapter is not None:
            matches = [a["id"] for a in self.lora_adapters if adapter in _adapter_names(a)]
            if not matches:
                loaded = ", ".join(repr(_adapter_names(a)[0]) for a in self.lora_adapters)
                error = EngineRequestError(
                    f"{self.base_url} has no LoRA adapter {adapter!r} loaded "
                    f"({'its adapters: ' + loaded if loaded else 'it loaded none'}); start "
                    f"llama-server with --lora {adapter}.gguf (and --lora-init-without-apply, "
                    "so requests without an adapter get the base model), or pick a loaded one"
                )
                error.settings = ("adapter",)
                raise error
            chosen = matches[0]
        return [
            {"id": a["id"], "scale": 1.0 if a["id"] == chosen else 0.0} for a in self.lora_adapters
        ]

    def _body(
        self, request: GenerationRequest, n_predict: int, grammar: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": list(request.prompt_ids),
            "n_predict": n_predict,
            "stream": self.stream,
            "return_tokens": True,
            "cache_prompt": True,
            **self.sampling,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.seed is not None:
            body["seed"] = request.seed
        if self.slot_affinity and request.session_id in self._slots:
            body["id_slot"] = self._slots[request.session_id]
        lora = self._lora(request.adapter)
        if lora is not None:
            body["lora"] = lora
        body.update(self.extra_body)
        if grammar is not None:
            body.update(grammar)
        return body

    # --- structured final answers ----------------------------------------------------------

    async def _json_grammar(self, schema: dict[str, Any]) -> str:
        """The schema as llama-server's own converter writes it (GBNF), strings hardened.

        llama-server has no conversion endpoint, but a request with ``json_schema`` reports
        the grammar it built in ``generation_settings``: one single-token request per schema
        (then cached)."""
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        cached = self._grammars.get(key)
        if cached is not None:
            self._grammars.move_to_end(key)
            return cached
        url = f"{self.base_url}/completion"
        body = {"prompt": [START], "n_predict": 0, "json_schema": schema, "cache_prompt": False}
        client = await self._http()
        try:
            response = await client.post(url, json=body, headers=self._headers, timeout=60)
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(
                f"cannot reach {url} to convert the output schema: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code == 400 and "json_schema" in response.text:
            raise ConfigurationError(
                f"llama-server cannot turn the output schema into a grammar: "
                f"{_message(response.text)}. Simplify the output type (no '$ref' outside "
                "'#/$defs', no unsupported keywords) or use a vLLM engine."
            )
        if response.status_code != 200:
            error = self._status_error(
                url, response.status_code, response.text, GenerationRequest([START], 1)
            )
            raise error
        data = _json(response.text, self.base_url)
        grammar = (data.get("generation_settings") or {}).get("grammar")
        if not isinstance(grammar, str) or not grammar.strip():
            raise EngineRequestError(
                f"{self.base_url} did not report the grammar it built from the output schema "
                "(no generation_settings.grammar): this llama-server is too old for "
                "structured answers; update llama.cpp or drop the output type"
            )
        if grammar.startswith("%llguidance"):
            raise EngineRequestError(
                f"{self.base_url} was built with LLGuidance, whose schema grammars cannot be "
                "triggered by the final-channel header here; use a llama-server built "
                "without LLAMA_LLGUIDANCE or drop the output type"
            )
        try:
            hardened = harden_json_grammar(grammar)
        except ValueError as exc:
            raise EngineRequestError(
                f"{self.base_url} built an unexpected grammar from the output schema: {exc}"
            ) from None
        self._grammars[key] = hardened
        while len(self._grammars) > _MAX_GRAMMARS:
            self._grammars.popitem(last=False)
        return hardened

    async def _grammar_fields(self, request: GenerationRequest) -> dict[str, Any] | None:
        """The body fields that hold the request's final answer to its output schema."""
        if request.output_schema is None:
            return None
        grammar = await self._json_grammar(request.output_schema)
        if prompt_in_final(request.prompt_ids):
            fields: dict[str, Any] = {"grammar": grammar}  # in the final message: JSON from here
        else:
            fields = {
                "grammar": final_answer_grammar(grammar),
                "grammar_lazy": True,
                "grammar_triggers": [{"type": _TRIGGER_PATTERN, "value": FINAL_TRIGGER}],
            }
        return fields

    def _remember_slot(self, session_id: str | None, slot: Any) -> None:
        if not (self.slot_affinity and session_id and isinstance(slot, int) and slot >= 0):
            return
        self._slots[session_id] = slot
        self._slots.move_to_end(session_id)
        while len(self._slots) > _MAX_SESSIONS:
            self._slots.popitem(last=False)

    async def _rest_grammar(
        self, request: GenerationRequest, rest: GenerationRequest, received: list[int]
    ) -> dict[str, Any] | None:
        """The grammar of the request that samples the rest after a stream gap: the same one
        while no final header has begun, the JSON alone right after one, and none possible
        inside the answer (a grammar cannot start in the middle of the JSON)."""
        if request.output_schema is None:
            return None
        if prompt_in_final(rest.prompt_ids):
            return await self._grammar_fields(rest)
        from harmony_agent._encoding import load_encoding

        text = load_encoding().decode(received)
        started = prompt_in_final(request.prompt_ids) or any(h in text for h in FINAL_HEADERS)
        split = any(text.endswith(h[:i]) for h in FINAL_HEADERS for i in range(1, len(h)))
        if started or split:
            raise EngineError(
                "llama-server did not stream some sampled token ids (an incomplete UTF-8 "
                "character) inside a structured final answer, and its grammar cannot resume "
                "in the middle of the answer; use LlamaServerEngine(stream=False) for "
                "structured answers with such characters"
            )
        return await self._grammar_fields(rest)

    # --- the contract ----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        outside = sorted(set(request.stop_token_ids) - LLAMA_STOP_TOKEN_IDS)
        if outside:
            raise EngineRequestError(
                f"llama-server cannot stop on token ids {outside}: it has no stop-id field and "
                "ends generation only on the GGUF's end-of-generation tokens "
                f"{sorted(LLAMA_STOP_TOKEN_IDS)} (<|return|>, <|call|>, <|endoftext|>). "
                "Drop those ids from stop_token_ids, or use a vLLM engine."
            )
        if request.constraint is not None:
            raise EngineRequestError(
                "raw structured-output constraints are not supported by LlamaServerEngine; "
                "drop the constraint, or give the agent an output_type (which this engine "
                "holds to its schema with a lazy grammar)"
            )
        await self._check()
        grammar = await self._grammar_fields(request)
        n_predict = request.max_tokens
        if self.context_window is not None:
            room = self.context_window - len(request.prompt_ids)
            if room < 1:
                raise ContextOverflowError(
                    f"the prompt is {len(request.prompt_ids)} tokens and llama-server's slots "
                    f"hold {self.context_window} (-c / -np); start a new run or shorten the "
                    "tool outputs"
                )
            n_predict = min(n_predict, room)
        attempt = 0
        while True:
            body = self._body(request, n_predict, grammar)
            received: list[int] = []  # the ids yielded so far
            try:
                async with aclosing(self._attempt(body, request, received, self.stream)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            except _Gap as gap:
                if self.gap_fallback is False:
                    raise EngineError(
                        f"llama-server did not stream {gap.missing} sampled token id(s) (an "
                        f"incomplete UTF-8 character; text {gap.text!r}) and they cannot be "
                        "rebuilt exactly; use LlamaServerEngine(stream=False) or leave "
                        "gap_fallback on"
                    ) from None
                break
            except _Retryable as retry:
                if received or attempt >= self.max_retries:
                    raise retry.error from None
                if "id_slot" in body and isinstance(retry.error, EngineRequestError):
                    self._slots.pop(request.session_id or "", None)  # a stale pin: drop it
                else:
                    await anyio.sleep(self.retry_backoff * 2**attempt)
                attempt += 1
        # The stream lost ids it cannot rebuild. Everything yielded so far is exact, so the rest
        # is sampled again from there without streaming (complete ids): each id of the
        # transcript is still what the model sampled after exactly the ids before it.
        rest = GenerationRequest(
            prompt_ids=[*request.prompt_ids, *received],
            max_tokens=n_predict - len(received),
            stop_token_ids=request.stop_token_ids,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            output_schema=request.output_schema,
            session_id=request.session_id,
            adapter=request.adapter,
        )
        body = self._body(rest, rest.max_tokens, await self._rest_grammar(request, rest, received))
        body["stream"] = False
        try:
            async with aclosing(self._attempt(body, request, list(received), False)) as chunks:
                async for chunk in chunks:
                    if chunk.usage is not None:  # counted against the original request
                        cached = chunk.usage.cached_prompt_tokens
                        chunk = replace(
                            chunk,
                            usage=TokenUsage(
                                prompt_tokens=len(request.prompt_ids),
                                output_tokens=len(received) + chunk.usage.output_tokens,
                                cached_prompt_tokens=None
                                if cached is None
                                else min(cached, len(request.prompt_ids)),
                            ),
                        )
                    yield chunk
        except _Retryable as retry:
            raise retry.error from None
        except _Gap:
            raise EngineError(
                f"{self.base_url} answered a non-streaming request with fewer token ids than "
                "it says it sampled; check llama-server's version and log"
            ) from None

    async def _attempt(
        self, body: dict[str, Any], request: GenerationRequest, received: list[int], stream: bool
    ):
        """One request; ``received`` (the ids before this request's) grows as ids arrive."""
        url = f"{self.base_url}/completion"
        offset = len(received)
        try:
            client = await self._http()
            async with client.stream("POST", url, json=body, headers=self._headers) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")
                    error = self._status_error(url, response.status_code, text, request)
                    if response.status_code in _RETRY_STATUS or (
                        "id_slot" in body and response.status_code == 400 and "slot" in text
                    ):
                        raise _Retryable(error)
                    raise error
                events = self._sse(response) if stream else self._whole(response)
                async with aclosing(events) as parts:
                    async for event in parts:
                        if "error" in event and "tokens" not in event:
                            raise EngineRequestError(
                                f"{url} reported an error mid-stream: {_message(event)}"
                            )
                        ids = await self._event_ids(event, len(received) - offset, url)
                        received += ids
                        if not event.get("stop"):
                            if ids:
                                yield Chunk(tuple(ids))
                            continue
                        yield self._last(event, ids, received, request, url)
                        return
            raise EngineError(
                f"{url} ended the stream after {len(received)} tokens without a final chunk; "
                "check llama-server's log"
            )
        except httpx.ConnectError as exc:
            raise _Retryable(
                EngineUnavailableError(
                    f"cannot connect to {url}: {exc}. Is llama-server running and the URL "
                    "right? (`llama-server -m gpt-oss-20b-mxfp4.gguf`, then --engine "
                    "llama-server:http://HOST:8080)"
                )
            ) from exc
        except httpx.ConnectTimeout as exc:
            raise _Retryable(
                EngineTimeoutError(f"connecting to {url} timed out; is the host reachable?")
            ) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            error = EngineError(
                f"the connection to {url} broke after {len(received)} tokens "
                f"({type(exc).__name__}: {exc}); check llama-server's log"
            )
            if not received:
                raise _Retryable(error) from exc
            raise error from exc

    async def _event_ids(self, event: dict[str, Any], before: int, url: str) -> list[int]:
        """The ids of one event, with ids llama-server skipped (the UTF-8 gap) put back."""
        tokens = event.get("tokens")
        if not isinstance(tokens, list):
            raise EngineRequestError(
                f"{url} sent a chunk without token ids ({json.dumps(event)[:200]}): not a "
                "llama-server that returns `tokens` (llama.cpp b4400 or newer is needed)"
            )
        ids = [int(t) for t in tokens]
        predicted = event.get("tokens_predicted")
        if not isinstance(predicted, int):
            return ids
        missing = predicted - before - len(ids)
        if missing <= 0:
            return ids
        text = event.get("content")
        text = text if isinstance(text, str) else ""
        if event.get("stop") and not ids:
            raise _Gap(missing, text)  # the last ids never came, and no text names them
        repaired = await anyio.to_thread.run_sync(_repair, text, ids, missing)
        if repaired is None:
            raise _Gap(missing, text)
        return repaired

    async def _sse(self, response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
        reads = response.aiter_bytes()
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
                    "llama-server is stalled or overloaded (raise first_token_timeout / "
                    "token_timeout if it is just slow)"
                ) from None
            buffer += data.replace(b"\r\n", b"\n")
            *complete, buffer = buffer.split(b"\n\n")
            for event in complete:
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        first = False
                        yield _json(line[5:].strip().decode(), self.base_url)
        for line in buffer.split(b"\n"):
            if line.startswith(b"data:"):
                yield _json(line[5:].strip().decode(), self.base_url)

    async def _whole(self, response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
        with anyio.fail_after(self.first_token_timeout):
            data = _json((await response.aread()).decode(errors="replace"), self.base_url)
        yield data

    def _last(
        self,
        event: dict[str, Any],
        ids: list[int],
        received: list[int],
        request: GenerationRequest,
        url: str,
    ) -> Chunk:
        stop_type = event.get("stop_type")
        if stop_type == "eos":
            if not received or received[-1] not in LLAMA_STOP_TOKEN_IDS:
                raise EngineError(
                    f"{url} reported an end-of-generation stop but the last id is "
                    f"{received[-1:] or 'missing'}; the transcript cannot be trusted"
                )
            reason, stop_id = "stop", received[-1]
        elif stop_type == "limit":
            reason, stop_id = "length", None
        else:
            raise EngineError(
                f"{url} ended the completion with stop_type {stop_type!r} "
                f"({event.get('stopping_word')!r}); expected 'eos' or 'limit'. Do not pass "
                "stop strings through extra_body."
            )
        self._remember_slot(request.session_id, event.get("id_slot"))
        timings = event.get("timings") or {}
        cached = timings.get("cache_n")
        usage = TokenUsage(
            prompt_tokens=int(event.get("tokens_evaluated") or len(request.prompt_ids)),
            output_tokens=int(event.get("tokens_predicted") or len(received)),
            cached_prompt_tokens=int(cached) if isinstance(cached, int) else None,
        )
        return Chunk(tuple(ids), reason, stop_id, usage)  # type: ignore[arg-type]

    def _status_error(
        self, url: str, status: int, text: str, request: GenerationRequest
    ) -> EngineError | ContextOverflowError:
        message = _message(text)
        kind = _error_type(text)
        if kind == "exceed_context_size_error":
            return ContextOverflowError(
                f"the prompt ({len(request.prompt_ids)} tokens) does not fit llama-server's "
                f"slot context: {message}. Start llama-server with a larger -c (or fewer -np), "
                "or start a new run"
            )
        if status == 404:
            return EngineRequestError(
                f"{url} answered 404 ({message}): {self.base_url} has no native /completion "
                "endpoint, so it is not llama-server. For vLLM or another OpenAI-compatible "
                "server use OpenAICompatibleEngine (--engine http://HOST:PORT/v1)."
            )
        if status in (401, 403):
            return EngineRequestError(
                f"{url} refused the request ({status}: {message}); llama-server was started "
                "with --api-key: pass headers={'authorization': 'Bearer KEY'}"
            )
        if status in _RETRY_STATUS:
            return EngineUnavailableError(f"{url} failed with {status}: {message}")
        return EngineRequestError(f"{url} rejected the request ({status}): {message}")


# --- the UTF-8 gap ---------------------------------------------------------------------------


@functools.cache
def _vocabulary() -> tuple[dict[int, bytes], dict[bytes, int]]:
    """o200k's token bytes both ways (the bundled ``o200k_base.tiktoken``: base64 and rank)."""
    from harmony_agent._encoding import VOCAB_FILE, load_encoding

    load_encoding()  # unpacks the file and sets TIKTOKEN_ENCODINGS_BASE
    by_id: dict[int, bytes] = {}
    path = Path(os.environ["TIKTOKEN_ENCODINGS_BASE"]) / VOCAB_FILE
    with path.open("rb") as f:
        for line in f:
            token, rank = line.split()
            by_id[int(rank)] = base64.b64decode(token)
    return by_id, {b: i for i, b in by_id.items()}


def _repair(text: str, ids: list[int], missing: int) -> list[int] | None:
    """``ids`` with the ``missing`` ids before them rebuilt from the chunk's text, or None.

    The chunk's text holds the bytes of the skipped tokens followed by those of ``ids``. The
    skipped bytes are split into exactly ``missing`` vocabulary tokens; only a unique split is
    exact (o200k maps every byte string to at most one id, so one missing id always is)."""
    by_id, by_bytes = _vocabulary()
    data = text.encode()
    tail = b"".join(by_id.get(t, b"") for t in ids)
    if not data.endswith(tail):
        return None
    gap = data[: len(data) - len(tail)]
    if not gap or len(gap) > _MAX_GAP_BYTES:
        return None
    found: list[list[int]] = []

    def split(rest: bytes, left: int, acc: list[int]) -> None:
        if len(found) > 1:
            return
        if left == 0:
            if not rest:
                found.append(list(acc))
            return
        for cut in range(1, len(rest) - left + 2):
            token = by_bytes.get(rest[:cut])
            if token is not None:
                split(rest[cut:], left - 1, [*acc, token])

    split(gap, missing, [])
    return [*found[0], *ids] if len(found) == 1 else None


# --- responses -------------------------------------------------------------------------------


def _adapter_names(adapter: dict[str, Any]) -> tuple[str, ...]:
    """The names a loaded adapter answers to: its file's name without and with ``.gguf``, and
    the path the server was given."""
    path = str(adapter.get("path") or "")
    name = Path(path).name
    stem = name[: -len(".gguf")] if name.endswith(".gguf") else name
    return tuple(dict.fromkeys(n for n in (stem, name, path) if n)) or (f"#{adapter['id']}",)


def _json(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise EngineRequestError(
            f"{where} sent something that is not JSON: {text[:200]!r}; is it llama-server?"
        ) from None
    if not isinstance(data, dict):
        raise EngineRequestError(f"{where} sent an unexpected response: {text[:200]!r}")
    return data


def _parsed_error(source: str | dict[str, Any]) -> Any:
    if isinstance(source, dict):
        return source.get("error", source)
    try:
        data = json.loads(source)
    except json.JSONDecodeError:
        return source.strip()[:500]
    return data.get("error", data) if isinstance(data, dict) else data


def _message(source: str | dict[str, Any]) -> str:
    error = _parsed_error(source)
    if isinstance(error, dict):
        return str(error.get("message") or error)[:500]
    return str(error)[:500]


def _error_type(source: str) -> str | None:
    error = _parsed_error(source)
    return error.get("type") if isinstance(error, dict) else None
