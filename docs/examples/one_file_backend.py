"""A DCP backend in under 100 lines (docs/architecture.md): one checksummed data file per rank
in any ``dcp_impl.store.Store``, dcp_impl's JSON metadata committed last, verified resharded
loads through ``dcp_impl.transfer.read_items``. Run: saves, lists, loads (tests/test_examples)."""

import dataclasses
import os
import uuid
from typing import Any

import torch
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from dcp_impl import metadata as fmt
from dcp_impl import transfer
from dcp_impl.store import Store, is_checkpoint_id, open_store


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


class _OnStore:
    """What writer and reader share: a store, opened from a path, a URL or a Store."""

    def __init__(self, path: str | os.PathLike[str] | Store) -> None:
        super().__init__()
        self.store = open_store(path)

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        if checkpoint_id is not None:
            self.store = open_store(checkpoint_id)

    def prepare_local_plan(self, plan: Any, **kwargs: Any) -> Any:
        return plan

    def prepare_global_plan(self, plans: list[Any], **kwargs: Any) -> list[Any]:
        return plans

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str], **kwargs: Any) -> bool:
        return is_checkpoint_id(checkpoint_id)


class OneFileWriter(_OnStore, StorageWriter):
    """One data file per rank and save, then the metadata, committed last."""

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.store.make_dirs()

    def prepare_global_plan(self, plans: list[SavePlan], **kwargs: Any) -> list[SavePlan]:
        save = uuid.uuid4().hex  # fresh names: a new save never touches committed files
        return [dataclasses.replace(p, storage_data=f"{save}-{r}.bin") for r, p in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner, **kwargs: Any) -> Future[Any]:
        name, results = plan.storage_data, []
        with self.store.create(name, sync=True) as out:  # a failure leaves no file behind
            for item in plan.items:
                data = planner.resolve_data(item)
                if isinstance(data, torch.Tensor):
                    stored = out.write_tensor(data)
                else:  # a BYTE_IO item: io.BytesIO
                    stored = out.write_bytes(data.getbuffer())
                where = fmt.ItemLocation(name, stored.offset, stored.length, stored.checksum)
                results.append(WriteResult(item.index, stored.length, where))
        return _done(results)

    def finish(self, metadata: dcp_metadata.Metadata, results: list[list[WriteResult]]) -> None:
        metadata.storage_data = {r.index: r.storage_data for rank in results for r in rank}
        self.store.commit("metadata.json", fmt.dumps(metadata).encode(), sync=True)


class OneFileReader(_OnStore, StorageReader):
    """Reads what :class:`OneFileWriter` saved, into any layout."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        return fmt.loads(self.store.read_small("metadata.json", fmt.MAX_METADATA_BYTES))

    def set_up_storage_reader(self, metadata: Any, is_coordinator: bool, *args: Any) -> None:
        self.metadata = metadata

    def read_data(self, plan: LoadPlan, planner: LoadPlanner, **kwargs: Any) -> Future[Any]:
        transfer.read_items(plan.items, planner, self._locate, self.store)
        return _done(None)

    def _locate(self, index: dcp_metadata.MetadataIndex) -> transfer.StoredItem:
        where = self.metadata.storage_data[index]
        entry = self.metadata.state_dict_metadata[index.fqn]
        if isinstance(entry, dcp_metadata.BytesStorageMetadata):
            sizes, dtype = (where.length,), torch.uint8
        else:
            chunk = next(c for c in entry.chunks if c.offsets == index.offset)
            sizes, dtype = tuple(chunk.sizes), entry.properties.dtype
        path = self.store.path(where.path)
        return transfer.StoredItem(path, where.offset, where.length, sizes, dtype, where.checksum)


if __name__ == "__main__":  # the demo: python docs/examples/one_file_backend.py
    import tempfile
    import warnings

    from torch.distributed.checkpoint import load, save

    warnings.filterwarnings("ignore", "torch.distributed is disabled")  # one process: meant

    state, path = {"w": torch.arange(6.0).reshape(2, 3), "step": 3}, tempfile.mkdtemp()
    save(state, storage_writer=OneFileWriter(path), no_dist=True)
    print(f"saved {sorted(state)} to {path}: {', '.join(sorted(os.listdir(path)))}")
    loaded = {"w": torch.zeros(2, 3), "step": 0}
    load(loaded, storage_reader=OneFileReader(path), no_dist=True)
    print(f"loaded back: w={loaded['w'].tolist()} step={loaded['step']}")
    print("round trip exact:", torch.equal(loaded["w"], state["w"]) and loaded["step"] == 3)
