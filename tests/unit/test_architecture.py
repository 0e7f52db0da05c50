"""The import graph among marketd's modules, read from the source with :mod:`ast`: every import
counts, including those under ``if TYPE_CHECKING:`` and inside functions (a lazy import is still
a dependency; it only hides a cycle from the interpreter)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import marketd

ROOT = Path(marketd.__file__).parent
# the handlers' side: they see the daemon's state (marketd.daemon), never the wiring module
HANDLER_MODULES = ("marketd.web", "marketd.page", "marketd.page_forms", "marketd.metrics")

Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = ("marketd", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The marketd modules that ``name`` imports. ``from pkg import x`` is an import of the
    module ``pkg.x`` when there is one, else of ``pkg``."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:  # `import a.b.c` of a name in a.b
                    target = target.rpartition(".")[0]
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif source in known:
                    found.add(source)
    found.discard(name)
    return found


def import_graph() -> Graph:
    mods = modules()
    return {name: imports_of(name, path, mods) for name, path in mods.items()}


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as a path whose last element repeats its first, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def reachable(graph: Mapping[str, Iterable[str]], start: str) -> dict[str, str]:
    """Every module ``start`` imports directly or not, mapped to the module that imports it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in seen and nxt != start:
                seen[nxt] = node
                todo.append(nxt)
    return seen


def chain(via: Mapping[str, str], start: str, end: str) -> str:
    steps = [end]
    while steps[-1] != start:
        steps.append(via[steps[-1]])
    return " -> ".join(reversed(steps))


def test_the_reader_sees_every_kind_of_import() -> None:
    """TYPE_CHECKING blocks, function bodies, relative and ``from pkg import module`` forms."""
    graph = import_graph()
    assert "marketd.app" in graph["marketd.cli"]  # imported inside a function
    assert {"marketd.simulator.alias", "marketd.simulator.stockx"} <= graph["marketd.simulator.app"]
    assert "marketd.providers.stockx" in graph["marketd.providers"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_marketd_imports_have_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_handlers_never_reach_the_wiring_module() -> None:
    """web, page, page_forms and metrics depend on the daemon's state, not on marketd.app."""
    graph = import_graph()
    for name in HANDLER_MODULES:
        via = reachable(graph, name)
        assert "marketd.app" not in via, f"{name} imports marketd.app: " + chain(
            via, name, "marketd.app")
