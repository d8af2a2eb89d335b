"""The catalogue: every deliberately broken backend, and the faithful wrappers that must pass.

Each entry is a :class:`~spec_tests.selftest.wrap.Wrapped` class; its SPEC for
``--dcp-backend`` is ``module:ClassName`` (:func:`spec_of`).
"""

from __future__ import annotations

from spec_tests.selftest import (
    adversity,
    asynchronous,
    files,
    inputs,
    loads,
    pieces,
    protocol,
    readers,
    rules,
    sharing,
    writers,
)
from spec_tests.selftest.wrap import Wrapped

__all__ = ["BROKEN", "FAITHFUL", "FaithfulFS", "FaithfulReference", "spec_of"]


class FaithfulReference(Wrapped):
    """``reference`` through the wrapping machinery, unchanged: must pass the whole suite."""


class FaithfulFS(Wrapped):
    """``dcp_impl-fs`` through the wrapping machinery, unchanged: must pass the whole suite."""

    base = "dcp_impl-fs"


FAITHFUL: tuple[type[Wrapped], ...] = (FaithfulReference, FaithfulFS)

BROKEN: tuple[type[Wrapped], ...] = tuple(
    getattr(module, name)
    for module in (
        writers,
        readers,
        protocol,
        adversity,
        rules,
        inputs,
        asynchronous,
        files,
        loads,
        sharing,
        pieces,
    )
    for name in module.__all__
)


def spec_of(backend: type[Wrapped]) -> str:
    """The ``--dcp-backend`` SPEC that rebuilds ``backend`` (in a subprocess too)."""
    return f"{backend.__module__}:{backend.__qualname__}"
