"""The conformance harness: N simulated ranks driving a backend as ``dcp.save``/``dcp.load`` do.

- :mod:`.planners`: DCP's default planning over drawn state dicts; faults on purpose;
  SENTINEL-filled destinations and exactly-once commits.
- :mod:`.checked`: the call sequence of :mod:`spec_tests.sim.driver` with every contract check on.
- :mod:`.tensors`: sharding a tensor into rank boxes, bit-exact comparison.
- :mod:`.repro`: the reproduction note every failure carries.

Every verdict is a :class:`~spec_tests.contract.verdicts.ContractViolation`.
"""

from spec_tests.sim.harness.checked import (
    BackendBaseException,
    Saved,
    call,
    load,
    save,
    threads_surface_errors,
)
from spec_tests.sim.harness.planners import (
    BytesRequest,
    FailOn,
    Fault,
    InjectedFault,
    MissingEntry,
    Request,
    SpecLoadPlanner,
    SpecSavePlanner,
    TensorRequest,
    bytes_of,
)
from spec_tests.sim.harness.repro import repro
from spec_tests.sim.harness.tensors import (
    SENTINEL,
    Shards,
    as_bytes,
    assert_bit_equal,
    region,
    shard,
)

__all__ = [
    "SENTINEL",
    "BackendBaseException",
    "BytesRequest",
    "FailOn",
    "Fault",
    "InjectedFault",
    "MissingEntry",
    "Request",
    "Saved",
    "Shards",
    "SpecLoadPlanner",
    "SpecSavePlanner",
    "TensorRequest",
    "as_bytes",
    "assert_bit_equal",
    "bytes_of",
    "call",
    "load",
    "region",
    "repro",
    "save",
    "shard",
    "threads_surface_errors",
]
