"""``clear`` pauses the cyclic garbage collector while it runs, then leaves it as it was."""

from __future__ import annotations

import gc

import pytest

from protocols.clearing import ClearingError, ClearingParams, Order, Tariffs, clear

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
