"""``VLLMEngine``: vLLM in the same process — token ids in, token ids out, no HTTP.

vLLM is imported when the engine starts, never at import time. The defaults serve
gpt-oss-20b on one 80 GB GPU: prefix caching on (the agent's prompts are append-only, so
every turn reuses the previous one's cache), the full 131,072-token context, 90% of the GPU's
memory, no tokenizer (the agent does its own Harmony rendering). Every default can be
overridden with any ``vllm.AsyncEngineArgs`` field.

Example::

    from harmony_agent import Agent
    from harmony_agent.engine import VLLMEngine

    async with VLLMEngine("openai/gpt-oss-20b") as engine:        # on a GPU machine
        result = await Agent(engine=engine).run("Say hi")

LoRA adapters are named when the engine is made and chosen per agent or per run::

    engine = VLLMEngine("openai/gpt-oss-20b", lora_adapters={"support": "/adapters/support"})
    result = await Agent(engine=engine, adapter="support").run("Say hi")
"""

# vLLM is optional and installed in its own environment (make setup-vllm), not in the one the
# type checker runs in: its imports cannot be resolved there.
# pyright: reportMissingImports=false

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Mapping
from os import PathLike
from typing import Any

import anyio
from harmony_agent.errors import (
    ConfigurationError,
    EngineError,
    EngineRequestError,
    EngineUnavailableError,
)

from ._structured import vllm_structured_outputs
from .base import Chunk, Engine, GenerationRequest, TokenUsage

__all__ = ["VLLMEngine"]

GPU_DEFAULTS: dict[str, Any] = {
    "enable_prefix_caching": True,
    "max_model_len": 131_072,
    "gpu_memory_utilization": 0.90,
    "skip_tokenizer_init": True,
}


def _import_vllm() -> Any:
    try:
        import vllm  # noqa: F401
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, SamplingParams
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        error = ConfigurationError(
            f"vLLM is not installed ({exc}). On a GPU machine: pip install 'harmony-agent[vllm]'. "
            "Or use a server (engine http://HOST:PORT/v1, or sglang:http://HOST:30000/v1 for "
            "SGLang), llama.cpp (engine "
            "llama-server:http://HOST:8080 or llamacpp:PATH.gguf) or a scripted model "
            "(engine scripted:FILE)."
        )
        error.settings = ("engine",)
        raise error from exc
    return AsyncEngineArgs, AsyncLLM, SamplingParams, RequestOutputKind, TokensPrompt


class VLLMEngine(Engine):
    """In-process vLLM (``AsyncLLM``) streaming DELTA token ids.

    Structured final answers (``GenerationRequest.output_schema``) are constrained with an
    xgrammar structural tag that starts at the final-channel header. vLLM compiles grammars
    against its tokenizer, so :attr:`constrains_output` holds only when the engine loads one:
    pass ``skip_tokenizer_init=False`` (the model directory must have the tokenizer files).

    ``logprobs=True``: each chunk carries the log probability of every sampled id.

    ``lora_adapters``: LoRA adapters by name (``{"name": "/path/to/peft/adapter"}``, a local
    directory or a Hugging Face repo id). The engine then starts with LoRA enabled
    (``enable_lora``, ``max_loras`` as many as there are adapters, at most 4 at once;
    ``max_lora_rank`` the largest rank of any adapter, vLLM's default 16); a request's
    ``adapter`` picks one by name, and a name the engine was not given is refused before
    sampling. vLLM loads an adapter on its first use.
    """

    def __init__(
        self,
        model: str = "openai/gpt-oss-20b",
        *,
        logprobs: bool = False,
        lora_adapters: Mapping[str, str | PathLike[str]] | None = None,
        max_lora_rank: int | None = None,
        **overrides: Any,
    ) -> None:
        self.model = model
        self.logprobs = logprobs
        self.lora_adapters = _adapters(lora_adapters)
        lora: dict[str, Any] = {}
        if self.lora_adapters:
            lora = {"enable_lora": True, "max_loras": min(len(self.lora_adapters), 4)}
            if max_lora_rank is not None:
                lora["max_lora_rank"] = max_lora_rank
        elif max_lora_rank is not None:
            raise ConfigurationError(
                "max_lora_rank is set but no lora_adapters are given; name the adapters "
                '(lora_adapters={"name": "/path/to/adapter"}) or drop max_lora_rank'
            )
        self.engine_args = {**GPU_DEFAULTS, **lora, **overrides, "model": model}
        self.context_window = self.engine_args.get("max_model_len")
        self.constrains_output = not self.engine_args.get("skip_tokenizer_init", False)
        self._llm: Any = None
        self._lock = anyio.Lock()

    async def start(self) -> None:
        """Load the model (also done on the first request). Takes from seconds to minutes."""
        async with self._lock:
            if self._llm is not None:
                return
            AsyncEngineArgs, AsyncLLM, *_ = _import_vllm()
            if self.lora_adapters:
                _check_lora_platform()
            try:
                args = AsyncEngineArgs(**self.engine_args)
            except TypeError as exc:
                raise ConfigurationError(f"bad vLLM engine argument: {exc}") from exc
            try:
                self._llm = AsyncLLM.from_engine_args(args)
            except Exception as exc:  # vLLM raises plain RuntimeError/ValueError here
                error = EngineUnavailableError(
                    f"vLLM could not start {self.model!r}: {type(exc).__name__}: {exc}. "
                    "gpt-oss-20b needs a GPU with about 16 GB free and the weights (downloaded "
                    "or a local path). Without one, use a server (engine http://HOST:PORT/v1), "
                    "llama.cpp on a smaller GPU or the CPU (engine llama-server:http://HOST:8080 "
                    "or llamacpp:PATH.gguf) or a scripted model (engine scripted:FILE)."
                )
                error.settings = ("engine",)
                raise error from exc

    async def aclose(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await anyio.to_thread.run_sync(llm.shutdown)

    def _params(self, request: GenerationRequest) -> Any:
        _, _, SamplingParams, RequestOutputKind, _ = _import_vllm()
        kwargs: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "stop_token_ids": list(request.stop_token_ids),
            "detokenize": False,
            "output_kind": RequestOutputKind.DELTA,
        }
        for key in ("temperature", "top_p", "seed"):
            value = getattr(request, key)
            if value is not None:
                kwargs[key] = value
        if self.logprobs:
            kwargs["logprobs"] = 0  # the sampled id's own logprob, no alternatives
        if request.constraint is not None and request.output_schema is not None:
            raise ConfigurationError(
                "a request takes a constraint or an output_schema, not both; drop the constraint"
            )
        constraint = request.constraint
        if request.output_schema is not None:
            constraint = vllm_structured_outputs(request.output_schema, request.prompt_ids)
        if constraint is not None:
            try:
                from vllm.sampling_params import StructuredOutputsParams
            except ImportError as exc:
                raise ConfigurationError(
                    "this vLLM has no structured outputs; drop the constraint"
                ) from exc
            kwargs["structured_outputs"] = StructuredOutputsParams(**constraint)
        return SamplingParams(**kwargs)

    def lora_request(self, adapter: str | None) -> Any:
        """vLLM's ``LoRARequest`` for the adapter named ``adapter`` (None: the base model);
        :class:`ConfigurationError` for a name the engine was not given."""
        if adapter is None:
            return None
        if adapter not in self.lora_adapters:
            known = ", ".join(map(repr, self.lora_adapters)) or "none"
            error = ConfigurationError(
                f"the LoRA adapter {adapter!r} is not one this engine serves (its adapters: "
                f"{known}); add it to VLLMEngine(lora_adapters={{{adapter!r}: PATH}}) or pick a "
                "known one"
            )
            error.settings = ("adapter",)
            raise error
        from vllm.lora.request import LoRARequest

        # ids follow the order the adapters were given in: stable for the engine's lifetime,
        # so vLLM's prefix cache (keyed by the adapter's id) is never shared between adapters
        lora_id = list(self.lora_adapters).index(adapter) + 1
        return LoRARequest(adapter, lora_id, self.lora_adapters[adapter])

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        lora = self.lora_request(request.adapter)
        await self.start()
        *_, TokensPrompt = _import_vllm()
        request_id = request.request_id or uuid.uuid4().hex
        request_id = f"{request_id}-{uuid.uuid4().hex[:6]}"  # unique even on a retried turn
        params = self._params(request)
        prompt = TokensPrompt(prompt_token_ids=list(request.prompt_ids))
        finished = False
        produced = 0
        try:
            async for out in self._llm.generate(
                prompt, params, request_id=request_id, lora_request=lora
            ):
                completion = out.outputs[0]
                ids = tuple(completion.token_ids)
                produced += len(ids)
                lps = _logprobs(ids, completion.logprobs) if self.logprobs else None
                if not out.finished:
                    if ids:
                        yield Chunk(ids, logprobs=lps)
                    continue
                finished = True
                reason = completion.finish_reason or "stop"
                reason = reason if reason in ("stop", "length", "abort") else "stop"
                stop_id = (
                    completion.stop_reason if isinstance(completion.stop_reason, int) else None
                )
                if (
                    reason == "stop"
                    and stop_id is None
                    and ids
                    and ids[-1] in request.stop_token_ids
                ):
                    stop_id = ids[-1]
                usage = TokenUsage(
                    prompt_tokens=len(request.prompt_ids),
                    output_tokens=produced,
                    cached_prompt_tokens=getattr(out, "num_cached_tokens", None),
                )
                yield Chunk(ids, reason, stop_id, usage, lps)  # type: ignore[arg-type]
                return
        except (ConfigurationError, EngineError):
            raise
        except ValueError as exc:  # vLLM's request validation
            raise EngineRequestError(f"vLLM rejected request {request_id}: {exc}") from exc
        except Exception as exc:
            raise EngineError(
                f"vLLM failed on request {request_id}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            if not finished and self._llm is not None:
                with anyio.CancelScope(shield=True):
                    await self._llm.abort(request_id)


def _adapters(given: Mapping[str, str | PathLike[str]] | None) -> dict[str, str]:
    """The adapters by name, checked: non-empty names, each with a path."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise ConfigurationError(
            f"lora_adapters must map adapter names to paths "
            f'({{"name": "/path/to/adapter"}}), got {type(given).__name__}'
        )
    adapters: dict[str, str] = {}
    for name, path in given.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"a LoRA adapter's name must be a non-empty string, got {name!r}"
            )
        if not isinstance(path, str | PathLike) or not str(path).strip():
            raise ConfigurationError(
                f"the LoRA adapter {name!r} needs a path (a PEFT adapter directory or a Hugging "
                f"Face repo id), got {path!r}"
            )
        adapters[name] = str(path)
    return adapters


def _check_lora_platform() -> None:
    """Refuse LoRA where vLLM cannot run it for gpt-oss, before the engine starts."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        # With LoRA enabled vLLM runs every MoE layer through its Triton kernel (even when no
        # adapter targets the experts), and the CPU build has no Triton: the first forward pass
        # fails with "module 'triton.language' has no attribute 'bfloat16'" and the engine dies.
        error = ConfigurationError(
            "vLLM's CPU build cannot serve LoRA adapters for gpt-oss: with LoRA enabled it "
            "runs the mixture-of-experts layers through a Triton kernel, which has no CPU "
            "backend. Serve the adapters from vLLM on a GPU, or use llama-server with "
            "--lora ADAPTER.gguf (LlamaServerEngine), or merge the adapter into the weights."
        )
        error.settings = ("lora_adapters",)
        raise error


def _logprobs(ids: tuple[int, ...], positions: Any) -> tuple[float | None, ...]:
    """The logprob of each sampled id from vLLM's per-position ``{id: Logprob}`` maps."""
    if positions is None:
        return (None,) * len(ids)
    out: list[float | None] = []
    for token, position in zip(ids, positions, strict=False):
        entry = position.get(token) if hasattr(position, "get") else None
        out.append(float(entry.logprob) if entry is not None else None)
    out += [None] * (len(ids) - len(out))
    return tuple(out)
