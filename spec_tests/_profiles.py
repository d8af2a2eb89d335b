"""The suite's hypothesis profiles: ``dcp-dev``, ``dcp-ci``, ``dcp-selftest``, ``dcp-nightly``.

Registered only when the suite is in use (hypothesis is imported lazily).
"""

from __future__ import annotations

__all__ = ["NIGHTLY", "PROFILES", "register_profiles"]

PROFILES = ("dcp-dev", "dcp-ci", "dcp-nightly", "dcp-selftest")
NIGHTLY = "dcp-nightly"


def register_profiles(*, load_default: bool) -> str:
    from hypothesis import HealthCheck, Phase, settings

    # Generating and storing multi-MiB tensors on shared CI cores is slow by nature, and
    # dcp_location is a function-scoped fixture that is *meant* to be called once per example.
    quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    # Profiles inherit the loaded one: under CI=true that is hypothesis' derandomized "ci"
    # profile, so the exploring profiles say derandomize=False themselves.
    settings.register_profile(
        "dcp-dev", max_examples=10, derandomize=False, deadline=None, suppress_health_check=quiet
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
