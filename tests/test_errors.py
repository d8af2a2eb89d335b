"""The exception tree: one root, leaves that also subclass the nearest builtin."""

from __future__ import annotations

import pytest

from dcp_impl import errors

LEAVES = {
    errors.CheckpointNotFoundError: FileNotFoundError,
    errors.CorruptCheckpointError: ValueError,
    errors.InvalidMetadataError: ValueError,
    errors.InvalidOptionError: ValueError,
    errors.UnknownDtypeError: ValueError,
    errors.LayoutMismatchError: ValueError,
    errors.UnsupportedError: TypeError,
    errors.UnsafeCheckpointError: ValueError,
    errors.WriteFailedError: OSError,
    errors.OverwriteRefusedError: FileExistsError,
    errors.ConcurrentSaveError: RuntimeError,
    errors.UnsafeFileError: OSError,
    errors.StorageFaultError: OSError,
    errors.InvalidOptionError: ValueError,
    errors.SharedReadError: RuntimeError,
    errors.SharedReadTimeoutError: TimeoutError,
}


@pytest.mark.parametrize(("leaf", "builtin"), LEAVES.items(), ids=lambda c: c.__name__)
def test_leaf_is_a_checkpoint_error_and_its_builtin(leaf: type, builtin: type) -> None:
    err = leaf("subject: expected x, found y")
    assert isinstance(err, errors.CheckpointError)
    assert isinstance(err, builtin)
    assert str(err) == "subject: expected x, found y"


def test_every_public_error_is_listed() -> None:
    public = {getattr(errors, name) for name in errors.__all__}
    assert public == {errors.CheckpointError, *LEAVES}
