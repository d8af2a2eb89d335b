"""Expected failures: ``[[xfail]]`` entries of TOML files, and how a listed test is judged.

An entry names a test (node-id globs), why it fails and, ideally, the failure it expects
(``raises``: exception class names; ``match``: a regex over the failure's whole chain). A
listed test that fails any other way is a real failure, so a known bug cannot hide a new one.
An entry may name the torch releases it applies to (``torch = ">=2.11,<2.15"``, a PEP 440
specifier set): on any other release it is not listed at all, so a bug fixed in a later torch
passes there as a plain pass rather than an unexpected one.
Cheap to import (the plugin loads it in every pytest run): stdlib, pytest and packaging (a
dependency of pytest) only; the torch release is read from its installed metadata, not by
importing torch.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from spec_tests.contract.verdicts import chain, text_of

__all__ = [
    "ExpectedFailure",
    "XfailEntry",
    "ENTRY",
    "NO_SHRINK",
    "entry_of",
    "expect",
    "for_torch",
    "kit_class",
    "kit_classes",
    "judged",
    "kit_entries",
    "read_xfails",
    "reproducible",
]


@dataclass(frozen=True, slots=True)
class XfailEntry:
    """One ``[[xfail]]`` entry of an expected-failures file.

    ``raises`` and ``match`` name the failure the entry expects: a listed test that fails
    any other way is a real failure (a known bug must not hide a new one).
    """

    test: str  # node id relative to the spec_tests package (or rootdir), fnmatch globs allowed
    reason: str
    source: str  # the file it came from, for messages
    issue: str | None = None
    # False for a bug that only some draws hit: under dcp-ci an unexpected pass is then
    # reported, not failed (the entry is still checked whenever the test does fail).
    strict: bool = True
    # Exception class names or module.qualnames, any one of them anywhere in the chain.
    raises: tuple[str, ...] | None = None
    match: str | None = None  # a regex searched in the failure's text (chain, messages, notes)
    torch: str | None = None  # the torch releases with the bug, a PEP 440 specifier set

    def applies_to(self, torch_release: str) -> bool:
        """Whether the entry lists its tests on ``torch_release`` (e.g. ``2.13.0+cpu``).

        Pre-releases and nightlies count (``2.16.0.dev20270101`` is inside ``>=2.11``), and a
        local label (``+cpu``) is ignored, as PEP 440 says.
        """
        if self.torch is None:
            return True
        return SpecifierSet(self.torch).contains(Version(torch_release), prereleases=True)

    @property
    def names_error(self) -> bool:
        """Whether the entry says which failure it expects."""
        return self.raises is not None or self.match is not None

    def mismatch(self, exc: BaseException) -> str | None:
        """Why ``exc`` is not the failure this entry expects; None when it is.

        Every failure of an exception group (hypothesis reports distinct bugs as one) must be
        the expected one.
        """
        leaves = _leaves(exc)
        for leaf in leaves:
            if self.raises is not None and not any(
                _is_named(type(e), name) for e in chain(leaf) for name in self.raises
            ):
                wanted = " or ".join(self.raises)
                return f"expected {wanted} in the exception chain, got {_described(leaf)}"
            if self.match is not None and re.search(self.match, text_of(leaf)) is None:
                return f"expected a failure matching {self.match!r}, got {_described(leaf)}"
        return None

    def matches(self, nodeid: str) -> bool:
        """Whether this entry covers ``nodeid`` (an entry without ``[param]`` covers them all)."""
        # Brackets are literal (parametrization ids), only * and ? are globs.
        pattern = self.test.replace("[", "\0").replace("]", "[]]").replace("\0", "[[]")
        base = nodeid.split("[", 1)[0]
        return fnmatch.fnmatchcase(nodeid, pattern) or fnmatch.fnmatchcase(base, pattern)

    @property
    def mark_reason(self) -> str:
        """The xfail reason shown by pytest: the entry's reason plus its issue."""
        return f"{self.reason} ({self.issue})" if self.issue else self.reason


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _is_named(kind: type, name: str) -> bool:
    return any(name in (k.__name__, f"{k.__module__}.{k.__qualname__}") for k in kind.__mro__)


def _described(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {text[0] if text else ''}"


class ExpectedFailure(Exception):
    """A listed test failed the way its entry says (pytest's xfail ``raises=`` target)."""


def read_xfails(path: Path, *, _within: tuple[Path, ...] = ()) -> list[XfailEntry]:
    """Parse an expected-failures TOML file; a malformed one is a usage error.

    A top-level ``include = ["base.toml"]`` (paths relative to the file) adds another file's
    entries after the file's own: a configuration that has every bug of its base configuration
    says so once, and restates (its own entry matches first) one that differs for it.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise pytest.UsageError(f"xfails file {path}: cannot read: {err}") from err
    includes = raw.get("include", [])
    if set(raw) - {"xfail", "include"} or not (
        isinstance(includes, list) and all(isinstance(i, str) for i in includes)
    ):
        raise pytest.UsageError(
            f"xfails file {path}: expected [[xfail]] tables and an optional include (a list of "
            f"file names), got the keys {sorted(raw)} and include = {includes!r}"
        )
    entries = [
        entry_of(dict(e), f"xfails file {path}: entry {n}", str(path))
        for n, e in enumerate(raw.get("xfail", []))
    ]
    for name in includes:
        target = path.parent / name
        if target.resolve() in (p.resolve() for p in (*_within, path)):
            raise pytest.UsageError(f"xfails file {path}: include {name!r} includes itself")
        entries += read_xfails(target, _within=(*_within, path))
    return entries


def kit_entries(xfails: Mapping[str, str | Mapping[str, Any]], source: str) -> list[XfailEntry]:
    """The entries of a kit class's ``xfails``: test-name glob -> reason, or -> a table with
    the keys of a TOML entry (``reason`` and optional ``raises``, ``match``, ``strict``,
    ``issue``). Malformed ones are usage errors."""
    entries = []
    for pattern, value in xfails.items():
        table = {"reason": value} if isinstance(value, str) else dict(value)
        if "test" in table:
            raise pytest.UsageError(
                f"{source}[{pattern!r}]: the key names the tests; expected no 'test' key, got "
                f"{table!r}"
            )
        entries.append(entry_of({"test": pattern, **table}, f"{source}[{pattern!r}]", source))
    return entries


def entry_of(entry: dict[str, Any], where: str, source: str) -> XfailEntry:
    """One entry from its keys (a TOML table or a kit ``xfails`` value): the one parser."""
    raises = entry.get("raises")
    if isinstance(raises, str):
        entry["raises"] = raises = (raises,)
    elif isinstance(raises, list | tuple) and raises and all(isinstance(r, str) for r in raises):
        entry["raises"] = raises = tuple(raises)
    if (
        set(entry) - _ENTRY_KEYS
        or not all(isinstance(entry.get(k), str) for k in ("test", "reason"))
        or not all(isinstance(v, str) for k, v in entry.items() if k not in _NOT_STR)
        or not isinstance(entry.get("strict", True), bool)
        or not (raises is None or isinstance(raises, tuple))
    ):
        raise pytest.UsageError(
            f"{where}: expected string keys test, reason and optional issue, match, torch, raises "
            f"(a string or a list of them) and strict (a bool), got {entry!r}"
        )
    try:
        re.compile(entry.get("match", ""))
    except re.error as err:
        raise pytest.UsageError(f"{where}: match {entry['match']!r} is not a regex: {err}") from err
    try:
        SpecifierSet(entry.get("torch", ""))
    except InvalidSpecifier as err:
        raise pytest.UsageError(
            f"{where}: torch {entry['torch']!r}: expected a PEP 440 specifier set such as "
            f"'>=2.11,<2.15', got {err}"
        ) from err
    return XfailEntry(source=source, **entry)


def for_torch(entries: list[XfailEntry], torch_release: str | None = None) -> list[XfailEntry]:
    """The entries that apply to ``torch_release`` (default: the installed torch's)."""
    release = torch_release or importlib.metadata.version("torch")
    try:
        Version(release)
    except InvalidVersion as err:
        raise pytest.UsageError(f"torch release {release!r} is not a PEP 440 version") from err
    return [e for e in entries if e.applies_to(release)]


_ENTRY_KEYS = frozenset({"test", "reason", "issue", "raises", "match", "strict", "torch"})
_NOT_STR = frozenset({"raises", "strict"})


def judged(entry: XfailEntry, exc: BaseException) -> BaseException:
    """What a listed test's failure ``exc`` becomes: an :class:`ExpectedFailure` (to raise from
    ``exc``) when it is the failure ``entry`` expects, else ``exc`` itself, with a note saying
    what was expected."""
    problem = entry.mismatch(exc)
    if problem is not None:
        exc.add_note(
            f"listed as an expected failure in {entry.source} ({entry.test}), but it failed "
            f"differently: {problem}"
        )
        return exc
    return ExpectedFailure(f"the expected failure: {_described(exc)}")


def reproducible() -> bool:
    """Whether this run draws the same examples every time (dcp-ci is derandomized).

    Entries are reproduced under dcp-ci; a randomized run may miss the one example
    that fails, so there an unexpected pass is reported (XPASS), not a failure.
    """
    from hypothesis import settings

    current = settings.default
    return current is not None and current.derandomize


#: What a listed test's entry is, and that it is not to be shrunk (read by the plugin's hooks).
ENTRY = pytest.StashKey[XfailEntry]()
NO_SHRINK = pytest.StashKey[bool]()


def expect(item: pytest.Item, entry: XfailEntry) -> None:
    """Mark ``item`` as the expected failure ``entry`` names, judged by pytest_runtest_call.

    Strict only where the run is reproducible (a derandomized profile): under random draws an
    entry whose bug only some draws hit would pass now and then, and the run's verdict would
    depend on the draw. There an unexpected pass is reported (XPASS), never a failure.
    """
    raises = ExpectedFailure if entry.names_error else None
    strict = reproducible() and entry.strict
    item.add_marker(pytest.mark.xfail(strict=strict, reason=entry.mark_reason, raises=raises))
    item.stash[ENTRY] = entry
    item.stash[NO_SHRINK] = True


def kit_class(item: pytest.Item) -> type | None:
    cls = getattr(item, "cls", None)
    return cls if callable(getattr(cls, "dcp_xfail_entries", None)) else None


def kit_classes(items: list[pytest.Item]) -> dict[type | None, list[XfailEntry]]:
    """Each collected kit class's ``xfails`` (spec_tests.kit.BackendTests), parsed once."""
    found: dict[type | None, list[XfailEntry]] = {}
    for item in items:
        cls = kit_class(item)
        if cls is not None and cls not in found:
            found[cls] = for_torch(list(cls.dcp_xfail_entries()))  # type: ignore[attr-defined]
    return found
