"""The common core of the pool mechanisms (mmr, sdr, bill-sharing): one formula price for all.

A pool mechanism sets a single P2P price from aggregate demand ``D`` and supply ``S`` and the
tariffs, then serves the short side fully and shares the long side's part pro rata to energy
(largest remainder); the rest goes to the grid at the tariffs.

Limits. Classic pool schemes ignore limit prices; here a signed limit is a promise we keep, so an
order (a step of a curve) whose effective limit refuses the formula price sits out (to the
grid); a buyer's limit is net of its cheapest network fee, and pairing keeps every trade's price
+ fee within the buyer's limit (:mod:`protocols.clearing.allocation`). Removing orders
changes D and S and thus the price, so participation is found by iteration: compute the price
over the current participants, drop every order that refuses it, repeat until nobody is dropped.
Each round drops at least one order, so it ends after at most n rounds (in practice a few), and
the survivors all accept the final price: individual rationality holds by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from protocols.clearing.book import BookSide, Fills, load, share
from protocols.clearing.types import ClearingParams, Order, Result, Tariffs

__all__ = ["PriceRule", "clear_pool"]

PriceRule = Callable[[int, int, Tariffs], int]
"""``(demand_wh, supply_wh, tariffs) -> price``, called only with demand > 0 and supply > 0."""


def _fills(side: BookSide, cutoff: float, quantity: int) -> Fills:
    """Each order's share of ``quantity`` (node order): participants are the orders whose key is
    <= ``cutoff``, shared pro rata to energy (largest remainder, digest tie-break)."""
    members = np.flatnonzero(side.key <= cutoff)
    out = np.zeros(len(side), np.int64)
    out[members] = share(side, members, quantity)
    return out


def clear_pool(
    *, mechanism: str, orders: Sequence[Order], params: ClearingParams, price_rule: PriceRule
) -> Result:
    """Clear ``orders`` at the price ``price_rule`` gives for the participants' D and S.

    Participation is a threshold on effective limits (buyers at or above every price tried so
    far, sellers at or below), so each round's D and S are read off the price levels
    (:mod:`protocols.clearing.book`) instead of filtering the orders.
    """
    book = load(orders, params)
    tariffs = book.tariffs
    buyers, sellers = book.buyers, book.sellers
    # Keys are -limit for buyers and limit for sellers: a participant's key is <= the cutoff.
    buy_cut: float = math.inf
    sell_cut: float = math.inf
    demand, supply = buyers.total, sellers.total
    while True:
        if not demand or not supply:
            return book.result(mechanism=mechanism, price=None)
        price = price_rule(demand, supply, tariffs)
        next_buy, next_sell = min(buy_cut, -price), min(sell_cut, price)
        next_demand, next_supply = buyers.energy_upto(next_buy), sellers.energy_upto(next_sell)
        if next_demand == demand and next_supply == supply:
            break
        buy_cut, sell_cut, demand, supply = next_buy, next_sell, next_demand, next_supply
    quantity = min(demand, supply)
    return book.traded(mechanism, price, _fills(buyers, buy_cut, quantity),
                       _fills(sellers, sell_cut, quantity))
