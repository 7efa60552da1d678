"""The rules every mechanism shares, written out order by order: checks, limits, rationing,
pairing and the result.

:mod:`protocols.clearing.book` computes the same rules on columns (the mechanisms run there);
this module is their plain statement, which the reference tests hold the fast core to and which
network curtailment uses on its few trades. Five decisions live here so that every mechanism
makes them the same way:

* **Limits outside the tariff band.** A buyer's limit above retail or a seller's below feed-in is
  legal input, but the grid is always there at the tariffs, so nobody gains from trading locally
  beyond them. Mechanisms therefore match on *effective* limits, ``min(limit, retail)`` for buyers
  and ``max(limit, feed_in)`` for sellers. This only ever narrows what a node trades, so individual
  rationality holds against the limit it signed, and every P2P price lies in [feed-in, retail].
* **Fees inside the limits.** With network fees (``ClearingParams.fees``) a buyer pays price +
  fee, the fee set by the path from its seller's bus to its own. A mechanism ranks and prices a
  buyer's order on its *net* limit: the effective limit less the cheapest fee from any seller's
  bus in the book (:func:`cheapest_fees`). Pairing then only joins a buyer to a seller whose
  path's fee fits the buyer's headroom (effective limit − price), so price + fee never exceeds
  the buyer's limit or retail. With one fee for every path (no distance term) every pair fits and
  pairing changes nothing; with distance fees, energy a buyer cannot afford to fetch from the
  sellers left to it goes back to the grid, on both sides.
* **Exact integer sharing.** Quantities are split pro rata with the largest-remainder method; equal
  remainders go to the smaller (digest, step). No rounding ever creates or loses a watt-hour.
* **Pairing.** Pool outcomes are turned into buyer-to-seller trades. Without fees both sides are
  walked in (bus, digest, step) order and matched greedily (north-west corner): a fully pro-rata
  matrix would give every buyer a slice of every seller (n_buy x n_sell trades, 2.5 billion for
  100,000 orders); the walk yields at most n_buy + n_sell - 1 pieces, keeps each node's totals
  exact, and the bus-first order pairs nodes on the same bus together. With fees the cheapest
  paths are served first (:func:`pair_by_fee`).
* **Curves.** A curve's steps are orders of one node; they are ranked, rationed and paired as
  orders, and a node's outcome and its trades with one counterpart (at one price) are summed
  over its steps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from operator import attrgetter, itemgetter

from protocols.clearing.types import (
    ClearingError,
    ClearingParams,
    NodeOutcome,
    Order,
    Outcomes,
    PathFees,
    Result,
    Tariffs,
    Trade,
    Trades,
)
from protocols.messages import MAX_PRICE, MAX_STEPS

__all__ = [
    "Fills",
    "build_result",
    "buy_limit",
    "checked_sides",
    "cheapest_fees",
    "merge_trades",
    "net_buy_limit",
    "pair",
    "pair_by_fee",
    "path_fee",
    "pro_rata",
    "rank_buyers",
    "rank_sellers",
    "ration_by_priority",
    "sell_limit",
]

Key = tuple[str, int]
"""One order: its (node, step)."""
Fills = dict[Key, int]
"""Watt-hours that trade, by order (only orders with a non-zero fill)."""

_bus = attrgetter("bus")
_trade_order = itemgetter(0, 1, 3)  # buyer, seller, price


def key(order: Order) -> Key:
    return order.node, order.step


def buy_limit(order: Order, tariffs: Tariffs) -> int:
    """A buyer's effective limit: never above retail (see the module docstring)."""
    return min(order.limit_price, tariffs.retail_price)


def sell_limit(order: Order, tariffs: Tariffs) -> int:
    """A seller's effective limit: never below feed-in (see the module docstring)."""
    return max(order.limit_price, tariffs.feed_in_price)


def net_buy_limit(order: Order, tariffs: Tariffs, cheapest: Mapping[str, int]) -> int:
    """A buyer's effective limit less the cheapest fee it could pay (0 without fees)."""
    return buy_limit(order, tariffs) - cheapest.get(order.bus, 0)


def checked_sides(
    orders: Sequence[Order], params: ClearingParams
) -> tuple[list[Order], list[Order]]:
    """Validate ``orders`` and split them into buyers and sellers, each sorted by (digest, step).

    Sorting by digest first gives every mechanism a canonical starting order, so its result cannot
    depend on the order bids arrived in; later sorts are stable and keep it as the tie-break.
    One bid per node: its steps 0, 1, ... (at most ``MAX_STEPS``), on one side, with one digest,
    bus and time, prices strictly ascending for a seller and descending for a buyer (the protocol
    resolves replacements before clearing, and a node on both sides would trade with itself).
    """
    if not isinstance(params, ClearingParams):
        raise ClearingError(f"params must be ClearingParams, got {type(params).__name__}")
    bad = [o for o in orders if not isinstance(o, Order)]
    if bad:
        raise ClearingError(f"expected Order, got {type(bad[0]).__name__}")
    buyers = sorted((o for o in orders if o.side == "buy"), key=lambda o: (o.digest, o.step))
    sellers = sorted((o for o in orders if o.side == "sell"), key=lambda o: (o.digest, o.step))
    if len(buyers) + len(sellers) != len(orders):
        raise ClearingError("every order's side must be 'buy' or 'sell'")
    for order in orders:
        energy, limit, step = order.energy_wh, order.limit_price, order.step
        if type(energy) is not int or energy <= 0:
            raise ClearingError(f"order {order.digest}: energy_wh must be an int > 0")
        if type(limit) is not int or limit < 0:
            raise ClearingError(f"order {order.digest}: limit_price must be an int >= 0")
        if type(step) is not int or not 0 <= step < MAX_STEPS:
            raise ClearingError(f"order {order.digest}: step must be an int in 0..{MAX_STEPS - 1}")
    curves: defaultdict[str, list[Order]] = defaultdict(list)
    for order in orders:
        curves[order.node].append(order)
    for node, curve in curves.items():
        curve.sort(key=attrgetter("step"))
        if [o.step for o in curve] != list(range(len(curve))):
            raise ClearingError(f"node {node}: a node has more than one order for a step, or a "
                                "gap in its steps (one bid, steps 0, 1, ...)")
        first = curve[0]
        if any((o.side, o.digest, o.bus, o.created_ms)
               != (first.side, first.digest, first.bus, first.created_ms) for o in curve):
            raise ClearingError(f"node {node}: a curve's steps must share side, digest, bus and "
                                "created_ms")
        sign = 1 if first.side == "sell" else -1
        if any(sign * (b.limit_price - a.limit_price) <= 0 for a, b in pairwise(curve)):
            raise ClearingError(f"node {node}: sell steps must ascend in price, buy steps descend")
    if len({o.digest for o in orders}) != len(curves):
        raise ClearingError("a digest appears in more than one node's orders")
    return buyers, sellers


def path_fee(fees: PathFees, seller_bus: str, buyer_bus: str) -> int:
    """The fee per Wh from ``seller_bus`` to ``buyer_bus``, checked: an int in 0..MAX_PRICE."""
    try:
        fee = fees.fee_per_wh(seller_bus, buyer_bus)
    except ValueError as exc:
        raise ClearingError(f"no network fee from bus {seller_bus!r} to {buyer_bus!r}: {exc}"
                            ) from exc
    if type(fee) is not int or not 0 <= fee <= MAX_PRICE:
        raise ClearingError(f"network fee from {seller_bus!r} to {buyer_bus!r} must be an int in "
                            f"0..{MAX_PRICE}, got {fee!r}")
    return fee


def cheapest_fees(
    buyers: Iterable[Order], sellers: Iterable[Order], fees: PathFees | None
) -> dict[str, int]:
    """Per buyer bus, the cheapest fee per Wh from any seller's bus in the book ({} without fees
    or without sellers)."""
    seller_buses = sorted({o.bus for o in sellers})
    if fees is None or not seller_buses:
        return {}
    return {bus: min(path_fee(fees, s, bus) for s in seller_buses)
            for bus in sorted({o.bus for o in buyers})}


def rank_buyers(
    buyers: list[Order], tariffs: Tariffs, cheapest: Mapping[str, int] | None = None
) -> tuple[list[Order], list[int]]:
    """(digest, step)-sorted buyers ranked by net limit, highest first, and those limits."""
    net = cheapest or {}
    limits = [net_buy_limit(o, tariffs, net) for o in buyers]
    order = sorted(range(len(buyers)), key=lambda i: -limits[i])
    return [buyers[i] for i in order], [limits[i] for i in order]


def rank_sellers(sellers: list[Order], tariffs: Tariffs) -> tuple[list[Order], list[int]]:
    """(digest, step)-sorted sellers ranked by effective limit, lowest first, and those limits."""
    ranked = sorted(sellers, key=lambda o: sell_limit(o, tariffs))
    return ranked, [sell_limit(o, tariffs) for o in ranked]


def pro_rata(weights: Sequence[int], total: int) -> list[int]:
    """Split ``total`` in proportion to ``weights`` by the largest-remainder method.

    Equal remainders go to the earlier entry; callers pass orders in (digest, step) order, so ties
    are decided by digest. Requires ``0 <= total <= sum(weights)``; then no share exceeds its
    weight.
    """
    whole = sum(weights)
    if not 0 <= total <= whole:
        raise ClearingError(f"cannot share {total} over weights summing to {whole}")
    if total == whole:
        return list(weights)
    shares = []
    remainders = []
    for weight in weights:
        share, remainder = divmod(total * weight, whole)
        shares.append(share)
        remainders.append(remainder)
    left = total - sum(shares)
    if left:
        for index in sorted(range(len(weights)), key=lambda i: -remainders[i])[:left]:
            shares[index] += 1
    return shares


def ration_by_priority(ranked: Sequence[Order], limits: Sequence[int], quantity: int) -> Fills:
    """Fill ``quantity`` Wh from ``ranked`` (best first, ``limits`` alongside): whole price levels
    in order, and the marginal level (equal limits) pro rata, so ties at the margin are shared,
    not won by whoever sorts first."""
    fills: Fills = {}
    left = quantity
    start = 0
    count = len(ranked)
    while left > 0 and start < count:
        end = start
        while end < count and limits[end] == limits[start]:
            end += 1
        group = sorted(ranked[start:end], key=lambda o: (o.digest, o.step))
        level_energy = sum(o.energy_wh for o in group)
        shares = pro_rata([o.energy_wh for o in group], min(left, level_energy))
        for order, share in zip(group, shares, strict=True):
            if share:
                fills[key(order)] = share
        left -= min(left, level_energy)
        start = end
    if left:
        raise ClearingError(f"cannot ration {quantity} Wh: {left} Wh short")
    return fills


def merge_trades(pieces: Iterable[tuple[str, str, int, int]]) -> list[Trade]:
    """Trades from (buyer, seller, energy, price) pieces: one per (buyer, seller, price), summed
    over the steps of their curves, sorted."""
    energy: defaultdict[tuple[str, str, int], int] = defaultdict(int)
    for buyer, seller, wh, price in pieces:
        energy[buyer, seller, price] += wh
    return [Trade(b, s, wh, p, wh * p) for (b, s, p), wh in sorted(energy.items())]


def _check_balance(bought: Fills, sold: Fills) -> None:
    if sum(bought.values()) != sum(sold.values()):
        raise ClearingError("buy and sell fills do not balance")


def pair(
    *,
    buyers: Sequence[Order],
    sellers: Sequence[Order],
    bought: Fills,
    sold: Fills,
    price: int,
) -> list[Trade]:
    """Turn per-order fills at one ``price`` into trades (north-west corner walk, no fees).

    ``buyers`` and ``sellers`` are in (digest, step) order (from :func:`checked_sides`); a stable
    sort by bus then gives the (bus, digest, step) walking order.
    """
    _check_balance(bought, sold)
    buys = [(o.node, bought[key(o)]) for o in sorted(buyers, key=_bus) if bought.get(key(o))]
    sells = [o for o in sorted(sellers, key=_bus) if sold.get(key(o))]
    left = [sold[key(o)] for o in sells]
    pieces = []
    j = 0
    for buyer, need in buys:
        while need:
            q = min(need, left[j])
            pieces.append((buyer, sells[j].node, q, price))
            need -= q
            left[j] -= q
            if not left[j]:
                j += 1
    return merge_trades(pieces)


def pair_by_fee(
    *,
    buyers: Sequence[Order],
    sellers: Sequence[Order],
    bought: Fills,
    sold: Fills,
    price: int,
    tariffs: Tariffs,
    fees: PathFees,
) -> tuple[list[Trade], Fills, Fills]:
    """Pair fills at one ``price`` so that every buyer's price + fee fits its effective limit,
    cheapest paths first; returns the trades and the fills they carry.

    Bus pairs (seller's, buyer's) are served in order of (fee, distance, seller bus, buyer bus).
    At each, the buyers on the buyer bus whose headroom (effective limit − price) covers the fee
    take the sellers' energy, least headroom first (then digest, step: a buyer with more headroom
    can still afford a dearer path later), from the sellers on the seller bus in (digest, step)
    order. What no affordable path carries goes to the grid.
    """
    _check_balance(bought, sold)
    left = {key(o): bought[key(o)] for o in buyers if bought.get(key(o))}
    left_s = {key(o): sold[key(o)] for o in sellers if sold.get(key(o))}
    trading_b = [o for o in buyers if key(o) in left]
    trading_s = [o for o in sellers if key(o) in left_s]
    room = {key(o): buy_limit(o, tariffs) - price for o in trading_b}
    by_fee = sorted(
        (path_fee(fees, s, b), fees.distance_m(s, b), s, b)
        for s in {o.bus for o in trading_s} for b in {o.bus for o in trading_b}
    )
    pieces = []
    for fee, _, seller_bus, buyer_bus in by_fee:
        takers = sorted((o for o in trading_b if o.bus == buyer_bus and room[key(o)] >= fee),
                        key=lambda o: (room[key(o)], o.digest, o.step))
        givers = [o for o in trading_s if o.bus == seller_bus]
        for buyer in takers:
            for seller in givers:
                q = min(left[key(buyer)], left_s[key(seller)])
                if q:
                    pieces.append((buyer.node, seller.node, q, price))
                    left[key(buyer)] -= q
                    left_s[key(seller)] -= q
    paired_b = {k: bought[k] - wh for k, wh in left.items() if bought[k] - wh}
    paired_s = {k: sold[k] - wh for k, wh in left_s.items() if sold[k] - wh}
    return merge_trades(pieces), paired_b, paired_s


def build_result(
    *,
    mechanism: str,
    price: int | None,
    trades: list[Trade],
    buyers: Sequence[Order],
    sellers: Sequence[Order],
    tariffs: Tariffs,
) -> Result:
    """Assemble the :class:`Result`: sorted trades, one outcome per node (its steps summed), grid
    as the residual."""
    bought: defaultdict[str, int] = defaultdict(int)
    sold: defaultdict[str, int] = defaultdict(int)
    paid: defaultdict[str, int] = defaultdict(int)
    received: defaultdict[str, int] = defaultdict(int)
    for buyer, seller, energy, _, money in trades:
        bought[buyer] += energy
        paid[buyer] += money
        sold[seller] += energy
        received[seller] += money
    demand: defaultdict[str, int] = defaultdict(int)
    supply: defaultdict[str, int] = defaultdict(int)
    for order in buyers:
        demand[order.node] += order.energy_wh
    for order in sellers:
        supply[order.node] += order.energy_wh
    retail, feed_in = tariffs.retail_price, tariffs.feed_in_price
    outcomes = []
    for node in sorted(demand.keys() | supply.keys()):
        rest_b, rest_s = demand[node] - bought[node], supply[node] - sold[node]
        outcomes.append(NodeOutcome(node, bought[node], sold[node], rest_b, rest_s, paid[node],
                                    received[node], rest_b * retail, rest_s * feed_in))
    trades = sorted(trades, key=_trade_order)
    return Result(
        mechanism=mechanism,
        price=price if trades else None,
        trades=Trades.from_rows(trades),
        outcomes=Outcomes.from_rows(outcomes),
        grid_import_wh=sum(o.grid_import_wh for o in outcomes),
        grid_export_wh=sum(o.grid_export_wh for o in outcomes),
    )
