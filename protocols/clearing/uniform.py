"""``uniform``: the k-double auction, a uniform-price call market.

Rule. Buyers are ranked by effective limit, highest first, sellers lowest first (ties by digest).
Walking both rankings, watt-hours are matched while the current buyer's limit is at least the
current seller's. The last buyer and seller touched are the marginal bid ``b`` and ask ``a``; the
price is ``a + floor(k * (b - a))`` with ``k = k_num / k_den`` (default 1/2), so it lies in [a, b]
and every matched buyer's limit is >= the price and every matched seller's <= it. The matched
quantity is then rationed on each side: price levels better than the margin are filled whole, the
marginal level pro rata (largest remainder). Unfilled energy goes to the grid at the tariffs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import NamedTuple

from protocols.clearing.allocation import rank_buyers, rank_sellers
from protocols.clearing.book import crossing, fill, load, pair
from protocols.clearing.types import ClearingParams, Order, Result, Tariffs

__all__ = ["Walk", "clear_uniform", "k_price", "walk"]


class Walk(NamedTuple):
    """The efficient matching of ranked buyers and sellers.

    ``last_buyer`` / ``last_seller`` index the marginal orders in the rankings (-1: no trade);
    ``bids`` and ``asks`` are the effective limits alongside the rankings.
    """

    buyers: list[Order]
    bids: list[int]
    sellers: list[Order]
    asks: list[int]
    quantity: int
    last_buyer: int
    last_seller: int


def walk(buyers: list[Order], sellers: list[Order], tariffs: Tariffs) -> Walk:
    """Rank both sides by effective limit (digest breaks ties) and match while bid >= ask."""
    ranked_b, bids = rank_buyers(buyers, tariffs)
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
    return Walk(ranked_b, bids, ranked_s, asks, quantity, last_i, last_j)


def k_price(*, bid: int, ask: int, params: ClearingParams) -> int:
    """``ask + floor(k * (bid - ask))``: in [ask, bid] whenever ask <= bid."""
    return ask + params.k_num * (bid - ask) // params.k_den


def clear_uniform(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Clear ``orders`` with the k-double auction (see the module docstring for the rule).

    Computed on price levels (:mod:`protocols.clearing.book`): the matched quantity is
    :func:`~protocols.clearing.book.crossing`, the marginal bid and ask are the levels holding its
    last Wh, and the result is the one :func:`walk` plus ``ration_by_priority`` give.
    """
    book = load(orders, params)
    buyers, sellers = book.buyers, book.sellers
    quantity = crossing(buyers, sellers)
    if not quantity:
        return book.result(mechanism="uniform", price=None)
    price = k_price(
        bid=buyers.limit(bisect_left(buyers.cum, quantity)),
        ask=sellers.limit(bisect_left(sellers.cum, quantity)),
        params=params,
    )
    bought = fill(buyers, quantity)
    sold = fill(sellers, quantity)
    return book.result(
        mechanism="uniform",
        price=price,
        trades=pair(book, bought, sold, price),
        bought=bought,
        sold=sold,
    )
