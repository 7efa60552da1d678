"""``uniform``: the k-double auction, a uniform-price call market at a competitive-equilibrium
price.

Rule. Orders (a curve's steps are orders) are ranked by effective limit, buyers highest first and
sellers lowest first, ties by (digest, step); a buyer's limit is net of its cheapest network fee
when the community charges fees (:mod:`protocols.clearing.allocation`). Walking both rankings Wh
by Wh, ``Q`` Wh are matched while the buyer's limit is at least the seller's. With ``b_m``, ``a_m``
the limits holding the Q-th Wh and ``b_m+1``, ``a_m+1`` those holding the next one on each side
(absent when a side has no more), every price in the competitive-equilibrium (CE) interval

    [max(a_m, b_m+1), min(b_m, a_m+1)]

clears the market: at it every buyer bidding above wants all it gets and every seller asking
below sells all it offers, and Q Wh is what both sides want. The price is its k-point,
``low + floor(k * (high - low))`` with ``k = k_num / k_den`` (default 1/2). Price levels better
than the margin trade whole; only the marginal level (limit equal to the price, or holding the
Q-th Wh) is rationed, pro rata (largest remainder). Unfilled energy goes to the grid.

Why not the marginal pair's midpoint ``a_m + k (b_m - a_m)``, the rule before issue 16: it can
price outside the CE interval, leaving a seller rationed at a price it would sell more at, or a
buyer unserved that bids above the price. Nobody is served by that.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from protocols.clearing.allocation import rank_buyers, rank_sellers
from protocols.clearing.book import BookSide, crossing, fill, load
from protocols.clearing.types import ClearingParams, Order, Result, Tariffs

__all__ = ["Walk", "ce_price", "clear_uniform", "k_price", "walk"]


class Walk(NamedTuple):
    """The efficient matching of ranked buyers and sellers.

    ``last_buyer`` / ``last_seller`` index the marginal orders in the rankings (-1: no trade);
    ``bids`` and ``asks`` are the (net) effective limits alongside the rankings; ``next_bid`` /
    ``next_ask`` the limits holding the first unmatched Wh of each side (None: none left).
    """

    buyers: list[Order]
    bids: list[int]
    sellers: list[Order]
    asks: list[int]
    quantity: int
    last_buyer: int
    last_seller: int
    next_bid: int | None
    next_ask: int | None


def walk(buyers: list[Order], sellers: list[Order], tariffs: Tariffs,
         cheapest: Mapping[str, int] | None = None) -> Walk:
    """Rank both sides by (net) effective limit ((digest, step) breaks ties) and match Wh while
    bid >= ask: the rule written out order by order."""
    ranked_b, bids = rank_buyers(buyers, tariffs, cheapest)
    ranked_s, asks = rank_sellers(sellers, tariffs)
    i = j = 0
    last_i = last_j = -1
    quantity = 0
    left_b = ranked_b[0].energy_wh if ranked_b else 0
    left_s = ranked_s[0].energy_wh if ranked_s else 0
    while i < len(bids) and j < len(asks) and bids[i] >= asks[j]:
        q = left_b if left_b < left_s else left_s
        quantity += q
        last_i, last_j = i, j
        left_b -= q
        left_s -= q
        if not left_b:
            i += 1
            left_b = ranked_b[i].energy_wh if i < len(ranked_b) else 0
        if not left_s:
            j += 1
            left_s = ranked_s[j].energy_wh if j < len(ranked_s) else 0
    return Walk(ranked_b, bids, ranked_s, asks, quantity, last_i, last_j,
                bids[i] if i < len(bids) else None, asks[j] if j < len(asks) else None)


def k_price(*, low: int, high: int, params: ClearingParams) -> int:
    """``low + floor(k * (high - low))``: in [low, high] whenever low <= high."""
    return low + params.k_num * (high - low) // params.k_den


def ce_price(*, bid: int, ask: int, next_bid: int | None, next_ask: int | None,
             params: ClearingParams) -> int:
    """The k-point of the CE interval ``[max(ask, next_bid), min(bid, next_ask)]`` (a bound
    whose next order is absent is the marginal limit alone); never empty after a match, since
    ask <= bid, next_bid <= bid, ask <= next_ask and, both present, next_bid < next_ask."""
    low = ask if next_bid is None else max(ask, next_bid)
    high = bid if next_ask is None else min(bid, next_ask)
    return k_price(low=low, high=high, params=params)


def _limit_at(side: BookSide, wh: int) -> int | None:
    """The limit holding the ``wh``-th Wh of ``side`` in rank order (None: beyond its total)."""
    return side.limit(bisect_left(side.cum, wh)) if wh <= side.total else None


def clear_uniform(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Clear ``orders`` with the k-double auction (see the module docstring for the rule).

    Computed on price levels (:mod:`protocols.clearing.book`): the matched quantity is
    :func:`~protocols.clearing.book.crossing`, the four limits bounding the CE interval are the
    levels holding its last Wh and the next one, and the result is the one :func:`walk` plus
    ``ration_by_priority`` give.
    """
    book = load(orders, params)
    buyers, sellers = book.buyers, book.sellers
    quantity = crossing(buyers, sellers)
    if not quantity:
        return book.result(mechanism="uniform", price=None)
    price = ce_price(
        bid=buyers.limit(bisect_left(buyers.cum, quantity)),
        ask=sellers.limit(bisect_left(sellers.cum, quantity)),
        next_bid=_limit_at(buyers, quantity + 1),
        next_ask=_limit_at(sellers, quantity + 1),
        params=params,
    )
    return book.traded("uniform", price, fill(buyers, quantity), fill(sellers, quantity))
