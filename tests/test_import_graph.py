"""spec_tests' import graph has no loop, not even one closed only by type-checking imports.

Built with ``ast`` over the package's source (every import statement counts, wherever it sits:
module level, inside a function, under ``TYPE_CHECKING``); ``from pkg import sub`` of a
submodule is an edge to the submodule only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import spec_tests

ROOT = Path(spec_tests.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["spec_tests", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = name.split(".") if is_package else name.split(".")[:-1]
        here = here[: len(here) - (node.level - 1)]
        base = ".".join([*here, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        base, *subs = _imported(node, name, path.name == "__init__.py")
        if isinstance(node, ast.Import):
            subs, base = [base, *subs], ""
        found = [s for s in subs if s in modules]
        if isinstance(node, ast.ImportFrom) and len(found) < len(node.names):
            found.append(base)
        for target in found:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
    return targets


def import_graph() -> dict[str, set[str]]:
    """Module name -> the spec_tests modules it imports."""
    modules = _modules()
    return {name: _edges(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


#: The rooms, bottom first: each imports only the rooms before it (docs/architecture.md).
ROOMS = ("contract", "sim", "strategies", "plugin", "properties", "selftest", "cli")
#: Top-level doors that only re-export a room's names count as that room.
DOORS = {
    "backends": "contract",
    "verdicts": "contract",
    "driver": "sim",
    "ranks": "sim",
    "s3server": "sim",
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else ""
    name = DOORS.get(name, name)
    return name if name in ROOMS else None


def test_each_room_imports_only_the_rooms_below_it() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if (here := _room(module)) is not None
        and (there := _room(target)) is not None
        and ROOMS.index(there) > ROOMS.index(here)
    )
    assert upward == []


def test_the_import_graph_has_no_loop() -> None:
    assert cycles(import_graph()) == []


def test_the_backend_protocol_imports_nothing_of_the_suite() -> None:
    assert import_graph()["spec_tests.contract.protocol"] == set()


def test_the_cycle_finder_finds_a_loop() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
