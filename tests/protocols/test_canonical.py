"""Canonical encoding: exact bytes, refusal of floats and foreign types, round trips."""

import enum
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.canonical import CanonicalError, canonical_bytes, digest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def test_golden_bytes() -> None:
    value = {"b": 1, "a": [True, None, "é", -7], "A": {"z": "x", "y": False}}
    assert canonical_bytes(value) == b'{"A":{"y":false,"z":"x"},"a":[true,null,"\\u00e9",-7],"b":1}'


def test_digest_is_sha256_of_the_canonical_bytes() -> None:
    assert digest([1, "a"]) == hashlib.sha256(b'[1,"a"]').hexdigest()


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (1.5, "$"),
        ({"a": [1, 0.0]}, "$.a[1]"),
        ({"a": {"b": float("nan")}}, "$.a.b"),
        ({"rows": [[1, "x"], [2, 0.5]]}, "$.rows[1][1]"),
        ([[1], [[2, 1.0]]], "$[1][0][1]"),
    ],
)
def test_floats_are_refused_with_their_path(value: object, path: str) -> None:
    with pytest.raises(CanonicalError, match="float") as caught:
        canonical_bytes(value)
    assert caught.value.path == path


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, b"x", Colour.RED, {1: "a"}, object()])
def test_other_types_are_refused(value: object) -> None:
    with pytest.raises(CanonicalError):
        canonical_bytes(value)


@pytest.mark.parametrize(
    ("value", "path"),
    [([[1, "a"], (2, "b")], "$[1]"), ({"rows": [[1], [2, b"x"]]}, "$.rows[1][1]")],
)
def test_foreign_types_in_rows_are_refused_with_their_path(value: object, path: str) -> None:
    # Lists of flat lists (result rows) are checked whole; a bad value must still be named.
    with pytest.raises(CanonicalError, match="no canonical encoding") as caught:
        canonical_bytes(value)
    assert caught.value.path == path


def test_bools_stay_bools() -> None:
    assert canonical_bytes([True, 1, False, 0]) == b"[true,1,false,0]"


@settings(max_examples=200)
@given(json_values)
def test_round_trip_and_fixed_point(value: object) -> None:
    data = canonical_bytes(value)
    assert json.loads(data) == value
    assert canonical_bytes(json.loads(data)) == data
    assert data.isascii()


@settings(max_examples=100)
@given(st.dictionaries(st.text(max_size=6), st.integers(), min_size=1, max_size=8), st.randoms())
def test_key_order_does_not_matter(value: dict[str, int], rng: object) -> None:
    items = list(value.items())
    rng.shuffle(items)  # type: ignore[attr-defined]
    assert canonical_bytes(dict(items)) == canonical_bytes(value)
