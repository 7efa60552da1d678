"""The order book as columns: the fast core every mechanism clears on.

The rules are the ones :mod:`protocols.clearing.allocation` states (effective limits, largest
remainder with digest tie-breaks, the (bus, digest) north-west-corner pairing); this module only
computes them with less work per order, so a mechanism's :class:`Result` is bit-identical to the
straightforward version's and so is its :func:`result_hash`. What makes it fast in CPython:

* **Columns, in node order.** Each side is a few plain lists (node, energy, effective limit,
  digest) in node order, the order outcomes are reported in; per-order objects are built once,
  at the end, with one ``tuple.__new__`` each.
* **Price levels, not a ranking.** Matching, rationing and pool participation only depend on how
  much energy sits at each effective limit, so each side keeps its distinct levels and their
  cumulative energy. The crossing is a binary search over those (a few dozen ``bisect`` calls),
  and digest order is only ever needed among the orders at a marginal level or among those that
  trade (the pairing walk), never for the whole book.
* **Integer sort keys.** Trades are ordered by (buyer, seller) through one sort on
  ``buyer rank x trading sellers + seller rank`` (ranks in node order among the orders that
  trade), not by comparing strings twice.

Everything is still integer arithmetic with digest tie-breaks; no global state is touched.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate, compress, islice
from operator import eq, itemgetter, not_

from protocols.clearing.allocation import checked_sides
from protocols.clearing.types import (
    ClearingError,
    ClearingParams,
    NodeOutcome,
    Order,
    Result,
    Tariffs,
    Trade,
)

__all__ = ["Book", "Side", "crossing", "fill", "load", "pair", "share"]

_node = itemgetter(0)
_INT = frozenset((int,))
# ``tuple.__new__(NodeOutcome, values)`` skips the Python-level ``__new__`` a NamedTuple has.
_new = tuple.__new__


class Side:
    """One side of the book: columns in node order, and its price levels.

    ``key`` ranks orders, lowest first: ``-limit`` for buyers, ``limit`` for sellers (effective
    limits). ``levels`` are the distinct keys ascending (best first), ``cum[t]`` the energy at
    levels ``0..t``. ``orders`` are the side's orders themselves, for the fields read rarely.
    """

    __slots__ = (
        "cum",
        "digest",
        "energy",
        "key",
        "levels",
        "nodes",
        "orders",
        "sign",
    )

    def __init__(
        self,
        ordered: list[Order],
        nodes: list[str],
        energy: list[int],
        digest: list[str],
        *,
        mask: list[bool],
        limits: list[int],
        sign: int,
    ) -> None:
        self.orders = list(compress(ordered, mask))
        self.nodes = list(compress(nodes, mask))
        self.energy = mine = list(compress(energy, mask))
        self.digest = list(compress(digest, mask))
        self.sign = sign
        self.key = key = [-lim for lim in limits] if sign < 0 else limits
        self.levels = levels = sorted(set(key))
        per_level = dict.fromkeys(levels, 0)
        for k, e in zip(key, mine, strict=True):
            per_level[k] += e
        self.cum = list(accumulate(map(per_level.__getitem__, levels)))

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def total(self) -> int:
        return self.cum[-1] if self.cum else 0

    def limit(self, level: int) -> int:
        """The effective limit of level index ``level``."""
        return self.sign * self.levels[level]

    def members(self, key: int) -> list[int]:
        """Positions of the orders at ``key``, in digest order."""
        keys = self.key
        found = []
        # list.index scans in C; a level is usually a small part of the side.
        i = -1
        try:
            while True:
                i = keys.index(key, i + 1)
                found.append(i)
        except ValueError:
            pass
        if len(found) > 1:
            found.sort(key=self.digest.__getitem__)
        return found

    def energy_upto(self, key: float) -> int:
        """Energy of the orders whose key is <= ``key``."""
        t = bisect_right(self.levels, key)
        return self.cum[t - 1] if t else 0


class Book:
    """Both sides of a validated book and how they interleave in node order."""

    __slots__ = ("buyers", "is_buy", "sellers", "tariffs")

    def __init__(self, buyers: Side, sellers: Side, is_buy: list[bool], tariffs: Tariffs) -> None:
        self.buyers = buyers
        self.sellers = sellers
        self.is_buy = is_buy
        self.tariffs = tariffs

    def result(
        self,
        *,
        mechanism: str,
        price: int | None,
        trades: list[Trade],
        bought: list[int] | None = None,
        sold: list[int] | None = None,
        paid: list[int] | None = None,
        received: list[int] | None = None,
    ) -> Result:
        """Assemble the :class:`Result` from per-order fills (node order within each side).

        Money is fill x ``price``, or ``paid`` / ``received`` per order when trades carry their
        own prices (the continuous double auction). ``trades`` must be sorted by (buyer, seller).
        No fills: nothing traded, every order goes to the grid.
        """
        buyers, sellers = self.buyers, self.sellers
        retail, feed_in = self.tariffs.retail_price, self.tariffs.feed_in_price
        if bought is None or sold is None:
            bought, sold = [0] * len(buyers), [0] * len(sellers)
        rest_b = [e - f for e, f in zip(buyers.energy, bought, strict=True)]
        rest_s = [e - f for e, f in zip(sellers.energy, sold, strict=True)]
        new, cls = _new, NodeOutcome
        if paid is None or received is None:
            p = price or 0
            out_b = [
                new(cls, (n, f, 0, r, 0, f * p, 0, r * retail, 0))
                for n, f, r in zip(buyers.nodes, bought, rest_b, strict=True)
            ]
            out_s = [
                new(cls, (n, 0, f, 0, r, 0, f * p, 0, r * feed_in))
                for n, f, r in zip(sellers.nodes, sold, rest_s, strict=True)
            ]
        else:
            out_b = [
                new(cls, (n, f, 0, r, 0, m, 0, r * retail, 0))
                for n, f, r, m in zip(buyers.nodes, bought, rest_b, paid, strict=True)
            ]
            out_s = [
                new(cls, (n, 0, f, 0, r, 0, m, 0, r * feed_in))
                for n, f, r, m in zip(sellers.nodes, sold, rest_s, received, strict=True)
            ]
        # Interleave the two node-ordered runs back into node order, in C: for each order take
        # the next outcome of its side.
        side_of = {True: iter(out_b), False: iter(out_s)}
        outcomes = tuple(map(next, map(side_of.__getitem__, self.is_buy)))
        return Result(
            mechanism=mechanism,
            price=price if trades else None,
            trades=tuple(trades),
            outcomes=outcomes,
            grid_import_wh=sum(rest_b),
            grid_export_wh=sum(rest_s),
        )


def load(orders: Sequence[Order], params: ClearingParams) -> Book:
    """Validate ``orders`` exactly as :func:`checked_sides` does and split them into a book.

    The checks run on whole columns at C speed; when one fails, :func:`checked_sides` runs to
    raise the same error, with the same message, the straightforward version would.
    """
    if not isinstance(params, ClearingParams) or not all(
        issubclass(kind, Order) for kind in set(map(type, orders))
    ):
        checked_sides(orders, params)
    try:
        ordered = sorted(orders, key=_node)
    except TypeError:
        checked_sides(orders, params)
        raise
    count = len(ordered)
    # One list per field (cheaper than ``zip(*ordered)``, which also builds unused columns).
    nodes = [o[0] for o in ordered]
    sides = [o[1] for o in ordered]
    energy = [o[2] for o in ordered]
    limit = [o[3] for o in ordered]
    digest = [o[4] for o in ordered]
    if not (
        sides.count("buy") + sides.count("sell") == count
        and set(map(type, energy)) <= _INT
        and set(map(type, limit)) <= _INT
        and (not count or (min(energy) > 0 and min(limit) >= 0))
        # ``ordered`` is sorted by node, so a repeated node sits next to itself.
        and not any(map(eq, nodes, islice(nodes, 1, None)))
        and len(set(digest)) == count
    ):
        checked_sides(orders, params)
        raise ClearingError("inconsistent orders")  # pragma: no cover - checked_sides raised
    is_buy = [side == "buy" for side in sides]
    is_sell = list(map(not_, is_buy))
    tariffs = params.tariffs
    retail, feed_in = tariffs.retail_price, tariffs.feed_in_price
    bid: list[int] = list(compress(limit, is_buy))
    if bid and max(bid) > retail:
        bid = [lim if lim < retail else retail for lim in bid]
    ask: list[int] = list(compress(limit, is_sell))
    if ask and min(ask) < feed_in:
        ask = [lim if lim > feed_in else feed_in for lim in ask]
    return Book(
        Side(ordered, nodes, energy, digest, mask=is_buy, limits=bid, sign=-1),
        Side(ordered, nodes, energy, digest, mask=is_sell, limits=ask, sign=1),
        is_buy,
        tariffs,
    )


def crossing(buyers: Side, sellers: Side) -> int:
    """The efficiently matched quantity: the largest ``q`` such that the buyer holding the q-th
    Wh (highest limits first) bids at least what the seller holding it (lowest first) asks.

    Bids fall and asks rise with ``q``, so that is a binary search over the level curves; it is
    the quantity the order-by-order walk of :mod:`protocols.clearing.uniform` reaches.
    """
    bl, bc, sl, sc = buyers.levels, buyers.cum, sellers.levels, sellers.cum
    lo, hi = 0, min(buyers.total, sellers.total)
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if -bl[bisect_left(bc, mid)] >= sl[bisect_left(sc, mid)]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def share(side: Side, members: list[int], total: int) -> list[int]:
    """Split ``total`` over ``members`` pro rata to energy, largest remainder; equal remainders go
    to the smaller digest. Same shares as :func:`protocols.clearing.allocation.pro_rata` over the
    members in digest order, for any order of ``members``."""
    energy = side.energy
    weights = [energy[i] for i in members]
    whole = sum(weights)
    if not 0 <= total <= whole:
        raise ClearingError(f"cannot share {total} over weights summing to {whole}")
    if total == whole:
        return weights
    products = [w * total for w in weights]
    shares = [p // whole for p in products]
    left = total - sum(shares)
    if left:
        remainders = [p % whole for p in products]
        ascending = sorted(remainders)
        cut = ascending[-left]  # the left-th largest remainder
        above = len(ascending) - bisect_right(ascending, cut)
        shares = [s + 1 if r > cut else s for s, r in zip(shares, remainders, strict=True)]
        tied = [k for k, r in enumerate(remainders) if r == cut]
        need = left - above
        if need < len(tied):
            digest = side.digest
            tied.sort(key=lambda k: digest[members[k]])
        for k in tied[:need]:
            shares[k] += 1
    return shares


def fill(side: Side, quantity: int, *, marginal: tuple[int, list[int]] | None = None) -> list[int]:
    """Wh each order of ``side`` trades (node order) when ``quantity`` is rationed by priority:
    better levels whole, the marginal level pro rata (see ``ration_by_priority``).

    ``marginal=(t, members)`` restricts level ``t`` to ``members`` and drops every worse level:
    trade reduction rations the orders ranked before the marginal one this way.
    """
    cum = side.cum
    t = bisect_left(cum, quantity)
    if marginal is not None and t >= marginal[0]:
        t, members = marginal
    else:
        members = side.members(side.levels[t])
    level = side.levels[t]
    out = [e if k < level else 0 for k, e in zip(side.key, side.energy, strict=True)]
    shares = share(side, members, quantity - (cum[t - 1] if t else 0))
    for i, wh in zip(members, shares, strict=True):
        out[i] = wh
    return out


def _walk(side: Side, fills: list[int]) -> tuple[list[int], list[str], list[int]]:
    """The orders that trade, in the pairing walk's (bus, digest) order.

    Returns their ranks among the trading orders (node order) in walk order, and their nodes and
    fills in walk order. Working on the trading orders alone keeps the lists short and the ranks
    small.
    """
    trading = list(map(bool, fills))  # compress() is faster on bools than on ints
    digest = list(compress(side.digest, trading))
    walk = sorted(range(len(digest)), key=digest.__getitem__)
    buses = [o[5] for o in compress(side.orders, trading)]
    if buses and buses.count(buses[0]) != len(buses):
        walk.sort(key=buses.__getitem__)
    nodes = list(compress(side.nodes, trading))
    wh = list(compress(fills, trading))
    return walk, list(map(nodes.__getitem__, walk)), list(map(wh.__getitem__, walk))


def pair(book: Book, bought: list[int], sold: list[int], price: int) -> list[Trade]:
    """Trades at one ``price`` from the fills, sorted by (buyer, seller).

    The north-west-corner walk of :func:`protocols.clearing.allocation.pair`: buyers and sellers
    that trade, each in (bus, digest) order, matched greedily. Trades come out in walk order and
    are put in (buyer, seller) order by one sort on an integer key (rank of the buyer among
    trading buyers x trading sellers + rank of the seller); ranks follow node order.
    """
    walk_b, nodes_b, wh_b = _walk(book.buyers, bought)
    walk_s, nodes_s, wh_s = _walk(book.sellers, sold)
    if sum(wh_b) != sum(wh_s):
        raise ClearingError("buy and sell fills do not balance")
    stride = len(walk_s)
    keys: list[int] = []
    trades: list[Trade] = []
    add_key, add_trade = keys.append, trades.append
    new, cls = _new, Trade
    if stride:
        j = 0
        last = stride - 1
        seller, seller_node, seller_left = walk_s[0], nodes_s[0], wh_s[0]
        for need, buyer_node, buyer in zip(wh_b, nodes_b, walk_b, strict=True):
            base = buyer * stride
            while need:
                q = need if need < seller_left else seller_left
                add_key(base + seller)
                add_trade(new(cls, (buyer_node, seller_node, q, price, q * price)))
                need -= q
                seller_left -= q
                if not seller_left and j < last:
                    j += 1
                    seller, seller_node, seller_left = walk_s[j], nodes_s[j], wh_s[j]
    return list(map(trades.__getitem__, sorted(range(len(keys)), key=keys.__getitem__)))
