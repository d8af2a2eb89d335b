"""``dcp_impl.io`` is a deprecated alias of ``dcp_impl.transfer`` for one release."""

from __future__ import annotations

import importlib
import sys

import pytest

import dcp_impl
import dcp_impl.store
import dcp_impl.transfer


def test_importing_the_old_name_warns_and_still_works() -> None:
    sys.modules.pop("dcp_impl.io", None)
    with pytest.warns(DeprecationWarning, match=r"dcp_impl\.transfer"):
        old = importlib.import_module("dcp_impl.io")
    assert old.read_into is dcp_impl.transfer.read_into
    assert set(old.__all__) == set(dcp_impl.transfer.__all__)


def test_from_import_of_the_old_name_keeps_working() -> None:
    sys.modules.pop("dcp_impl.io", None)
    with pytest.warns(DeprecationWarning, match=r"dcp_impl\.transfer"):
        from dcp_impl.io import read_into
    assert read_into is dcp_impl.transfer.read_into


def test_the_old_attribute_of_the_package_warns_and_still_works() -> None:
    sys.modules.pop("dcp_impl.io", None)
    vars(dcp_impl).pop("io", None)
    with pytest.warns(DeprecationWarning, match=r"dcp_impl\.transfer"):
        old = dcp_impl.io  # type: ignore[attr-defined]
    assert old.read_into is dcp_impl.transfer.read_into


@pytest.mark.parametrize("name", ["ItemWriter", "StoredRange"])
def test_the_old_store_exports_warn_and_still_work(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"dcp_impl\.transfer\.{name}"):
        old = getattr(dcp_impl.store, name)
    assert old is getattr(dcp_impl.transfer, name)
    assert name not in dcp_impl.store.__all__


def test_each_name_is_exported_once() -> None:
    assert not set(dcp_impl.store.__all__) & set(dcp_impl.transfer.__all__)
