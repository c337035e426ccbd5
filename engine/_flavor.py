"""The wire dialects of OpenAI-compatible ``/completions`` servers, as data.

Every server takes the prompt as token ids and streams SSE; they differ in how stop tokens
are named, which fields ask for the sampled ids, how a session is kept on one replica and
where cached-token counts come back. A new server is a new :class:`Flavor` value in
:data:`FLAVORS`, not a new branch in the engine.

A server that silently ignores body fields it does not know (SGLang: its request model is a
plain pydantic model, ``extra="ignore"``) lists the fields it takes in
:attr:`Flavor.accepted_fields`; a request with any other field is refused before it is sent,
so nothing the caller set is dropped on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harmony_agent._tokens import STOP_STRINGS
from harmony_agent.errors import ConfigurationError

from ._structured import constraint_for, prompt_in_final, vllm_structured_outputs
from .base import GenerationRequest

__all__ = ["FIREWORKS", "FLAVORS", "SGLANG", "VLLM", "Flavor"]

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
    #: the headers (and body field, when not None) that keep a session on one replica; the
    #: engine's ``affinity_headers=`` replaces the headers
    session_headers: tuple[str, ...] = ("X-Session-ID",)
    session_field: str | None = None
    #: the body field for the caller's request id (None: the server takes none)
    request_id_field: str | None = None
    #: whether ``/models`` reports the context window (``max_model_len``)
    models_report_context: bool = False
    #: a response header with the cached prompt tokens, besides ``usage``
    cached_tokens_header: str | None = None
    #: the choice field naming what stopped a completion: a token id, or the stop string
    stop_reason_field: str = "stop_reason"
    #: whether the server takes ``cache_salt`` (a prefix-cache namespace per tenant)
    takes_cache_salt: bool = False
    #: the body fields the server takes; None: it rejects unknown fields itself (or the
    #: caller's extra fields are not checked). A server that drops unknown fields silently
    #: must list them, so a request never carries a field the server would not apply.
    accepted_fields: frozenset[str] | None = None
    #: for a refused field, what to do instead (field → advice)
    field_advice: Mapping[str, str] = field(default_factory=dict)
    #: a pattern of the server's 400 message for a prompt longer than its context window
    overflow_message: str | None = None
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

    def headers(
        self, request: GenerationRequest, names: Sequence[str] | None = None
    ) -> dict[str, str]:
        """Per-request headers: the session id under each affinity header (``names``, else
        this flavor's own)."""
        if not request.session_id:
            return {}
        return dict.fromkeys(self.session_headers if names is None else names, request.session_id)

    def check_fields(self, fields: Iterable[str], where: str = "the request") -> None:
        """Refuse any field the server would drop without a word (see ``accepted_fields``)."""
        if self.accepted_fields is None:
            return
        dropped = sorted(set(fields) - self.accepted_fields)
        if not dropped:
            return
        advice = "; ".join(self.field_advice[f] for f in dropped if f in self.field_advice)
        one = len(dropped) == 1
        raise ConfigurationError(
            f"{where} has the field{'' if one else 's'} {', '.join(map(repr, dropped))}, which "
            f"a {self.name} server does not take: it would ignore {'it' if one else 'them'} "
            "silently and run the request as if "
            f"{'it were' if one else 'they were'} not set. Remove {'it' if one else 'them'}"
            + (f" ({advice})" if advice else "")
            + f"; the fields {self.name} takes are {self.name.upper()}.accepted_fields in "
            "harmony_agent.engine._flavor"
        )


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
    session_headers=("X-Session-ID",),
    request_id_field="request_id",
    models_report_context=True,
    takes_cache_salt=True,
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
    session_headers=("x-session-affinity",),
    session_field="prompt_cache_key",
    cached_tokens_header="fireworks-cached-prompt-tokens",
    adapter_hint="on Fireworks the adapter is a fine-tuned model: check its path "
    "(accounts/ACCOUNT/models/NAME) and that it is deployed for serverless or on your deployment",
)


def _sglang_constraint(schema: dict[str, Any], prompt_ids: Sequence[int]) -> tuple[str, Any]:
    # SGLang takes xgrammar's structural tag as a response format and, on /v1/completions,
    # applies it from the first sampled token, as vLLM does: the same triggered tag holds only
    # final-channel messages (or the whole output when the prompt already opened one).
    return "response_format", constraint_for(schema, prompt_ids)


#: the body fields of SGLang's ``CompletionRequest`` (``sglang/srt/entrypoints/openai/
#: protocol.py``, 0.5.23, with the routing fields of its base ``PDRoutingFields``). Anything
#: else it ignores without a word.
_SGLANG_FIELDS = frozenset(
    {
        # OpenAI's
        "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
        "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options",
        "suffix", "temperature", "top_p", "user",
        # SGLang's
        "return_hidden_states", "return_routed_experts", "routed_experts_start_len",
        "return_cached_tokens_details", "return_spec_tokens_details", "return_token_ids",
        "top_k", "min_p", "min_tokens", "json_schema", "regex", "ebnf", "repetition_penalty",
        "stop_token_ids", "stop_regex", "no_stop_trim", "ignore_eos", "skip_special_tokens",
        "lora_path", "session_id", "session_params", "response_format", "custom_params",
        "custom_logit_processor", "watermark", "images_config", "mm_processor_kwargs",
        "data_parallel_rank", "rid", "extra_key", "cache_salt", "priority", "custom_labels",
        # PDRoutingFields
        "bootstrap_host", "bootstrap_port", "bootstrap_room", "routed_dp_rank",
        "disagg_prefill_dp_rank",
    }
)  # fmt: skip

# SGLang >= 0.5.23: the sampled ids come back as ``choices[].token_ids`` (deltas while
# streaming), what stopped a completion as ``matched_stop`` (the id, or the stop string),
# cached prompt tokens in ``usage.prompt_tokens_details`` only when the server runs with
# --enable-cache-report, and ``/v1/models`` reports ``max_model_len``. Its model gateway
# routes a session by the X-SMG-Routing-Key header (the server reads it too). Its first chunk
# also echoes the prompt's ids (``prompt_token_ids``): about 8 bytes a token, one event line
# of about 1 MB at 131k tokens, inside the engine's line limit (max_line_bytes, 4 MiB).
SGLANG = Flavor(
    name="sglang",
    stop="ids",
    fixed={"return_token_ids": True, "skip_special_tokens": False},
    fixed_streaming={"stream_options": {"include_usage": True}},
    constraint_field="response_format",
    output_constraint=_sglang_constraint,
    constrains_turns=True,
    session_headers=("X-SMG-Routing-Key",),
    request_id_field="rid",
    models_report_context=True,
    stop_reason_field="matched_stop",
    takes_cache_salt=True,
    adapter_field="lora_path",
    adapter_hint="start SGLang with the adapter: --enable-lora --lora-paths NAME=/path/to/adapter",
    accepted_fields=_SGLANG_FIELDS,
    field_advice={
        "structured_outputs": "SGLang takes a constraint as response_format: "
        '{"type": "json_schema", ...} or {"type": "structural_tag", "format": ...}',
        "guided_json": "use response_format with a json_schema, or json_schema",
        "request_id": "SGLang's request id field is rid",
        "return_tokens_as_token_ids": "SGLang's logprobs come without it",
        "prompt_cache_key": "use cache_salt= or the affinity headers",
    },
    overflow_message=r"longer than the model's context length|exceeds the model's maximum context length",
)

FLAVORS: dict[str, Flavor] = {f.name: f for f in (VLLM, FIREWORKS, SGLANG)}
