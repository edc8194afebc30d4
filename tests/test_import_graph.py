"""The import graph of ``stqa`` and ``server`` (installed as ``stqa.server``) has no cycle.

Static: every module's imports are read with ``ast`` (imports inside functions included, since they run
too; ``if TYPE_CHECKING:`` blocks excluded, since they never run), resolved within the two packages, and
the graph's strongly connected components are cycles. An edge goes to the module an import names (for
``from package import name``, to ``package.name`` if that is a module, else to the package's
``__init__``); parent packages imported on the way are not edges, as in import-linter and pydeps.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Source folder -> the package name it is imported as.
PACKAGES = {ROOT / "stqa": "stqa", ROOT / "server": "stqa.server"}


def module_files() -> dict[str, Path]:
    """Every module of the packages, by its import name."""
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes anywhere in the tree, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                           for alias in node.names]
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def cyclic_components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan): each is one or more
    cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

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
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first), to print."""
    start = min(component)
    paths = {w: [start, w] for w in sorted(graph[start] & component)}
    frontier = list(paths)
    while start not in paths:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return paths[start]


def describe(graph: dict[str, set[str]], components: list[set[str]]) -> str:
    """One line per component: its modules, and one cycle through them to start reading at."""
    return "\n".join(f"{{{', '.join(sorted(c))}}}: " + " -> ".join(cycle_through(graph, c)) for c in components)


def test_the_graph_sees_the_packages():
    modules = module_files()
    graph = import_graph(modules)
    # relative, absolute, function-level and server-as-stqa.server imports all resolve
    assert "stqa.server.validation" in graph["stqa.server.service"]  # from .validation import ...
    assert "stqa.server.config" in graph["stqa.client"]  # from stqa.server.config import ...
    assert "stqa.server.lifecycle" in graph["stqa.server.main"]  # inside serve()
    assert "stqa.tasks" in graph["stqa.server.validation"]  # from stqa import tasks
    assert "stqa.video.decode" not in graph["stqa.server.predictor"]  # only under TYPE_CHECKING


def test_cycle_finder_finds_and_prints_a_cycle():
    graph = {"a": {"b"}, "b": {"c", "x"}, "c": {"a", "d"}, "d": set(), "x": {"b"}}
    assert cyclic_components(graph) == [{"a", "b", "c", "x"}]
    assert describe(graph, cyclic_components(graph)) == "{a, b, c, x}: a -> b -> c -> a"
    assert cyclic_components({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph(module_files())
    found = cyclic_components(graph)
    assert not found, "import cycles:\n" + describe(graph, found)


def test_evaluation_never_imports_training():
    graph = import_graph(module_files())
    reachable, todo = set(), ["stqa.evaluation.command", "stqa.evaluation.evaluator"]
    while todo:
        module = todo.pop()
        if module not in reachable:
            reachable.add(module)
            todo.extend(graph.get(module, ()))
    assert not {m for m in reachable if m.startswith("stqa.engine")}, sorted(reachable)
