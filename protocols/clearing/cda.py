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

from collections.abc import Sequence
from heapq import heappop, heappush

import numpy as np

from protocols.clearing.book import CREATED, DIGEST, NODE, load
from protocols.clearing.types import ClearingParams, Order, Result, Trade, Trades

__all__ = ["clear_cda"]


def clear_cda(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Replay ``orders`` through a continuous double auction (see the module docstring).

    Orders are numbered buyers first, then sellers, each side in node order
    (:mod:`protocols.clearing.book`); the books are heaps of (best limit, arrival number).
    """
    book = load(orders, params)
    buyers, sellers = book.buyers, book.sellers
    n_buy = len(buyers)
    n_sell = len(sellers)
    nodes = buyers.column(NODE) + sellers.column(NODE)
    digest = buyers.column(DIGEST) + sellers.column(DIGEST)
    created = buyers.column(CREATED) + sellers.column(CREATED)
    arrivals = sorted(range(len(nodes)), key=digest.__getitem__)
    arrivals.sort(key=created.__getitem__)
    limit = (-buyers.key).tolist() + sellers.key.tolist()  # effective limits
    left = buyers.energy.tolist() + sellers.energy.tolist()
    traded = [0] * len(nodes)
    money = [0] * len(nodes)
    bids: list[tuple[int, int]] = []  # (-limit, arrival number): best bid, then earliest, on top
    asks: list[tuple[int, int]] = []  # (limit, arrival number)
    keys: list[int] = []
    trades: list[Trade] = []
    add_key, add_trade = keys.append, trades.append
    new = tuple.__new__
    for number, order in enumerate(arrivals):
        want = left[order]
        if order < n_buy:
            bid = limit[order]
            while want and asks and asks[0][0] <= bid:
                price, resting_number = asks[0]
                resting = arrivals[resting_number]
                avail = left[resting]
                q = want if want < avail else avail
                add_key(order * n_sell + resting - n_buy)
                add_trade(new(Trade, (nodes[order], nodes[resting], q, price, q * price)))
                want -= q
                left[resting] = avail - q
                traded[resting] += q
                money[resting] += q * price
                traded[order] += q
                money[order] += q * price
                if avail == q:
                    heappop(asks)
            if want:
                heappush(bids, (-bid, number))
        else:
            ask = limit[order]
            while want and bids and -bids[0][0] >= ask:
                price, resting_number = -bids[0][0], bids[0][1]
                resting = arrivals[resting_number]
                avail = left[resting]
                q = want if want < avail else avail
                add_key(resting * n_sell + order - n_buy)
                add_trade(new(Trade, (nodes[resting], nodes[order], q, price, q * price)))
                want -= q
                left[resting] = avail - q
                traded[resting] += q
                money[resting] += q * price
                traded[order] += q
                money[order] += q * price
                if avail == q:
                    heappop(bids)
            if want:
                heappush(asks, (ask, number))
        left[order] = want
    return book.result(
        mechanism="cda",
        price=None,
        trades=Trades.from_rows(
            map(trades.__getitem__, sorted(range(len(keys)), key=keys.__getitem__))
        ),
        bought=np.array(traded[:n_buy], dtype=np.int64),
        sold=np.array(traded[n_buy:], dtype=np.int64),
        paid=np.array(money[:n_buy], dtype=np.int64),
        received=np.array(money[n_buy:], dtype=np.int64),
    )
