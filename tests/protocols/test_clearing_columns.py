"""A result's trades and outcomes are columns that read exactly like the tuples of rows they
replaced: the session, the settlement and the tests index, iterate, compare and look up by node."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.clearing import (
    MAX_ORDERS,
    ClearingError,
    ClearingParams,
    NodeOutcome,
    Order,
    Outcomes,
    Tariffs,
    Trade,
    Trades,
    clear,
)
from protocols.clearing.book import digest_order
from protocols.messages import MAX_ENERGY_WH, MAX_PRICE
from tests.protocols.test_clearing_invariants import EXAMPLES, MECHANISM_NAMES, books


@pytest.mark.parametrize("mechanism", MECHANISM_NAMES)
@EXAMPLES
@given(book=books())
def test_columns_read_as_rows(mechanism: str, book: tuple[list[Order], ClearingParams]) -> None:
    orders, params = book
    result = clear(mechanism, orders, params)
    rows = tuple(result.outcomes)
    assert all(type(o) is NodeOutcome for o in rows)
    assert [o.node for o in rows] == sorted({o.node for o in orders})  # one per node
    assert result.outcomes == rows and rows == tuple(result.outcomes[i] for i in range(len(rows)))
    assert result.outcomes[1:3] == rows[1:3]
    for order in orders:
        assert result.outcomes.of(order.node) == next(o for o in rows if o.node == order.node)
    assert result.outcomes.of("nobody") is None
    trades = tuple(result.trades)
    assert all(type(t) is Trade for t in trades)
    assert Trades.from_rows(trades) == result.trades and Outcomes.from_rows(rows) == result.outcomes
    assert hash(Trades.from_rows(trades)) == hash(result.trades)
    assert bool(result.trades) == bool(trades)


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ClearingError, match="different lengths"):
        Trades((("b",), ("s",), (1,), (1,), ()))
    with pytest.raises(ClearingError, match="needs 9 columns"):
        Outcomes(((),))


PARAMS = ClearingParams(tariffs=Tariffs(retail_price=300, feed_in_price=80))


@pytest.mark.parametrize(
    ("energy_wh", "limit_price"), [(MAX_ENERGY_WH + 1, 100), (100, MAX_PRICE + 1)]
)
def test_quantities_beyond_the_protocol_bounds_are_refused(
    energy_wh: int, limit_price: int
) -> None:
    """The core computes in int64; the bounds are what keep every product exact."""
    orders = [Order("a", "buy", energy_wh, limit_price, "d1"), Order("b", "sell", 10, 90, "d2")]
    with pytest.raises(ClearingError, match="protocol's bounds"):
        clear("uniform", orders, PARAMS)
    assert MAX_ORDERS >= 100_000


_HEX = "0123456789abcdef"
_DIGESTS = st.one_of(
    # real digests, some sharing their leading 64 bits (the integer sort's tie)
    st.lists(st.builds(lambda lead, rest: lead + rest,
                       st.sampled_from(["0" * 16, "f" * 16, "0123456789abcdef"]),
                       st.text(_HEX, min_size=48, max_size=48)), max_size=30),
    st.lists(st.text(_HEX, min_size=64, max_size=64), max_size=30),
    # what the fast path must hand back to the string sort
    st.lists(st.text(_HEX + "ABCDEF \t\nxz", min_size=62, max_size=66), max_size=30),
    st.lists(st.text(max_size=70), max_size=30),
)


@given(digests=_DIGESTS.map(lambda ds: list(dict.fromkeys(ds))))
def test_digest_order_is_the_string_order(digests: list[str]) -> None:
    assert digest_order(digests) == sorted(range(len(digests)), key=digests.__getitem__)
