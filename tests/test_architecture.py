"""The house has floors: no import loop, handlers never reach up, the fast path stays in the store.

Read from the source with `ast`, counting imports inside functions too (they run, so they tie
modules as much as top-level ones); imports under `if TYPE_CHECKING:` are for the type checker
only and do not count.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "handlers")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(name: str, path: Path) -> set[str]:
    """Every module name this module imports at run time (and each `from X import y` as X.y)."""
    names: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    module = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    module = child.module or ""
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return names


@cache
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for imported in _imported(name, path):
            while imported and imported not in modules:  # `from pkg import mod` or a name in it
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.add(imported)
        graph[name] = edges
    return graph


def _loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), and self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                loops.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return loops


def test_the_graph_reader_sees_a_loop_through_a_function_level_import(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _loops(graph) == [["a", "b", "c"]]
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from handlers.context import Context\n"
        "def f():\n    from handlers.workflow import apply_transition\n",
        encoding="utf-8",
    )
    imported = _imported("handlers.m", module)
    assert "handlers.workflow" in imported and "handlers.context" not in imported


def test_no_import_loop_among_daemon_and_handlers() -> None:
    loops = _loops(_graph())
    assert loops == [], f"import loops: {loops}"


def test_handlers_never_import_the_runners_the_cli_the_sender_or_the_sources() -> None:
    upward = ("daemon.app", "daemon.cli", "daemon.sender", "daemon.sources", "daemon.runners")
    reaching = {
        name: sorted(m for m in imports if m.startswith(upward))
        for name, imports in _graph().items()
        if name.startswith("handlers")
    }
    assert {name: found for name, found in reaching.items() if found} == {}


def test_only_the_store_uses_the_fast_path() -> None:
    users = [
        name
        for name, imports in _graph().items()
        if "daemon.store.fastpath" in imports and not name.startswith("daemon.store")
    ]
    assert users == []


def test_handlers_never_see_a_database_dialect() -> None:
    modules = _modules()
    seeing = [
        name
        for name, path in modules.items()
        if name.startswith("handlers")
        and any(m.startswith("sqlalchemy.dialects") for m in _imported(name, path))
    ]
    assert seeing == []


def test_no_module_in_daemon_or_handlers_is_over_650_lines_and_app_is_a_thin_builder() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > 650} == {}
    assert sizes["daemon.app"] <= 300
