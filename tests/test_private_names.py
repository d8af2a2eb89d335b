"""No package reaches into another's private names (docs/architecture.md): what a test, a
benchmark or another package needs is a public name of a public module.

Checked with ``ast`` over every tracked Python file of the repository's packages, docs and
tests: ``from a._b import c``, ``from a import _b``, ``import a._b`` and attribute paths such
as ``a.b._c`` all count; a package's own private names and dunder modules (``__main__``) do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = frozenset({"dcp_impl", "spec_tests", "perf", "nightly", "tools", "tests"})
SCANNED = (*sorted(PACKAGES), "docs")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _crossings(owner: str, tree: ast.AST) -> list[tuple[int, str]]:
    """The private names of other packages that ``tree`` (of package ``owner``) reaches."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            dotted = [*node.module.split("."), *(a.name for a in node.names)]
            target = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                dotted = alias.name.split(".")
                if dotted[0] in PACKAGES and dotted[0] != owner and any(map(_private, dotted)):
                    found.append((node.lineno, alias.name))
            continue
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if not isinstance(value, ast.Name):
                continue
            dotted, target = [value.id, *reversed(chain)], ".".join([value.id, *reversed(chain)])
        else:
            continue
        if dotted[0] in PACKAGES and dotted[0] != owner and any(map(_private, dotted)):
            found.append((node.lineno, target))
    return found


def test_no_package_imports_another_packages_private_names() -> None:
    crossings = [
        f"{path.relative_to(ROOT)}:{line}: {target}"
        for folder in SCANNED
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, target in _crossings(folder, ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert crossings == []


def test_the_check_finds_each_kind_of_crossing() -> None:
    source = (
        "from dcp_impl.transfer._read import x\n"
        "from dcp_impl.store import _fsspec\n"
        "import spec_tests.selftest._wrap\n"
        "dcp_impl.huggingface._storage.consolidate = None\n"
        "from tests._metadata import sample\n"  # the owner's own private module: fine
        "from dcp_impl.__main__ import main\n"  # a dunder module: fine
    )
    found = [target for _, target in _crossings("tests", ast.parse(source))]
    assert found == [
        "dcp_impl.transfer._read",
        "dcp_impl.store",
        "spec_tests.selftest._wrap",
        "dcp_impl.huggingface._storage",
    ]
