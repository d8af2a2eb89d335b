"""The read engine's planning steps, each a pure algorithm worth testing on its own.

A public module (not re-exported by :mod:`dcp_impl.transfer`) for maintainers of the engine
and its tests (tests/test_io_runs.py, tests/test_inflight.py); nothing here is needed to
build a backend or a store, and the names may change with the engine:

* :func:`plan_runs` / :class:`Runs`: a sub-box of a row-major chunk as runs of contiguous
  bytes (what one vectored read fills);
* :func:`coalesced`: sorted requests batched into neighbours of one file within a span (one
  read per batch, for object stores);
* :class:`Budget` / :func:`slices`: the host memory a capped load holds, and buffers cut into
  groups within a limit (``max_inflight_bytes``).

How the engine chooses among its read paths is :mod:`dcp_impl.transfer.strategy`.
"""

from dcp_impl.transfer._budget import Budget, slices
from dcp_impl.transfer._requests import coalesced
from dcp_impl.transfer._runs import Runs, plan_runs

__all__ = ["Runs", "plan_runs", "coalesced", "Budget", "slices"]
