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
"""

# vLLM is optional and installed in its own environment (make setup-vllm), not in the one the
# type checker runs in: its imports cannot be resolved there.
# pyright: reportMissingImports=false

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
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
    """

    def __init__(
        self, model: str = "openai/gpt-oss-20b", *, logprobs: bool = False, **overrides: Any
    ) -> None:
        self.model = model
        self.logprobs = logprobs
        self.engine_args = {**GPU_DEFAULTS, **overrides, "model": model}
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

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        await self.start()
        *_, TokensPrompt = _import_vllm()
        request_id = request.request_id or uuid.uuid4().hex
        request_id = f"{request_id}-{uuid.uuid4().hex[:6]}"  # unique even on a retried turn
        params = self._params(request)
        prompt = TokensPrompt(prompt_token_ids=list(request.prompt_ids))
        finished = False
        produced = 0
        try:
            async for out in self._llm.generate(prompt, params, request_id=request_id):
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
