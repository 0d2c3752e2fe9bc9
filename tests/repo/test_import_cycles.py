"""No import cycles in lmcore/, tasks/ and flows/ (issue 20): every module is parsed (imports inside functions
included: one there only hides a cycle until the function runs), each import resolved to a module of these
packages, and the graph searched for a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("lmcore", "tasks", "flows")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _lazy_exports(path: Path, package: str) -> dict[str, str]:
    """A package's PEP 562 table `_EXPORTS = {"Name": ".module"}`: the module each lazily exported name comes from."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            table = ast.literal_eval(node.value)
            return {name: package + where if where.startswith(".") else where for name, where in table.items()}
    return {}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    lazy = {name: _lazy_exports(path, name) for name, path in modules.items() if path.name == "__init__.py"}
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def target(module: str, name: str | None) -> str | None:
        if name is not None and f"{module}.{name}" in modules:
            return f"{module}.{name}"
        if name is not None and name in lazy.get(module, {}):
            return lazy[module][name]
        return module if module in modules else None

    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            found = []
            if isinstance(node, ast.Import):
                found = [target(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                found = [target(base, alias.name) for alias in node.names]
            graph[name].update(t for t in found if t is not None and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (its modules in import order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_walker_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert "lmcore.data.corpus" in graph["lmcore.data.features"]  # from .corpus import ...
    assert "lmcore.data.corpus" in graph["tasks.corpus"]  # from lmcore.data.corpus import ...
    assert any(m.startswith("tasks.") for m in graph["flows.pretrain"])
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
