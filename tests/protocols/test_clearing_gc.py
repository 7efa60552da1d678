"""``clear``, ``result_hash`` and ``orders_from_bids`` pause the cyclic garbage collector while
they run, then leave it as it was."""

from __future__ import annotations

import dataclasses
import gc

import pytest

from protocols.canonical import CanonicalError
from protocols.clearing import (
    ClearingError,
    ClearingParams,
    Order,
    Tariffs,
    clear,
    orders_from_bids,
    result_hash,
)
from protocols.messages import Bid

PARAMS = ClearingParams(tariffs=Tariffs(retail_price=300, feed_in_price=80))
ORDERS = [
    Order(node="a", side="buy", energy_wh=1_000, limit_price=250, digest="1" * 64),
    Order(node="b", side="sell", energy_wh=600, limit_price=100, digest="2" * 64),
]


@pytest.mark.parametrize("was_enabled", [True, False])
def test_collector_state_is_restored(was_enabled: bool) -> None:
    before = gc.isenabled()
    try:
        (gc.enable if was_enabled else gc.disable)()
        result = clear("uniform", ORDERS, PARAMS)
        assert gc.isenabled() is was_enabled
        assert result.trades and result.trades[0].energy_wh == 600
        with pytest.raises(ClearingError):
            clear("uniform", [*ORDERS, ORDERS[0]], PARAMS)  # duplicate node: refused
        assert gc.isenabled() is was_enabled  # restored on the error path too
    finally:
        (gc.enable if before else gc.disable)()


@pytest.mark.parametrize("was_enabled", [True, False])
def test_result_hash_restores_the_collector_state(was_enabled: bool) -> None:
    result = clear("uniform", ORDERS, PARAMS)
    bad = dataclasses.replace(result, price=0.5)  # a float has no canonical encoding
    before = gc.isenabled()
    try:
        (gc.enable if was_enabled else gc.disable)()
        assert len(result_hash(result)) == 64
        assert gc.isenabled() is was_enabled
        with pytest.raises(CanonicalError):
            result_hash(bad)
        assert gc.isenabled() is was_enabled  # restored on the error path too
    finally:
        (gc.enable if before else gc.disable)()


@pytest.mark.parametrize("was_enabled", [True, False])
def test_orders_from_bids_restores_the_collector_state(was_enabled: bool) -> None:
    bid = Bid(community="c", interval=1, node="a", seq=0, side="buy", energy_wh=5,
              limit_price=90, created_ms=7)
    before = gc.isenabled()
    try:
        (gc.enable if was_enabled else gc.disable)()
        (order,) = orders_from_bids([(bid, "1" * 64)], buses={"a": "b1"})
        assert order == Order("a", "buy", 5, 90, "1" * 64, "b1", 7)
        assert gc.isenabled() is was_enabled
        with pytest.raises(AttributeError):
            orders_from_bids([("not a bid", "2" * 64)])  # type: ignore[list-item]
        assert gc.isenabled() is was_enabled  # restored on the error path too
    finally:
        (gc.enable if before else gc.disable)()
