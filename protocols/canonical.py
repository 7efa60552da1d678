"""One byte encoding for everything that is signed or hashed.

Every gateway must hash and sign the *same bytes* for the same message, on any CPU and any Python
build. JSON with sorted keys, no whitespace and ASCII-only output gives that, provided the values
are restricted to types whose text form is unique: integers (all quantities are integer Wh, µ/Wh and
µ-money, see docs/architecture.md), strings, booleans, null, lists and string-keyed objects.

Floats are refused outright: ``0.1 + 0.2`` prints differently from ``0.3`` and float formatting is
the classic source of "same value, different hash". Other types (tuples, sets, enums, bytes, int or
str subclasses) are refused too, so that the caller decides their JSON form explicitly rather than
inheriting whatever ``json`` happens to do with them.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["CanonicalError", "canonical_bytes", "digest"]


class CanonicalError(ValueError):
    """A value that has no canonical encoding (our own fault: the caller built a bad object).

    ``path`` names where the offending value sits, e.g. ``"$.trades[3].price"``.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _check(obj: object, path: str) -> None:
    """Walk ``obj`` and raise at the first value outside the canonical subset."""
    kind = type(obj)
    if kind is str or kind is int or kind is bool or obj is None:
        return
    if kind is list and isinstance(obj, list):
        for index, item in enumerate(obj):
            _check(item, f"{path}[{index}]")
        return
    if kind is dict and isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) is not str:
                raise CanonicalError(path, f"object key {key!r} is not a str")
            _check(value, f"{path}.{key}")
        return
    if kind is float:
        raise CanonicalError(path, "floats are not allowed (use integer units)")
    raise CanonicalError(path, f"type {kind.__name__} has no canonical encoding")


def canonical_bytes(obj: object) -> bytes:
    """The canonical JSON bytes of ``obj``; raises :class:`CanonicalError` for anything else."""
    _check(obj, "$")
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def digest(obj: object) -> str:
    """SHA-256 of the canonical bytes, lowercase hex: the identity of a bid, a bid set, a result."""
    return hashlib.sha256(canonical_bytes(obj)).hexdigest()
