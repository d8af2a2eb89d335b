"""Large cases (64 MiB in CI, GiB nightly): fixed parameters and a fixed pattern, never drawn.

A drawn case that fails is shrunk and explained: hypothesis replays it hundreds of times,
each replay allocating, saving and (until the test ends) keeping on disk or in a store a
case as large as the first. A failing 64 MiB property once grew a CI run past 22 GiB, and
the kernel killed it before any verdict was written. So a large case is a fixed parameter
(``pytest.mark.parametrize``, not ``@given``), its values the pattern below: it fails at
once, with its repro note, holding one case (docs/conformance.md, "Bounded memory").
"""

from __future__ import annotations

import torch

from dcp_impl.dtypes import by_torch
from spec_tests.backends import Backend
from spec_tests.properties.checks import claimed

__all__ = ["large_dtype", "large_pattern"]

# An odd multiplier (PCG's) permutes the 64-bit words: consecutive indices give words that
# differ in every byte, so a byte landing at a wrong offset, swapped or dropped never looks
# right, whatever the dtype the bytes are viewed as.
_SPREAD = 6364136223846793005


def large_pattern(nbytes: int, dtype: torch.dtype, *, seed: int) -> torch.Tensor:
    """``nbytes`` (rounded up to whole elements) of distinct 8-byte words, viewed as ``dtype``.

    Flat; reshape it. Bool gets the low bit of each byte (its only valid bytes are 0 and 1).
    """
    itemsize = by_torch(dtype).itemsize
    size = -(-nbytes // itemsize) * itemsize
    words = torch.arange(seed, seed + -(-size // 8), dtype=torch.int64)
    raw = words.mul_(_SPREAD).view(torch.uint8)[:size]  # int64 products wrap: defined in torch
    if dtype is torch.bool:
        raw = raw.bitwise_and_(1)
    return raw.view(dtype)


def large_dtype(backend: Backend, case: int, cases: int) -> torch.dtype:
    """The dtype for fixed case ``case`` of ``cases``: that far through the claimed dtypes.

    In the dtype table's order, bool skipped (unless it is all that is claimed): the cases of
    one property spread over integers, floats, complex and the rest, the same in every run.
    """
    dtypes = claimed(backend)
    usable = [d for d in dtypes if d is not torch.bool] or dtypes
    return usable[case * len(usable) // cases]
