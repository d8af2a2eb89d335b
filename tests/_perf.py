"""The repository's ``perf`` folder as a package, for tests that use its helpers.

perf/ is a folder of the repository, not an installed package (pyproject installs dcp_impl and
spec_tests only): the package is registered from the checkout, then its modules import one
another as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["perf_module"]

_ROOT = Path(__file__).resolve().parents[1]


def perf_module(name: str) -> ModuleType:
    """``perf.<name>``, imported from this checkout."""
    if "perf" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "perf", _ROOT / "perf" / "__init__.py", submodule_search_locations=[str(_ROOT / "perf")]
        )
        assert spec is not None
        assert spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["perf"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"perf.{name}")
