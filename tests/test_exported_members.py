"""The public API is curated: __all__ lists exactly what is meant to be used."""

from __future__ import annotations

import inspect
from types import ModuleType

import harmony_agent
import harmony_agent.engine
import harmony_agent.errors
import harmony_agent.events
import harmony_agent.tools
import pytest

PUBLIC_MODULES = (
    harmony_agent,
    harmony_agent.engine,
    harmony_agent.tools,
    harmony_agent.errors,
    harmony_agent.events,
)

#: The top-level API, exactly: a change here is a change of the package's public surface.
TOP_LEVEL = [
    "Agent",
    "Compaction",
    "Deny",
    "Event",
    "FunctionTool",
    "HarmonyAgentError",
    "Hooks",
    "MCPServerStdio",
    "MCPServerStreamableHTTP",
    "ReplaceArguments",
    "RunContext",
    "RunResult",
    "RunState",
    "RunStream",
    "RunUsage",
    "StopRun",
    "Tool",
    "ToolCallRecord",
    "ToolCallRequest",
    "Toolset",
    "TurnInfo",
    "UsageLimits",
    "__version__",
    "errors",
    "events",
    "instrument",
    "tool",
    "uninstrument",
]


def test_top_level_api():
    assert harmony_agent.__all__ == TOP_LEVEL
    for name in harmony_agent.__all__:
        assert hasattr(harmony_agent, name), name


def _defined_public_names(module: ModuleType) -> set[str]:
    """Public classes and functions of the package that ``module`` holds (defined or
    re-exported); submodules and names imported from elsewhere (typing, stdlib) excluded."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, ModuleType):
            continue
        owner = getattr(value, "__module__", None)
        if isinstance(owner, str) and owner.startswith("harmony_agent"):
            names.add(name)
    return names


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_is_exactly_the_public_names(module):
    listed = list(module.__all__)
    assert len(listed) == len(set(listed)), f"{module.__name__}.__all__ has duplicates"
    missing = sorted(_defined_public_names(module) - set(listed))
    assert missing == [], f"{module.__name__} has public names missing from __all__: {missing}"
    for name in listed:
        # lazily exported names resolve through the module's __getattr__
        assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_subpackages_export_what_they_list():
    for module in PUBLIC_MODULES[1:]:
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    assert {"ScriptedEngine", "FunctionEngine", "Engine", "GenerationRequest", "Chunk"} <= set(
        harmony_agent.engine.__all__
    )


def test_lazy_exports_are_the_classes_they_name():
    from harmony_agent.tools.browser import BrowserTool
    from harmony_agent.tools.python import PythonTool

    assert harmony_agent.tools.BrowserTool is BrowserTool
    assert harmony_agent.tools.PythonTool is PythonTool
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = harmony_agent.tools.Nope


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
