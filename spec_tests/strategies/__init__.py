"""Hypothesis strategies for the DCP conformance suite.

House style (hypothesis ``guides/api-style.rst``): arguments are keyword-only
and validated eagerly, dependent strategies take concrete values (draw the
shape first, then ``layouts(shape, ranks=...)``), everything shrinks toward
one chunk, one rank and small shapes, and each record carries its own
expected answer (a :class:`SaveLayout` knows which boxes it covers; a
:class:`ReshardCase` knows both layouts).

- :mod:`.tensors`: dtypes, shapes, raw bit patterns, entry names;
- :mod:`.views`: every kind of view a state dict holds (one table), storage shared by entries;
- :mod:`.state_dicts`: nested state dicts of tensors and plain objects, up to hundreds of
  entries (:func:`bulk_entries` makes thousands deterministically);
- :mod:`.objects`: legitimate non-tensor entries that are not ``weights_only``-safe;
- :mod:`.layouts`: sharding layouts and reshard cases, from one table of layout kinds.
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
from spec_tests.strategies.objects import USER_OBJECTS
from spec_tests.strategies.state_dicts import DRAWN_ENTRIES, bulk_entries, entry_counts, state_dicts
from spec_tests.strategies.tensors import (
    RESERVED_NAMES,
    dtypes,
    names,
    noncontiguous,
    shapes,
    special_values,
    tensor_values,
)
from spec_tests.strategies.views import (
    SHARING,
    VIEW_KINDS,
    VIEWS,
    ViewKind,
    kinds_for,
    make_view,
    resolved,
    shared_entries,
    views,
)

__all__ = [
    "DRAWN_ENTRIES",
    "KINDS",
    "LAYOUT_KINDS",
    "ONE_CHUNK_KINDS",
    "RESERVED_NAMES",
    "SHARING",
    "USER_OBJECTS",
    "VIEWS",
    "VIEW_KINDS",
    "LayoutKind",
    "NamedCases",
    "ReshardCase",
    "SaveLayout",
    "ViewKind",
    "bulk_entries",
    "dtypes",
    "entry_counts",
    "kinds_for",
    "kinds_needing",
    "kinds_within",
    "layouts",
    "make_view",
    "names",
    "noncontiguous",
    "reshard_cases",
    "resolved",
    "shapes",
    "shared_entries",
    "special_values",
    "state_dicts",
    "tensor_values",
    "views",
]
