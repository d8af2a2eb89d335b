"""How a failure is replayed: the current run's SPEC, profile and seed, set by the plugin.

The plugin fills :data:`RUN` when a suite run starts (and ``RUN.current`` before each test);
the harness's repro notes (:mod:`spec_tests.sim.harness.repro`) and the plugin's end-of-run
summary read it. Stdlib only: the plugin imports it in every pytest run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RUN", "RunInfo", "replay_note"]


@dataclass(slots=True)
class RunInfo:
    """What a rerun command needs from this run: the SPEC, the profile, the seed, the root."""

    spec: str = "reference"
    profile: str = "dcp-dev"
    seed: str | None = None
    root: str | None = None
    derandomized: bool = False  # the profile draws the same examples every run
    database: bool = True  # hypothesis saves failing examples (and replays them first)
    current: str = ""  # the rerun command of the test running now (for repro notes)
    extra: list[str] = field(default_factory=list)


RUN = RunInfo()


def replay_note(run: RunInfo = RUN) -> str:
    """How the rerun command replays the failing example under this run's profile."""
    if run.derandomized:
        return f"{run.profile} is derandomized: the same draws replay it"
    if run.database:
        return "hypothesis replays the saved failing example first (.hypothesis/ in this folder)"
    return "no example database here: paste the @reproduce_failure line above into a copy"
