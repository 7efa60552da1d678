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
from itertools import chain

__all__ = ["CanonicalError", "canonical_bytes", "digest"]


class CanonicalError(ValueError):
    """A value that has no canonical encoding (our own fault: the caller built a bad object).

    ``path`` names where the offending value sits, e.g. ``"$.trades[3].price"``.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


_SCALARS = frozenset((str, int, bool, type(None)))


def _check(obj: object, path: str) -> None:
    """Walk ``obj`` and raise at the first value outside the canonical subset.

    The path is only spelled out once a bad value is found: formatting one for every value
    visited cost more than the walk itself (a clearing result of 100,000 orders has over a million).
    """
    found = _problem(obj)
    if found is not None:
        where, problem = found
        raise CanonicalError(path + where, problem)


def _problem(obj: object) -> tuple[str, str] | None:
    """Where (relative to ``obj``) the first value outside the subset sits and what is wrong."""
    kind = type(obj)
    if kind in _SCALARS:
        return None
    if kind is list and isinstance(obj, list):
        kinds = set(map(type, obj))
        # Flat lists and lists of flat lists (result rows) are checked whole, at C speed.
        if kinds <= _SCALARS or (
            kinds == {list} and set(map(type, chain.from_iterable(obj))) <= _SCALARS
        ):
            return None
        for index, item in enumerate(obj):
            found = _problem(item)
            if found is not None:
                return f"[{index}]{found[0]}", found[1]
        return None
    if kind is dict and isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) is not str:
                return "", f"object key {key!r} is not a str"
            found = _problem(value)
            if found is not None:
                return f".{key}{found[0]}", found[1]
        return None
    if kind is float:
        return "", "floats are not allowed (use integer units)"
    return "", f"type {kind.__name__} has no canonical encoding"


def canonical_bytes(obj: object) -> bytes:
    """The canonical JSON bytes of ``obj``; raises :class:`CanonicalError` for anything else."""
    _check(obj, "$")
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def digest(obj: object) -> str:
    """SHA-256 of the canonical bytes, lowercase hex: the identity of a bid, a bid set, a result."""
    return hashlib.sha256(canonical_bytes(obj)).hexdigest()
