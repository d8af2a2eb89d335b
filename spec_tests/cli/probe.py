"""``python -m spec_tests probe --backend SPEC``: which capabilities hold, tried once each.

Each data capability is tried on a small example through the suite's own harness
(:mod:`spec_tests.sim.harness`, the properties' helpers): every dtype of the table, ``bytes``,
``multi-chunk``, ``multi-rank``, ``reshard``, ``overwrite``, ``metadata-exact``, and
``integrity`` where a damage can be applied (a ``corrupt``/``truncate`` hook or stored files),
and ``safe-load``. A capability holds when its example round-trips exactly (for ``integrity``:
when every damaged load raises; for ``safe-load``: when loading an entry whose unpickling would
run code does not run it). ``atomic-commit``, ``multiprocess`` and ``async`` need killed or real
processes (or torch's async_save machinery), and ``integrity-pieces`` damage placed in a chunk
of several MiB, so they are not probed: claim them only if the backend is designed for them, and
let the suite's properties judge. One passing try is evidence, not proof: the suite is.
"""

from __future__ import annotations

import functools
import random
import sys
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.checkpoint.metadata import Metadata

from dcp_impl.dtypes import DTYPES, by_torch
from dcp_impl.layout import Box
from spec_tests.backends import CAPABILITIES, Backend, load_backend
from spec_tests.contract.verdicts import may_refuse
from spec_tests.properties.checks import check_load, load_boxes, roundtrip, sharded_save
from spec_tests.properties.hostile import Payload
from spec_tests.sim import harness, shardings
from spec_tests.sim.harness.damage import DAMAGES, damage
from spec_tests.strategies import SaveLayout

__all__ = ["NOT_PROBED", "Trial", "probe_claims", "probe_command", "render"]

#: Capabilities a probe cannot try in one process on a small example.
NOT_PROBED = ("atomic-commit", "multiprocess", "async", "integrity-pieces")


@dataclass(frozen=True, slots=True)
class Trial:
    """One capability tried: whether it held, and why not."""

    capability: str
    holds: bool
    detail: str = ""


def _sample(dtype: torch.dtype) -> torch.Tensor:
    """An (8, 4) tensor of ``dtype`` with random bits, a sign-bit-only row and an all-ones row."""
    itemsize = by_torch(dtype).itemsize
    gen = torch.Generator().manual_seed(20261128)
    raw = torch.randint(0, 256, (8, 4 * itemsize), dtype=torch.uint8, generator=gen)
    raw[1] = 0
    raw[1, itemsize - 1 :: itemsize] = 0x80  # -0.0 for floats, the minimum for ints
    raw[2] = 0xFF  # NaN with a payload for floats
    if dtype is torch.bool:
        raw &= 1
    return raw.view(dtype)


class _Prober:
    def __init__(self, backend: Backend, root: str) -> None:
        self.backend = backend
        self.root = root
        self.dtype = torch.float32

    def location(self) -> str:
        path = Path(self.root) / f"probe-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return str(path)

    def value(self) -> torch.Tensor:
        return _sample(self.dtype)

    def dtype_trial(self, dtype: torch.dtype) -> None:
        roundtrip(self.backend, self.location(), {"t": _sample(dtype)})

    def bytes_trial(self) -> None:
        state = {"t": self.value(), "extra": {"step": 3, "tag": "x", "ids": [1, 2]}}
        roundtrip(self.backend, self.location(), state)

    def multi_chunk_trial(self) -> None:
        value, location = self.value(), self.location()
        boxes = ((Box((0, 0), (3, 4)), Box((3, 0), (5, 4))),)
        sharded_save(self.backend, location, "w", value, SaveLayout((8, 4), boxes, "guillotine"))
        load_boxes(self.backend, location, "w", value, [[Box.full((8, 4))]])

    def multi_rank_trial(self) -> None:
        value, location = self.value(), self.location()
        rows = tuple(map(tuple, shardings.row_shards(value.shape, 2)))
        sharded_save(self.backend, location, "w", value, SaveLayout((8, 4), rows, "rows"))
        load_boxes(self.backend, location, "w", value, rows)

    def reshard_trial(self) -> None:
        value, location = self.value(), self.location()
        harness.save(self.backend, location, [{"w": value}])
        load_boxes(self.backend, location, "w", value, shardings.col_shards(value.shape, 3))

    def overwrite_trial(self) -> None:
        old, new = {"a": self.value()}, {"b": self.value().flip(0)}
        location = self.location()
        harness.save(self.backend, location, [old])
        harness.save(self.backend, location, [new])
        check_load(self.backend, location, new)
        if _entries(self.backend, location) != {"b"}:
            raise AssertionError("the overwritten checkpoint still lists the old entries")

    def metadata_exact_trial(self) -> None:
        location = self.location()
        state = {"model": {"w": self.value(), "b": self.value()[0]}}
        record = harness.save(self.backend, location, [state])
        read = _reader_metadata(self.backend, location)
        if read.state_dict_metadata != record.metadata.state_dict_metadata:
            raise AssertionError("read_metadata's entries differ from what finish was given")
        if read.planner_data != record.metadata.planner_data:
            raise AssertionError("read_metadata's planner_data differs from what finish was given")

    def integrity_trial(self) -> None:
        for how in DAMAGES:
            for seed in range(3):
                value, location = _sample(self.dtype).repeat(8, 16), self.location()
                harness.save(self.backend, location, [{"t": value}])
                if damage(self.backend, location, how, random.Random(seed)) is None:
                    raise AssertionError(f"nothing to {how}: no data files and no {how} hook")
                # A ContractViolation is the harness's verdict, never "damage detected".
                with may_refuse(f"loading {how}ed data") as loading:
                    got = harness.load(self.backend, location, [{"t": _request(value)}])[0]
                if loading.refused:
                    continue
                if torch.equal(harness.as_bytes(got["t"][0]), harness.as_bytes(value)):
                    continue  # the damage missed the payload
                raise AssertionError(f"{how}ed data (seed {seed}) loaded without an error")

    def safe_load_trial(self) -> None:
        with tempfile.TemporaryDirectory(prefix="dcp-probe-payload-") as folder:
            marker, location = Path(folder, "payload-ran"), self.location()
            # Refused means raised, at save or at load; a verdict is never a refusal.
            with may_refuse("saving and loading an entry whose unpickling runs code") as out:
                harness.save(self.backend, location, [{"extra": Payload(str(marker))}])
                got = harness.load(self.backend, location, [{"extra": harness.BytesRequest()}])
            if marker.exists():
                raise AssertionError("loading an entry whose unpickling runs code ran it")
            if not out.refused:
                raise AssertionError(
                    f"an entry whose unpickling runs code loaded as {got[0].get('extra')!r} "
                    "instead of raising"
                )


def _request(value: torch.Tensor) -> harness.TensorRequest:
    return harness.TensorRequest(value.dtype, tuple(value.shape), (Box.full(tuple(value.shape)),))


def _reader_metadata(backend: Backend, location: str) -> Metadata:
    reader = backend.make_reader(location)
    harness.call("reset", reader.reset, location)
    return harness.call("read_metadata", reader.read_metadata)


def _entries(backend: Backend, location: str) -> set[str]:
    return set(_reader_metadata(backend, location).state_dict_metadata)


def _trials(prober: _Prober) -> Iterator[tuple[str, Callable[[], None]]]:
    for row in DTYPES:
        yield f"dtype:{row.name}", functools.partial(prober.dtype_trial, row.torch_dtype)
    yield "bytes", prober.bytes_trial
    yield "multi-chunk", prober.multi_chunk_trial
    yield "multi-rank", prober.multi_rank_trial
    yield "reshard", prober.reshard_trial
    yield "overwrite", prober.overwrite_trial
    yield "metadata-exact", prober.metadata_exact_trial
    yield "integrity", prober.integrity_trial
    yield "safe-load", prober.safe_load_trial


def probe_claims(
    backend: Backend, root: str, capabilities: Collection[str] | None = None
) -> list[Trial]:
    """Try each probed capability (or only ``capabilities``) on ``backend``, under ``root``."""
    prober = _Prober(backend, root)
    trials = []
    for capability, attempt in _trials(prober):
        if capabilities is not None and capability not in capabilities:
            continue
        try:
            attempt()
        except BaseException as exc:  # any refusal or wrong answer: the claim does not hold
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            trials.append(Trial(capability, False, detail[:200]))
        else:
            trials.append(Trial(capability, True))
        if capability == "dtype:float32" and not trials[-1].holds:
            held = [t.capability for t in trials if t.holds]
            if held:  # the other trials need a dtype that works
                prober.dtype = getattr(torch, held[0].removeprefix("dtype:"))
    return trials


def render(backend: Backend, trials: list[Trial]) -> str:
    """The report: what holds, what does not and why, and the ready ``capabilities=`` line."""
    held = [t.capability for t in trials if t.holds]
    lines = [f"probe of backend {backend.name!r}:"]
    lines += [f"  does not hold: {t.capability}: {t.detail}" for t in trials if not t.holds]
    lines.append(
        f"  not probed: {', '.join(NOT_PROBED)} (claim them only if the backend is designed "
        "for them; the suite's killed-save and multiprocess properties judge them)"
    )
    ordered = [c for c in CAPABILITIES if c in held]
    lines.append("capabilities=frozenset({" + ", ".join(f'"{c}"' for c in ordered) + "})")
    return "\n".join(lines)


def probe_command(spec: str) -> int:
    """Probe the backend ``spec`` and print the report; 2 if the SPEC cannot be loaded."""
    from spec_tests.backends import BackendSpecError

    try:
        backend = load_backend(spec)
    except BackendSpecError as err:
        print(f"probe: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dcp-probe-") as root:
        trials = probe_claims(backend, root)
    print(render(backend, trials))
    return 0
