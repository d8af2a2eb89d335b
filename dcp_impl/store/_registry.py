"""Which store a checkpoint id names: one answer for every backend.

:func:`open_store` returns a :class:`Store` given as such, a :class:`LocalStore` for a local
path, the store of a factory :func:`register_store` registered for the URL's protocol, and
otherwise an :class:`FsspecStore` for a URL of a protocol fsspec knows.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import fsspec

from dcp_impl.store._base import Store
from dcp_impl.store._fsspec import FsspecStore
from dcp_impl.store._local import LocalStore

__all__ = [
    "StoreFactory",
    "register_store",
    "open_store",
    "is_local_path",
    "is_url",
    "is_checkpoint_id",
]

StoreFactory = Callable[[str, Mapping[str, Any] | None], Store]
"""Makes the store of a URL, given the URL and the backend's ``storage_options``."""

_PROTOCOL = re.compile(r"[a-z][a-z0-9+.-]*")
_factories: dict[str, StoreFactory] = {}
_lock = threading.Lock()


def register_store(protocol: str, factory: StoreFactory | None) -> None:
    """Open ``PROTOCOL://...`` checkpoint ids with ``factory`` from now on, before fsspec is
    consulted (a registered protocol need not be one fsspec knows).

    Args:
        protocol: the URL scheme, lower case (``"myfs"`` for ``myfs://...``).
        factory: called with the URL and the backend's ``storage_options``; returns the
            :class:`Store`. ``None`` removes the registration; registering a protocol again
            replaces its factory.
    """
    if not isinstance(protocol, str) or _PROTOCOL.fullmatch(protocol) is None:
        raise ValueError(
            f"register_store: expected a lower-case URL scheme such as 'myfs', found {protocol!r}"
        )
    if factory is not None and not callable(factory):
        raise TypeError(f"register_store: expected a callable factory, found {factory!r}")
    with _lock:
        if factory is None:
            _factories.pop(protocol, None)
        else:
            _factories[protocol] = factory


def _text(checkpoint_id: object) -> str | None:
    """``checkpoint_id`` as a string path, or None where it cannot be one. Never raises."""
    try:
        text = os.fspath(checkpoint_id)  # type: ignore[call-overload]
    except Exception:  # not path-like, or a hostile __fspath__: a total function must not raise
        return None
    # NUL bytes can never name a file or an object.
    return text if isinstance(text, str) and text and "\0" not in text else None


def _registered(text: str) -> StoreFactory | None:
    protocol, sep, rest = text.partition("://")
    if not sep or not rest.strip("/"):
        return None
    with _lock:
        return _factories.get(protocol)


def is_local_path(checkpoint_id: object) -> bool:
    """Whether ``checkpoint_id`` can name a local directory. Total: never raises."""
    text = _text(checkpoint_id)
    return text is not None and "://" not in text  # URLs belong to other stores


def is_url(checkpoint_id: object) -> bool:
    """Whether ``checkpoint_id`` is a URL :func:`open_store` opens: of a protocol given to
    :func:`register_store`, or one fsspec knows (``s3://bucket/prefix``, chained
    ``simplecache::s3://...``). Total: never raises, imports no fsspec backend."""
    text = _text(checkpoint_id)
    if text is None or "://" not in text:
        return False
    if _registered(text) is not None:
        return True
    known = set(fsspec.available_protocols())
    parts = text.split("::")
    protocol, _, rest = parts[-1].partition("://")
    # Earlier parts of a chain are bare protocol names (with options given separately).
    names = [protocol, *(part.partition("://")[0] for part in parts[:-1])]
    return bool(rest.strip("/")) and all(name in known for name in names)


def is_checkpoint_id(checkpoint_id: object) -> bool:
    """Whether :func:`open_store` accepts ``checkpoint_id``: a :class:`Store`, a local path
    or a URL (:func:`is_url`). Total: never raises."""
    return isinstance(checkpoint_id, Store) or is_local_path(checkpoint_id) or is_url(checkpoint_id)


def open_store(
    checkpoint_id: str | os.PathLike[str] | Store,
    storage_options: Mapping[str, Any] | None = None,
) -> Store:
    """The store of ``checkpoint_id``: a :class:`Store` as given; a local path as a
    :class:`LocalStore`; a URL through its registered factory (:func:`register_store`),
    else through fsspec as an :class:`FsspecStore`.

    Args:
        checkpoint_id: a Store, a local path or a URL.
        storage_options: for the factory or fsspec (credentials, endpoint); fsspec's own
            environment variables (``AWS_ENDPOINT_URL``, ...) apply untouched. Must be empty
            with a Store instance.
    """
    if isinstance(checkpoint_id, Store):
        if storage_options:
            raise ValueError(
                f"storage_options: expected none with a Store instance ({checkpoint_id!r} is "
                "already open), found some"
            )
        return checkpoint_id
    if is_local_path(checkpoint_id):
        return LocalStore(checkpoint_id)
    text = _text(checkpoint_id)
    factory = _registered(text) if text is not None else None
    if factory is not None:
        assert text is not None  # _registered found a protocol in it
        return factory(text, storage_options)
    if text is not None and is_url(text):
        return FsspecStore(text, storage_options)
    raise ValueError(
        f"checkpoint id {checkpoint_id!r}: expected a Store, a local path or a URL of a "
        "registered protocol or one fsspec knows"
    )
