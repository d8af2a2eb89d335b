"""The repository's ``perf`` and ``nightly`` folders as packages, for tests that use them.

They are folders of the repository, not installed packages (pyproject installs dcp_impl and
spec_tests only): a package is registered from the checkout, then its modules import one
another as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["checkout_module", "perf_module"]

_ROOT = Path(__file__).resolve().parents[1]


def checkout_module(package: str, name: str) -> ModuleType:
    """``<package>.<name>``, imported from this checkout (``package``: perf or nightly)."""
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            package,
            _ROOT / package / "__init__.py",
            submodule_search_locations=[str(_ROOT / package)],
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.{name}")


def perf_module(name: str) -> ModuleType:
    """``perf.<name>``, imported from this checkout."""
    return checkout_module("perf", name)
