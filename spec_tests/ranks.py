"""Real processes for multi-process checks: the documented path of :mod:`spec_tests.sim.ranks`."""

from spec_tests.sim.ranks import (
    DEFAULT_TIMEOUT,
    RankOutcome,
    RanksFailed,
    check_ranks,
    run_ranks,
    spawn_ranks,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "RankOutcome",
    "RanksFailed",
    "run_ranks",
    "spawn_ranks",
    "check_ranks",
]
