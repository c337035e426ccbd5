"""Engines: token ids in, sampled token ids out (see :mod:`harmony_agent.engine.base`)."""

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


def __getattr__(name: str):  # heavy engines are imported on first use
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
    if name == "engine_from_spec":
        from ._spec import engine_from_spec

        return engine_from_spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CALL",
    "DEFAULT_STOP_TOKEN_IDS",
    "RETURN",
    "Chunk",
    "Engine",
    "FinishReason",
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
]
