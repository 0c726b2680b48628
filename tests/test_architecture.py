"""The layout the README's architecture section promises, checked on the source itself: no
import circles between pretune's modules (function-level imports included), no module over
~450 lines without a reason written at its top, no function over ~150 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "pretune"
MAX_LINES, MAX_FUNCTION = 450, 150


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """pretune modules ``path`` imports anywhere (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("pretune"):
                while name and name not in modules:  # `from pkg import module` or a name in it
                    name = name.rpartition(".")[0]
                if name:
                    found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in SRC.rglob("*.py")}
    modules = set(files)
    graph = {}
    for mod, path in files.items():
        # a package's own __init__ is not an edge of its submodules (importing a.b runs a)
        graph[mod] = {m for m in _imports(path, modules) if m != mod}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles():
    graph = _graph()
    # packages re-export their modules: an edge pkg -> pkg.mod is the package's own doing
    for mod, deps in graph.items():
        graph[mod] = {d for d in deps if not d.startswith(mod + ".")}
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_small_files_and_functions():
    long_files, long_functions = [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_LINES and "reason:" not in doc.lower():
            long_files.append(f"{path.relative_to(SRC)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    long_functions.append(f"{path.relative_to(SRC)}:{node.name} ({n} lines)")
    assert not long_files, long_files
    assert not long_functions, long_functions
