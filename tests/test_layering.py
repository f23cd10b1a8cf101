"""The code base's layering, checked from the source text alone (nothing is imported or run).

Guards what keeps the project easy to carry on:
- no import circles among the project's modules, counting imports inside functions too (a
  function-level import hides a circle from Python, not from a reader);
- `core` imports neither `visualizer` nor `training`, and nothing imports `visualizer`;
- no module imports another module's private names (`from x import _y`).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "training", "visualizer")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(modules: dict[str, Path]) -> dict[str, set[tuple[str, str | None]]]:
    """Each module's imports of project modules, as (module, imported name or None)."""
    found: dict[str, set[tuple[str, str | None]]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[tuple[str, str | None]] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES:
                        edges.add((alias.name, None))
            elif isinstance(node, ast.ImportFrom):
                target = resolve(module, node, path.name == "__init__.py")
                if target.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add((sub, None) if sub in modules else (target, alias.name))
        found[module] = edges
    return found


def owning_module(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, edges in imports_of(modules).items():
        for target, _ in edges:
            owner = owning_module(target, modules)
            if owner and owner != module:
                graph[module].add(owner)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return groups


def test_no_module_imports_itself_back_through_others():
    circles = strongly_connected(import_graph())
    assert circles == [], "import circles (each group imports itself back):\n" + "\n".join(map(" <-> ".join, circles))


def test_core_stands_alone_and_nothing_imports_the_app():
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if (module.startswith("core") and not target.startswith("core"))
        or (target.startswith("visualizer") and not module.startswith("visualizer"))
    )
    assert wrong == []


def test_no_module_imports_another_modules_private_names():
    modules = project_modules()
    wrong = sorted(
        f"{module} imports {name} from {target}"
        for module, edges in imports_of(modules).items()
        for target, name in edges
        if name is not None and name.startswith("_") and not name.startswith("__")
        and owning_module(target, modules) != module
    )
    assert wrong == []


def test_the_circle_finder_sees_a_circle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
