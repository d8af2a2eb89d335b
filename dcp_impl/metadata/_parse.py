"""Bounded, strict parsing of a metadata document, and the one check of its JSON objects.

:func:`parse` refuses oversized input before parsing and accepts only UTF-8 JSON with
unique keys and no NaN/Infinity literals; :func:`json_object` checks that a parsed node is an
object with no repeated key and exactly the keys docs/format.md gives it.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from dcp_impl.errors import InvalidMetadataError
from dcp_impl.metadata._values import Problem

__all__ = ["json_object", "parse"]


class _DuplicateKeys(dict[str, Any]):
    """A parsed JSON object that repeated a key; the decoder reports it with its path."""

    __slots__ = ("duplicate",)
    duplicate: str


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _DuplicateKeys(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _reject_constant(name: str) -> NoReturn:
    raise InvalidMetadataError(f"metadata: expected JSON numbers only, found the literal {name}")


def parse(text: str | bytes | bytearray, *, limit: int) -> object:
    """The JSON value of ``text``, refused unparsed when over ``limit`` UTF-8 bytes.

    Raises :class:`InvalidMetadataError` (not a :class:`Problem`: there is no path yet).
    """
    if isinstance(text, bytes | bytearray):
        size = len(text)
    elif isinstance(text, str):
        size = len(text)
        if size <= limit and not text.isascii():
            size = len(text.encode("utf-8", "surrogatepass"))
    else:
        raise InvalidMetadataError(f"metadata: expected str or bytes, found {type(text).__name__}")
    if size > limit:
        raise InvalidMetadataError(
            f"metadata: expected at most MAX_METADATA_BYTES={limit} bytes, "
            f"found {size}; refusing to parse it"
        )
    try:
        if not isinstance(text, str):
            text = bytes(text).decode("utf-8")
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except InvalidMetadataError:
        raise
    except UnicodeDecodeError as err:
        raise InvalidMetadataError(f"metadata: expected UTF-8, found {err}") from err
    except ValueError as err:  # JSONDecodeError, or an integer literal of > 4300 digits
        raise InvalidMetadataError(f"metadata: expected a JSON document, found {err}") from err
    except RecursionError as err:
        raise InvalidMetadataError(
            "metadata: expected a JSON document, found nesting too deep"
        ) from err


def json_object(node: object, keys: frozenset[str] | None = None) -> dict[str, Any]:
    """``node`` as a JSON object with no repeated key and, if given, exactly ``keys``."""
    if type(node) is _DuplicateKeys:
        dup = json.dumps(node.duplicate)
        raise Problem(f"an object with unique keys, found {dup} twice", None, raw=True)
    if type(node) is not dict:
        raise Problem("a JSON object", node)
    if keys is not None and node.keys() != keys:
        unknown = sorted(node.keys() - keys)
        if unknown:
            raise Problem(
                f"only the keys {sorted(keys)}, found unknown key {json.dumps(unknown[0])}",
                None,
                raw=True,
            )
        missing = sorted(keys - node.keys())
        raise Problem(f"the key {json.dumps(missing[0])}, found it missing", None, raw=True)
    return node
