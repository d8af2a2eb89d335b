"""What other packages (perf, benchmarks of a backend) use of the suite, in one public module.

The backend contract and registry, checkpoint locations, sharding layouts, DCP's call
sequence (:mod:`spec_tests.sim.driver`: plain calls, or the planning steps alone), the plain
planners over given pieces, real rank processes and bit-exact comparison. The suite's own
modules may move between releases; these names stay.
"""

from spec_tests.backends import Backend, BackendSpecError, builtin, claims, load_backend
from spec_tests.properties.scale import frozen_heap
from spec_tests.sim import driver, locations, shardings
from spec_tests.sim.harness import assert_bit_equal, region
from spec_tests.sim.plain import Piece, PieceLoadPlanner, PieceSavePlanner
from spec_tests.sim.ranks import check_ranks, run_ranks, spawn_ranks

__all__ = [
    "frozen_heap",
    "Backend",
    "BackendSpecError",
    "builtin",
    "claims",
    "load_backend",
    "driver",
    "locations",
    "shardings",
    "assert_bit_equal",
    "region",
    "Piece",
    "PieceLoadPlanner",
    "PieceSavePlanner",
    "check_ranks",
    "run_ranks",
    "spawn_ranks",
]
