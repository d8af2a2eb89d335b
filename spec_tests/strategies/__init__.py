"""Hypothesis strategies for the DCP conformance suite.

House style (hypothesis ``guides/api-style.rst``): arguments are keyword-only
and validated eagerly, dependent strategies take concrete values (draw the
shape first, then ``layouts(shape, ranks=...)``), everything shrinks toward
one chunk, one rank and small shapes, and each record carries its own
expected answer (a :class:`SaveLayout` knows which boxes it covers; a
:class:`ReshardCase` knows both layouts).

- :mod:`.tensors`: dtypes, shapes, raw bit patterns, entry names, non-contiguous views;
- :mod:`.state_dicts`: nested state dicts of tensors and plain objects;
- :mod:`.layouts`: sharding layouts and reshard cases, from one table of layout kinds;
- :mod:`.named`: fixed named values (edge cases) that every run tries (explicit examples).
"""

from spec_tests.strategies.layouts import (
    KINDS,
    LAYOUT_KINDS,
    ONE_CHUNK_KINDS,
    LayoutKind,
    ReshardCase,
    SaveLayout,
    kinds_needing,
    kinds_within,
    layouts,
    reshard_cases,
)
from spec_tests.strategies.named import NamedCases
from spec_tests.strategies.state_dicts import state_dicts
from spec_tests.strategies.tensors import (
    RESERVED_NAMES,
    dtypes,
    names,
    noncontiguous,
    shapes,
    special_values,
    tensor_values,
)

__all__ = [
    "KINDS",
    "LAYOUT_KINDS",
    "ONE_CHUNK_KINDS",
    "RESERVED_NAMES",
    "LayoutKind",
    "NamedCases",
    "ReshardCase",
    "SaveLayout",
    "dtypes",
    "kinds_needing",
    "kinds_within",
    "layouts",
    "names",
    "noncontiguous",
    "reshard_cases",
    "shapes",
    "special_values",
    "state_dicts",
    "tensor_values",
]
