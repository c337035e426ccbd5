"""Engines from a short spec string (the CLI's ``--engine``, ``$HARMONY_AGENT_ENGINE``)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from harmony_agent.errors import ConfigurationError

from .base import Engine

__all__ = ["ENGINE_ENV", "MODEL_ENV", "engine_from_spec"]

ENGINE_ENV = "HARMONY_AGENT_ENGINE"
MODEL_ENV = "HARMONY_AGENT_MODEL"
DEFAULT_MODEL = "openai/gpt-oss-20b"


def engine_from_spec(
    spec: str | None = None, *, model: str | None = None, api_key_env: str | None = None
) -> Engine:
    """``vllm``, ``vllm:MODEL_OR_PATH`` (in-process) or ``http(s)://HOST:PORT/v1`` (a server);
    ``llama-server:http://HOST:PORT`` (llama.cpp's server) or ``llamacpp:PATH.gguf`` (in-process).

    ``None`` reads ``$HARMONY_AGENT_ENGINE`` (default ``vllm``); the model defaults to
    ``$HARMONY_AGENT_MODEL``. An ``https://…fireworks.ai…`` URL selects the Fireworks flavour.
    """
    spec = spec or os.environ.get(ENGINE_ENV) or "vllm"
    model = model or os.environ.get(MODEL_ENV)
    if spec == "vllm" or spec.startswith("vllm:"):
        from .vllm import VLLMEngine

        name = spec.partition(":")[2] or model or DEFAULT_MODEL
        return VLLMEngine(name)
    if spec.startswith(("http://", "https://")):
        from .openai_http import OpenAICompatibleEngine

        host = urlparse(spec).hostname or ""
        flavor = "fireworks" if host.endswith("fireworks.ai") else "vllm"
        if flavor == "fireworks" and api_key_env is None:
            api_key_env = "FIREWORKS_API_KEY"
        return OpenAICompatibleEngine(spec, model=model, api_key_env=api_key_env, flavor=flavor)
    if spec.startswith(("llama-server:", "llamacpp:")):
        return _llama_engine(spec)
    raise ConfigurationError(
        f"unknown engine {spec!r}: use vllm[:MODEL_OR_PATH], http://HOST:PORT/v1, "
        "llama-server:http://HOST:PORT, llamacpp:PATH.gguf or scripted:FILE"
    )


def _llama_engine(spec: str) -> Engine:
    kind, _, target = spec.partition(":")
    if kind == "llama-server":
        from .llama_server import LlamaServerEngine

        return LlamaServerEngine(target or "http://127.0.0.1:8080")
    if not target:
        raise ConfigurationError(
            "llamacpp: needs the path of a gpt-oss GGUF, e.g. llamacpp:gpt-oss-20b-mxfp4.gguf"
        )
    from .llamacpp import LlamaCppEngine

    return LlamaCppEngine(target)
