"""DCP's call sequence, as the suite plays it: the path the design notes and earlier
releases name for :mod:`spec_tests.sim.driver`, where it lives."""

from spec_tests.sim.driver import (
    Calls,
    Saved,
    load,
    plan_global_load,
    plan_global_save,
    plan_local_load,
    plan_local_save,
    plan_save_alone,
    save,
)

__all__ = [
    "Calls",
    "Saved",
    "load",
    "plan_global_load",
    "plan_global_save",
    "plan_local_load",
    "plan_local_save",
    "plan_save_alone",
    "save",
]
