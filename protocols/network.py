"""The feeder under the market: electrical distance, network fees and line limits for P2P trades.

Members sit on buses of a radial feeder (a tree rooted at the substation). A P2P trade is a
transaction from the seller's bus to the buyer's: it travels the unique path between them, and
it pays the network operator a fee per Wh that grows with that path's length. Each line offers
``capacity_wh`` per interval to P2P transactions in each direction; a clearing whose trades would
push more across a line is curtailed at the margin.

What counts as flow. The grid's own balancing (residual import/export at the tariffs) is the
operator's business and is not counted: ``capacity_wh`` is the share of the line the operator makes
available to local trading, so curtailing a trade (its energy falls back to the grid) always
relieves the lines it crossed. Opposite transactions on a line net out, as they do physically.

Pure and integer: lengths in metres, fees in µ/Wh, energy in Wh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from protocols.clearing.allocation import (
    build_result,
    buy_limit,
    checked_sides,
    key,
    path_fee,
    sell_limit,
)
from protocols.clearing.types import ClearingParams, Order, Result, Trade

__all__ = [
    "FeeSchedule",
    "Feeder",
    "FeederFees",
    "Line",
    "NetworkError",
    "TradeFee",
    "curtail",
    "line_flows",
    "network_fees",
]


class NetworkError(ValueError):
    """The feeder description is not a radial tree, or names a bus it does not contain."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Line:
    """The line from ``bus`` up to ``parent`` (towards the substation)."""

    bus: str
    parent: str
    length_m: int
    capacity_wh: int

    @classmethod
    def rated(cls, *, bus: str, parent: str, length_m: int, capacity_w: int,
              interval_s: float) -> Line:
        """The line rated ``capacity_w`` as the market sees it: the energy it carries in one
        interval of ``interval_s``."""
        return cls(bus=bus, parent=parent, length_m=length_m,
                   capacity_wh=int(capacity_w * interval_s // 3600))

    def __post_init__(self) -> None:
        if self.length_m < 0 or self.capacity_wh < 0:
            raise NetworkError(f"line {self.bus}->{self.parent}: length and capacity must be >= 0")
        if self.bus == self.parent:
            raise NetworkError(f"line {self.bus}: a line cannot join a bus to itself")


class Feeder:
    """A radial feeder: every bus but the root has exactly one line towards the root."""

    def __init__(self, *, root: str, lines: Iterable[Line]) -> None:
        self.root = root
        self._up: dict[str, Line] = {}
        for line in lines:
            if line.bus in self._up or line.bus == root:
                raise NetworkError(f"bus {line.bus!r} has more than one line towards the root")
            self._up[line.bus] = line
        self._depth: dict[str, int] = {root: 0}
        for bus in self._up:
            self._depth[bus] = len(self._climb(bus))
        self._distance: dict[tuple[str, str], int] = {}  # filled as pairs are asked for

    def _climb(self, bus: str) -> list[Line]:
        """Lines from ``bus`` up to the root; refuses loops and buses cut off from the root."""
        lines: list[Line] = []
        seen = {bus}
        while bus != self.root:
            line = self._up.get(bus)
            if line is None:
                raise NetworkError(f"bus {bus!r} is not connected to the root {self.root!r}")
            lines.append(line)
            bus = line.parent
            if bus in seen:
                raise NetworkError(f"the feeder has a loop through bus {bus!r}")
            seen.add(bus)
        return lines

    @property
    def buses(self) -> frozenset[str]:
        return frozenset(self._depth)

    @property
    def lines(self) -> tuple[Line, ...]:
        return tuple(self._up[bus] for bus in sorted(self._up))

    def path(self, from_bus: str, to_bus: str) -> tuple[list[Line], list[Line]]:
        """The lines from ``from_bus`` up to the common ancestor, and from it down to ``to_bus``.

        The first list is crossed upwards (towards the root), the second downwards.
        """
        for bus in (from_bus, to_bus):
            if bus not in self._depth:
                raise NetworkError(f"unknown bus {bus!r}")
        up: list[Line] = []
        down: list[Line] = []
        a, b = from_bus, to_bus
        while self._depth[a] > self._depth[b]:
            up.append(self._up[a])
            a = self._up[a].parent
        while self._depth[b] > self._depth[a]:
            down.append(self._up[b])
            b = self._up[b].parent
        while a != b:
            up.append(self._up[a])
            down.append(self._up[b])
            a, b = self._up[a].parent, self._up[b].parent
        down.reverse()
        return up, down

    def distance_m(self, from_bus: str, to_bus: str) -> int:
        """Electrical distance: total length of the lines between the two buses (kept once
        computed: clearing with fees asks for every pair of a seller's and a buyer's bus)."""
        known = self._distance.get((from_bus, to_bus))
        if known is None:
            up, down = self.path(from_bus, to_bus)
            known = sum(line.length_m for line in up) + sum(line.length_m for line in down)
            self._distance[from_bus, to_bus] = known
        return known


@dataclass(frozen=True, slots=True, kw_only=True)
class FeeSchedule:
    """Network fee per Wh: ``base + floor(per_km * distance_m / 1000)`` µ/Wh.

    The base covers using the feeder at all (also for neighbours on one bus); the distance term
    makes a trade across the feeder pay for the lines it occupies.
    """

    base: int
    per_km: int

    def __post_init__(self) -> None:
        if self.base < 0 or self.per_km < 0:
            raise NetworkError("fees must be >= 0")

    def fee_per_wh(self, distance_m: int) -> int:
        return self.base + self.per_km * distance_m // 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class FeederFees:
    """The fee per Wh between two buses of ``feeder`` by ``schedule``: what clearing charges
    inside the limits (:class:`protocols.clearing.PathFees`), the same figure
    :func:`network_fees` charges each trade afterwards."""

    feeder: Feeder
    schedule: FeeSchedule

    def fee_per_wh(self, seller_bus: str, buyer_bus: str) -> int:
        return self.schedule.fee_per_wh(self.feeder.distance_m(seller_bus, buyer_bus))

    def distance_m(self, seller_bus: str, buyer_bus: str) -> int:
        return self.feeder.distance_m(seller_bus, buyer_bus)


class TradeFee(NamedTuple):
    """The network fee for one trade: paid by the buyer to the network operator."""

    buyer: str
    seller: str
    distance_m: int
    fee_per_wh: int
    fee: int


def _bus(bus_of: Mapping[str, str], node: str) -> str:
    try:
        return bus_of[node]
    except KeyError:
        raise NetworkError(f"node {node!r} has no bus") from None


def network_fees(
    trades: Sequence[Trade],
    *,
    feeder: Feeder,
    bus_of: Mapping[str, str],
    schedule: FeeSchedule,
) -> tuple[TradeFee, ...]:
    """One fee per trade, in the trades' order; ``fee == energy_wh * fee_per_wh`` exactly."""
    fees = []
    for trade in trades:
        distance = feeder.distance_m(_bus(bus_of, trade.seller), _bus(bus_of, trade.buyer))
        rate = schedule.fee_per_wh(distance)
        fees.append(TradeFee(trade.buyer, trade.seller, distance, rate, trade.energy_wh * rate))
    return tuple(fees)


def line_flows(
    trades: Sequence[Trade], *, feeder: Feeder, bus_of: Mapping[str, str]
) -> dict[str, int]:
    """Net P2P flow per line, keyed by the line's downstream bus; + = upwards (towards the root)."""
    flows = {line.bus: 0 for line in feeder.lines}
    for trade in trades:
        up, down = feeder.path(_bus(bus_of, trade.seller), _bus(bus_of, trade.buyer))
        for line in up:
            flows[line.bus] += trade.energy_wh
        for line in down:
            flows[line.bus] -= trade.energy_wh
    return flows


def _overload_cut(
    trade: Trade, direction: dict[str, int], overloads: dict[str, int], capacity: dict[str, int]
) -> int:
    """How much of ``trade`` to cut: the largest overload it adds to, at most its energy."""
    worst = max(
        (abs(flow) - capacity[bus] for bus, flow in overloads.items()
         if direction.get(bus, 0) * flow > 0),
        default=0,
    )
    return min(worst, trade.energy_wh)


def _marginal_limits(result: Result, orders: Sequence[Order], params: ClearingParams
                     ) -> dict[str, int]:
    """Per node, the effective limit of the last step of its curve that traded (its steps are
    filled best first): what the node gives up first when its trades are cut."""
    tariffs = params.tariffs
    steps: dict[str, list[Order]] = {}
    for order in sorted(orders, key=key):
        steps.setdefault(order.node, []).append(order)
    limits = {}
    for outcome in result.outcomes:
        traded = outcome.bought_wh + outcome.sold_wh
        for order in steps[outcome.node]:
            limits[outcome.node] = (buy_limit(order, tariffs) if order.side == "buy"
                                    else -sell_limit(order, tariffs))
            traded -= order.energy_wh
            if traded <= 0:
                break
    return limits


def curtail(
    result: Result,
    *,
    orders: Sequence[Order],
    params: ClearingParams,
    feeder: Feeder,
    bus_of: Mapping[str, str],
) -> Result:
    """Cut ``result``'s trades until no line carries more than its capacity.

    The margin is the trade with the least gain from trade (the buyer's effective limit minus
    the seller's, for a curve the limit of its last step that traded, less the network fee with
    ``params.fees``; ties by buyer, seller, price): while a line is overloaded, the marginal
    trade that loads it in the overloaded direction is reduced by the overload (or removed).
    Curtailed energy falls back to the grid at the tariffs; prices are unchanged, so budget
    balance and individual rationality (fees included) carry over from the mechanism.
    Deterministic: it depends only on its inputs.
    """
    tariffs = params.tariffs
    buyers, sellers = checked_sides(orders, params)
    gain_of = _marginal_limits(result, orders, params)
    trades = list(result.trades)
    fees = params.fees
    cost = [0 if fees is None else path_fee(fees, _bus(bus_of, t.seller), _bus(bus_of, t.buyer))
            for t in trades]
    margin = sorted(
        range(len(trades)),
        key=lambda i: (gain_of[trades[i].buyer] + gain_of[trades[i].seller] - cost[i], i),
    )
    capacity = {line.bus: line.capacity_wh for line in feeder.lines}
    directions = []
    for trade in trades:
        up, down = feeder.path(_bus(bus_of, trade.seller), _bus(bus_of, trade.buyer))
        directions.append({line.bus: 1 for line in up} | {line.bus: -1 for line in down})
    flows = line_flows(trades, feeder=feeder, bus_of=bus_of)
    while True:
        overloads = {bus: flow for bus, flow in flows.items() if abs(flow) > capacity[bus]}
        if not overloads:
            break
        # Some trade loads every overloaded line in its overloaded direction (a flow is the sum
        # of the trades across it), so this search always finds one and each round cuts >= 1 Wh.
        index, cut = next(
            (i, c)
            for i in margin
            if (c := _overload_cut(trades[i], directions[i], overloads, capacity))
        )
        for bus, sign in directions[index].items():
            flows[bus] -= sign * cut
        trade = trades[index]
        energy = trade.energy_wh - cut
        trades[index] = trade._replace(energy_wh=energy, money=energy * trade.price)
    kept = [t for t in trades if t.energy_wh]
    return build_result(
        mechanism=result.mechanism,
        price=result.price,
        trades=kept,
        buyers=buyers,
        sellers=sellers,
        tariffs=tariffs,
    )
