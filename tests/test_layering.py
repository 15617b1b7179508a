"""The packages' layering: no import cycle among the modules of ``nertron`` (sdk/) and ``nertron_export`` (export/),
and no module over ``MAX_LINES`` lines.

An import is any ``import``/``from ... import`` statement in a module, at module level or inside a function or class
(an import run late still makes the two modules depend on each other); only those under ``if TYPE_CHECKING:`` are
left out, as they never run. ``from package import name`` depends on ``package.name`` where that is a module, else on
``package`` itself. Importing ``a.b.c`` is not counted as depending on the packages ``a`` and ``a.b`` (every module
would then be in a cycle with its package's ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"nertron": ROOT / "sdk" / "nertron", "nertron_export": ROOT / "export" / "nertron_export"}
MAX_LINES = 400


def module_files() -> dict[str, Path]:
    """Every module of the packages, by its dotted name (a package by its own name, for its ``__init__.py``)."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under ``node``, at any depth, except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _imports(child)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that the module ``name`` (file ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for statement in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(statement, ast.Import):
            targets = [alias.name for alias in statement.names]
        else:
            base = statement.module or ""
            if statement.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (statement.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in statement.names
            ]
        found.update(target for target in targets if target in modules and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through the first module of ``component``, as the path A -> B -> ... -> A (breadth first)."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_the_import_graph_sees_imports_in_functions() -> None:
    graph = import_graph()
    assert "nertron_export.train" in graph["nertron.cli.export"]  # imported inside run_train


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (each: its modules, then one cycle through them):\n" + "\n".join(
        f"  {', '.join(component)}\n    {' -> '.join(a_cycle(graph, component))}" for component in found
    )


def test_the_export_package_does_not_import_the_cli() -> None:
    graph = import_graph()
    offenders = {
        name: sorted(target for target in targets if target == "nertron.cli" or target.startswith("nertron.cli."))
        for name, targets in graph.items()
        if name.startswith("nertron_export")
    }
    assert not any(offenders.values()), {name: targets for name, targets in offenders.items() if targets}


def test_no_module_is_too_long() -> None:
    lengths = {path: len(path.read_text().splitlines()) for path in module_files().values()}
    offenders = sorted(
        f"{path.relative_to(ROOT)} ({lines} lines)" for path, lines in lengths.items() if lines > MAX_LINES
    )
    assert not offenders, f"modules over {MAX_LINES} lines: " + ", ".join(offenders)
