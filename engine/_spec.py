"""Engines from a short spec string, parsed in this one place.

The forms: ``vllm`` or ``vllm:MODEL_OR_PATH`` (in-process vLLM), ``http(s)://HOST:PORT/v1``
(an OpenAI-compatible server; a ``…fireworks.ai`` host selects the Fireworks flavor),
``sglang:http://HOST:PORT/v1`` (an SGLang server, or its model gateway; ``sglang:`` alone is
``http://127.0.0.1:30000/v1``), ``llama-server:http://HOST:PORT`` (llama.cpp's server), ``llamacpp:PATH.gguf`` (llama.cpp
in-process) and ``scripted:FILE`` (a JSON list of raw Harmony replies, for tests and demos).
With no spec,
``$HARMONY_AGENT_ENGINE`` is read (default ``vllm``); the model defaults to
``$HARMONY_AGENT_MODEL``. The CLI's ``--engine`` and every example take the same forms.

Example::

    from harmony_agent.engine._spec import parse_engine_spec

    spec = parse_engine_spec("https://api.fireworks.ai/inference/v1")
    assert (spec.kind, spec.flavor) == ("http", "fireworks")
    assert parse_engine_spec("vllm", environ={}).target == "openai/gpt-oss-20b"
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from harmony_agent.errors import ConfigurationError

from .base import Engine
from .testing import ScriptedEngine

__all__ = [
    "DEFAULT_MODEL",
    "ENGINE_ENV",
    "MODEL_ENV",
    "EngineSpec",
    "engine_from_spec",
    "load_scripted",
    "parse_engine_spec",
]

ENGINE_ENV = "HARMONY_AGENT_ENGINE"
MODEL_ENV = "HARMONY_AGENT_MODEL"
DEFAULT_MODEL = "openai/gpt-oss-20b"
FORMS = (
    "vllm[:MODEL_OR_PATH], http(s)://HOST:PORT/v1, sglang:http://HOST:PORT/v1, "
    "llama-server:http://HOST:PORT, "
    "llamacpp:PATH.gguf or scripted:FILE"
)


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """A parsed spec: what to build, and from what."""

    kind: Literal["vllm", "http", "llama-server", "llamacpp", "scripted"]
    #: the model name or path (vllm), the base URL (http, llama-server), the GGUF
    #: (llamacpp) or the replies file (scripted)
    target: str
    #: the model to ask an HTTP server for (None: the server's only one)
    model: str | None = None
    #: the HTTP dialect: "vllm", "sglang" or "fireworks"
    flavor: str | None = None


def _bad(message: str) -> ConfigurationError:
    error = ConfigurationError(message)
    error.settings = ("engine",)
    return error


def parse_engine_spec(
    spec: str | None = None,
    *,
    model: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> EngineSpec:
    """Parse ``spec`` (or ``$HARMONY_AGENT_ENGINE``); raises ConfigurationError for other forms."""
    env = os.environ if environ is None else environ
    source = ""
    if spec is None or spec == "":
        spec = env.get(ENGINE_ENV) or "vllm"
        source = f" (from ${ENGINE_ENV})" if env.get(ENGINE_ENV) else ""
    if not isinstance(spec, str):
        raise _bad(f"the engine spec must be a string ({FORMS}), got {spec!r}")
    model = model or env.get(MODEL_ENV) or None
    kind, colon, rest = spec.partition(":")
    if kind == "vllm":
        return EngineSpec("vllm", rest or model or DEFAULT_MODEL)
    if kind == "scripted" and colon:
        if not rest:
            raise _bad(f"engine {spec!r}{source} names no file: use scripted:FILE (a JSON list)")
        return EngineSpec("scripted", rest)
    if kind == "llama-server" and colon:
        return EngineSpec("llama-server", rest or "http://127.0.0.1:8080")
    if kind == "llamacpp" and colon:
        if not rest:
            raise _bad(
                f"engine {spec!r}{source}: llamacpp: needs the path of a gpt-oss GGUF, "
                "e.g. llamacpp:gpt-oss-20b-mxfp4.gguf"
            )
        return EngineSpec("llamacpp", rest)
    if kind == "sglang":
        url = rest or "http://127.0.0.1:30000/v1"
        if not url.startswith(("http://", "https://")) or not urlparse(url).hostname:
            raise _bad(
                f"engine {spec!r}{source}: sglang: takes the server's base URL, e.g. "
                "sglang:http://127.0.0.1:30000/v1"
            )
        return EngineSpec("http", url, model, "sglang")
    if kind in ("http", "https") and colon:
        url = urlparse(spec)
        if not url.hostname:
            raise _bad(f"engine {spec!r}{source} has no host: use {kind}://HOST:PORT/v1")
        flavor = "fireworks" if url.hostname.endswith("fireworks.ai") else "vllm"
        return EngineSpec("http", spec, model, flavor)
    raise _bad(f"unknown engine {spec!r}{source}: use {FORMS}")


def load_scripted(path: str | Path) -> ScriptedEngine:
    """A ScriptedEngine from a JSON file: a list of raw Harmony replies (or ``{"replies": […]}``)."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _bad(f"scripted replies file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(f"scripted replies file {str(path)!r} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _bad(f"scripted replies file {str(path)!r} is not JSON: {exc}") from None
    replies = data.get("replies") if isinstance(data, dict) else data
    if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
        raise _bad(
            f"scripted replies file {str(path)!r} must hold a JSON list of strings (raw Harmony "
            'replies), e.g. ["<|channel|>final<|message|>Hi<|return|>"]'
        )
    return ScriptedEngine(replies)


def engine_from_spec(
    spec: str | None = None, *, model: str | None = None, api_key_env: str | None = None
) -> Engine:
    """The engine a spec names (see the module docstring for the forms).

    ``api_key_env`` names the variable holding an HTTP server's key (Fireworks:
    ``FIREWORKS_API_KEY`` unless given).
    """
    parsed = parse_engine_spec(spec, model=model)
    if parsed.kind == "scripted":
        return load_scripted(parsed.target)
    if parsed.kind == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(parsed.target)
    if parsed.kind == "llama-server":
        from .llama_server import LlamaServerEngine

        return LlamaServerEngine(parsed.target)
    if parsed.kind == "llamacpp":
        from .llamacpp import LlamaCppEngine

        return LlamaCppEngine(parsed.target)
    from .openai_http import OpenAICompatibleEngine

    if parsed.flavor == "fireworks" and api_key_env is None:
        api_key_env = "FIREWORKS_API_KEY"
    return OpenAICompatibleEngine(
        parsed.target, model=parsed.model, api_key_env=api_key_env, flavor=parsed.flavor or "vllm"
    )
