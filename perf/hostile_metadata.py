"""Hostile metadata at scale: ``python -m perf.hostile_metadata [--chunks 20000] [--rounds 3]``.

Builds the documents and layouts an attacker would pick to make decoding and validating cost
the most per byte (docs/format.md, "Costs and limits"): many tiny chunks with distinct,
repeated or no offsets, many entries, long storage columns, planner paths; grids, crossing
strips and a spiral of strips for ``validate``. For each, at ``n`` and ``10 n`` chunks, it
prints the best time of ``dcp_impl.metadata.loads`` (or ``validate``), how much worse it
scales than its baseline measured in the same rounds (``json.loads`` of the same document;
building the chunks' boxes), and the peak traced memory per document byte.
tests/test_metadata_costs.py holds the same families to the bounds docs/format.md states.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    TensorProperties,
    TensorStorageMetadata,
)

from dcp_impl import metadata as mf
from dcp_impl.layout import Box

__all__ = ["DOCUMENTS", "LAYOUTS", "best", "boxes_of", "layout_metadata", "main", "peak", "scaling"]

_PROPS = {
    "dtype": "float32",
    "layout": "strided",
    "requires_grad": False,
    "memory_format": "contiguous_format",
    "pin_memory": False,
    "strides": None,
}


def _doc(entries: dict[str, Any], **top: Any) -> bytes:
    body = {
        "format": mf.FORMAT_NAME,
        "format_version": mf.FORMAT_VERSION,
        "version": None,
        "state_dict_metadata": entries,
        "planner_data": None,
        "storage_data": None,
        "storage_meta": None,
        **top,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _table(n: int, ndim: int, offsets: list[int], row: list[int]) -> dict[str, Any]:
    chunks = {"offsets": offsets, "sizes": [0] * n, "size_table": [row]}
    return {"kind": "tensor", "properties": _PROPS, "size": [n] * ndim, "chunks": chunks}


# Hostile documents of n chunks or entries: each the cheapest bytes per decoded object.
DOCUMENTS: dict[str, Callable[[int], bytes]] = {
    "distinct-offsets": lambda n: _doc({"t": _table(n, 1, list(range(n)), [1])}),
    "repeated-offsets": lambda n: _doc({"t": _table(n, 1, [0] * n, [1])}),
    "zero-dim-chunks": lambda n: _doc({"t": _table(n, 0, [], [])}),
    "bytes-entries": lambda n: _doc({f"{i:x}": {"kind": "bytes"} for i in range(n)}),
    "storage-items": lambda n: _doc(
        {"t": _table(n, 1, list(range(n)), [1])},
        storage_data={
            "files": ["d"],
            "entry": [0] * n,
            "chunk": list(range(n)),
            "index": [None] * n,
            "file": [0] * n,
            "offset": [0] * n,
            "length": [0] * n,
            "checksum": [None] * n,
        },
    ),
    "planner-paths": lambda n: _doc({}, planner_data={f"{i:x}": [0, 0, 0] for i in range(n)}),
}


_Boxes = list[tuple[tuple[int, ...], tuple[int, ...]]]
"""(offsets, sizes) of each chunk."""


def _square(n: int) -> int:
    return max(1, int(n**0.5))


def _boxes_1d(n: int) -> tuple[list[int], _Boxes]:
    return [n], [((i,), (1,)) for i in range(n)]


def _boxes_grid(n: int) -> tuple[list[int], _Boxes]:
    k = _square(n)
    boxes: _Boxes = [((i, j), (1, 1)) for i in range(k) for j in range(k)]
    return [k, k], boxes


def _boxes_cross(n: int) -> tuple[list[int], _Boxes]:
    h = n // 2  # rows of full-width strips, then a band of one-column strips
    rows: _Boxes = [((i, 0), (1, h)) for i in range(h)]
    return [2 * h, h], rows + [((h, j), (h, 1)) for j in range(h)]


def _boxes_spiral(n: int) -> tuple[list[int], _Boxes]:
    side = n // 2
    r0, r1, c0, c1 = 0, side, 0, side
    boxes: _Boxes = []
    while r0 < r1 and c0 < c1:  # peel one strip per side, turning inwards
        turn = len(boxes) % 4
        if turn == 0:
            boxes.append(((r0, c0), (1, c1 - c0)))
            r0 += 1
        elif turn == 1:
            boxes.append(((r0, c1 - 1), (r1 - r0, 1)))
            c1 -= 1
        elif turn == 2:
            boxes.append(((r1 - 1, c0), (1, c1 - c0)))
            r1 -= 1
        else:
            boxes.append(((r0, c0), (r1 - r0, 1)))
            c0 += 1
    return [side, side], boxes


LAYOUTS = {"1d": _boxes_1d, "grid": _boxes_grid, "cross": _boxes_cross, "spiral": _boxes_spiral}


def layout_metadata(layout: str, n: int) -> Metadata:
    """One tensor whose chunks are the ``layout`` family's at about ``n`` chunks."""
    shape, boxes = LAYOUTS[layout](n)
    chunks = [ChunkStorageMetadata(torch.Size(o), torch.Size(s)) for o, s in boxes]
    entry = TensorStorageMetadata(TensorProperties(torch.float32), torch.Size(shape), chunks)
    return Metadata({"t": entry})


def best(calls: list[Callable[[], object]], rounds: int = 3) -> list[float]:
    """Each call's best time over ``rounds`` interleaved rounds: the least disturbed by other
    work on the machine, and every call as disturbed as the others."""
    times = [float("inf")] * len(calls)
    for _ in range(rounds):
        for i, call in enumerate(calls):
            gc.collect()
            start = time.perf_counter()
            call()
            times[i] = min(times[i], time.perf_counter() - start)
    return times


def peak(call: Callable[[], object]) -> int:
    """Peak bytes tracemalloc traces while ``call`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def boxes_of(md: Metadata) -> object:
    """The baseline of ``validate``: one linear pass building the chunks' boxes."""
    entry = md.state_dict_metadata["t"]
    assert isinstance(entry, TensorStorageMetadata)
    return [Box.of(chunk) for chunk in entry.chunks]


def scaling(
    make: Callable[[int], Any],
    call: Callable[[Any], object],
    baseline: Callable[[Any], object],
    n: int,
    rounds: int = 3,
) -> tuple[float, float, float]:
    """Best times of ``call`` at ``n`` and ``10 n``, and how much worse it scales from one to
    the other than ``baseline`` does, on the inputs ``make`` builds."""
    small, large = make(n), make(10 * n)
    times = best(
        [
            lambda: call(small),
            lambda: call(large),
            lambda: baseline(small),
            lambda: baseline(large),
        ],
        rounds,
    )
    return times[0], times[1], (times[1] / times[0]) / (times[3] / times[2])


def main(argv: list[str] | None = None) -> None:
    """Print each family's times, scaling and memory."""
    parser = argparse.ArgumentParser(prog="python -m perf.hostile_metadata", description=__doc__)
    parser.add_argument("--chunks", type=int, default=20_000, help="n (10 n is measured too)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.chunks
    print(f"n = {n}, 10 n = {10 * n}; best of {args.rounds} interleaved rounds")
    for name, make in DOCUMENTS.items():
        t1, t10, worse = scaling(make, mf.loads, json.loads, n, args.rounds)
        doc = make(10 * n)
        ratio = peak(functools.partial(mf.loads, doc)) / len(doc)
        print(
            f"  loads {name}: {t1 * 1e3:.1f} ms -> {t10 * 1e3:.1f} ms, {worse:.2f}x json's "
            f"scaling; {len(doc)} bytes, peak {ratio:.1f} bytes per byte"
        )
    for name in LAYOUTS:
        t1, t10, worse = scaling(
            functools.partial(layout_metadata, name), mf.validate, boxes_of, n, args.rounds
        )
        print(f"  validate {name}: {t1 * 1e3:.1f} ms -> {t10 * 1e3:.1f} ms, {worse:.2f}x boxes'")


if __name__ == "__main__":
    main()
