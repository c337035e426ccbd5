"""A stand-in for SGLang's OpenAI-compatible server (0.5.23) on 127.0.0.1, for engine tests.

It reproduces the shapes of ``sglang/srt/entrypoints/openai/{protocol,serving_completions}.py``
and ``http_server.py``, not a model: each completion walks a planted reply (``replies``, one
per request; the last repeats) the way SGLang's scheduler walks sampled ids:

- it stops at the first id in ``stop_token_ids`` or in the model's own end-of-sequence ids
  (``finish_reason: "stop"``, ``matched_stop`` the id), or at ``max_tokens`` (``"length"``,
  ``matched_stop: null``); the ids come back as ``choices[].token_ids`` only when the request
  has ``return_token_ids: true`` (deltas while streaming, the prompt's ids as
  ``prompt_token_ids`` on the first chunk), and they end with the matched stop id, as SGLang's
  ``output_ids`` do (``trim_stop=True`` drops it, to check the engine puts it back);
- streaming ends with a usage chunk only when ``stream_options.include_usage`` is set, then
  ``[DONE]``; ``usage.prompt_tokens_details.cached_tokens`` comes only with ``cache_report``
  (the server's ``--enable-cache-report``) and counts the prompt's longest prefix shared
  with an earlier request's prompt and output (a radix cache in one line);
- a prompt of ``context_len`` tokens or more is refused with 400 and SGLang's error body
  (``{"object": "error", "message": "The input (N tokens) is longer than the model's context
  length (M tokens).", "type": "BadRequest", "param": null, "code": 400}``);
- ``response_format`` is read as SGLang reads it (a json_schema needs its ``schema``, a
  structural tag its ``format``; 400 otherwise);
- like SGLang's pydantic request model (``extra="ignore"``), **unknown body fields are
  ignored without a word**, so a test can tell that the engine refused them, not the server.

``plan`` (the last one repeats) also has ``status:CODE`` (that error status, SGLang's body)
and ``error_mid`` (two chunks, then SGLang's streamed error event). ``pods`` and
``llm_d=True`` put an llm-d-like scheduler in front: a request without an
``x-session-token`` goes to the next pod and the response names it in that header; a
request that echoes the token goes to the pod it names. ``served_by`` records the pod of
each request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from harmony_agent._encoding import load_encoding
from harmony_agent._tokens import MODEL_STOP_TOKEN_IDS

ENC = load_encoding()


@dataclass
class FakeSGLang:
    replies: list[list[int]]
    model: str = "openai/gpt-oss-20b"
    context_len: int = 131072
    cache_report: bool = True
    trim_stop: bool = False
    plan: list[str] = field(default_factory=lambda: ["ok"])
    pods: int = 1
    llm_d: bool = False
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    served_by: list[str] = field(default_factory=list)
    _seen: list[list[int]] = field(default_factory=list)
    _next_pod: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- helpers ---------------------------------------------------------------------------

    def _error(self, message: str, status: int = 400, kind: str = "BadRequest") -> web.Response:
        body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
        return web.json_response(body, status=status)

    def _pick(self, *lists: list[str]) -> str:
        return lists[0].pop(0) if len(lists[0]) > 1 else lists[0][0]

    def _cached(self, prompt: list[int]) -> int:
        best = 0
        for seen in self._seen:
            n = 0
            for a, b in zip(prompt, seen, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        return best

    def _route(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """The pod that serves the request, and the response headers naming it (llm-d)."""
        token = request.headers.get("x-session-token")
        if self.llm_d and token:
            return base64.b64decode(token).decode(), {}
        pod = f"default/gpt-oss-{self._next_pod % self.pods}"
        self._next_pod += 1
        if not self.llm_d:
            return pod, {}
        return pod, {"x-session-token": base64.b64encode(pod.encode()).decode()}

    def _sample(self, body: dict[str, Any]) -> tuple[list[int], str, int | None]:
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        stops = {*(body.get("stop_token_ids") or ()), *MODEL_STOP_TOKEN_IDS}
        max_tokens = body.get("max_tokens", 16)  # SGLang's default, like OpenAI's
        out: list[int] = []
        for token in reply:
            if len(out) == max_tokens:
                return out, "length", None
            out.append(token)
            if token in stops:
                return out, "stop", token
        return out, "length", None

    # --- endpoints -------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sglang",
            "root": self.model,
            "parent": None,
            "max_model_len": self.context_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error("Invalid JSON body")
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        pod, route_headers = self._route(request)
        self.served_by.append(pod)
        mode = self._pick(self.plan)
        if mode.startswith("status:"):
            code = int(mode.split(":")[1])
            return self._error(f"stand-in failure {code}", code, "InternalServerError")
        prompt = body.get("prompt")
        if not prompt:
            return self._error("Prompt cannot be empty")
        if not isinstance(prompt, list) or not all(type(t) is int for t in prompt):
            return self._error("the stand-in takes token-id prompts only")
        if body.get("max_tokens", 16) <= 0:
            return self._error("max_tokens must be positive")
        if len(prompt) >= self.context_len:
            return self._error(
                f"The input ({len(prompt)} tokens) is longer than the model's context length "
                f"({self.context_len} tokens)."
            )
        form = body.get("response_format")
        if form is not None:
            kind = form.get("type") if isinstance(form, dict) else None
            if kind == "json_schema" and not (form.get("json_schema") or {}).get("schema"):
                return self._error("schema_ is required for json_schema response format request.")
            if kind == "structural_tag" and not (form.get("format") or form.get("structures")):
                return self._error("1 validation error for CompletionRequest: response_format")
            if kind not in ("text", "json_object", "json_schema", "structural_tag"):
                return self._error("1 validation error for CompletionRequest: response_format")

        ids, finish, matched = self._sample(body)
        cached = self._cached(prompt)
        self._seen.append([*prompt, *ids])
        returned = ids[:-1] if self.trim_stop and matched is not None else ids
        usage: dict[str, Any] = {
            "prompt_tokens": len(prompt),
            "total_tokens": len(prompt) + len(ids),
            "completion_tokens": len(ids),
            "reasoning_tokens": 0,
        }
        if self.cache_report:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        want_ids = body.get("return_token_ids") is True
        rid = f"{body.get('rid') or 'cmpl'}"
        if not body.get("stream"):
            choice: dict[str, Any] = {
                "index": 0,
                "text": ENC.decode(returned),
                "logprobs": None,
                "finish_reason": finish,
                "matched_stop": matched,
            }
            if want_ids:
                choice["token_ids"] = returned
                choice["prompt_token_ids"] = prompt
            payload = {
                "id": rid,
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model", "default"),
                "choices": [choice],
                "usage": usage,
                "metadata": None,
            }
            return web.json_response(payload, headers=route_headers)

        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", **route_headers}
        )
        await response.prepare(request)

        async def event(data: dict[str, Any] | str) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            await response.write(f"data: {text}\n\n".encode())

        for i, token in enumerate(returned or [None]):
            last = i == max(len(returned), 1) - 1
            if mode == "error_mid" and i == 2:
                error = {
                    "object": "error",
                    "message": "Generation aborted: out of memory",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
                await event({"error": error})
                break
            piece = [] if token is None else [token]
            choice = {
                "index": 0,
                "text": ENC.decode(piece),
                "logprobs": None,
                "finish_reason": finish if last else None,
                "matched_stop": matched if last else None,
            }
            if want_ids:
                choice["token_ids"] = piece
                if i == 0:
                    choice["prompt_token_ids"] = prompt
            await event(
                {
                    "id": rid,
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": body.get("model", "default"),
                    "choices": [choice],
                }
            )
        else:
            options = body.get("stream_options") or {}
            if options.get("include_usage"):
                await event(
                    {
                        "id": rid,
                        "object": "text_completion",
                        "created": int(time.time()),
                        "model": body.get("model", "default"),
                        "choices": [],
                        "usage": usage,
                    }
                )
        await event("[DONE]")
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serve_sglang(replies: list[list[int]], **settings: Any) -> AsyncIterator[FakeSGLang]:
    """The stand-in, listening on 127.0.0.1 (a free port) for the block's duration."""
    server = FakeSGLang(replies, **settings)
    app = web.Application()
    app.router.add_get("/v1/models", server.models)
    app.router.add_post("/v1/completions", server.completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()
