"""What dcp_impl's two backends share beyond the store and the read pipeline: the check of
their ``verify`` option and the handling of a rank's failed writes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from dcp_impl.errors import WriteFailedError
from dcp_impl.store import Store

__all__ = ["check_verify", "nothing_committed"]


def check_verify(owner: str, value: object) -> None:
    """Refuse a ``verify`` other than True, False or ``"whole"`` (see ``dcp_impl.io.Verify``)."""
    if value is not True and value is not False and value != "whole":
        raise ValueError(f"{owner}: verify expected True, False or 'whole', got {value!r}")


@contextlib.contextmanager
def nothing_committed(store: Store, names: Sequence[str], count: int) -> Iterator[None]:
    """Run one rank's ``write_data`` of ``count`` items into the files ``names`` of ``store``.

    On any failure the files are removed (best effort: the failure is what to report) and
    :class:`~dcp_impl.errors.WriteFailedError` says that nothing was committed, chained to
    the failure; an interrupt (not an ``Exception``) removes them and passes unchanged.
    """
    try:
        yield
    except BaseException as err:
        with contextlib.suppress(OSError):
            store.remove(names)
        if not isinstance(err, Exception):
            raise
        raise WriteFailedError(
            f"{store.url}: writing {count} items failed: {err!r}; nothing was committed"
        ) from err
