"""The self-test's wrapping machinery: a base backend passed through unchanged, with seams.

:class:`Wrapped` is a backend whose writer and reader forward every call of DCP's
protocol to a built-in base backend (``reference`` or ``dcp_impl-fs``). Left alone
it is a *faithful* wrapper, which must pass the suite exactly as its base does; a
broken backend of the catalogue overrides one step (a method of
:class:`WrappedWriter` / :class:`WrappedReader`, or one of the planner seams) to
plant one realistic bug.
"""

from __future__ import annotations

import functools
import os
from typing import Any, ClassVar

import torch
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from spec_tests.backends import Backend, builtin
from spec_tests.contract.capabilities import CAPABILITIES

__all__ = [
    "LoadPlannerProxy",
    "done",
    "planner_with",
    "RemappedPlanner",
    "SavePlannerProxy",
    "Wrapped",
    "WrappedReader",
    "WrappedWriter",
]


class SavePlannerProxy(SavePlanner):
    """Forwards to the planner DCP gave ``write_data``; a bug overrides :meth:`resolve_data`."""

    def __init__(self, inner: SavePlanner) -> None:
        self.inner = inner

    def set_up_planner(self, *args: Any, **kwargs: Any) -> None:
        # docstring inherited
        self.inner.set_up_planner(*args, **kwargs)

    def create_local_plan(self) -> SavePlan:
        # docstring inherited
        return self.inner.create_local_plan()

    def create_global_plan(self, all_plans: list[SavePlan]) -> tuple[list[SavePlan], Metadata]:
        # docstring inherited
        return self.inner.create_global_plan(all_plans)

    def finish_plan(self, new_plan: SavePlan) -> SavePlan:
        # docstring inherited
        return self.inner.finish_plan(new_plan)

    def resolve_data(self, write_item: WriteItem) -> Any:
        # docstring inherited
        return self.inner.resolve_data(write_item)


class LoadPlannerProxy(LoadPlanner):
    """Forwards to the planner DCP gave ``read_data``; a bug overrides one of its steps."""

    def __init__(self, inner: LoadPlanner) -> None:
        self.inner = inner

    def set_up_planner(self, *args: Any, **kwargs: Any) -> None:
        # docstring inherited
        self.inner.set_up_planner(*args, **kwargs)

    def create_local_plan(self) -> LoadPlan:
        # docstring inherited
        return self.inner.create_local_plan()

    def create_global_plan(self, global_plan: list[LoadPlan]) -> list[LoadPlan]:
        # docstring inherited
        return self.inner.create_global_plan(global_plan)

    def finish_plan(self, central_plan: LoadPlan) -> LoadPlan:
        # docstring inherited
        return self.inner.finish_plan(central_plan)

    def load_bytes(self, read_item: ReadItem, value: Any) -> None:
        # docstring inherited
        self.inner.load_bytes(read_item, value)

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        # docstring inherited
        return self.inner.resolve_tensor(read_item)

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        # docstring inherited
        self.inner.commit_tensor(read_item, tensor)


class RemappedPlanner(LoadPlannerProxy):
    """Hands the base reader moved ReadItems, and the planner back the items it planned."""

    def __init__(self, inner: LoadPlanner, moved: list[ReadItem], planned: list[ReadItem]) -> None:
        super().__init__(inner)
        # By identity: ReadItems that differ only in dest_index.index compare equal.
        self.planned = {id(m): p for m, p in zip(moved, planned, strict=True)}

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        # docstring inherited
        return self.inner.resolve_tensor(self.planned[id(read_item)])

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        # docstring inherited
        self.inner.commit_tensor(self.planned[id(read_item)], tensor)

    def load_bytes(self, read_item: ReadItem, value: Any) -> None:
        # docstring inherited
        self.inner.load_bytes(self.planned[id(read_item)], value)


class _Located:
    """Holds the base's writer or reader and the location it was last reset to."""

    def __init__(self, inner: Any, location: str) -> None:
        self.inner = inner
        self.location = location

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        # docstring inherited
        if checkpoint_id is not None:
            self.location = os.fspath(checkpoint_id)
        self.inner.reset(checkpoint_id, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # The class _bound made is not importable by name: async_save's PROCESS mode pickles
        # the writer, so it is rebuilt from the wrapper class and the base's object.
        wrapper = type(self).__bases__[0]
        return (_rebuild, (wrapper, self.inner, self.location), dict(self.__dict__))


class WrappedWriter(_Located, StorageWriter):
    """Forwards every StorageWriter call to ``inner``, the base backend's writer."""

    #: The base writer's class (set on the class :func:`_bound` makes for one base).
    inner_type: ClassVar[type[StorageWriter]]

    inner: StorageWriter

    def storage_meta(self) -> StorageMeta | None:
        # docstring inherited
        return self.inner.storage_meta()

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        # docstring inherited
        self.inner.set_up_storage_writer(is_coordinator, *args, **kwargs)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        # docstring inherited
        return self.inner.prepare_local_plan(plan)

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        # docstring inherited
        return self.inner.prepare_global_plan(plans)

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        # docstring inherited
        return self.inner.write_data(plan, self.save_planner(planner))

    def save_planner(self, planner: SavePlanner) -> SavePlanner:
        """The planner the base writer sees (a bug returns a :class:`SavePlannerProxy`)."""
        return planner

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        # docstring inherited
        self.inner.finish(metadata=metadata, results=results)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        # docstring inherited
        return cls.inner_type.validate_checkpoint_id(checkpoint_id)


class WrappedReader(_Located, StorageReader):
    """Forwards every StorageReader call to ``inner``, the base backend's reader."""

    #: The base reader's class (set on the class :func:`_bound` makes for one base).
    inner_type: ClassVar[type[StorageReader]]

    inner: StorageReader

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        # docstring inherited
        return self.inner.read_metadata(*args, **kwargs)

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        # docstring inherited
        self.inner.set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        # docstring inherited
        return self.inner.prepare_local_plan(plan)

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        # docstring inherited
        return self.inner.prepare_global_plan(plans)

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        # docstring inherited
        return self.inner.read_data(plan, self.load_planner(planner))

    def load_planner(self, planner: LoadPlanner) -> LoadPlanner:
        """The planner the base reader sees (a bug returns a :class:`LoadPlannerProxy`)."""
        return planner

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        # docstring inherited
        return cls.inner_type.validate_checkpoint_id(checkpoint_id)


@functools.cache
def _bound(wrapper: type[Any], inner_type: type[Any]) -> type[Any]:
    """``wrapper`` specialised to one base class, so its classmethods can forward to it."""
    return type(
        wrapper.__name__, (wrapper,), {"inner_type": inner_type, "__module__": wrapper.__module__}
    )


def _rebuild(wrapper: type[WrappedWriter], inner: StorageWriter, location: str) -> Any:
    return _bound(wrapper, type(inner))(inner, location)


class Wrapped:
    """A backend passing ``base`` through :class:`WrappedWriter` / :class:`WrappedReader`.

    Subclasses set ``writer`` / ``reader`` to plant a bug, ``unclaimed`` to withdraw
    capabilities from the base's claims (only where the point is that an unclaimed
    capability must still refuse loudly), and ``family`` to the property family
    (``spec_tests/test_<family>.py``) expected to reject it.
    """

    base: ClassVar[str] = "reference"
    writer: ClassVar[type[WrappedWriter]] = WrappedWriter
    reader: ClassVar[type[WrappedReader]] = WrappedReader
    unclaimed: ClassVar[frozenset[str]] = frozenset()
    family: ClassVar[str] = ""

    @property
    def name(self) -> str:
        """The class name, which says what is broken."""
        return type(self).__name__

    @property
    def capabilities(self) -> frozenset[str] | None:
        """The base's claims, less ``unclaimed``."""
        claimed = self.base_backend().capabilities
        if claimed is None and not self.unclaimed:
            return None
        return frozenset(CAPABILITIES if claimed is None else claimed) - self.unclaimed

    def base_backend(self) -> Backend:
        """The built-in backend being wrapped."""
        return builtin(self.base)

    def make_writer(self, path: str) -> StorageWriter:
        """The base's writer for ``path`` inside this backend's writer wrapper."""
        inner = self.inner_writer(path)
        made: WrappedWriter = _bound(self.writer, type(inner))(inner, path)
        return made

    def make_reader(self, path: str) -> StorageReader:
        """The base's reader for ``path`` inside this backend's reader wrapper."""
        inner = self.inner_reader(path)
        made: WrappedReader = _bound(self.reader, type(inner))(inner, path)
        return made

    def trusting_reader(self, path: str) -> StorageReader:
        """The base's trusting reader (optional member) inside this backend's reader wrapper."""
        inner = self.inner_trusting_reader(path)
        made: WrappedReader = _bound(self.reader, type(inner))(inner, path)
        return made

    def inner_trusting_reader(self, path: str) -> StorageReader:
        """The base backend's trusting reader; AttributeError when the base has none."""
        trusting = getattr(self.base_backend(), "trusting_reader", None)
        if trusting is None:
            raise AttributeError(f"backend {self.base!r} has no trusting_reader")
        reader: StorageReader = trusting(path)
        return reader

    def cleanup(self, path: str) -> None:
        """The base backend's optional cleanup of ``path`` (the reference store frees it)."""
        cleanup = getattr(self.base_backend(), "cleanup", None)
        if callable(cleanup):
            cleanup(path)

    def inner_writer(self, path: str) -> StorageWriter:
        """The base backend's writer (a bug may build it with other options)."""
        return self.base_backend().make_writer(path)

    def inner_reader(self, path: str) -> StorageReader:
        """The base backend's reader (a bug may build it with other options)."""
        return self.base_backend().make_reader(path)


def done(value: Any) -> Future[Any]:
    """A future already resolved to ``value`` (what a synchronous ``write_data`` returns)."""
    future: Future[Any] = Future()
    future.set_result(value)
    return future


def planner_with(proxy: type[SavePlannerProxy]) -> type[WrappedWriter]:
    """A writer class that hands its base writer ``proxy(planner)`` instead of the planner."""

    class _Writer(WrappedWriter):
        def save_planner(self, planner: SavePlanner) -> SavePlanner:
            # docstring inherited
            return proxy(planner)

    return _Writer
