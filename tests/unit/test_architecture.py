"""The package layout docs/architecture.md promises: no import cycle between modules, and no
module importing another module's private (`_underscore`) names."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "harness"


def _module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, list[ast.ImportFrom | ast.Import]]:
    return {_module_name(p): [n for n in ast.walk(ast.parse(p.read_text()))
                              if isinstance(n, (ast.Import, ast.ImportFrom))]
            for p in sorted(HARNESS.rglob("*.py"))}


def _graph() -> dict[str, set[str]]:
    modules = _imports()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, nodes in modules.items():
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[module] |= {n for n in names if n in modules and n != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_no_private_names_imported_from_other_modules() -> None:
    offenders = [f"{module}: from {node.module} import {alias.name}"
                 for module, nodes in _imports().items() for node in nodes
                 if isinstance(node, ast.ImportFrom) and node.module
                 and node.module.startswith("harness")
                 for alias in node.names
                 if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert offenders == []
