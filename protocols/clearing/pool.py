"""The common core of the pool mechanisms (mmr, sdr, bill-sharing): one formula price for all.

A pool mechanism sets a single P2P price from aggregate demand ``D`` and supply ``S`` and the
tariffs, then serves the short side fully and shares the long side's part pro rata to energy
(largest remainder); the rest goes to the grid at the tariffs.

Limits. Classic pool schemes ignore limit prices; here a signed limit is a promise we keep, so an
order whose effective limit refuses the formula price sits out (to the grid). Removing orders
changes D and S and thus the price, so participation is found by iteration: compute the price
over the current participants, drop every order that refuses it, repeat until nobody is dropped.
Each round drops at least one order, so it ends after at most n rounds (in practice a few), and
the survivors all accept the final price: individual rationality holds by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from protocols.clearing.allocation import (
    Fills,
    build_result,
    buy_limit,
    checked_sides,
    pair,
    pro_rata,
    sell_limit,
)
from protocols.clearing.types import ClearingParams, Order, Result, Tariffs

__all__ = ["PriceRule", "clear_pool"]

PriceRule = Callable[[int, int, Tariffs], int]
"""``(demand_wh, supply_wh, tariffs) -> price``, called only with demand > 0 and supply > 0."""


def _fills(orders: list[Order], quantity: int) -> Fills:
    shares = pro_rata([o.energy_wh for o in orders], quantity)
    return {o.node: share for o, share in zip(orders, shares, strict=True) if share}


def clear_pool(
    *, mechanism: str, orders: Sequence[Order], params: ClearingParams, price_rule: PriceRule
) -> Result:
    """Clear ``orders`` at the price ``price_rule`` gives for the participants' D and S."""
    tariffs = params.tariffs
    buyers, sellers = checked_sides(orders, params)
    buy_in, sell_in = buyers, sellers
    while True:
        demand = sum(o.energy_wh for o in buy_in)
        supply = sum(o.energy_wh for o in sell_in)
        if not demand or not supply:
            return build_result(
                mechanism=mechanism,
                price=None,
                trades=[],
                buyers=buyers,
                sellers=sellers,
                tariffs=tariffs,
            )
        price = price_rule(demand, supply, tariffs)
        keep_buy = [o for o in buy_in if buy_limit(o, tariffs) >= price]
        keep_sell = [o for o in sell_in if sell_limit(o, tariffs) <= price]
        if len(keep_buy) == len(buy_in) and len(keep_sell) == len(sell_in):
            break
        buy_in, sell_in = keep_buy, keep_sell
    quantity = min(demand, supply)
    bought = _fills(buy_in, quantity)
    sold = _fills(sell_in, quantity)
    return build_result(
        mechanism=mechanism,
        price=price,
        trades=pair(buyers=buyers, sellers=sellers, bought=bought, sold=sold, price=price),
        buyers=buyers,
        sellers=sellers,
        tariffs=tariffs,
        fills=(bought, sold),
    )
