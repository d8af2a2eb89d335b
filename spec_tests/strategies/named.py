"""Named cases: fixed values a property names, tried in every run under every profile.

A value worth naming (a URL checkpoint id, a size either side of a boundary, a dtype's
NaN payload) hidden in one branch of a ``one_of`` is tried only when a draw happens to
pick it: under a derandomized profile, in some runs never. A :class:`NamedCases` table
turns each named value into a hypothesis ``@example`` (explicit examples run in every
phase set the suite uses, before any draw) and still lets draws pick them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hypothesis import example
from hypothesis import strategies as st

__all__ = ["NAMED_CASES_ATTR", "NamedCases"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Attribute a decorated property carries: its argument name and table, for the suite's tests.
NAMED_CASES_ATTR = "_dcp_named_cases"


@dataclass(frozen=True, slots=True)
class NamedCases(Generic[T]):
    """A table of fixed values (label -> value) that every run of a property tries."""

    cases: Mapping[str, T]

    def __post_init__(self) -> None:
        if not self.cases:
            raise ValueError("NamedCases needs at least one case, got an empty table")

    def __iter__(self) -> Iterator[tuple[str, T]]:
        """The (label, value) pairs, for a deterministic loop inside a property."""
        return iter(self.cases.items())

    def values(self) -> list[T]:
        """The named values, in table order."""
        return list(self.cases.values())

    def examples(self, argname: str) -> Callable[[F], F]:
        """Decorator (above ``@given``): one ``@example(argname=value)`` per named value."""

        def decorate(test: F) -> F:
            for value in reversed(self.values()):  # run in table order
                test = example(**{argname: value})(test)
            tables = {**getattr(test, NAMED_CASES_ATTR, {}), argname: self}
            setattr(test, NAMED_CASES_ATTR, tables)
            return test

        return decorate

    def or_drawn(self, drawn: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
        """``drawn``, or a named value (so that shrinking and random runs meet them too)."""
        return st.one_of(drawn, st.sampled_from(self.values()))
