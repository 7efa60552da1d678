"""``cda``: a continuous double auction, replayed in a fixed order after gate closure.

Rule. Orders arrive in order of (``created_ms``, digest, step): the signer's timestamp, with the
digest to break ties, so every gateway replays the same sequence (a curve's steps arrive together,
best first). An arriving buyer trades with resting sellers, lowest effective ask first, while the
ask plus the path's network fee is at most its own effective limit; each trade is at the
*resting* order's price, as on an exchange. Sellers arrive symmetrically against resting buyers,
highest net bid first, where a resting buyer's net bid is its effective limit less the fee of
the path from the arriving seller: that is the price, so the buyer pays its limit, fee included,
and never more. Among resting orders at one price the cheaper path (lower fee, then shorter)
goes first, then the earlier arrival. What an arriving order cannot fill rests in the book; what
is left in the book at the end goes to the grid. Without fees every path costs 0.

Two orders meet at most once (an arriving order exhausts itself or the resting one), so a
buyer's trades with one seller differ only when their curves meet at several prices; trades are
summed per (buyer, seller, price) and :attr:`Result.price` is None. ``created_ms`` is
self-declared, so early timestamps buy priority: acceptable for a replay whose point is
determinism, and the session only admits bids signed before gate closure.
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heappop, heappush

import numpy as np

from protocols.clearing.book import BUS, CREATED, DIGEST, STEP, load, trades_of
from protocols.clearing.types import ClearingParams, Order, Result

__all__ = ["clear_cda"]


def clear_cda(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Replay ``orders`` through a continuous double auction (see the module docstring).

    Orders are numbered buyers first, then sellers, each side in (node, step) order
    (:mod:`protocols.clearing.book`). Each side's book is one heap per bus of (best limit,
    arrival number) (one heap without fees): within a bus every resting order pays the same fee
    to an arriving one, so the best is always on top of some bus's heap.
    """
    book = load(orders, params)
    buyers, sellers = book.buyers, book.sellers
    n_buy = len(buyers)
    digest = buyers.column(DIGEST) + sellers.column(DIGEST)
    created = buyers.column(CREATED) + sellers.column(CREATED)
    arrivals = list(range(n_buy + len(sellers)))
    if book.starts is not None:
        step = buyers.column(STEP) + sellers.column(STEP)
        arrivals.sort(key=step.__getitem__)
    arrivals.sort(key=digest.__getitem__)
    arrivals.sort(key=created.__getitem__)
    limit = buyers.cap.tolist() + sellers.cap.tolist()  # effective limits
    left = buyers.energy.tolist() + sellers.energy.tolist()
    if book.fees is None:
        group = [0] * len(left)
        fee, distance = [[0]], [[0]]
    else:
        names = sorted({bus for bus, _ in book.fee_of} | {bus for _, bus in book.fee_of})
        index = {name: i for i, name in enumerate(names)}
        group = [index.get(bus, 0) for bus in buyers.column(BUS) + sellers.column(BUS)]
        fee = [[book.fee_of.get((s, b), 0) for b in names] for s in names]
        distance = [[book.fees.distance_m(s, b) if (s, b) in book.fee_of else 0 for b in names]
                    for s in names]
    traded = [0] * len(left)
    money = [0] * len(left)
    bids: dict[int, list[tuple[int, int]]] = {}  # per bus: (-limit, arrival number)
    asks: dict[int, list[tuple[int, int]]] = {}  # per bus: (limit, arrival number)
    pieces: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
    add_buyer, add_seller, add_energy, add_price = (column.append for column in pieces)
    for number, order in enumerate(arrivals):
        want = left[order]
        mine = group[order]
        buying = order < n_buy
        while want:
            best: tuple[int, int, int, int] | None = None
            where = -1
            for bus, heap in (asks if buying else bids).items():
                top, resting_number = heap[0]
                cost = fee[bus][mine] if buying else fee[mine][bus]
                if buying and top + cost <= limit[order]:
                    candidate = (top, cost, distance[bus][mine], resting_number)
                elif not buying and -top - cost >= limit[order]:
                    candidate = (top + cost, cost, distance[mine][bus], resting_number)
                else:
                    continue
                if best is None or candidate < best:
                    best, where = candidate, bus
            if best is None:
                break
            price = best[0] if buying else -best[0]
            resting = arrivals[best[3]]
            avail = left[resting]
            q = want if want < avail else avail
            add_buyer(order if buying else resting)
            add_seller((resting if buying else order) - n_buy)
            add_energy(q)
            add_price(price)
            want -= q
            left[resting] = avail - q
            traded[order] += q
            money[order] += q * price
            traded[resting] += q
            money[resting] += q * price
            if avail == q:
                books = asks if buying else bids
                heappop(books[where])
                if not books[where]:
                    del books[where]
        if want:
            entry = (-limit[order], number) if buying else (limit[order], number)
            heappush((bids if buying else asks).setdefault(mine, []), entry)
        left[order] = want
    buyer_rows, seller_rows, energy, prices = (np.array(c, dtype=np.int64) for c in pieces)
    return book.result(
        mechanism="cda",
        price=None,
        trades=trades_of(book, buyers.owner[buyer_rows], sellers.owner[seller_rows], energy,
                         prices),
        bought=np.array(traded[:n_buy], dtype=np.int64),
        sold=np.array(traded[n_buy:], dtype=np.int64),
        paid=np.array(money[:n_buy], dtype=np.int64),
        received=np.array(money[n_buy:], dtype=np.int64),
    )
