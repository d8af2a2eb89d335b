"""The helpers behind the configuration properties: thread-bound items, consolidated output
reading, and the plans torch's planning is given."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dcp_impl.layout import Box
from spec_tests.contract.verdicts import ContractViolation
from spec_tests.properties.consolidation import consolidated_tensors
from spec_tests.properties.torch_planning import plans_for
from spec_tests.properties.workers import ThreadBound
from spec_tests.sim import harness


def test_thread_bound_items_work_on_their_thread_and_refuse_on_others() -> None:
    refusals: list[str] = []
    item = ThreadBound(torch.arange(4.0), refusals)
    plain = item.detach()
    assert type(plain) is torch.Tensor
    assert torch.equal(plain, torch.arange(4.0))
    caught: list[BaseException] = []

    def worker() -> None:
        try:
            item.detach()
        except harness.InjectedFault as err:
            caught.append(err)

    thread = threading.Thread(target=worker, name="writer-1")
    thread.start()
    thread.join()
    assert refusals == ["writer-1"]
    assert "on thread 'writer-1'" in str(caught[0])


def test_thread_bound_items_pickle_as_plain_tensors(tmp_path: Path) -> None:
    torch.save(ThreadBound(torch.ones(2), []), tmp_path / "t.pt")
    loaded = torch.load(tmp_path / "t.pt", weights_only=True)
    assert type(loaded) is torch.Tensor
    assert torch.equal(loaded, torch.ones(2))


def test_consolidated_output_is_read_from_its_own_files_only(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "sharded").mkdir()
    save_file({"a": torch.zeros(1)}, str(tmp_path / "sharded" / "shard-00001.safetensors"))
    assert list(consolidated_tensors(str(tmp_path))) == ["a"]
    save_file({"a": torch.zeros(1)}, str(tmp_path / "shard-00001.safetensors"))
    with pytest.raises(ContractViolation, match="'a' is in both"):
        consolidated_tensors(str(tmp_path))


def test_plans_hold_each_rank_s_boxes_as_shard_items() -> None:
    boxes = ((Box((0,), (2,)),), (Box((2,), (2,)), Box((4,), (0,))))
    plans = plans_for((4,), boxes)
    assert [len(p.items) for p in plans] == [1, 2]
    chunk = plans[1].items[1].tensor_data.chunk  # type: ignore[union-attr]
    assert (tuple(chunk.offsets), tuple(chunk.sizes)) == ((4,), (0,))
