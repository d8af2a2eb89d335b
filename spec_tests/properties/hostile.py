"""Spec section 7: hostile stored objects never execute.

Every payload here does one thing when it is unpickled: it creates a marker file (through
:func:`mark`). A marker that exists after a load means the load ran code a checkpoint
chose, which is a :class:`~spec_tests.contract.verdicts.ContractViolation`; raising instead is fine.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from fsspec.core import url_to_fs
from hypothesis import given, note
from hypothesis import strategies as st

from spec_tests.backends import Backend, claims
from spec_tests.contract.verdicts import ContractViolation, may_refuse
from spec_tests.plugin.profiles import few
from spec_tests.properties.checks import Location, check_entry, draw_tensor, request_for
from spec_tests.sim import harness
from spec_tests.strategies import NamedCases

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["PAYLOADS", "HostileProperties", "Payload", "mark"]


def mark(path: str) -> None:
    """Create ``path``: the only effect of every payload (module-level, so pickle can name it)."""
    Path(path).touch()


@dataclass(frozen=True)
class Payload:
    """An object whose unpickling calls :func:`mark` on ``marker``."""

    marker: str

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (mark, (self.marker,))


def _plain_pickle(marker: str) -> bytes:
    return pickle.dumps(Payload(marker), protocol=2)


def _torch_save(marker: str) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "payload": Payload(marker)}, buffer)
    return buffer.getvalue()


#: Stored-object replacements: a plain pickle, and a torch.save zip carrying a pickled payload.
PAYLOADS: dict[str, Callable[[str], bytes]] = {"pickle": _plain_pickle, "torch.save": _torch_save}

#: Where a payload sits in a non-tensor entry; each placement is tried in every example.
_WRAPS: NamedCases[Callable[[Payload], Any]] = NamedCases(
    {
        "bare": lambda payload: payload,
        "in a list": lambda payload: [1, payload],
        "in a dict": lambda payload: {"lr": 0.1, "hook": payload},
    }
)


@contextlib.contextmanager
def _marker(what: str) -> Iterator[str]:
    """A marker path for one payload; a ContractViolation if it exists when the block ends.

    Checked on the way out even when the block raises: a payload that ran and then made the
    load fail is still a payload that ran, and that is the verdict to report.
    """
    with tempfile.TemporaryDirectory(prefix="dcp-hostile-") as folder:
        path = Path(folder, "payload-ran")
        try:
            yield str(path)
        finally:
            if path.exists():
                raise ContractViolation(
                    f"{what}: the load ran the payload's code (it created {path.name}); "
                    "expected it never to be executed (raising is fine)"
                )


def _bytes_requests(fqn: str, value: Any) -> dict[str, harness.Request]:
    """What to load for the non-tensor ``value`` saved as ``fqn`` (DCP flattens a dict)."""
    if isinstance(value, dict):
        return {f"{fqn}.{key}": harness.BytesRequest() for key in value}
    return {fqn: harness.BytesRequest()}


def _stored_files(location: str) -> tuple[AbstractFileSystem, list[str]]:
    """Every stored file or object under ``location`` (a local path or a URL)."""
    fs, root = url_to_fs(location)
    fs.invalidate_cache(root)  # a listing cached before the save would miss its files
    return fs, sorted(fs.find(root))


def _raise_stand_in(what: str, got: dict[str, Any], requests: dict[str, Any]) -> None:
    """The verdict on a load of a hostile entry that did not raise.

    The harness's planner unpickles what the reader hands it, so a load that neither ran
    the payload nor raised loaded something else in its place (None, a default, an empty
    object): refused means raised, never a stand-in value.
    """
    loaded = {k: got.get(k) for k in requests if k != "t"}
    raise ContractViolation(
        f"{what}: the load neither ran it nor raised, so the entry loaded as a stand-in "
        f"({loaded!r}); expected the load (or the save) to raise"
    )


class HostileProperties:
    """Checkpoints written by someone else: loading them never runs their code."""

    @pytest.mark.dcp_requires("safe-load")
    @few(10)
    @given(data=st.data())
    def test_hostile_bytes_entry_never_runs(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """A non-tensor entry whose unpickling would run code is never unpickled on load.

        The harness's planner unpickles bytes entries as torch's DefaultLoadPlanner does
        (``weights_only=False``), so only the reader can stop it: by raising. Refused means
        raised: an entry that loads as ``None``, a default or anything else is a violation.
        """
        value = draw_tensor(data, dcp_backend, max_dims=2)
        for wrap, place in _WRAPS:  # every placement in every example
            what = f"a bytes entry holding a payload {wrap}"
            location = dcp_location()
            with (
                harness.repro(dcp_backend, dtype=value.dtype, payload=wrap),
                _marker(what) as marker,
            ):
                extra = place(Payload(marker))
                requests = {"t": request_for(value), **_bytes_requests("extra", extra)}
                with may_refuse("saving and loading an entry whose unpickling runs code") as out:
                    harness.save(dcp_backend, location, [{"t": value, "extra": extra}])
                    got = harness.load(dcp_backend, location, [requests])[0]
                if not out.refused:
                    _raise_stand_in(what, got, requests)
                note(f"{wrap}: refused: {out.error!r}")

    @few(4)
    @given(data=st.data())
    def test_hostile_stored_objects_never_execute(
        self, dcp_backend: Backend, dcp_location: Location, data: st.DataObject
    ) -> None:
        """Each stored file replaced by a pickle or a torch.save payload: loading never runs it.

        The saved state is tensors only, so the harness's planner unpickles nothing of its
        own: a payload that runs was deserialized by the backend itself.
        """
        value = draw_tensor(data, dcp_backend, max_dims=2)
        location = dcp_location()
        with harness.repro(dcp_backend, dtype=value.dtype, shape=tuple(value.shape)):
            harness.save(dcp_backend, location, [{"t": value}])
            fs, files = _stored_files(location)
            if not files:
                pytest.skip(f"backend {dcp_backend.name!r} stores no files at the location")
            for path in files:
                original = fs.cat_file(path)
                try:
                    for kind, payload in PAYLOADS.items():
                        self._load_with(dcp_backend, location, value, fs, path, kind, payload)
                finally:
                    fs.pipe_file(path, original)

    @staticmethod
    def _load_with(
        backend: Backend,
        location: str,
        value: torch.Tensor,
        fs: AbstractFileSystem,
        path: str,
        kind: str,
        payload: Callable[[str], bytes],
    ) -> None:
        what = f"{posixpath.basename(path)} replaced by a {kind} payload"
        with _marker(what) as marker:
            fs.pipe_file(path, payload(marker))
            with may_refuse(f"loading with {what}") as outcome:
                got = harness.load(backend, location, [{"t": request_for(value)}])[0]
            note(f"{what}: " + (f"refused ({outcome.error!r})" if outcome.refused else "loaded"))
            if not outcome.refused and claims(backend, "integrity"):
                # A backend that claims integrity loads a replaced file exactly (it was not
                # needed) or raises: damage it lets through is a stand-in for the data.
                check_entry(f"'t' with {what} (must raise or be exact)", got["t"], value)
