"""The order book as columns: the fast core every mechanism clears on.

The rules are the ones :mod:`protocols.clearing.allocation` states (effective and net limits,
largest remainder with (digest, step) tie-breaks, the pairing walks, one outcome per node); this
module only computes them with less work per order, so a mechanism's :class:`Result` is
bit-identical to the straightforward version's and so is its :func:`result_hash`. What makes it
fast in CPython:

* **Columns, in node order.** Each side's quantities are numpy ``int64`` arrays in (node, step)
  order, the order outcomes are reported in. Orders are read once (one ``zip``); names, digests
  and buses are looked up only for the orders that need them (:meth:`BookSide.column`), and no
  per-order or per-trade object is built: a :class:`Result` holds columns too. A curve's steps
  are rows of one node, summed into its outcome at the end (one ``reduceat``).
* **Price levels, not a ranking.** Matching, rationing and pool participation only depend on how
  much energy sits at each effective limit, so each side keeps its distinct levels and their
  cumulative energy. The crossing is a binary search over those (a few dozen ``bisect`` calls),
  and digest order is only ever needed among the orders at a marginal level or among those that
  trade (the pairing walk), never for the whole book.
* **The pairing walk as array arithmetic.** The north-west-corner walk cuts the line of traded
  Wh wherever a buyer's or a seller's fill ends: its trades are the pieces between the union of
  both sides' cumulative fills, found with one sort and ``searchsorted``. With network fees the
  pairing is a loop over bus pairs (:func:`pair_by_fee`), only over the orders that trade.

Exactness. Everything is integer arithmetic: ``int64`` cannot overflow because :func:`load`
refuses quantities beyond the protocol's bounds (``MAX_ENERGY_WH``, ``MAX_PRICE``, ``MAX_ORDERS``),
which keep every product and sum below 2**62. String orders (nodes, digests, buses) are sorted by
Python, never by numpy, whose fixed-width strings would drop trailing NULs.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Sequence
from itertools import islice
from operator import eq, ne
from typing import Any

import numpy as np
import numpy.typing as npt

from protocols.clearing.allocation import checked_sides, path_fee
from protocols.clearing.types import (
    ClearingError,
    ClearingParams,
    Order,
    Outcomes,
    PathFees,
    Result,
    Tariffs,
    Trade,
    Trades,
)
from protocols.messages import MAX_ENERGY_WH, MAX_PRICE, MAX_STEPS

__all__ = [
    "BUS",
    "CREATED",
    "DIGEST",
    "MAX_ORDERS",
    "NODE",
    "STEP",
    "Book",
    "BookSide",
    "Fills",
    "crossing",
    "fill",
    "load",
    "pair",
    "pair_by_fee",
    "share",
    "trades_of",
]

MAX_ORDERS = 1_000_000
"""The largest book :func:`load` takes (orders, a curve's steps counted one by one): with
``MAX_ENERGY_WH`` per order, every sum of energies and every energy x energy product of the
pro-rata stays below 2**62."""

Ints = npt.NDArray[np.int64]
Fills = Ints
"""Wh each order of a side trades, in the side's (node, step) order."""

_INT = frozenset((int,))
NODE, DIGEST, BUS, CREATED, STEP = 0, 4, 5, 6, 7
"""Positions of :class:`Order` fields, for :meth:`BookSide.column`."""
_NO_TRADES = Trades(((),) * len(Trade._fields))


class BookSide:
    """One side of the book, in (node, step) order: quantities as arrays, and its price levels.

    ``key`` ranks orders, lowest first: ``-limit`` for buyers, ``limit`` for sellers, where a
    buyer's limit is its net one (effective, less its cheapest fee) and ``cap`` its effective
    one (what price + fee may reach). ``levels`` are the distinct keys ascending (best first),
    ``cum[t]`` the energy at levels ``0..t``. ``at`` are the side's positions in the whole
    (node-ordered) book, ``owner`` the index of each order's node in :attr:`Book.nodes`, ``src``
    its position in the orders as given: names, digests and buses are read from there
    (:meth:`column`) only for the orders that need them, because touching every order's strings
    in node order (far from the order they sit in memory) cost more than the whole clearing.
    """

    __slots__ = ("at", "cap", "cum", "energy", "key", "levels", "owner", "raw", "sign", "src")

    def __init__(self, raw: tuple[tuple[object, ...], ...], src: Ints, at: Ints, owner: Ints,
                 energy: Ints, key: Ints, cap: Ints, *, sign: int) -> None:
        self.raw = raw
        self.src = src
        self.at = at
        self.owner = owner
        self.energy = energy
        self.key = key
        self.cap = cap
        self.sign = sign
        ranked = np.argsort(key, kind="stable")
        sorted_keys = key[ranked]
        last = _last_of_runs(sorted_keys)
        self.levels: list[int] = sorted_keys[last].tolist()
        self.cum: list[int] = np.cumsum(energy[ranked])[last].tolist()

    def __len__(self) -> int:
        return len(self.src)

    def column(self, field: int, positions: Sequence[int] | Ints | None = None) -> list[Any]:
        """Field ``field`` of :class:`Order` for the side's orders at ``positions`` (all: None).
        """
        picked = self.src if positions is None else self.src[np.asarray(positions, np.int64)]
        return list(map(self.raw[field].__getitem__, picked.tolist()))

    @property
    def total(self) -> int:
        return self.cum[-1] if self.cum else 0

    def limit(self, level: int) -> int:
        """The (net) effective limit of level index ``level``."""
        return self.sign * self.levels[level]

    def members(self, key: int) -> list[int]:
        """Positions of the orders at ``key``, in (digest, step) order."""
        found: list[int] = np.flatnonzero(self.key == key).tolist()
        if len(found) > 1:
            digest = dict(zip(found, self.column(DIGEST, found), strict=True))
            found.sort(key=digest.__getitem__)  # stable: a node's steps stay in step order
        return found

    def energy_upto(self, key: float) -> int:
        """Energy of the orders whose key is <= ``key``."""
        t = bisect_right(self.levels, key)
        return self.cum[t - 1] if t else 0


class Book:
    """Both sides of a validated book and how they interleave in (node, step) order.

    ``nodes`` are the distinct nodes, sorted; ``starts`` the first row of each in the book when
    a node has several (a curve), else None. ``fees`` and ``fee_of`` (per (seller bus, buyer
    bus) in the book) are set when the community charges network fees.
    """

    __slots__ = ("buses", "buyers", "fee_of", "fees", "nodes", "sellers", "starts", "tariffs")

    def __init__(self, buyers: BookSide, sellers: BookSide, nodes: tuple[str, ...],
                 starts: Ints | None, tariffs: Tariffs, *, buses: bool,
                 fees: PathFees | None = None,
                 fee_of: dict[tuple[str, str], int] | None = None) -> None:
        self.buyers = buyers
        self.sellers = sellers
        self.nodes = nodes
        self.starts = starts
        self.tariffs = tariffs
        self.buses = buses  # orders sit on more than one bus: the pairing walks bus by bus
        self.fees = fees
        self.fee_of = fee_of or {}

    def traded(self, mechanism: str, price: int, bought: Fills, sold: Fills) -> Result:
        """The result of ``bought`` and ``sold`` at one ``price``, paired into trades: by the
        walk, or with fees by :func:`pair_by_fee`, which keeps only what it can pair."""
        if self.fees is None:
            trades = pair(self, bought, sold, price)
        else:
            trades, bought, sold = pair_by_fee(self, bought, sold, price)
        return self.result(mechanism=mechanism, price=price, trades=trades, bought=bought,
                           sold=sold)

    def result(
        self,
        *,
        mechanism: str,
        price: int | None,
        trades: Trades = _NO_TRADES,
        bought: Fills | None = None,
        sold: Fills | None = None,
        paid: Fills | None = None,
        received: Fills | None = None,
    ) -> Result:
        """Assemble the :class:`Result` from per-order fills ((node, step) order within each
        side), one outcome per node.

        Money is fill x ``price``, or ``paid`` / ``received`` per order when trades carry their
        own prices (the continuous double auction). No fills: nothing traded, every order goes to
        the grid.
        """
        buyers, sellers = self.buyers, self.sellers
        retail, feed_in = self.tariffs.retail_price, self.tariffs.feed_in_price
        count = len(buyers) + len(sellers)
        if bought is None or sold is None:
            bought, sold = np.zeros(len(buyers), np.int64), np.zeros(len(sellers), np.int64)
        if paid is None or received is None:
            paid, received = bought * (price or 0), sold * (price or 0)
        rest_b, rest_s = buyers.energy - bought, sellers.energy - sold
        columns = []
        for b, s in ((bought, 0), (0, sold), (rest_b, 0), (0, rest_s), (paid, 0),
                     (0, received), (rest_b * retail, 0), (0, rest_s * feed_in)):
            column = np.zeros(count, np.int64)
            column[buyers.at] = b
            column[sellers.at] = s
            if self.starts is not None:
                column = np.add.reduceat(column, self.starts)
            columns.append(column.tolist())
        return Result(
            mechanism=mechanism,
            price=price if trades else None,
            trades=trades,
            outcomes=Outcomes((self.nodes, *columns)),
            grid_import_wh=int(rest_b.sum()),
            grid_export_wh=int(rest_s.sum()),
        )


def _last_of_runs(ascending: Ints) -> Ints:
    """Positions of the last element of each run of equal values in an ascending array."""
    if not len(ascending):
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.append(ascending[1:] != ascending[:-1], True))


def _curves_hold(rows: list[int], raw: tuple[tuple[Any, ...], ...], same: Any) -> bool:
    """Within each node (rows in (node, step) order, ``same[i]``: row i+1 is row i's node),
    steps run 0, 1, ... below ``MAX_STEPS``, share side, digest, bus and time, and prices
    move strictly the curve's way (:func:`checked_sides` says which rule failed)."""
    step = np.array([raw[STEP][i] for i in rows], dtype=np.int64)
    limit = np.array([raw[3][i] for i in rows], dtype=np.int64)
    first = np.append(True, ~same)
    if np.any(step[first] != 0) or np.any(step[1:][same] != step[:-1][same] + 1):
        return False
    if len(step) and step.max() >= MAX_STEPS:
        return False
    for field in (1, DIGEST, BUS, CREATED):
        column = [raw[field][i] for i in rows]
        if np.any(np.array(list(map(ne, column, islice(column, 1, None))), dtype=bool)[same]):
            return False
    sell = np.array([raw[1][i] == "sell" for i in rows[:-1]], dtype=bool)
    rises = np.diff(limit) > 0
    falls = np.diff(limit) < 0
    return not np.any(same & ~np.where(sell, rises, falls))


def load(orders: Sequence[Order], params: ClearingParams) -> Book:
    """Validate ``orders`` exactly as :func:`checked_sides` does and split them into a book.

    The checks run on whole columns at C speed; when one fails, :func:`checked_sides` runs to
    raise the same error, with the same message, the straightforward version would. Beyond its
    checks, quantities must lie within the protocol's bounds (see the module docstring).
    """
    if not isinstance(params, ClearingParams) or not all(
        issubclass(kind, Order) for kind in set(map(type, orders))
    ):
        checked_sides(orders, params)
    count = len(orders)
    if count > MAX_ORDERS:
        raise ClearingError(f"{count} orders: at most {MAX_ORDERS} are cleared at once")
    # Read the orders once, in the order they sit in memory (see BookSide).
    raw = tuple(zip(*orders, strict=True)) or ((),) * len(Order._fields)
    nodes, sides, energy, limit, digest = raw[:5]
    steps = raw[STEP]
    if not set(map(type, steps)) <= _INT:
        checked_sides(orders, params)
    curves = any(steps)
    try:
        if curves:  # (node, step) order: by step, then stably by node
            by_node = sorted(sorted(range(count), key=steps.__getitem__), key=nodes.__getitem__)
        else:
            by_node = sorted(range(count), key=nodes.__getitem__)
    except TypeError:
        checked_sides(orders, params)
        raise
    node_order = tuple(map(nodes.__getitem__, by_node))
    # sorted, so a node's rows sit together: same[i] says row i + 1 is row i's node
    pairs = map(eq, node_order, islice(node_order, 1, None))
    same = np.zeros(0, dtype=bool)
    if curves:
        same = np.fromiter(pairs, dtype=bool, count=max(count - 1, 0))
    if not (
        sides.count("buy") + sides.count("sell") == count
        and set(map(type, energy)) <= _INT
        and set(map(type, limit)) <= _INT
        and (_curves_hold(by_node, raw, same) if curves else not any(pairs))
        and len(set(digest)) == count - int(same.sum())
    ):
        checked_sides(orders, params)
        raise ClearingError("inconsistent orders")  # pragma: no cover - checked_sides raised
    try:
        wh, lim = np.array(energy, dtype=np.int64), np.array(limit, dtype=np.int64)
    except OverflowError:  # beyond int64: invalid (checked_sides says why) or out of bounds
        checked_sides(orders, params)
        wh = lim = np.array([MAX_PRICE + MAX_ENERGY_WH + 1], dtype=np.int64)
    if count and (wh.min() <= 0 or lim.min() < 0):
        checked_sides(orders, params)
    tariffs = params.tariffs
    retail, feed_in = tariffs.retail_price, tariffs.feed_in_price
    if count and (wh.max() > MAX_ENERGY_WH or lim.max() > MAX_PRICE):
        raise ClearingError(
            f"order quantities beyond the protocol's bounds: energy_wh <= {MAX_ENERGY_WH}, "
            f"limit_price <= {MAX_PRICE}"
        )
    if retail > MAX_PRICE:
        raise ClearingError(f"retail price {retail} beyond the protocol's bound {MAX_PRICE}")
    order = np.array(by_node, dtype=np.int64)
    wh, lim = wh[order], lim[order]
    is_buy = np.array(list(map("buy".__eq__, sides)), dtype=bool)[order]
    at_b, at_s = np.flatnonzero(is_buy), np.flatnonzero(~is_buy)
    starts: Ints | None = None
    owner, distinct = np.arange(count, dtype=np.int64), node_order
    if curves:
        firsts = np.append(True, ~same)
        starts, owner = np.flatnonzero(firsts), np.cumsum(firsts) - 1
        distinct = tuple(map(node_order.__getitem__, starts.tolist()))
    cap_b, cap_s = np.minimum(lim[at_b], retail), np.maximum(lim[at_s], feed_in)
    fees = params.fees
    fee_of: dict[tuple[str, str], int] = {}
    net_b = cap_b
    if fees is not None:
        bus_b = [raw[BUS][i] for i in order[at_b].tolist()]
        seller_buses = sorted({raw[BUS][i] for i in order[at_s].tolist()})
        cheapest: dict[str, int] = {}
        for buyer_bus in sorted(set(bus_b)):
            for seller_bus in seller_buses:
                fee_of[seller_bus, buyer_bus] = path_fee(fees, seller_bus, buyer_bus)
            cheapest[buyer_bus] = min((fee_of[s, buyer_bus] for s in seller_buses), default=0)
        net_b = cap_b - np.array(list(map(cheapest.__getitem__, bus_b)), dtype=np.int64)
    return Book(
        BookSide(raw, order[at_b], at_b, owner[at_b], wh[at_b], -net_b, cap_b, sign=-1),
        BookSide(raw, order[at_s], at_s, owner[at_s], wh[at_s], cap_s, cap_s, sign=1),
        distinct,
        starts,
        tariffs,
        # one shared object when nobody has a bus: a set at C speed
        buses=len(set(raw[BUS])) > 1,
        fees=fees,
        fee_of=fee_of,
    )


def crossing(buyers: BookSide, sellers: BookSide) -> int:
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


def share(side: BookSide, members: Sequence[int] | Ints, total: int) -> Ints:
    """Split ``total`` over ``members`` pro rata to energy, largest remainder; equal remainders go
    to the smaller (digest, step). Same shares as :func:`protocols.clearing.allocation.pro_rata`
    over the members in (digest, step) order, for ``members`` in (digest, step) or (node, step)
    order (a stable sort by digest keeps a node's steps in order)."""
    weights = side.energy[np.asarray(members, dtype=np.int64)]
    whole = int(weights.sum())
    if not 0 <= total <= whole:
        raise ClearingError(f"cannot share {total} over weights summing to {whole}")
    if total == whole:
        return weights
    products = weights * total
    shares = products // whole
    left = total - int(shares.sum())
    if left:
        remainders = products % whole
        cut = np.partition(remainders, len(remainders) - left)[len(remainders) - left]
        above = remainders > cut
        shares += above
        tied: list[int] = np.flatnonzero(remainders == cut).tolist()
        need = left - int(above.sum())
        if need < len(tied):
            digest = dict(zip(tied, side.column(DIGEST, [members[k] for k in tied]),
                              strict=True))
            tied.sort(key=digest.__getitem__)
        shares[tied[:need]] += 1
    return shares


def fill(side: BookSide, quantity: int, *, marginal: tuple[int, list[int]] | None = None) -> Fills:
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
    out = np.where(side.key < side.levels[t], side.energy, 0)
    out[members] = share(side, members, quantity - (cum[t - 1] if t else 0))
    return out


_HEX_DIGEST = 64
_UPPER_HEX = "ABCDEF"


def digest_order(digests: list[str]) -> list[int]:
    """Positions of ``digests`` in ascending string order, as (stable) ``sorted`` gives them.

    Bid digests are 64 lowercase hex digits, whose string order is the order of the numbers they
    spell: their leading 64 bits are sorted as integers by numpy, at a third of the time Python
    takes to compare the strings. Equal leading bits are fine when the digests are equal (a
    curve's steps, kept in place by the stable sort). Anything else (another length, a capital,
    a non-hex character, two different digests sharing 64 leading bits) is sorted as strings.
    """
    joined = "".join(digests)
    if len(joined) == _HEX_DIGEST * len(digests) and not any(c in joined for c in _UPPER_HEX):
        try:
            raw = bytes.fromhex(joined)
        except ValueError:
            raw = b""
        if len(raw) * 2 == len(joined):  # fromhex skips whitespace: all 64 were hex digits
            lead = np.frombuffer(raw, dtype=">u8")[:: _HEX_DIGEST // 16].astype(np.uint64)
            order = np.argsort(lead, kind="stable")
            ranked = lead[order]
            ties = np.flatnonzero(ranked[1:] == ranked[:-1]).tolist()
            ranks: list[int] = order.tolist()
            if all(digests[ranks[i]] == digests[ranks[i + 1]] for i in ties):
                return ranks
    return sorted(range(len(digests)), key=digests.__getitem__)


def _walk(side: BookSide, fills: Fills, *, buses: bool) -> tuple[Ints, Ints]:
    """The orders that trade, in the pairing walk's (bus, digest, step) order ((digest, step)
    alone without ``buses``).

    Returns, in walk order, each one's rank among the trading orders (node order) and its fill.
    """
    trading = np.flatnonzero(fills)
    digest = side.column(DIGEST, trading)
    walk = digest_order(digest)
    if buses:
        bus = side.column(BUS, trading)
        walk.sort(key=bus.__getitem__)
    ranks = np.array(walk, dtype=np.int64)
    return ranks, fills[trading[ranks]]


def trades_of(book: Book, buyer: Ints, seller: Ints, energy: Ints, price: Ints | int) -> Trades:
    """Trades from pieces (buyer node index, seller node index, Wh, price): summed per
    (buyer, seller, price) when a node has several orders, sorted by (buyer, seller, price)."""
    if not len(energy):
        return _NO_TRADES
    pair_key = buyer * len(book.nodes) + seller
    if isinstance(price, int):
        order = np.argsort(pair_key, kind="stable")
        prices = np.full(len(energy), price, dtype=np.int64)
    else:
        order = np.lexsort((price, pair_key))
        prices = price[order]
    pair_key, energy, buyer, seller = pair_key[order], energy[order], buyer[order], seller[order]
    if book.starts is not None or not isinstance(price, int):  # pieces may share a key
        first = np.flatnonzero(np.append(True, (pair_key[1:] != pair_key[:-1])
                                         | (prices[1:] != prices[:-1])))
        energy = np.add.reduceat(energy, first)
        buyer, seller, prices = buyer[first], seller[first], prices[first]
    names = book.nodes.__getitem__
    return Trades((
        list(map(names, buyer.tolist())),
        list(map(names, seller.tolist())),
        energy.tolist(),
        prices.tolist() if not isinstance(price, int) else [price] * len(energy),
        (energy * prices).tolist(),
    ))


def pair(book: Book, bought: Fills, sold: Fills, price: int) -> Trades:
    """Trades at one ``price`` from the fills, sorted by (buyer, seller).

    The north-west-corner walk of :func:`protocols.clearing.allocation.pair`: orders that trade,
    each side in (bus, digest, step) order, matched greedily. Each piece of the line of traded
    Wh between two consecutive ends of a buyer's or a seller's fill is one trade (a node's steps
    sit together in the walk, so its pieces with one counterpart are summed into one).
    """
    rank_b, wh_b = _walk(book.buyers, bought, buses=book.buses)
    rank_s, wh_s = _walk(book.sellers, sold, buses=book.buses)
    ends_b, ends_s = np.cumsum(wh_b), np.cumsum(wh_s)
    if (ends_b[-1] if len(ends_b) else 0) != (ends_s[-1] if len(ends_s) else 0):
        raise ClearingError("buy and sell fills do not balance")
    if not len(ends_b):
        return _NO_TRADES
    cuts = np.sort(np.concatenate((ends_b, ends_s)))
    cuts = cuts[_last_of_runs(cuts)]
    energy = np.diff(cuts, prepend=0)
    buyer = book.buyers.owner[np.flatnonzero(bought)[rank_b[np.searchsorted(ends_b, cuts)]]]
    seller = book.sellers.owner[np.flatnonzero(sold)[rank_s[np.searchsorted(ends_s, cuts)]]]
    return trades_of(book, buyer, seller, energy, price)


def pair_by_fee(book: Book, bought: Fills, sold: Fills, price: int
                ) -> tuple[Trades, Fills, Fills]:
    """Pair fills at one ``price`` cheapest paths first, each buyer only where price + fee fits
    its effective limit: the rule of :func:`protocols.clearing.allocation.pair_by_fee`.

    Buyers on a bus are sorted by headroom; the fees of one buyer bus's pairs only grow, so the
    buyers a pair may serve are a suffix that only shrinks, and each side is consumed in order
    with one pointer per bus. Returns the trades and the fills they carry.
    """
    if int(bought.sum()) != int(sold.sum()):
        raise ClearingError("buy and sell fills do not balance")
    buyers, sellers, fees = book.buyers, book.sellers, book.fees
    assert fees is not None
    tb, ts = np.flatnonzero(bought), np.flatnonzero(sold)
    room = (buyers.cap[tb] - price).tolist()
    left_b, left_s = bought[tb].tolist(), sold[ts].tolist()
    rank_b = list(zip(room, buyers.column(DIGEST, tb), buyers.column(STEP, tb), strict=True))
    rank_s = list(zip(sellers.column(DIGEST, ts), sellers.column(STEP, ts), strict=True))
    takers: defaultdict[str, list[int]] = defaultdict(list)
    givers: defaultdict[str, list[int]] = defaultdict(list)
    bus_b, bus_s = buyers.column(BUS, tb), sellers.column(BUS, ts)
    for i in sorted(range(len(tb)), key=rank_b.__getitem__):
        takers[bus_b[i]].append(i)
    for j in sorted(range(len(ts)), key=rank_s.__getitem__):
        givers[bus_s[j]].append(j)
    rooms = {bus: [room[i] for i in rows] for bus, rows in takers.items()}
    at_b = dict.fromkeys(takers, 0)
    at_s = dict.fromkeys(givers, 0)
    pairs = sorted((book.fee_of[s, b], fees.distance_m(s, b), s, b)
                   for s in givers for b in takers)
    pieces_b: list[int] = []
    pieces_s: list[int] = []
    pieces_wh: list[int] = []
    for fee, _, seller_bus, buyer_bus in pairs:
        rows_b, rows_s = takers[buyer_bus], givers[seller_bus]
        i = max(at_b[buyer_bus], bisect_left(rooms[buyer_bus], fee))
        j = at_s[seller_bus]
        while i < len(rows_b) and j < len(rows_s):
            b, s = rows_b[i], rows_s[j]
            q = min(left_b[b], left_s[s])
            if q:
                pieces_b.append(b)
                pieces_s.append(s)
                pieces_wh.append(q)
                left_b[b] -= q
                left_s[s] -= q
            if not left_b[b]:
                i += 1
            if not left_s[s]:
                j += 1
        at_b[buyer_bus], at_s[seller_bus] = i, j
    paired_b, paired_s = bought.copy(), sold.copy()
    paired_b[tb] -= np.array(left_b, dtype=np.int64)
    paired_s[ts] -= np.array(left_s, dtype=np.int64)
    trades = trades_of(book, buyers.owner[tb[np.array(pieces_b, dtype=np.int64)]],
                       sellers.owner[ts[np.array(pieces_s, dtype=np.int64)]],
                       np.array(pieces_wh, dtype=np.int64), price)
    return trades, paired_b, paired_s
