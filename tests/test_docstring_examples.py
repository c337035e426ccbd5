"""The runnable examples in the main entry points' docstrings must run."""

from __future__ import annotations

import importlib
import inspect
import textwrap

import pytest

MODULES = [
    "harmony_agent",
    "harmony_agent.agent",
    "harmony_agent.engine.base",
    "harmony_agent.replay",
    "harmony_agent.engine.testing",
    "harmony_agent.tools.base",
    "harmony_agent.tools.function",
]


def examples(module_name: str) -> list[str]:
    doc = inspect.getdoc(importlib.import_module(module_name)) or ""
    blocks = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("::"):
            body = []
            for follow in lines[i + 1 :]:
                if follow.strip() and not follow.startswith((" ", "\t")):
                    break
                body.append(follow)
            code = textwrap.dedent("\n".join(body)).strip()
            if "import" in code:
                blocks.append(code)
    return blocks


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_example_runs(module_name: str) -> None:
    blocks = examples(module_name)
    assert blocks, f"{module_name} has no runnable example"
    for code in blocks:
        exec(compile(code, f"<{module_name} example>", "exec"), {"__name__": "__example__"})
