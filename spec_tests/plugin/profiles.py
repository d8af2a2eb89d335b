"""The suite's hypothesis profiles: ``dcp-dev``, ``dcp-ci``, ``dcp-selftest``, ``dcp-mutation``,
``dcp-nightly``.

Registered only when the suite is in use (hypothesis is imported lazily).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

__all__ = ["NIGHTLY", "PROFILES", "bind_settings", "few", "register_profiles"]

PROFILES = ("dcp-dev", "dcp-ci", "dcp-nightly", "dcp-selftest", "dcp-mutation")
NIGHTLY = "dcp-nightly"


def register_profiles(*, load_default: bool) -> str:
    from hypothesis import HealthCheck, Phase, settings

    # Generating and storing multi-MiB tensors on shared CI cores is slow by nature, and
    # dcp_location is a function-scoped fixture that is *meant* to be called once per example.
    quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    # Profiles inherit the loaded one: under CI=true that is hypothesis' derandomized "ci"
    # profile, so the exploring profiles say derandomize=False themselves.
    settings.register_profile(
        "dcp-dev",
        max_examples=10,
        derandomize=False,
        deadline=None,
        print_blob=True,  # a second way to replay a failure, beside the example database
        suppress_health_check=quiet,
    )
    settings.register_profile(
        "dcp-ci",
        max_examples=25,
        derandomize=True,
        deadline=None,
        print_blob=True,
        database=None,  # derandomized runs gain nothing from a replay database
        suppress_health_check=quiet,
    )
    # The self-test's: dcp-ci's examples (derandomized, so the same draws), without shrinking
    # a failure or explaining it. Only the verdict counts there, and it is the same.
    settings.register_profile(
        "dcp-selftest",
        settings.get_profile("dcp-ci"),
        phases=[p for p in Phase if p not in (Phase.shrink, Phase.explain)],
    )
    # The mutation score's (tools/mutation.py): the self-test's, run again and again in
    # processes forked from one that already ran each property once, which hypothesis would
    # take for a test called from several executors.
    settings.register_profile(
        "dcp-mutation",
        settings.get_profile("dcp-selftest"),
        suppress_health_check=[*quiet, HealthCheck.differing_executors],
    )
    settings.register_profile(
        "dcp-nightly",
        max_examples=400,
        derandomize=False,
        deadline=None,
        print_blob=True,
        suppress_health_check=quiet,
    )
    previous = settings.get_current_profile_name()
    if load_default:
        settings.load_profile("dcp-dev")
    return previous


_F = TypeVar("_F", bound=Callable[..., Any])
_FEW = "_dcp_few"


def few(n: int) -> Callable[[_F], _F]:
    """Decorator: at most ``n`` examples (or the profile's count if smaller), for expensive
    properties. Resolved when the test runs (:func:`bind_settings`), not when it is imported."""

    def mark(test: _F) -> _F:
        setattr(test, _FEW, n)
        return test

    return mark


def bind_settings(item: pytest.Item, *, shrink: bool) -> None:
    """Give a suite property the settings of the profile loaded now, with its ``few`` limit;
    any listed expected failure (``shrink=False``) is not shrunk.

    ``@given`` captures the default settings when a module is imported, which may be before
    ``--hypothesis-profile`` is loaded (a conftest or another test module importing the
    properties), and the loaded profile would then silently not apply. Without ``shrink``
    (an expected failure: nobody reads its minimal example, and shrinking dozens of known
    bugs would take most of a CI run) failures are reported as found.
    """
    obj = getattr(item, "obj", None)
    test = getattr(obj, "__func__", obj)
    if getattr(test, "hypothesis", None) is None:
        return
    from hypothesis import Phase, settings

    if _ours(test):
        current = settings.default
    elif not shrink:  # someone else's property, listed as expected to fail: keep its settings
        current = test._hypothesis_internal_use_settings  # type: ignore[union-attr]
    else:
        return  # someone else's property: its author chose its settings
    changes: dict[str, Any] = {}
    limit = getattr(test, _FEW, None)
    if limit is not None and current is not None:
        changes["max_examples"] = min(limit, current.max_examples)
    if not shrink and current is not None:
        changes["phases"] = [p for p in current.phases if p not in (Phase.shrink, Phase.explain)]
    test._hypothesis_internal_use_settings = settings(current, **changes)  # type: ignore[union-attr]


def _ours(test: object) -> bool:
    module = getattr(test, "__module__", "") or ""
    return module.startswith("spec_tests.") or hasattr(test, _FEW)
