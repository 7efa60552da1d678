"""``trade-reduction``: McAfee's double auction, made budget-balanced.

Rule. Rank and match as in ``uniform`` (see :mod:`protocols.clearing.uniform`); let ``b`` and
``a`` be the effective limits of the marginal buyer and seller orders, and ``b'`` and ``a'`` those
of the best orders that did not trade at all. If both exist and ``p0 = floor((b' + a') / 2)`` lies
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

from collections.abc import Sequence

from protocols.clearing.allocation import build_result, checked_sides, pair, ration_by_priority
from protocols.clearing.types import ClearingParams, Order, Result
from protocols.clearing.uniform import k_price, walk

__all__ = ["clear_trade_reduction"]

_NAME = "trade-reduction"


def clear_trade_reduction(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Clear ``orders`` with McAfee's trade reduction (see the module docstring for the rule)."""
    tariffs = params.tariffs
    buyers, sellers = checked_sides(orders, params)
    matched = walk(buyers, sellers, tariffs)
    i, j = matched.last_buyer, matched.last_seller
    if not matched.quantity:
        return build_result(
            mechanism=_NAME, price=None, trades=[], buyers=buyers, sellers=sellers, tariffs=tariffs
        )
    bid, ask = matched.bids[i], matched.asks[j]
    if i + 1 < len(matched.bids) and j + 1 < len(matched.asks):
        candidate = (matched.bids[i + 1] + matched.asks[j + 1]) // 2
        if ask <= candidate <= bid:
            bought = ration_by_priority(matched.buyers, matched.bids, matched.quantity)
            sold = ration_by_priority(matched.sellers, matched.asks, matched.quantity)
            return _result(candidate, bought, sold, buyers, sellers, params)
    kept_buyers, kept_bids = matched.buyers[:i], matched.bids[:i]
    kept_sellers, kept_asks = matched.sellers[:j], matched.asks[:j]
    quantity = min(sum(o.energy_wh for o in kept_buyers), sum(o.energy_wh for o in kept_sellers))
    if not quantity:
        return build_result(
            mechanism=_NAME, price=None, trades=[], buyers=buyers, sellers=sellers, tariffs=tariffs
        )
    bought = ration_by_priority(kept_buyers, kept_bids, quantity)
    sold = ration_by_priority(kept_sellers, kept_asks, quantity)
    return _result(k_price(bid=bid, ask=ask, params=params), bought, sold, buyers, sellers, params)


def _result(
    price: int,
    bought: dict[str, int],
    sold: dict[str, int],
    buyers: list[Order],
    sellers: list[Order],
    params: ClearingParams,
) -> Result:
    return build_result(
        mechanism=_NAME,
        price=price,
        trades=pair(buyers=buyers, sellers=sellers, bought=bought, sold=sold, price=price),
        buyers=buyers,
        sellers=sellers,
        tariffs=params.tariffs,
        fills=(bought, sold),
    )
