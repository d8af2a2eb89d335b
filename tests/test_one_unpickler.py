"""One unpickler (#22 item 5): nothing the bytes-entry check accepts imports anything it did not
allow, and an entry's objects are bounded relative to its stored size (#22 item 4)."""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.planner import WriteItem, WriteItemType
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

import dcp_impl
from dcp_impl.__main__ import main as cli
from dcp_impl.errors import UnsafeCheckpointError
from dcp_impl.safe_load import EXPANSION_ALLOWANCE, PicklePolicy

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

# Python-2 names: torch's weights-only unpickler maps them at every protocol, Python's
# unpickler only below protocol 3 (above, it imports the module by that very name).
_PY2_NAMES = [
    ("__builtin__", "bytes"),
    ("__builtin__", "set"),
    ("__builtin__", "eval"),
    ("copy_reg", "_reconstructor"),
    ("exceptions", "ValueError"),
    ("UserDict", "UserDict"),
]
_PLANTED = "dcp_planted_module"  # a module the test plants where imports look


def _global(module: str, name: str, *, stack: bool) -> bytes:
    if not stack:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    parts = b""
    for text in (module, name):
        raw = text.encode()
        parts += b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE
    return parts + b"\x93"  # STACK_GLOBAL


def _pickle(module: str, name: str, *, protocol: int, stack: bool, call: bool) -> bytes:
    """A pickle naming ``module.name`` (by GLOBAL or STACK_GLOBAL), called with no arguments
    or left as the object itself."""
    head = b"\x80" + bytes([protocol]) if protocol >= 2 else b""
    body = _global(module, name, stack=stack)
    if call:
        body += b")R"  # EMPTY_TUPLE, REDUCE
    return head + body + b"."


def _torch_file(data_pkl: bytes) -> bytes:
    """A torch.save zip whose object pickle is ``data_pkl``."""
    plain = io.BytesIO()
    torch.save(None, plain)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain.getvalue())) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, data_pkl if name.endswith("data.pkl") else src.read(name))
    return out.getvalue()


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Modules named like every Python-2 module and :data:`_PLANTED`, importable (as from a
    checkpoint folder that is the working directory); importing any creates the marker."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    marker = tmp_path / "imported"
    for module in {m for m, _ in _PY2_NAMES} | {_PLANTED}:
        (folder / f"{module}.py").write_text(
            f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
            "bytes = set = eval = _reconstructor = ValueError = UserDict = thing = print\n"
        )
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)
    return marker


def _imports_of(raw: bytes) -> set[str]:
    """Modules a pickle (the object pickle of a torch.save zip) names in GLOBAL opcodes."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        pkl = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return {
        str(arg).split(" ")[0]
        for op, arg, _ in pickletools.genops(pkl)
        if op.name == "GLOBAL" and arg is not None
    }


# The planted modules are the same for every example; each example checks the marker.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    target=st.sampled_from([*_PY2_NAMES, (_PLANTED, "thing")]),
    protocol=st.integers(0, 5),
    stack=st.booleans(),
    call=st.booleans(),
)
def test_checked_entries_import_nothing_unchecked(
    planted: Path, target: tuple[str, str], protocol: int, stack: bool, call: bool
) -> None:
    raw = _torch_file(_pickle(*target, protocol=protocol, stack=stack and protocol >= 4, call=call))
    try:
        (copy,) = PicklePolicy().safe_copies([("entry", raw)])
    except UnsafeCheckpointError:
        pass
    else:
        # What the planner unpickles names only modules already loaded, by their own names.
        assert _imports_of(copy) <= {"__builtin__", "copy_reg", *sys.modules}
        torch.load(io.BytesIO(copy), weights_only=False)  # the planner's full unpickler
    assert not planted.exists(), "an import ran code the checkpoint chose"
    assert not {m for m, _ in _PY2_NAMES} & set(sys.modules) - {"copy_reg"}
    assert _PLANTED not in sys.modules


class _RawBytes:
    """A bytes entry saved as exactly ``raw`` (a hostile writer's bytes)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


class _RawPlanner(DefaultSavePlanner):
    def transform_object(self, write_item: WriteItem, object: Any) -> Any:
        if write_item.type == WriteItemType.BYTE_IO and isinstance(object, _RawBytes):
            return io.BytesIO(object.raw)
        return super().transform_object(write_item, object)


@pytest.mark.parametrize("kind", ["fs", "hf"])
@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_python2_names_never_import_a_planted_module(
    planted: Path, tmp_path: Path, kind: str, protocol: int
) -> None:
    """The reported case: the check accepts ``__builtin__.bytes`` (torch maps it to
    ``builtins.bytes``), and before, torch's loader then imported ``__builtin__`` itself."""
    writer, reader = {
        "fs": (dcp_impl.FileSystemWriter, dcp_impl.FileSystemReader),
        "hf": (dcp_impl.HuggingFaceWriter, dcp_impl.HuggingFaceReader),
    }[kind]
    path = str(tmp_path / "ckpt")
    raw = _torch_file(_pickle("__builtin__", "bytes", protocol=protocol, stack=False, call=True))
    dcp_save({"extra": _RawBytes(raw)}, storage_writer=writer(path), planner=_RawPlanner())
    state: dict[str, Any] = {"extra": None}
    dcp_load(state, storage_reader=reader(path))
    assert state["extra"] == b""
    assert not planted.exists()
    assert "__builtin__" not in sys.modules


def _object_array_pickle(array: np.ndarray) -> bytes:
    """``torch.save(array)`` with its object dtype built by calling ``numpy.dtype`` (an
    allowed global) instead of naming ``ObjectDType`` (which the allow-list lacks)."""

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: object) -> Any:
            if isinstance(obj, np.dtype) and obj.hasobject:
                return (np.dtype, ("O8", False, True))  # no BUILD: torch refuses that one
            return NotImplemented

    buffer = io.BytesIO()
    module = types.SimpleNamespace(Pickler=Pickler, __name__="pickle")
    torch.save(array, buffer, pickle_module=module)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "array",
    [np.array([1, "a"], dtype=object), np.zeros(2, dtype=[("a", "i4"), ("b", "O")])],
    ids=["object", "structured-with-object"],
)
def test_numpy_object_arrays_are_refused_however_pickled(array: np.ndarray) -> None:
    raw = _object_array_pickle(array)
    with pytest.raises(UnsafeCheckpointError, match="holds Python objects"):
        PicklePolicy().check("objects", raw)
    PicklePolicy(trust=True).check("objects", raw)


def _legacy_tensor_pickle(numel: int) -> bytes:
    """torch's legacy (non-zip) format declaring a float32 storage of ``numel`` elements and
    providing none of its bytes: a few hundred bytes that load as a ``4 * numel`` tensor."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            if obj == "STORAGE":
                return ("storage", torch.FloatStorage, "0", "cpu", numel, None)
            return None

    class Bomb:
        def __reduce__(self) -> Any:
            args = ("STORAGE", 0, (numel,), (1,), False, {})
            return (torch._utils._rebuild_tensor_v2, args)

    buffer = io.BytesIO()
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION}):
        pickle.dump(header, buffer, protocol=2)
    Pickler(buffer, protocol=2).dump(Bomb())
    pickle.dump([], buffer, protocol=2)  # no storage data follows
    return buffer.getvalue()


def test_expansion_bomb_is_refused_unless_the_limit_is_raised() -> None:
    numel = 1 << 20  # 4 MiB from a few hundred bytes
    raw = _legacy_tensor_pickle(numel)
    assert len(raw) < 1024
    with pytest.raises(UnsafeCheckpointError, match="max_bytes_expansion"):
        PicklePolicy().check("bomb", raw)
    allowed = PicklePolicy(max_expansion=(8 * numel) / len(raw))
    (copy,) = allowed.safe_copies([("bomb", raw)])
    assert torch.load(io.BytesIO(copy), weights_only=True).numel() == numel


def test_the_limit_counts_shared_objects_once() -> None:
    shared = list(range(1000))
    buffer = io.BytesIO()
    torch.save([shared] * 10_000, buffer)  # 10k references, one list
    PicklePolicy().check("shared", buffer.getvalue())


def test_limit_is_relative_to_the_stored_size() -> None:
    buffer = io.BytesIO()
    torch.save(torch.zeros(1 << 19), buffer)  # 2 MiB stored, 2 MiB in memory: ratio ~1
    raw = buffer.getvalue()
    assert len(raw) > 2 * EXPANSION_ALLOWANCE
    PicklePolicy().check("plain", raw)
    PicklePolicy(max_expansion=0.6).check("plain", raw)  # 1.2 + 1 MiB >= 2 MiB
    with pytest.raises(UnsafeCheckpointError, match="max_bytes_expansion"):
        PicklePolicy(max_expansion=0.4).check("plain", raw)  # 0.8 + 1 MiB < 2 MiB


def test_verify_untrusted_fails_on_an_expansion_bomb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "ckpt")
    raw = _legacy_tensor_pickle(1 << 22)
    dcp_save(
        {"extra": _RawBytes(raw)},
        storage_writer=dcp_impl.FileSystemWriter(path),
        planner=_RawPlanner(),
    )
    assert cli(["verify", "--untrusted", path]) == 1
    assert "max_bytes_expansion" in capsys.readouterr().err
    with pytest.raises(CheckpointException):
        dcp_load({"extra": None}, storage_reader=dcp_impl.FileSystemReader(path))
    state: dict[str, Any] = {"extra": None}
    reader = dcp_impl.FileSystemReader(path, max_bytes_expansion=1e6)
    dcp_load(state, storage_reader=reader)
    assert state["extra"].numel() == 1 << 22


def test_max_bytes_expansion_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_expansion"):
        PicklePolicy(max_expansion=0)


def test_nested_pickles_stay_bytes(planted: Path) -> None:
    inner = _pickle(_PLANTED, "thing", protocol=3, stack=False, call=True)
    buffer = io.BytesIO()
    torch.save({"inner": inner, "n": struct.pack("<I", 7)}, buffer)
    (copy,) = PicklePolicy().safe_copies([("nested", buffer.getvalue())])
    assert torch.load(io.BytesIO(copy), weights_only=False)["inner"] == inner
    assert not planted.exists()
