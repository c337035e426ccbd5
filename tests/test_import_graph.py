"""The installed harmony_agent has no import cycles, and its lower layers do not import upward.

Every module of the package is parsed (not imported) and every import counted: module level,
inside functions (lazy imports) and under ``if TYPE_CHECKING:`` — a cycle through any of them
means two modules that cannot be understood, tested or moved one without the other. Modules
are found from the installed package (``importlib`` resolves the package-dir mapping), so the
test sees what users import.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = "harmony_agent"

#: Edges allowed to close a cycle: none. Keep it empty; a cycle is fixed, not listed.
KNOWN_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()

#: The layers below the agent (engines, tools) import from the root package only these
#: leaf modules: the error tree, the Harmony token ids, the offline encoding, the
#: terminal-control filter and the bounded JSON reader.
SHARED = frozenset(
    {
        "harmony_agent.errors",
        "harmony_agent._tokens",
        "harmony_agent._encoding",
        "harmony_agent._controls",
        "harmony_agent._json",
    }
)
LOWER_LAYERS = ("harmony_agent.engine", "harmony_agent.tools")

#: Upward edges allowed: none. Keep it empty.
KNOWN_UPWARD_EDGES: frozenset[tuple[str, str]] = frozenset()


def _spec_file(name: str) -> tuple[Path, bool] | None:
    """(source file, is a package) of an installed module, or None if there is none."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent that is not a package, or not importable
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin), spec.submodule_search_locations is not None


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Names of the modules that ``module`` imports, relative imports resolved.

    ``from package import name`` is an edge to ``package.name`` when that is a module, else
    to ``package`` (its ``__init__``). The parent packages that every import of a submodule
    also runs are not edges: they are the package's namespace, not a dependency.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if _spec_file(sub) else base


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports, for every module of the installed package."""
    graph: dict[str, set[str]] = {}
    todo = [ROOT]
    while todo:
        name = todo.pop()
        if name in graph:
            continue
        found = _spec_file(name)
        if found is None:
            continue
        path, is_package = found
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = {
            t
            for t in _imported(tree, name, is_package)
            if (t == ROOT or t.startswith(ROOT + ".")) and t != name and _spec_file(t)
        }
        graph[name] = targets
        todo.extend(targets)
        if is_package:
            todo.extend(f"{name}.{m.name}" for m in pkgutil.iter_modules([str(path.parent)]))
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _without_known(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if (m, t) not in KNOWN_CYCLE_EDGES} for m, ts in graph.items()}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_walk_sees_every_package_of_the_distribution(graph):
    for package in ("harmony_agent.tools.browser", "harmony_agent.tools.python"):
        assert package in graph
    for module in ("harmony_agent._run", "harmony_agent.engine.vllm", "harmony_agent.cli"):
        assert module in graph
    # lazy and TYPE_CHECKING imports are edges too
    assert "harmony_agent.tools.python" in graph["harmony_agent.tools"]


def test_no_import_cycles(graph):
    cycles = find_cycles(_without_known(graph))
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _layer(module: str) -> str:
    for layer in LOWER_LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    return ROOT


def test_engines_and_tools_do_not_import_the_agent(graph):
    upward = sorted(
        (module, target)
        for module, targets in graph.items()
        if _layer(module) != ROOT
        for target in targets
        if _layer(target) == ROOT
        and target not in SHARED
        and (module, target) not in KNOWN_UPWARD_EDGES
    )
    assert upward == [], f"lower layers importing the agent: {upward}"


def test_every_allowed_edge_still_exists(graph):
    # an allowed edge that is gone must leave its list, so that it cannot come back unseen
    allowed = KNOWN_CYCLE_EDGES | KNOWN_UPWARD_EDGES
    stale = sorted(e for e in allowed if e[1] not in graph.get(e[0], set()))
    assert stale == [], f"remove these from the allowed edges: {stale}"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
