"""The browser package's modules import each other without cycles (TYPE_CHECKING imports
included): the run's state lives in _state.py, which the tool and the automation functions
both import."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import harmony_agent.tools.browser as package

FOLDER = Path(package.__file__).parent


def local_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module)
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif (node.module or "").startswith("harmony_agent.tools.browser."):
                found.add(node.module.rsplit(".", 1)[1])
    return found


def test_no_import_cycles_in_the_browser_package():
    graph = {p.stem: local_imports(p) for p in FOLDER.glob("*.py")}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as cycle:
        raise AssertionError(f"import cycle: {cycle.args[1]}") from None
    assert order.index("_state") < order.index("tool")
    assert "tool" not in graph["_automation"] and "_state" in graph["_automation"]
