"""Checks of the arguments a caller gives ``Agent`` and its run methods: a wrong type is a
:class:`ConfigurationError` that names the argument and says what to pass, before it can
surface later as a third-party error (pydantic, openai_harmony, a comparison in the loop)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any

from harmony_agent.tools.base import Tool, Toolset

from .errors import ConfigurationError
from .result import RunResult

__all__ = [
    "check_adapter",
    "check_agent_arguments",
    "check_history",
    "check_no_running_loop",
    "check_task",
]


def _got(value: Any) -> str:
    """``'5' (a str)``: the value and its type, short."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = type(value).__name__
    return f"{text} ({'an' if kind[0] in 'aeiou' else 'a'} {kind})"


def _error(setting: str, message: str) -> ConfigurationError:
    """A ConfigurationError that names ``setting`` (a front end adds its option for it)."""
    error = ConfigurationError(message)
    error.settings = (setting,)
    return error


def check_adapter(adapter: Any) -> str | None:
    """``adapter`` (a LoRA adapter's name, or None for the base model), checked."""
    if adapter is not None and (not isinstance(adapter, str) or not adapter.strip()):
        raise _error(
            "adapter",
            f"adapter must be the name of a LoRA adapter the engine serves (e.g. "
            f'adapter="support"), or None for the base model, got {_got(adapter)}',
        )
    return adapter


def _check_count(name: str, value: Any, example: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(
            name,
            f"{name} must be a whole number of at least 1, got {_got(value)}; "
            f"pass e.g. {name}={example}",
        )
    if value < 1:
        raise _error(name, f"{name} must be at least 1, got {value}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_agent_arguments(
    *,
    instructions: Any,
    tools: Any,
    max_turns: Any,
    max_tokens_per_turn: Any,
    max_tool_errors: Any,
    temperature: Any,
    top_p: Any,
    seed: Any,
    context_window: Any,
) -> None:
    """Every ``Agent(...)`` argument whose type the loop relies on."""
    if instructions is not None and not isinstance(instructions, str):
        hint = (
            "call it first: instructions=make_instructions()"
            if callable(instructions)
            else "pass the developer message as text, or None for none"
        )
        raise _error(
            "instructions", f"instructions must be a str or None, got {_got(instructions)}; {hint}"
        )
    if (
        isinstance(tools, str | Tool | Toolset)
        or callable(tools)
        or not isinstance(tools, Iterable)
    ):
        raise ConfigurationError(
            f"tools must be a list of tools, got {_got(tools)}; pass tools=[...] (a plain "
            "function becomes a tool with @tool)"
        )
    _check_count("max_turns", max_turns, 30)
    _check_count("max_tokens_per_turn", max_tokens_per_turn, 8192)
    _check_count("max_tool_errors", max_tool_errors, 5)
    if context_window is not None:
        _check_count("context_window", context_window, 131072)
    if temperature is not None and not (_is_number(temperature) and temperature >= 0):
        raise _error(
            "temperature",
            f"temperature must be a number of at least 0 (e.g. 0.7), or None for the engine's "
            f"default, got {_got(temperature)}",
        )
    if top_p is not None and not (_is_number(top_p) and 0 < top_p <= 1):
        raise _error(
            "top_p",
            f"top_p must be a number above 0 and at most 1 (e.g. 0.95), or None for the "
            f"engine's default, got {_got(top_p)}",
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _error("seed", f"seed must be an int or None, got {_got(seed)}; pass e.g. seed=0")


def check_task(task: Any) -> None:
    """The user's message of a run."""
    if not isinstance(task, str):
        raise ConfigurationError(
            f"task must be a str (the user's message), got {_got(task)}; pass the text, e.g. "
            "agent.run_sync('What is 2 + 3?')"
        )


def check_history(history: Any) -> None:
    """The conversation a run continues."""
    if history is not None and not isinstance(history, RunResult):
        raise ConfigurationError(
            f"history must be the RunResult of an earlier run, got {_got(history)}; pass "
            "history=result where result = agent.run_sync(...)"
        )


def check_no_running_loop(method: str) -> None:
    """``run_sync`` starts an event loop, which cannot happen inside a running one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise ConfigurationError(
        f"{method} starts its own event loop and cannot be called from async code (an event "
        "loop is running here); use `await agent.run(...)` instead"
    )
