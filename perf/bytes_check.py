"""What the readers' bytes-entry check costs: ``python -m perf.bytes_check``.

Saves one checkpoint of many small non-tensor entries (the ints, floats, strings, short lists
and tuples of optimizer ``param_groups``, scheduler and dataloader state) beside one tensor,
then loads it with ``dcp.load`` through a reader that checks every entry (the default) and one
that does not (``trust_pickle=True``), alternating the two round by round so both see the same
machine. Prints the median of each and their ratio; docs/security.md says what the check is.
Then, without DCP around them, the check of the same entries' ``torch.save`` bytes beside
what the planner does with them (``torch.load(weights_only=False)``), interleaved the same way.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.checkpoint.storage import StorageReader

import dcp_impl
from dcp_impl.safe_load import PicklePolicy

__all__ = ["main", "measure", "measure_check", "small_entries"]

_BACKENDS = {
    "fs": (dcp_impl.FileSystemWriter, dcp_impl.FileSystemReader),
    "hf": (dcp_impl.HuggingFaceWriter, dcp_impl.HuggingFaceReader),
}


def small_entries(count: int) -> dict[str, Any]:
    """``count`` small non-tensor entries of the kinds training checkpoints hold, and a tensor."""
    kinds: list[Callable[[int], Any]] = [
        lambda i: i,
        lambda i: i / 7,
        lambda i: f"shard-{i:05d}",
        lambda i: [i, i + 1, i + 2],
        lambda i: (0.9, 0.999),
        lambda i: None if i % 2 else True,
    ]
    entries: dict[str, Any] = {f"e{i}": kinds[i % len(kinds)](i) for i in range(count)}
    return {"weight": torch.zeros(16), **entries}


def _load_once(reader: StorageReader, state: dict[str, Any]) -> float:
    """Seconds one ``dcp.load`` of ``state``'s entries takes; checks what it loaded."""
    target = {key: torch.zeros(16) if key == "weight" else None for key in state}
    start = time.perf_counter()
    dcp_load(target, storage_reader=reader, no_dist=True)
    seconds = time.perf_counter() - start
    wrong = [key for key, value in state.items() if key != "weight" and target[key] != value]
    if wrong:
        raise AssertionError(f"entries {wrong[:5]} loaded wrong")
    return seconds


def measure(backend: str, count: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per ``dcp.load`` of ``count`` entries, checked and trusted, interleaved."""
    writer, reader = _BACKENDS[backend]
    state = small_entries(count)
    with tempfile.TemporaryDirectory(prefix="bytes-check-") as path:
        dcp_save(state, storage_writer=writer(path), no_dist=True)
        variants = {"checked": False, "trusted": True}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(rounds + 1):  # the first round warms caches and is dropped
            order = list(variants) if round_ % 2 else list(variants)[::-1]
            for name in order:
                seconds = _load_once(reader(path, trust_pickle=variants[name]), state)
                if round_:
                    times[name].append(seconds)
    return times


def measure_check(count: int, rounds: int) -> dict[str, list[float]]:
    """Seconds to check ``count`` entries' bytes, and to unpickle them as the planner does."""
    raws = []
    for value in small_entries(count).values():
        buffer = io.BytesIO()
        torch.save(value, buffer)
        raws.append(buffer.getvalue())

    def check() -> None:
        PicklePolicy().check_all(("entry", raw) for raw in raws)

    def unpickle() -> None:
        for raw in raws:
            torch.load(io.BytesIO(raw), weights_only=False)

    steps = {"check": check, "planner unpickle": unpickle}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(rounds + 1):  # the first round warms caches and is dropped
        for name in list(steps) if round_ % 2 else list(steps)[::-1]:
            start = time.perf_counter()
            steps[name]()
            if round_:
                times[name].append(time.perf_counter() - start)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement and print medians; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m perf.bytes_check", description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backend", choices=sorted(_BACKENDS), action="append")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    for backend in args.backend or ["fs", "hf"]:
        times = measure(backend, args.entries, args.rounds)
        checked, trusted = (statistics.median(times[n]) for n in ("checked", "trusted"))
        print(
            f"{backend}: {args.entries} bytes entries, median of {args.rounds} interleaved loads: "
            f"checked {checked * 1e3:.0f} ms, trusted {trusted * 1e3:.0f} ms, "
            f"ratio {checked / trusted:.2f} ({(checked - trusted) / args.entries * 1e6:.0f} us "
            "per entry)"
        )
    times = measure_check(args.entries, args.rounds)
    check, unpickle = (statistics.median(times[n]) for n in ("check", "planner unpickle"))
    print(
        f"check alone: {args.entries} entries' bytes, median of {args.rounds}: check "
        f"{check * 1e3:.0f} ms, the planner's torch.load {unpickle * 1e3:.0f} ms, "
        f"ratio {check / unpickle:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
