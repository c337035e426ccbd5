"""The wire dialects of OpenAI-compatible ``/completions`` servers, as data.

Every server takes the prompt as token ids and streams SSE; they differ in how stop tokens
are named, which fields ask for the sampled ids, how a session is kept on one replica and
where cached-token counts come back. A new server is a new :class:`Flavor` value in
:data:`FLAVORS`, not a new branch in the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harmony_agent._tokens import STOP_STRINGS
from harmony_agent.errors import ConfigurationError

from ._structured import prompt_in_final, vllm_structured_outputs
from .base import GenerationRequest

__all__ = ["FIREWORKS", "FLAVORS", "VLLM", "Flavor"]

_STOP_NAMES = {token: name for name, token in STOP_STRINGS.items()}


@dataclass(frozen=True, slots=True)
class Flavor:
    """How one kind of server spells a token-id completion request."""

    name: str
    #: ``"ids"``: ``stop_token_ids``; ``"strings"``: ``stop`` with the tokens' text
    stop: Literal["ids", "strings"]
    #: fields every request carries (on top of model, prompt, max_tokens, stream, sampling)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    #: fields added to streaming requests only
    fixed_streaming: Mapping[str, Any] = field(default_factory=dict)
    #: the body field that carries a structured-output constraint
    constraint_field: str = "structured_outputs"
    #: how a final answer's JSON schema is sent: (schema, prompt ids) → (body field, value);
    #: None: the server cannot constrain decoding
    output_constraint: Callable[[dict[str, Any], Sequence[int]], tuple[str, Any]] | None = None
    #: whether that constraint holds only final-channel messages whatever the prompt (then an
    #: agent's turns can be constrained; else only prompts that already opened the final answer)
    constrains_turns: bool = False
    #: the header (and body field, when not None) that keeps a session on one replica
    session_header: str = "x-session-id"
    session_field: str | None = None
    #: the body field for the caller's request id (None: the server takes none)
    request_id_field: str | None = None
    #: whether ``/models`` reports the context window (``max_model_len``)
    models_report_context: bool = False
    #: a response header with the cached prompt tokens, besides ``usage``
    cached_tokens_header: str | None = None
    #: the body field that names a request's LoRA adapter; None: the adapter's name replaces
    #: ``model`` (vLLM serves each ``--lora-modules`` adapter as a model of its own)
    adapter_field: str | None = None
    #: what to check when the server does not know an adapter (its 404)
    adapter_hint: str = "check that the server serves an adapter of that name"

    def body(self, request: GenerationRequest, model: str, *, stream: bool) -> dict[str, Any]:
        """The JSON body of ``request`` for this server."""
        if request.adapter is not None and self.adapter_field is None:
            model = request.adapter
        body: dict[str, Any] = {
            "model": model,
            "prompt": list(request.prompt_ids),
            "max_tokens": request.max_tokens,
            "stream": stream,
        }
        for key in ("temperature", "top_p", "seed"):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        if self.stop == "ids":
            body["stop_token_ids"] = list(request.stop_token_ids)
        else:
            body["stop"] = [_STOP_NAMES[t] for t in request.stop_token_ids if t in _STOP_NAMES]
        body.update(self.fixed)
        if stream:
            body.update(self.fixed_streaming)
        if request.constraint is not None:
            body[self.constraint_field] = request.constraint
        if request.output_schema is not None:
            if self.output_constraint is None:
                raise ConfigurationError(
                    f"a {self.name} server cannot constrain decoding to a schema; "
                    "leave output_schema unset"
                )
            key, value = self.output_constraint(request.output_schema, request.prompt_ids)
            if key in body:
                raise ConfigurationError(
                    "a request takes a constraint or an output_schema, not both; "
                    "drop the constraint"
                )
            body[key] = value
        if request.session_id and self.session_field:
            body[self.session_field] = request.session_id
        if request.request_id and self.request_id_field:
            body[self.request_id_field] = request.request_id
        if request.adapter is not None and self.adapter_field is not None:
            body[self.adapter_field] = request.adapter
        return body

    def headers(self, request: GenerationRequest) -> dict[str, str]:
        """Per-request headers (session affinity)."""
        return {self.session_header: request.session_id} if request.session_id else {}


def _vllm_constraint(schema: dict[str, Any], prompt_ids: Sequence[int]) -> tuple[str, Any]:
    # a structural tag that starts at the final header; vLLM applies /v1/completions
    # constraints verbatim (from the first sampled token), so the tag carries the trigger
    return "structured_outputs", vllm_structured_outputs(schema, prompt_ids)


def _fireworks_constraint(schema: dict[str, Any], prompt_ids: Sequence[int]) -> tuple[str, Any]:
    # Fireworks' documented JSON mode, which its completions API also takes. It holds the whole
    # output from the first token, so it fits only a prompt that already opened the final
    # message; on any other prompt it would force JSON into the reasoning and tool calls.
    if not prompt_in_final(prompt_ids):
        raise ConfigurationError(
            "fireworks constrains the whole output, not only the final channel: send an "
            "output_schema only with a prompt that ends in <|channel|>final<|message|>"
        )
    return "response_format", {
        "type": "json_schema",
        "json_schema": {"name": str(schema.get("title") or "result"), "schema": schema},
    }


VLLM = Flavor(
    name="vllm",
    stop="ids",
    fixed={"return_token_ids": True, "skip_special_tokens": False},
    fixed_streaming={"stream_options": {"include_usage": True}},
    constraint_field="structured_outputs",
    output_constraint=_vllm_constraint,
    constrains_turns=True,
    session_header="x-session-id",
    request_id_field="request_id",
    models_report_context=True,
    adapter_hint="register it with the server: vllm serve MODEL --enable-lora "
    "--lora-modules NAME=/path/to/adapter (GET /v1/models lists the ones it serves)",
)

# Fireworks takes stop strings only, returns the sampled ids in ``raw_output``, keys its
# prompt cache on ``prompt_cache_key`` and reports cached tokens in a header as well.
FIREWORKS = Flavor(
    name="fireworks",
    stop="strings",
    fixed={"return_token_ids": True, "raw_output": True},
    constraint_field="response_format",
    output_constraint=_fireworks_constraint,
    session_header="x-session-affinity",
    session_field="prompt_cache_key",
    cached_tokens_header="fireworks-cached-prompt-tokens",
    adapter_hint="on Fireworks the adapter is a fine-tuned model: check its path "
    "(accounts/ACCOUNT/models/NAME) and that it is deployed for serverless or on your deployment",
)

FLAVORS: dict[str, Flavor] = {f.name: f for f in (VLLM, FIREWORKS)}
