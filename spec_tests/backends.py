"""The backend contract the conformance suite accepts, and how a SPEC names a backend.

The public door to :mod:`spec_tests.contract` (outside tools import from here; the names are
fixed). A backend is any object with ``name``, ``capabilities`` (a frozenset of names from
:data:`CAPABILITIES`, or None for "claims every capability"), ``make_writer(path)`` and
``make_reader(path)``; optional members are listed in :data:`OPTIONAL_MEMBERS`. The suite
selects one with ``--dcp-backend=SPEC`` where SPEC is a built-in name or ``module:attr``,
optionally followed by ``[CONFIG]``, one of the backend's named configurations
(:func:`configurations`); :func:`load_backend` resolves a SPEC, :func:`builtin` returns a
built-in.
"""

from spec_tests.contract.builtins import (
    OPT_IN,
    DcpImplFS,
    DcpImplHF,
    DcpImplHFConsolidated,
    TorchFS,
    TorchFsspec,
    TorchHF,
    TorchHFConsolidated,
)
from spec_tests.contract.capabilities import CAPABILITIES, claimed_dtypes, claims
from spec_tests.contract.protocol import OPTIONAL_MEMBERS, Backend
from spec_tests.contract.registry import (
    BUILTIN_NAMES,
    DEFAULTS,
    BackendSpecError,
    builtin,
    check_constructible,
    configurations,
    load_backend,
)

__all__ = [
    "Backend",
    "BackendSpecError",
    "CAPABILITIES",
    "BUILTIN_NAMES",
    "OPT_IN",
    "DEFAULTS",
    "OPTIONAL_MEMBERS",
    "builtin",
    "configurations",
    "load_backend",
    "check_constructible",
    "claims",
    "claimed_dtypes",
    "DcpImplFS",
    "DcpImplHF",
    "DcpImplHFConsolidated",
    "TorchFS",
    "TorchHF",
    "TorchHFConsolidated",
    "TorchFsspec",
]
