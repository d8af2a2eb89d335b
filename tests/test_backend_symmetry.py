"""The two backends treat options and failures alike (issue #14, item 6)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.planner import WriteItem
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

import dcp_impl
from dcp_impl.errors import WriteFailedError

BACKENDS = [
    (dcp_impl.FileSystemWriter, dcp_impl.FileSystemReader),
    (dcp_impl.HuggingFaceWriter, dcp_impl.HuggingFaceReader),
]


@pytest.mark.parametrize(("writer", "reader"), BACKENDS)
@pytest.mark.parametrize("bad", ["all", 1, None, "True"])
def test_readers_refuse_the_same_verify_values(
    tmp_path: Path, writer: Any, reader: Any, bad: object
) -> None:
    with pytest.raises(ValueError, match="verify expected True, False or 'whole'"):
        reader(tmp_path, verify=bad)


@pytest.mark.parametrize(("writer", "reader"), BACKENDS)
@pytest.mark.parametrize("verify", [True, False, "whole"])
def test_readers_take_the_same_verify_values(
    tmp_path: Path, writer: Any, reader: Any, verify: object
) -> None:
    assert reader(tmp_path, verify=verify).verify == verify


@pytest.mark.parametrize(("writer", "reader"), BACKENDS)
@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_writers_refuse_the_same_thread_counts(
    tmp_path: Path, writer: Any, reader: Any, bad: object
) -> None:
    with pytest.raises(ValueError, match="thread_count expected an int >= 1"):
        writer(tmp_path, thread_count=bad)


class _Failing(DefaultSavePlanner):
    def resolve_data(self, write_item: WriteItem) -> Any:
        if write_item.index.fqn == "bad":
            raise RuntimeError("cannot resolve bad")
        return super().resolve_data(write_item)


@pytest.mark.parametrize(("writer", "reader"), BACKENDS)
def test_a_failed_write_commits_nothing_in_both(tmp_path: Path, writer: Any, reader: Any) -> None:
    state = {f"t{i}": torch.ones(50) for i in range(4)} | {"bad": torch.ones(3)}
    mapping = dict.fromkeys(state, 1)
    options = {"fqn_to_index_mapping": mapping} if writer is dcp_impl.HuggingFaceWriter else {}
    with pytest.raises(CheckpointException) as info:
        dcp_save(
            state,
            storage_writer=writer(tmp_path, thread_count=2, **options),
            planner=_Failing(),
            no_dist=True,
        )
    failure = next(iter(info.value.failures.values()))
    failure = failure[0] if isinstance(failure, tuple) else failure  # (error, traceback)
    assert isinstance(failure, WriteFailedError)
    assert "nothing was committed" in str(failure)
    assert isinstance(failure.__cause__, RuntimeError)
    assert os.listdir(tmp_path) == []
