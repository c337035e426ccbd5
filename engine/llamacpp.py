"""``LlamaCppEngine``: llama.cpp in the same process (llama-cpp-python), on token ids.

For one machine without a server: a laptop, a 16 GB GPU, a test suite. The prompt ids go
straight into the model's context; the sampled ids come back one by one. Example::

    from harmony_agent import Agent
    from harmony_agent.engine import LlamaCppEngine

    async with LlamaCppEngine("gpt-oss-20b-mxfp4.gguf", n_gpu_layers=-1) as engine:
        result = await Agent(engine=engine).run("Say hi")

How it behaves:

- **Prefix reuse.** The context keeps the last request's tokens. The agent's next prompt
  extends them (prompt + sampled ids + tool result), so only the new tail is evaluated;
  ``cached_prompt_tokens`` says how many prompt tokens were reused.
- **Sliding window.** gpt-oss alternates sliding-window (128 tokens) and full attention
  layers. llama.cpp keeps only the window for the former, so a prompt that rewinds further
  back than the window cannot reuse the cache: the engine sees it (as llama-server does) and
  evaluates the whole prompt again. ``swa_full=True`` keeps the full cache for those layers
  (more memory) and makes every rewind cheap.
- **One generation at a time per model**, in arrival order: concurrent runs queue fairly
  (each turn joins the back of the queue), so no run starves.
- **Cancellation.** Closing the stream stops between two tokens (or two prompt batches); the
  context stays consistent for the next request.
- **Blocking calls off the event loop**: loading, prompt evaluation and every token run in a
  worker thread.
- **Checks at load**: the GGUF must be gpt-oss (architecture and Harmony special tokens).

Sampling: temperature 1.0 unless the request sets one (0 is greedy), top_p 1.0, top_k 0,
min_p 0, repeat_penalty 1.0 — gpt-oss's recommendation — overridable with ``sampling=``.

Structured final answers (``GenerationRequest.output_schema``, an agent's ``output_type``): the
same lazy grammar as ``LlamaServerEngine`` — free sampling until a final-channel header, then
the JSON of the schema (llama-cpp-python's ``json_schema_to_gbnf``), with Harmony's special
tokens kept out of JSON strings — on llama.cpp's lazy grammar sampler; a prompt that already
ends in the final header gets the JSON grammar from the first token. That converter leaves
some keywords out (integer ``minimum``/``maximum``): the grammar holds the structure, types
and enums, and the agent's validation checks the rest (``LlamaServerEngine`` uses llama.cpp's
full converter).
"""

# llama-cpp-python is optional and installed in its own environment (make setup-llamacpp),
# not in the one the type checker runs in: its imports cannot be resolved there.
# pyright: reportMissingImports=false

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import AsyncGenerator, Generator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from harmony_agent.errors import (
    ConfigurationError,
    ContextOverflowError,
    EngineError,
    EngineRequestError,
    EngineUnavailableError,
)

from ._llama_grammar import FINAL_TRIGGER, final_answer_grammar, harden_json_grammar
from ._structured import prompt_in_final
from .base import Chunk, Engine, GenerationRequest, TokenUsage
from .llama_server import GPT_OSS_SAMPLING, HARMONY_PROBE, LLAMA_STOP_TOKEN_IDS

__all__ = ["LlamaCppEngine"]


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigurationError(
            f"llama-cpp-python is not installed ({exc}): pip install llama-cpp-python "
            "(`make setup-llamacpp` builds it for this CPU), or run llama-server and use "
            "--engine llama-server:http://HOST:8080"
        ) from exc
    return llama_cpp


class LlamaCppEngine(Engine):
    """A gpt-oss GGUF loaded in this process with llama-cpp-python."""

    #: a lazy grammar holds final-channel answers only, whatever the prompt
    constrains_output = True

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 32_768,
        n_batch: int = 512,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        swa_full: bool = False,
        sampling: dict[str, float] | None = None,
        verbose: bool = False,
        **llama_kwargs: Any,
    ) -> None:
        unknown = set(sampling or {}) - set(GPT_OSS_SAMPLING)
        if unknown:
            raise ConfigurationError(
                f"unknown sampling settings {sorted(unknown)}; use {sorted(GPT_OSS_SAMPLING)}"
            )
        self.model_path = Path(model_path)
        self.swa_full = swa_full
        self.sampling = {**GPT_OSS_SAMPLING, **(sampling or {})}
        self.context_window = n_ctx
        self.llama_kwargs: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_batch": n_batch,
            "n_threads": n_threads,
            "n_gpu_layers": n_gpu_layers,
            "swa_full": swa_full,
            "verbose": verbose,
            **llama_kwargs,
        }
        self._llm: Any = None
        self._n_swa = 0
        self._start_lock = anyio.Lock()
        self._turn = anyio.Lock()  # FIFO: waiters are served in arrival order

    # --- loading ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model (also done on the first request)."""
        async with self._start_lock:
            if self._llm is None:
                self._llm = await anyio.to_thread.run_sync(self._load)

    def _load(self) -> Any:
        if not self.model_path.is_file():
            raise ConfigurationError(
                f"no GGUF file at {self.model_path}; pass the path of a gpt-oss GGUF "
                "(e.g. gpt-oss-20b-mxfp4.gguf)"
            )
        llama_cpp = _import_llama()
        try:
            llm = llama_cpp.Llama(model_path=str(self.model_path), **self.llama_kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"bad llama-cpp-python argument: {exc}") from exc
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineUnavailableError(
                f"llama.cpp could not load {self.model_path}: {exc}. Is it a GGUF file and "
                "does it fit in memory (n_ctx, n_gpu_layers)?"
            ) from exc
        try:
            self._check_gpt_oss(llm)
        except ConfigurationError:
            llm.close()
            raise
        self._n_swa = int(llama_cpp.llama_model_n_swa(llm.model))
        return llm

    def _check_gpt_oss(self, llm: Any) -> None:
        from harmony_agent._encoding import load_encoding

        arch = llm.metadata.get("general.architecture")
        expected = load_encoding().encode(HARMONY_PROBE, allowed_special="all")
        got = llm.tokenize(HARMONY_PROBE.encode(), add_bos=False, special=True)
        if arch != "gpt-oss" or got != expected:
            raise ConfigurationError(
                f"{self.model_path} is not a gpt-oss GGUF: architecture {arch!r} (want "
                f"'gpt-oss'), and it tokenizes the Harmony markup {HARMONY_PROBE!r} as {got} "
                f"where gpt-oss's o200k_harmony gives {expected}. Load a gpt-oss GGUF "
                "(e.g. gpt-oss-20b-mxfp4.gguf)."
            )

    async def aclose(self) -> None:
        async with self._turn:
            if self._llm is not None:
                llm, self._llm = self._llm, None
                await anyio.to_thread.run_sync(llm.close)

    # --- the contract ----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        if request.constraint is not None:
            raise EngineRequestError(
                "raw structured-output constraints are not supported by LlamaCppEngine; drop "
                "the constraint, or give the agent an output_type (which this engine holds to "
                "its schema with a lazy grammar)"
            )
        if request.adapter is not None:
            raise EngineRequestError(
                f"LoRA adapters are not supported by LlamaCppEngine (asked for "
                f"{request.adapter!r}); serve the adapter with llama-server "
                "(llama-server -m MODEL.gguf --lora ADAPTER.gguf, then LlamaServerEngine) or "
                "merge it into the GGUF"
            )
        if request.output_schema is not None:
            await anyio.to_thread.run_sync(_json_grammar, _schema_key(request.output_schema))
        prompt = [int(t) for t in request.prompt_ids]
        if not prompt:
            raise EngineRequestError("the prompt is empty; an engine request needs prompt ids")
        window = self.context_window or 0  # known once loaded (n_ctx)
        room = window - len(prompt)
        if room < 1:
            raise ContextOverflowError(
                f"the prompt is {len(prompt)} tokens and the context holds {self.context_window}"
                " (n_ctx); start a new run, shorten the tool outputs or raise n_ctx"
            )
        await self.start()
        async with self._turn:
            llm = self._llm
            if llm is None:
                raise EngineUnavailableError("the engine was closed")
            async for chunk in self._generate(llm, request, prompt, min(request.max_tokens, room)):
                yield chunk

    async def _generate(
        self, llm: Any, request: GenerationRequest, prompt: list[int], max_tokens: int
    ) -> AsyncGenerator[Chunk, None]:
        run = anyio.to_thread.run_sync
        tokens: Generator[int, None, None] | None = None
        try:
            # the prompt minus its last token, in batches: a cancel lands between two of them
            # (the first batch goes with the rewind: one thread hop less for short prompts)
            batch = int(self.llama_kwargs["n_batch"])
            cached, done = await run(self._rewind_and_eval, llm, prompt, batch)
            for start in range(done, len(prompt) - 1, batch):
                await run(llm.eval, prompt[start : min(start + batch, len(prompt) - 1)])
            stops = set(request.stop_token_ids) | LLAMA_STOP_TOKEN_IDS
            tokens, token = await run(self._first_token, llm, request, prompt)
            produced = 0
            while True:
                if produced:
                    token = await run(_next_token, tokens)
                if token is None:
                    raise EngineError("llama.cpp stopped sampling without a stop token")
                produced += 1
                usage = TokenUsage(len(prompt), produced, cached)
                if token in stops:
                    yield Chunk((token,), "stop", token, usage)
                    return
                if produced >= max_tokens:
                    yield Chunk((token,), "length", None, usage)
                    return
                yield Chunk((token,))
        except (ConfigurationError, EngineError):
            raise
        except Exception as exc:  # llama-cpp-python raises plain RuntimeError/AssertionError
            llm.reset()  # the context may be half-written: start clean next time
            raise EngineError(
                f"llama.cpp failed on a {len(prompt)}-token prompt: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            if tokens is not None:
                tokens.close()  # raises GeneratorExit at its yield: no llama.cpp work, no wait

    def _rewind_and_eval(self, llm: Any, prompt: list[int], batch: int) -> tuple[int, int]:
        cached = self._rewind(llm, prompt)
        end = min(cached + batch, len(prompt) - 1)
        if end > cached:
            llm.eval(prompt[cached:end])
        return cached, max(end, cached)

    def _first_token(
        self, llm: Any, request: GenerationRequest, prompt: list[int]
    ) -> tuple[Generator[int, None, None], int | None]:
        tokens = self._sampler(llm, request, prompt)
        if request.output_schema is None:
            return tokens, _next_token(tokens)
        # llama-cpp-python's generate() builds its sampler chain on the first next() and
        # takes no lazy grammar: for that one call it gets the chain with one
        json_grammar = _json_grammar(_schema_key(request.output_schema))
        if prompt_in_final(prompt):
            grammar, triggers = json_grammar, None
        else:
            grammar, triggers = final_answer_grammar(json_grammar), [FINAL_TRIGGER]
        llm._init_sampler = functools.partial(_grammar_chain, llm, grammar, triggers)
        try:
            return tokens, _next_token(tokens)
        finally:
            del llm._init_sampler  # back to the class's own

    def _rewind(self, llm: Any, prompt: list[int]) -> int:
        """Keep the longest usable prefix of the context for ``prompt``; return its length.

        The last prompt token is always evaluated again, for fresh logits. A rewind (the
        prompt leaves the context before its end) needs the sliding-window layers to still
        hold the ``n_swa`` tokens before the rewind point; when they do not, the context is
        cleared and the whole prompt is evaluated.
        """
        context = llm.input_ids[: llm.n_tokens].tolist()
        keep = 0
        for a, b in zip(context, prompt[:-1], strict=False):
            if a != b:
                break
            keep += 1
        if 0 < keep < llm.n_tokens:
            llama_cpp = _import_llama()
            memory = llama_cpp.llama_get_memory(llm.ctx)
            if not self.swa_full and self._n_swa > 0:
                if llama_cpp.llama_memory_seq_pos_min(memory, 0) > max(0, keep - self._n_swa):
                    keep = 0
            if keep and not llama_cpp.llama_memory_seq_rm(memory, 0, keep, -1):
                keep = 0
        if keep == 0:
            llm.reset()
        llm.n_tokens = keep
        return keep

    def _sampler(
        self, llm: Any, request: GenerationRequest, prompt: list[int]
    ) -> Generator[int, None, None]:
        settings = dict(self.sampling)
        if request.temperature is not None:
            settings["temperature"] = request.temperature
        if request.top_p is not None:
            settings["top_p"] = request.top_p
        llm.set_seed(request.seed if request.seed is not None else secrets.randbits(31))
        return llm.generate(
            prompt,
            temp=settings["temperature"],
            top_p=settings["top_p"],
            top_k=int(settings["top_k"]),
            min_p=settings["min_p"],
            repeat_penalty=settings["repeat_penalty"],
            reset=True,
        )


def _next_token(tokens: Generator[int, None, None]) -> int | None:
    return next(tokens, None)


def _schema_key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=64)
def _json_grammar(schema: str) -> str:
    """The schema (canonical JSON text) as a hardened GBNF grammar, converted once."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return harden_json_grammar(json_schema_to_gbnf(schema))
    except Exception as exc:  # the converter raises plain ValueError/KeyError/...
        raise ConfigurationError(
            f"llama-cpp-python cannot turn the output schema into a grammar: "
            f"{type(exc).__name__}: {exc}. Simplify the output type (no '$ref' outside "
            "'#/$defs', no unsupported keywords) or use a vLLM engine."
        ) from None


def _grammar_chain(llm: Any, text: str, triggers: list[str] | None, **settings: Any) -> Any:
    """llama-cpp-python's sampler chain (``Llama._init_sampler`` without mirostat or logits
    processors) with the grammar ``text``, lazy when ``triggers`` are given, in the grammar's
    place (``settings`` are ``_init_sampler``'s own arguments, its grammar None).
    Until a trigger fires the lazy grammar leaves the logits alone, so the ids are exactly
    the unconstrained ones."""
    llama_cpp = _import_llama()
    from llama_cpp import _internals

    sampler = _internals.LlamaSampler()
    sampler.add_penalties(
        n_vocab=llm._n_vocab,
        penalty_last_n=llm.last_n_tokens_size,
        penalty_repeat=settings["repeat_penalty"],
        penalty_freq=settings["frequency_penalty"],
        penalty_present=settings["presence_penalty"],
    )
    parsed = llama_cpp.LlamaGrammar.from_string(text)
    if triggers:
        sampler.add_grammar_lazy_patterns(llm._model, parsed, triggers, [])
    else:
        sampler.add_grammar(llm._model, parsed)
    temp = settings["temp"]
    if temp < 0.0:
        sampler.add_dist(llm._seed)
    elif temp == 0.0:
        sampler.add_greedy()
    else:
        sampler.add_top_k(settings["top_k"])
        sampler.add_typical(settings["typical_p"], 1)
        sampler.add_top_p(settings["top_p"], 1)
        sampler.add_min_p(settings["min_p"], 1)
        sampler.add_temp(temp)
        sampler.add_dist(llm._seed)
    return sampler
