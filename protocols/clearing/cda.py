"""``cda``: a continuous double auction, replayed in a fixed order after gate closure.

Rule. Orders arrive in order of (``created_ms``, digest): the signer's timestamp, with the digest
to break ties, so every gateway replays the same sequence. An arriving buyer trades with resting
sellers, lowest effective ask first (earlier arrival first among equal asks), while the ask is at
most its own effective limit; each trade is at the *resting* order's limit, as on an exchange.
Sellers arrive symmetrically against resting buyers, highest bid first. What an arriving order
cannot fill rests in the book; what is left in the book at the end goes to the grid.

Each pair meets at most once (an arriving order exhausts itself or the resting one), so the trades
form a buyer-by-seller matrix with one price per cell; :attr:`Result.price` is None.
``created_ms`` is self-declared, so early timestamps buy priority: acceptable for a replay whose
point is determinism, and the session only admits bids signed before gate closure.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from operator import attrgetter

from protocols.clearing.allocation import build_result, buy_limit, checked_sides, sell_limit
from protocols.clearing.types import ClearingParams, Order, Result, Trade

__all__ = ["clear_cda"]

_digest = attrgetter("digest")
_created = attrgetter("created_ms")


def clear_cda(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Replay ``orders`` through a continuous double auction (see the module docstring)."""
    tariffs = params.tariffs
    buyers, sellers = checked_sides(orders, params)
    arrivals = sorted(sorted(buyers + sellers, key=_digest), key=_created)
    left = [o.energy_wh for o in arrivals]
    bids: list[tuple[int, int]] = []  # (-limit, arrival index): best bid, then earliest, on top
    asks: list[tuple[int, int]] = []  # (limit, arrival index)
    trades: list[Trade] = []
    for index, order in enumerate(arrivals):
        if order.side == "buy":
            limit = buy_limit(order, tariffs)
            while left[index] and asks and asks[0][0] <= limit:
                price, resting = asks[0]
                q = min(left[index], left[resting])
                trades.append(Trade(order.node, arrivals[resting].node, q, price, q * price))
                left[index] -= q
                left[resting] -= q
                if not left[resting]:
                    heapq.heappop(asks)
            if left[index]:
                heapq.heappush(bids, (-limit, index))
        else:
            limit = sell_limit(order, tariffs)
            while left[index] and bids and -bids[0][0] >= limit:
                price, resting = -bids[0][0], bids[0][1]
                q = min(left[index], left[resting])
                trades.append(Trade(arrivals[resting].node, order.node, q, price, q * price))
                left[index] -= q
                left[resting] -= q
                if not left[resting]:
                    heapq.heappop(bids)
            if left[index]:
                heapq.heappush(asks, (limit, index))
    return build_result(
        mechanism="cda", price=None, trades=trades, buyers=buyers, sellers=sellers, tariffs=tariffs
    )
