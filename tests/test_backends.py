"""The backend registry: capability vocabulary, built-ins, SPEC resolution and its errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint._hf_utils import DTYPE_MAP
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter

import dcp_impl
from dcp_impl.dtypes import DTYPES
from spec_tests import backends
from spec_tests.backends import (
    BUILTIN_NAMES,
    CAPABILITIES,
    DEFAULTS,
    OPT_IN,
    OPTIONAL_MEMBERS,
    Backend,
    BackendSpecError,
    builtin,
    claimed_dtypes,
    claims,
    configurations,
    load_backend,
)

GENERAL = {
    "bytes",
    "multi-rank",
    "multi-chunk",
    "reshard",
    "metadata-exact",
    "overwrite",
    "integrity",
    "integrity-pieces",
    "atomic-commit",
    "multiprocess",
    "async",
    "safe-load",
}


def test_vocabulary_is_every_dtype_row_plus_the_general_capabilities() -> None:
    assert set(CAPABILITIES) == {f"dtype:{row.name}" for row in DTYPES} | GENERAL
    assert all(meaning.strip() for meaning in CAPABILITIES.values())


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtins_satisfy_the_protocol(name: str) -> None:
    backend = builtin(name)
    assert isinstance(backend, Backend)
    assert backend.name == name
    assert backend.capabilities is None or backend.capabilities <= CAPABILITIES.keys()


def test_builtin_names_are_the_fifteen_documented() -> None:
    assert set(BUILTIN_NAMES) == {
        "dcp_impl-fs",
        "dcp_impl-fs-threads",
        "dcp_impl-fs-async",
        "dcp_impl-fs-shared-reads",
        "dcp_impl-hf",
        "dcp_impl-hf-defaults",
        "dcp_impl-hf-consolidated",
        "torch-fs",
        "torch-fs-threads",
        "torch-fs-async",
        "torch-hf",
        "torch-hf-defaults",
        "torch-hf-consolidated",
        "torch-fsspec",
        "reference",
    }


def test_every_builtin_but_the_reference_is_a_named_configuration() -> None:
    named = {}
    for name in BUILTIN_NAMES:
        for config, backend in configurations(builtin(name)).items():
            named.setdefault(backend.name, set()).add(config)
    assert set(named) == set(BUILTIN_NAMES) - {"reference"}
    assert all(len(configs) == 1 for configs in named.values())  # one name, one configuration
    for family in ("dcp_impl-fs", "dcp_impl-hf", "torch-fs", "torch-hf", "torch-fsspec"):
        assert DEFAULTS in configurations(builtin(family))


def test_defaults_configurations_construct_with_no_options(tmp_path: Path) -> None:
    # What most users run: the writer as its constructor's defaults make it.
    torch_hf = builtin("torch-hf-defaults").make_writer(str(tmp_path))
    assert isinstance(torch_hf, HuggingFaceStorageWriter)
    assert not torch_hf.save_distributed
    assert not builtin("dcp_impl-hf-defaults").make_writer(str(tmp_path)).save_distributed  # type: ignore[attr-defined]
    assert load_backend("torch-fs[defaults]").name == "torch-fs"
    for name in ("torch-hf-defaults", "dcp_impl-hf-defaults"):
        assert not claims(builtin(name), "multi-rank")
        assert not claims(builtin(name), "multi-chunk")


def test_async_configurations_save_as_process_mode() -> None:
    for name in ("torch-fs-async", "dcp_impl-fs-async"):
        assert builtin(name).async_save == "process"  # type: ignore[attr-defined]
        assert builtin(name).capabilities == builtin(name.removesuffix("-async")).capabilities
    assert "async_save" in OPTIONAL_MEMBERS


def test_configurations_users_run_are_built_in(tmp_path: Path) -> None:
    threads = builtin("torch-fs-threads")
    assert threads.capabilities == builtin("torch-fs").capabilities
    writer = threads.make_writer(str(tmp_path))
    assert isinstance(writer, FileSystemWriter)
    assert writer.thread_count == 4
    ours_fs = builtin("dcp_impl-fs-threads").make_writer(str(tmp_path))
    assert ours_fs.thread_count == 4  # type: ignore[attr-defined]
    hf = builtin("torch-hf-consolidated").make_writer(str(tmp_path))
    assert isinstance(hf, HuggingFaceStorageWriter)
    assert (hf.save_distributed, hf.enable_consolidation, hf.thread_count) == (True, True, 4)
    ours = builtin("dcp_impl-hf-consolidated").make_writer(str(tmp_path))
    assert (ours.enable_consolidation, ours.thread_count) == (True, 4)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["torch-hf-consolidated", "dcp_impl-hf-consolidated"])
def test_consolidating_builtins_say_where_the_output_is(name: str) -> None:
    backend = builtin(name)
    assert "consolidated" in OPTIONAL_MEMBERS
    assert backend.consolidated("/ckpt/a") == "/ckpt/a"  # type: ignore[attr-defined]
    assert not hasattr(builtin(name.removesuffix("-consolidated")), "consolidated")


def test_unknown_builtin_lists_the_builtins() -> None:
    with pytest.raises(
        BackendSpecError,
        match="expected one of dcp_impl-fs, dcp_impl-fs-threads, dcp_impl-fs-async",
    ):
        builtin("s3")
    with pytest.raises(BackendSpecError, match="'s3' is not a built-in"):
        load_backend("s3")


def test_claims_rejects_unknown_capability_names() -> None:
    with pytest.raises(ValueError, match="'multi_rank' is unknown"):
        claims(builtin("reference"), "multi_rank")


def test_none_claims_everything() -> None:
    fs = builtin("dcp_impl-fs")
    assert fs.capabilities is None
    assert all(claims(fs, cap) for cap in CAPABILITIES)
    assert claimed_dtypes(fs) == [row.torch_dtype for row in DTYPES]


def test_reference_claims_all_but_four() -> None:
    reference = builtin("reference")
    assert reference.capabilities == frozenset(CAPABILITIES) - {
        "integrity",
        "integrity-pieces",
        "atomic-commit",
        "multiprocess",
    }


def test_torch_hf_claims_the_safetensors_dtypes_and_no_bytes() -> None:
    hf = builtin("torch-hf")
    # Its reader names dtypes through safetensors' own table, not torch's DTYPE_MAP.
    assert set(claimed_dtypes(hf)) == set(safetensors.torch._TYPES.values())
    assert set(DTYPE_MAP.values()) < set(claimed_dtypes(hf))
    assert not claims(hf, "bytes")
    assert not claims(hf, "multi-chunk")
    assert claims(hf, "multi-rank")
    assert claims(hf, "reshard")


def test_dcp_impl_hf_claims_the_safetensors_dtypes() -> None:
    hf = builtin("dcp_impl-hf")
    assert claimed_dtypes(hf) == [row.torch_dtype for row in DTYPES if row.safetensors]
    assert (hf.capabilities or set()) >= GENERAL


@pytest.mark.parametrize("name", ["torch-fs", "torch-fsspec"])
def test_torch_fs_lacks_integrity_atomic_commit_and_bits(name: str) -> None:
    fs = builtin(name)
    bits = {f"dtype:{row.name}" for row in DTYPES if row.name.startswith("bits")}
    assert len(bits) == 5
    unclaimed = {cap for cap in CAPABILITIES if not claims(fs, cap)}
    assert unclaimed == {"integrity", "integrity-pieces", "atomic-commit", "safe-load"} | bits


def test_torch_backends_make_torch_storage(tmp_path: Path) -> None:
    assert type(builtin("torch-fs").make_writer(str(tmp_path))) is FileSystemWriter
    assert type(builtin("torch-fs").make_reader(str(tmp_path))) is FileSystemReader
    writer = builtin("torch-hf").make_writer(str(tmp_path))
    assert isinstance(writer, HuggingFaceStorageWriter)
    assert writer.save_distributed


def test_torch_fsspec_makes_fsspec_storage_for_paths_and_urls(tmp_path: Path) -> None:
    backend = builtin("torch-fsspec")
    for location in (str(tmp_path), f"file://{tmp_path}", "memory://dcp/ckpt"):
        assert type(backend.make_writer(location)) is FsspecWriter
        assert type(backend.make_reader(location)) is FsspecReader


@pytest.mark.parametrize("name", ["dcp_impl-fs", "dcp_impl-hf"])
def test_dcp_impl_backends_make_dcp_impl_storage(name: str, tmp_path: Path) -> None:
    prefix = "FileSystem" if name.endswith("fs") else "HuggingFace"
    if not hasattr(dcp_impl, f"{prefix}Reader"):
        pytest.skip(f"dcp_impl.{prefix}Reader is not written yet")
    backend = builtin(name)
    writer = backend.make_writer(str(tmp_path))
    assert isinstance(writer, StorageWriter)
    assert getattr(writer, "save_distributed", True)  # HF: one shard file per rank
    assert isinstance(backend.make_reader(str(tmp_path)), StorageReader)


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[str]:
    """A throwaway importable module defining backends in several shapes."""
    name = "user_backends_for_test"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from spec_tests.contract.reference import ReferenceBackend

            class Store:
                name = "store"
                capabilities = frozenset({"bytes"})
                def make_writer(self, path): return None
                def make_reader(self, path): return None

            INSTANCE = Store()
            def factory(): return Store()
            class Holder:
                backend = ReferenceBackend(name="held")
            def broken(): raise RuntimeError("no credentials")
            class Typo(Store):
                capabilities = frozenset({"multi_rank"})
            class BadName(Store):
                name = 3
            class NoReader:
                name = "half"
                capabilities = None
                def make_writer(self, path): return None
            class Configured(Store):
                def configurations(self):
                    return {"defaults": Store, "fast": ReferenceBackend(name="store-fast")}
            class NoDefaults(Store):
                def configurations(self): return {"fast": Store()}
            class SameNames(Store):
                def configurations(self): return {"defaults": Store(), "fast": Store()}
            class Later(Store):
                async_save = "later"
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    yield name
    sys.path.remove(str(tmp_path))
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("attr", "expected"),
    [("INSTANCE", "store"), ("Store", "store"), ("factory", "store"), ("Holder.backend", "held")],
)
def test_module_attr_specs(user_module: str, attr: str, expected: str) -> None:
    backend = load_backend(f"{user_module}:{attr}")
    assert isinstance(backend, Backend)
    assert backend.name == expected


def test_a_configuration_is_picked_by_name(user_module: str) -> None:
    assert load_backend(f"{user_module}:Configured[fast]").name == "store-fast"
    assert load_backend(f"{user_module}:Configured[defaults]").name == "store"
    assert load_backend("torch-hf[defaults]").name == "torch-hf-defaults"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{m}:missing", "has no attribute 'missing'"),
        ("{m}:broken", "calling .* failed: RuntimeError: no credentials"),
        ("{m}:Typo", r"claims unknown capabilities \['multi_rank'\]"),
        ("{m}:BadName", "name must be a str"),
        ("{m}:NoReader", r"lacks Backend member\(s\) make_reader"),
        ("{m}:", "expected module:attr"),
        ("not_a_module_xyz:thing", "cannot import module 'not_a_module_xyz'"),
        ("{m}:Configured[slow]", "no configuration 'slow': expected one of defaults, fast"),
        ("{m}:Store[fast]", "no configuration 'fast': expected one of .none"),
        ("{m}:NoDefaults[fast]", "configurations.. must name 'defaults'.*found fast"),
        ("{m}:SameNames[fast]", r"configurations share the name\(s\) \['store'\]"),
        ("{m}:Later", "async_save must be None or one of thread, process; got 'later'"),
        ("torch-fs[]", r"expected SPEC\[CONFIG\], both non-empty"),
    ],
)
def test_bad_specs_say_what_is_wrong(user_module: str, spec: str, message: str) -> None:
    with pytest.raises(BackendSpecError, match=message):
        load_backend(spec.format(m=user_module))


def test_builtin_registry_does_not_import_dcp_impl_storage() -> None:
    # The dcp_impl backends are written in parallel: building the objects must not need them.
    backend = backends.DcpImplHF()
    assert backend.name == "dcp_impl-hf"
    assert torch.float32 in claimed_dtypes(backend)


def test_docs_table_lists_every_capability() -> None:
    guide = (Path(__file__).parents[1] / "docs" / "conformance.md").read_text(encoding="utf-8")
    for cap in GENERAL:
        assert f"| `{cap}` |" in guide, cap
    for row in DTYPES:
        assert f"`{row.name}`" in guide, row.name


def test_the_matrix_runs_each_named_configuration_as_a_column(user_module: str) -> None:
    from spec_tests.cli.main import DEFAULT_BACKENDS, columns

    configured = f"{user_module}:Configured"
    assert columns([configured, "torch-fs", f"{configured}[fast]", "no_such_module:X"]) == [
        f"{configured}[defaults]",
        f"{configured}[fast]",
        "torch-fs",  # a built-in is one configuration: its family's others are built-ins too
        "no_such_module:X",  # kept, for its run to say why it does not load
    ]
    assert set(columns(DEFAULT_BACKENDS)) == set(BUILTIN_NAMES) - OPT_IN
    assert load_backend("dcp_impl-fs[shared-reads]").name in OPT_IN  # named, it runs
