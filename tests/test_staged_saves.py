"""Asynchronous configurations (a backend's ``async_save`` member): every harness save is staged,
the writer pickled in process mode, and the caller's tensors changed while the save runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import dcp_impl
from dcp_impl.layout import Box
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.sim import harness


class LiveStager(dcp_impl.FileSystemWriter):
    """A field bug: stage() hands back the live tensors, so the save writes later values."""

    def stage(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        return state_dict


class Unpicklable(dcp_impl.FileSystemWriter):
    """A writer holding a lock: it cannot reach PROCESS mode's upload process."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.lock = threading.Lock()


@dataclass
class Async:
    writer_cls: type = dcp_impl.FileSystemWriter
    async_save: str = "thread"
    name: str = "async-fs"
    capabilities: frozenset[str] | None = None

    def make_writer(self, path: str) -> Any:
        return self.writer_cls(path)

    def make_reader(self, path: str) -> Any:
        return dcp_impl.FileSystemReader(path)


def _round_trip(backend: Async, path: Path, states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    harness.save(backend, str(path), states)
    requests = {
        "w": harness.TensorRequest(torch.float64, (6, 8), (Box.full((6, 8)),)),
        "s": harness.TensorRequest(torch.bits8, (), (Box.full(()),)),
        "z": harness.TensorRequest(torch.complex64, (3,), (Box.full((3,)),)),
        "n": harness.BytesRequest(),
    }
    return harness.load(backend, str(path), [requests])


def _states() -> tuple[torch.Tensor, list[dict[str, Any]]]:
    full = torch.arange(48, dtype=torch.float64).reshape(6, 8)
    boxes = [[Box((0, 0), (6, 3)), Box((0, 3), (6, 5))]]
    scalar = torch.tensor(7, dtype=torch.uint8).view(torch.bits8)
    conj = (torch.arange(3.0) * (1 + 2j)).to(torch.complex64).conj()
    held = harness.shard(full.t().contiguous().t(), boxes)[0]
    return full, [{"w": held, "s": scalar, "z": conj, "n": "step-3"}]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_faithful_writer_saves_the_values_at_the_call(tmp_path: Path, mode: str) -> None:
    full, states = _states()
    before = {k: v.clone() for k, v in states[0].items() if isinstance(v, torch.Tensor)}
    [loaded] = _round_trip(Async(async_save=mode), tmp_path, states)
    harness.assert_bit_equal(loaded["w"][0], full, what="w")
    harness.assert_bit_equal(loaded["s"][0], before["s"], what="s")
    assert torch.equal(loaded["z"][0], before["z"].resolve_conj())
    assert loaded["n"] == "step-3"
    for key, value in before.items():  # the caller's tensors are theirs again afterwards
        harness.assert_bit_equal(states[0][key], value, what=key)


def test_a_stager_that_keeps_the_live_tensors_is_caught(tmp_path: Path) -> None:
    full, states = _states()
    [loaded] = _round_trip(Async(LiveStager), tmp_path, states)
    with pytest.raises(ContractViolation, match="bytes differ"):
        harness.assert_bit_equal(loaded["w"][0], full, what="w")


def test_a_writer_that_cannot_be_pickled_fails_process_mode(tmp_path: Path) -> None:
    _, states = _states()
    with pytest.raises(TypeError, match="pickle"):
        harness.save(Async(Unpicklable, "process"), str(tmp_path), states)
    harness.save(Async(Unpicklable, "thread"), str(tmp_path), states)  # no pickling there


def test_a_mode_nobody_knows_is_a_violation(tmp_path: Path) -> None:
    with pytest.raises(ContractViolation, match="async_save must be None or one of"):
        harness.save(Async(async_save="later"), str(tmp_path), _states()[1])
