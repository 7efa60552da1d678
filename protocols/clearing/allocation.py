"""Building blocks shared by the mechanisms: checks, rationing, pairing, and the result.

Three decisions live here so that every mechanism makes them the same way:

* **Limits outside the tariff band.** A buyer's limit above retail or a seller's below feed-in is
  legal input, but the grid is always there at the tariffs, so nobody gains from trading locally
  beyond them. Mechanisms therefore match on *effective* limits, ``min(limit, retail)`` for buyers
  and ``max(limit, feed_in)`` for sellers. This only ever narrows what a node trades, so individual
  rationality holds against the limit it signed, and every P2P price lies in [feed-in, retail].
* **Exact integer sharing.** Quantities are split pro rata with the largest-remainder method; equal
  remainders go to the smaller digest. No rounding ever creates or loses a watt-hour.
* **Pairing.** Pool outcomes are turned into buyer-to-seller trades by walking both sides in
  (bus, digest) order and matching greedily (north-west corner). A fully pro-rata matrix would give
  every buyer a slice of every seller: n_buy x n_sell trades, 2.5 billion for 100,000 orders. The
  walk yields at most n_buy + n_sell - 1 trades, keeps each node's totals exact, and the bus-first
  order pairs nodes on the same bus together, which is what the network fee rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, itemgetter

from protocols.clearing.types import (
    ClearingError,
    ClearingParams,
    NodeOutcome,
    Order,
    Outcomes,
    Result,
    Tariffs,
    Trade,
    Trades,
)

__all__ = [
    "Fills",
    "build_result",
    "buy_limit",
    "checked_sides",
    "pair",
    "pro_rata",
    "rank_buyers",
    "rank_sellers",
    "ration_by_priority",
    "sell_limit",
]

Fills = dict[str, int]
"""Watt-hours that trade, by node (only nodes with a non-zero fill)."""

_digest = attrgetter("digest")
_bus = attrgetter("bus")
_first = itemgetter(0)  # a trade's buyer, an outcome's node
_seller = itemgetter(1)


def buy_limit(order: Order, tariffs: Tariffs) -> int:
    """A buyer's effective limit: never above retail (see the module docstring)."""
    return min(order.limit_price, tariffs.retail_price)


def sell_limit(order: Order, tariffs: Tariffs) -> int:
    """A seller's effective limit: never below feed-in (see the module docstring)."""
    return max(order.limit_price, tariffs.feed_in_price)


def checked_sides(
    orders: Sequence[Order], params: ClearingParams
) -> tuple[list[Order], list[Order]]:
    """Validate ``orders`` and split them into buyers and sellers, each sorted by digest.

    Sorting by digest first gives every mechanism a canonical starting order, so its result cannot
    depend on the order bids arrived in; later sorts are stable and keep digest as the tie-break.
    One order per node and per digest: the protocol resolves replacements before clearing, and a
    node on both sides would trade with itself.
    """
    if not isinstance(params, ClearingParams):
        raise ClearingError(f"params must be ClearingParams, got {type(params).__name__}")
    bad = [o for o in orders if not isinstance(o, Order)]
    if bad:
        raise ClearingError(f"expected Order, got {type(bad[0]).__name__}")
    buyers = sorted((o for o in orders if o.side == "buy"), key=_digest)
    sellers = sorted((o for o in orders if o.side == "sell"), key=_digest)
    if len(buyers) + len(sellers) != len(orders):
        raise ClearingError("every order's side must be 'buy' or 'sell'")
    for order in orders:
        energy, limit = order.energy_wh, order.limit_price
        if type(energy) is not int or energy <= 0:
            raise ClearingError(f"order {order.digest}: energy_wh must be an int > 0")
        if type(limit) is not int or limit < 0:
            raise ClearingError(f"order {order.digest}: limit_price must be an int >= 0")
    if len({o.node for o in orders}) != len(orders):
        raise ClearingError("a node has more than one order")
    if len({o.digest for o in orders}) != len(orders):
        raise ClearingError("a digest appears in more than one order")
    return buyers, sellers


def rank_buyers(buyers: list[Order], tariffs: Tariffs) -> tuple[list[Order], list[int]]:
    """Digest-sorted buyers ranked by effective limit, highest first, and those limits.

    A stable sort on a plain int key keeps digest order among equal limits; it is several times
    faster than sorting on a (limit, digest) tuple, which matters at 100,000 orders (and so is
    inlining :func:`buy_limit` into the key).
    """
    retail = tariffs.retail_price
    ranked = sorted(buyers, key=lambda o: -min(o.limit_price, retail))
    return ranked, [min(o.limit_price, retail) for o in ranked]


def rank_sellers(sellers: list[Order], tariffs: Tariffs) -> tuple[list[Order], list[int]]:
    """Digest-sorted sellers ranked by effective limit, lowest first, and those limits."""
    feed_in = tariffs.feed_in_price
    ranked = sorted(sellers, key=lambda o: max(o.limit_price, feed_in))
    return ranked, [max(o.limit_price, feed_in) for o in ranked]


def pro_rata(weights: Sequence[int], total: int) -> list[int]:
    """Split ``total`` in proportion to ``weights`` by the largest-remainder method.

    Equal remainders go to the earlier entry; callers pass orders in digest order, so ties are
    decided by digest. Requires ``0 <= total <= sum(weights)``; then no share exceeds its weight.
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
        # A stable sort on the plain int keeps index (digest) order among equal remainders.
        for index in sorted(range(len(weights)), key=lambda i: -remainders[i])[:left]:
            shares[index] += 1
    return shares


def ration_by_priority(ranked: Sequence[Order], limits: Sequence[int], quantity: int) -> Fills:
    """Fill ``quantity`` Wh from ``ranked`` (best first, effective ``limits`` alongside): whole
    price levels in order, and the marginal level (equal limits) pro rata, so ties at the margin
    are shared, not won by whoever sorts first."""
    fills: Fills = {}
    left = quantity
    start = 0
    count = len(ranked)
    while left > 0 and start < count:
        level = limits[start]
        end = start
        level_energy = 0
        while end < count and limits[end] == level:
            level_energy += ranked[end].energy_wh
            end += 1
        group = ranked[start:end]
        if level_energy <= left:
            for order in group:
                fills[order.node] = order.energy_wh
            left -= level_energy
        else:
            shares = pro_rata([o.energy_wh for o in group], left)
            for order, share in zip(group, shares, strict=True):
                if share:
                    fills[order.node] = share
            left = 0
        start = end
    if left:
        raise ClearingError(f"cannot ration {quantity} Wh: {left} Wh short")
    return fills


def pair(
    *,
    buyers: Sequence[Order],
    sellers: Sequence[Order],
    bought: Fills,
    sold: Fills,
    price: int,
) -> list[Trade]:
    """Turn per-node fills at one ``price`` into buyer-seller trades (north-west corner walk).

    ``buyers`` and ``sellers`` are in digest order (from :func:`checked_sides`); a stable sort by
    bus then gives the (bus, digest) walking order without comparing tuples.
    """
    buys = sorted((o for o in buyers if bought.get(o.node)), key=_bus)
    sells = sorted((o for o in sellers if sold.get(o.node)), key=_bus)
    if sum(bought.values()) != sum(sold.values()):
        raise ClearingError("buy and sell fills do not balance")
    trades: list[Trade] = []
    j = 0
    seller = sells[0].node if sells else ""
    seller_left = sold[seller] if sells else 0
    for buyer in buys:
        need = bought[buyer.node]
        while need:
            q = need if need < seller_left else seller_left
            trades.append(Trade(buyer.node, seller, q, price, q * price))
            need -= q
            seller_left -= q
            if not seller_left and j + 1 < len(sells):
                j += 1
                seller = sells[j].node
                seller_left = sold[seller]
    return trades


def build_result(
    *,
    mechanism: str,
    price: int | None,
    trades: list[Trade],
    buyers: Sequence[Order],
    sellers: Sequence[Order],
    tariffs: Tariffs,
    fills: tuple[Fills, Fills] | None = None,
) -> Result:
    """Assemble the :class:`Result`: sorted trades, one outcome per order, grid as the residual.

    At a uniform ``price`` pass the (bought, sold) ``fills`` the trades were paired from: each
    node's money is then fill x price, which saves a pass over every trade. Without them (the
    continuous double auction, one price per trade) energy and money are summed from the trades.
    """
    bought: Fills
    sold: Fills
    if fills is not None and price is not None:
        bought, sold = fills
        paid = {node: wh * price for node, wh in bought.items()}
        received = {node: wh * price for node, wh in sold.items()}
    else:
        bought, sold, paid, received = {}, {}, {}, {}
        for buyer, seller, energy, _, money in trades:
            bought[buyer] = bought.get(buyer, 0) + energy
            paid[buyer] = paid.get(buyer, 0) + money
            sold[seller] = sold.get(seller, 0) + energy
            received[seller] = received.get(seller, 0) + money
    retail, feed_in = tariffs.retail_price, tariffs.feed_in_price
    outcomes: list[NodeOutcome] = []
    grid_import = 0
    grid_export = 0
    for order in buyers:
        node = order.node
        got = bought.get(node, 0)
        rest = order.energy_wh - got
        grid_import += rest
        outcomes.append(NodeOutcome(node, got, 0, rest, 0, paid.get(node, 0), 0, rest * retail, 0))
    for order in sellers:
        node = order.node
        gave = sold.get(node, 0)
        rest = order.energy_wh - gave
        grid_export += rest
        outcomes.append(
            NodeOutcome(node, 0, gave, 0, rest, 0, received.get(node, 0), 0, rest * feed_in)
        )
    trades.sort(key=_seller)
    trades.sort(key=_first)
    outcomes.sort(key=_first)
    return Result(
        mechanism=mechanism,
        price=price if trades else None,
        trades=Trades.from_rows(trades),
        outcomes=Outcomes.from_rows(outcomes),
        grid_import_wh=grid_import,
        grid_export_wh=grid_export,
    )
