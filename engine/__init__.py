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

__all__ = [
    "CALL",
    "DEFAULT_STOP_TOKEN_IDS",
    "RETURN",
    "Chunk",
    "Engine",
    "FinishReason",
    "FunctionEngine",
    "GenerationRequest",
    "ReplayEngine",
    "ScriptedEngine",
    "TokenUsage",
]
