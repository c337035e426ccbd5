"""Engines: token ids in, sampled token ids out (see :mod:`harmony_agent.engine.base`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._flavor import Flavor
from .base import (
    CALL,
    DEFAULT_STOP_TOKEN_IDS,
    RETURN,
    Chunk,
    Engine,
    FinishReason,
    GenerationRequest,
    TokenUsage,
)
from .replay import ReplayEngine
from .testing import FunctionEngine, ScriptedEngine

if TYPE_CHECKING:  # imported on first use below; named here for type checkers
    from ._spec import engine_from_spec, parse_engine_spec
    from .llama_server import LlamaServerEngine
    from .llamacpp import LlamaCppEngine
    from .openai_http import OpenAICompatibleEngine
    from .vllm import VLLMEngine


def __getattr__(name: str) -> Any:  # heavy engines are imported on first use
    if name == "OpenAICompatibleEngine":
        from .openai_http import OpenAICompatibleEngine

        return OpenAICompatibleEngine
    if name == "LlamaServerEngine":
        from .llama_server import LlamaServerEngine

        return LlamaServerEngine
    if name == "LlamaCppEngine":
        from .llamacpp import LlamaCppEngine

        return LlamaCppEngine
    if name == "VLLMEngine":
        from .vllm import VLLMEngine

        return VLLMEngine
    if name in ("engine_from_spec", "parse_engine_spec"):
        from . import _spec

        return getattr(_spec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CALL",
    "DEFAULT_STOP_TOKEN_IDS",
    "RETURN",
    "Chunk",
    "Engine",
    "FinishReason",
    "Flavor",
    "FunctionEngine",
    "GenerationRequest",
    "LlamaCppEngine",
    "LlamaServerEngine",
    "OpenAICompatibleEngine",
    "ReplayEngine",
    "ScriptedEngine",
    "TokenUsage",
    "VLLMEngine",
    "engine_from_spec",
    "parse_engine_spec",
]
