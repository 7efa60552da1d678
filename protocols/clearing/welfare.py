"""Welfare: the gains from trade a result realises, and the most any matching of the same bids
could, both valued at the bids.

A member's limits say what its energy is worth to it: a buyer's step is worth its limit per Wh,
a seller's step costs its limit per Wh, each clamped into [feed-in, retail] as the clearing
clamps them (past retail a buyer buys from the grid, below feed-in a seller sells to it). What a
member bought is worth its best steps first (``value``): whichever step a mechanism filled, the
home puts the energy to its most valuable use. The result's welfare is the buyers' worth less
the sellers' cost; the price only moves money between members, so it does not count.

The efficient maximum is the welfare of the best matching: the demand steps from dearest down
against the supply steps from cheapest up, while a buyer values a Wh more than a seller gives it
up for (the area between the two curves). Every result trades a matching of the same bids, so
its welfare lies between 0 (individual rationality: nobody trades past its limit) and the
maximum. Network fees are left out of both: they pay the network, whoever trades.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from protocols.clearing.types import NodeOutcome, Order, Tariffs

__all__ = ["efficient_welfare", "welfare"]


def _price(order: Order, tariffs: Tariffs) -> int:
    return min(max(order.limit_price, tariffs.feed_in_price), tariffs.retail_price)


def _steps(orders: Iterable[Order], tariffs: Tariffs, side: str) -> list[tuple[int, int]]:
    """``side``'s steps as (price, Wh), best first: dearest bids, cheapest offers."""
    steps = [(_price(o, tariffs), o.energy_wh) for o in orders if o.side == side]
    return sorted(steps, reverse=side == "buy")


def _worth(steps: Sequence[tuple[int, int]], wh: int) -> int:
    """What the first ``wh`` of ``steps`` add up to (µ); energy past the steps is worth none."""
    total = 0
    for price, energy in steps:
        take = min(energy, wh)
        total += take * price
        wh -= take
        if not wh:
            break
    return total


def welfare(orders: Sequence[Order], outcomes: Iterable[NodeOutcome], tariffs: Tariffs) -> int:
    """The buyers' worth of what they bought less the sellers' cost of what they sold (µ)."""
    by_node: defaultdict[str, list[Order]] = defaultdict(list)
    for order in orders:
        by_node[order.node].append(order)
    total = 0
    for outcome in outcomes:
        mine = by_node.get(outcome.node, [])
        total += _worth(_steps(mine, tariffs, "buy"), outcome.bought_wh)
        total -= _worth(_steps(mine, tariffs, "sell"), outcome.sold_wh)
    return total


def efficient_welfare(orders: Sequence[Order], tariffs: Tariffs) -> int:
    """The most welfare any matching of ``orders`` realises (µ): demand dearest first against
    supply cheapest first, while the bid exceeds the offer."""
    bids, offers = _steps(orders, tariffs, "buy"), _steps(orders, tariffs, "sell")
    total = i = j = 0
    left_bid = bids[0][1] if bids else 0
    left_offer = offers[0][1] if offers else 0
    while i < len(bids) and j < len(offers) and bids[i][0] > offers[j][0]:
        take = min(left_bid, left_offer)
        total += take * (bids[i][0] - offers[j][0])
        left_bid -= take
        left_offer -= take
        if not left_bid:
            i += 1
            left_bid = bids[i][1] if i < len(bids) else 0
        if not left_offer:
            j += 1
            left_offer = offers[j][1] if j < len(offers) else 0
    return total
