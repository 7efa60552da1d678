"""``trade-reduction``: McAfee's double auction, made budget-balanced.

Rule. Rank and match as in ``uniform`` (see :mod:`protocols.clearing.uniform`; a curve's steps
are orders, a buyer's limit is net of its cheapest fee); let ``b`` and ``a`` be the effective
limits of the marginal buyer and seller orders, and ``b'`` and ``a'`` those of the best orders
that did not trade at all. If both exist and ``p0 = floor((b' + a') / 2)`` lies
in ``[a, b]``, everything matched trades at ``p0`` (McAfee's first case: no reduction). Otherwise
the marginal buyer and seller orders are dropped (they go to the grid) and the orders ranked above
them trade: the short side fully, the long side's marginal level pro rata, at the single price
``a + floor(k (b - a))``.

Why not McAfee's second case verbatim (buyers pay ``b``, sellers get ``a``): it leaves the
auctioneer a surplus ``(b - a)`` per Wh, and a community without an auctioneer has nobody to
hold it, while every mechanism here must balance to the micro-unit. The price still depends only
on the dropped pair's limits, so no trading order can move its own price; what is given up is
McAfee's guarantee that the dropped marginal orders could not gain by misreporting.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate

from protocols.clearing.book import BookSide, crossing, fill, load
from protocols.clearing.types import ClearingParams, Order, Result
from protocols.clearing.uniform import k_price

__all__ = ["clear_trade_reduction"]

_NAME = "trade-reduction"


def _marginal(side: BookSide, quantity: int) -> tuple[int, list[int], int, int | None]:
    """Where the ``quantity``-th Wh sits on ``side``: its level ``t``, the orders ranked before
    the marginal order within that level (digest order), their energy plus every better level's,
    and the effective limit of the order ranked right after the marginal one (None: none)."""
    t = bisect_left(side.cum, quantity)
    before = side.cum[t - 1] if t else 0
    members = side.members(side.levels[t])
    energy = side.energy[members].tolist()
    at = bisect_left(list(accumulate(energy)), quantity - before)
    kept = members[:at]
    if at + 1 < len(members):
        following: int | None = side.limit(t)
    elif t + 1 < len(side.levels):
        following = side.limit(t + 1)
    else:
        following = None
    return t, kept, before + sum(energy[:at]), following


def clear_trade_reduction(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Clear ``orders`` with McAfee's trade reduction (see the module docstring for the rule).

    On price levels (:mod:`protocols.clearing.book`): the marginal orders are the ones holding the
    last matched Wh, found within their level in digest order, as the ranked walk finds them.
    """
    book = load(orders, params)
    buyers, sellers = book.buyers, book.sellers
    quantity = crossing(buyers, sellers)
    if not quantity:
        return book.result(mechanism=_NAME, price=None)
    t_b, kept_b, kept_b_wh, next_bid = _marginal(buyers, quantity)
    t_s, kept_s, kept_s_wh, next_ask = _marginal(sellers, quantity)
    bid, ask = buyers.limit(t_b), sellers.limit(t_s)
    if next_bid is not None and next_ask is not None:
        candidate = (next_bid + next_ask) // 2
        if ask <= candidate <= bid:
            return book.traded(_NAME, candidate, fill(buyers, quantity), fill(sellers, quantity))
    reduced = min(kept_b_wh, kept_s_wh)
    if not reduced:
        return book.result(mechanism=_NAME, price=None)
    return book.traded(
        _NAME,
        k_price(low=ask, high=bid, params=params),
        fill(buyers, reduced, marginal=(t_b, kept_b)),
        fill(sellers, reduced, marginal=(t_s, kept_s)),
    )
