"""How a suite run finds what its command line names: the backend's module, built-in lists.

Cheap to import (the plugin loads it in every pytest run): stdlib and pytest only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from spec_tests.backends import Backend

__all__ = ["check_xfail_names", "load_from"]


def load_from(spec: str, invocation_dir: Path | None) -> Backend:
    """``load_backend(spec)``, retried with ``invocation_dir`` on sys.path if its module is absent.

    ``python -m pytest`` puts the current folder on sys.path and ``pytest`` does not, so an
    author's uninstalled ``mystore.conformance:MyStoreBackend``, run from the folder holding
    ``mystore/``, is found either way (as ``python -m spec_tests probe`` finds it).
    """
    from spec_tests.backends import BackendSpecError, load_backend

    try:
        return load_backend(spec)
    except BackendSpecError as err:
        cause = err.__cause__
        top = spec.partition(":")[0].split(".")[0]
        where = None if invocation_dir is None else str(invocation_dir)
        missing = isinstance(cause, ModuleNotFoundError) and cause.name == top
        if not missing or where is None or where in sys.path:
            raise
        sys.path.insert(0, where)  # child processes (spawn) inherit it
        return load_backend(spec)


def check_xfail_names(names: list[str], folder: Path) -> None:
    """UsageError unless every ``--dcp-xfails NAME`` is a built-in list ``folder/NAME.toml``."""
    known = sorted(p.stem for p in folder.glob("*.toml"))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise pytest.UsageError(
            f"--dcp-xfails {', '.join(unknown)}: no such built-in list; expected one of "
            f"{', '.join(known)} (a file of your own: --dcp-xfails-file=PATH)"
        )
