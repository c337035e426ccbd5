"""The public API is curated: __all__ lists exactly what is meant to be used."""

from __future__ import annotations

import inspect

import harmony_agent
import harmony_agent.engine
import harmony_agent.errors
import harmony_agent.events
import harmony_agent.tools


def test_top_level_api():
    assert set(harmony_agent.__all__) >= {"Agent", "RunResult", "tool", "Tool", "RunContext"}
    for name in harmony_agent.__all__:
        assert hasattr(harmony_agent, name), name


def test_subpackages_export_what_they_list():
    for module in (
        harmony_agent.engine,
        harmony_agent.tools,
        harmony_agent.errors,
        harmony_agent.events,
    ):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    assert {"ScriptedEngine", "FunctionEngine", "Engine", "GenerationRequest", "Chunk"} <= set(
        harmony_agent.engine.__all__
    )


def test_public_names_have_docstrings():
    for module in (harmony_agent, harmony_agent.engine, harmony_agent.tools):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) or inspect.isfunction(obj):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_every_error_is_a_harmony_agent_error():
    for name in harmony_agent.errors.__all__:
        assert issubclass(
            getattr(harmony_agent.errors, name), harmony_agent.errors.HarmonyAgentError
        )
