"""The data every clearing mechanism takes and returns, and the hash gateways agree on.

All quantities are integers in the units of docs/architecture.md (Wh, µ/Wh, µ). Orders are
``NamedTuple`` s (tuple construction is several times cheaper than a frozen dataclass's
``__init__``). A result's trades and outcomes are stored as **columns** (:class:`Trades`,
:class:`Outcomes`): a clearing of 100,000 orders computes them as arrays, and building 150,000
row objects it may never need cost more than the clearing itself. They still read as sequences
of :class:`Trade` / :class:`NodeOutcome` rows, built on access.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, NamedTuple, Protocol, Self, TypeVar, overload

from protocols.canonical import digest
from protocols.clearing.collector import collector_paused
from protocols.messages import MAX_ENERGY_WH, Bid

__all__ = [
    "ClearingError",
    "ClearingParams",
    "Limits",
    "NodeOutcome",
    "Order",
    "Outcomes",
    "PathFees",
    "Result",
    "Side",
    "Tariffs",
    "Trade",
    "Trades",
    "orders_from_bids",
    "result_hash",
]

Side = Literal["buy", "sell"]


class ClearingError(ValueError):
    """The orders or parameters handed to a mechanism are inconsistent (a caller's bug)."""


class Order(NamedTuple):
    """One step of one node's bid in one interval, as the mechanisms see it.

    ``digest`` is the bid's :func:`protocols.messages.message_digest`: unique per node, and the
    final tie-breaker everywhere (with ``step``), so equal prices never depend on input order.
    ``bus`` is the node's feeder bus (from its certificate); ``created_ms`` only orders the
    continuous double auction. A bid curve is several orders of one node, ``step`` 0, 1, ... in
    the curve's order (best first), sharing side, digest, bus and time; a one-step bid is step 0.
    """

    node: str
    side: Side
    energy_wh: int
    limit_price: int
    digest: str
    bus: str = ""
    created_ms: int = 0
    step: int = 0


_MS_PER_HOUR = 3_600_000


class Limits(NamedTuple):
    """The most one node may buy (``import_wh``) and sell (``export_wh``) in one interval."""

    import_wh: int
    export_wh: int

    @classmethod
    def over(cls, *, import_limit_w: int, export_limit_w: int, interval_ms: int) -> Limits:
        """A certificate's power limits (W) held for a whole interval of ``interval_ms``, in Wh
        rounded down, and never above the protocol's ``MAX_ENERGY_WH``."""
        return cls(min(MAX_ENERGY_WH, import_limit_w * interval_ms // _MS_PER_HOUR),
                   min(MAX_ENERGY_WH, export_limit_w * interval_ms // _MS_PER_HOUR))

    def of(self, side: Side) -> int:
        return self.export_wh if side == "sell" else self.import_wh


@dataclass(frozen=True, slots=True, kw_only=True)
class Tariffs:
    """The retail grid's prices, µ/Wh: buy from it at ``retail_price``, sell at ``feed_in_price``.

    ``retail_price > feed_in_price >= 0`` is required: with no spread there is nothing to gain from
    trading locally and several mechanisms (sdr, bill-sharing) would divide by the spread.
    """

    retail_price: int
    feed_in_price: int

    def __post_init__(self) -> None:
        if type(self.retail_price) is not int or type(self.feed_in_price) is not int:
            raise ClearingError("tariffs must be integers (µ/Wh)")
        if not 0 <= self.feed_in_price < self.retail_price:
            raise ClearingError(
                f"need 0 <= feed_in_price < retail_price, got feed-in {self.feed_in_price}, "
                f"retail {self.retail_price}"
            )


class PathFees(Protocol):
    """The network fee a trade pays per Wh, by the buses of its seller and buyer (see
    :class:`protocols.network.FeederFees`), and the path's length, which breaks ties between
    paths of equal fee (the shorter loads fewer lines)."""

    def fee_per_wh(self, seller_bus: str, buyer_bus: str) -> int: ...

    def distance_m(self, seller_bus: str, buyer_bus: str) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearingParams:
    """Community settings a mechanism reads. ``k_num / k_den`` is the k of the k-double auction
    (0 = the bottom of the competitive-equilibrium interval, 1 = its top); trade-reduction uses
    it for its single price too. ``fees``: the network fee every trade's buyer pays on top of
    the price; with it, every mechanism clears so that price + fee stays within each buyer's
    limit (see :mod:`protocols.clearing.allocation`). None: trading is free."""

    tariffs: Tariffs
    k_num: int = 1
    k_den: int = 2
    fees: PathFees | None = None

    def __post_init__(self) -> None:
        if type(self.k_num) is not int or type(self.k_den) is not int:
            raise ClearingError("k_num and k_den must be integers")
        if not (self.k_den > 0 and 0 <= self.k_num <= self.k_den):
            raise ClearingError(
                f"need 0 <= k_num <= k_den, k_den > 0; got {self.k_num}/{self.k_den}"
            )


class Trade(NamedTuple):
    """``energy_wh`` from ``seller`` to ``buyer`` at ``price`` µ/Wh; ``money == energy_wh * price``.
    """

    buyer: str
    seller: str
    energy_wh: int
    price: int
    money: int


class NodeOutcome(NamedTuple):
    """One node's whole interval (all the steps of its curve): P2P energy and money, and what
    the grid balanced at the tariffs.

    A buyer's unfilled demand is ``grid_import_wh`` (paid at retail); a seller's unfilled supply is
    ``grid_export_wh`` (paid at feed-in). All fields are >= 0; direction is in the field name.
    """

    node: str
    bought_wh: int
    sold_wh: int
    grid_import_wh: int
    grid_export_wh: int
    paid_p2p: int
    received_p2p: int
    paid_grid: int
    received_grid: int


Row = TypeVar("Row", Trade, NodeOutcome)


class _Columns(Sequence[Row], Generic[Row]):
    """Rows of one ``NamedTuple`` kind stored as one tuple per field, read as a sequence of rows.

    Two are equal when their rows are; one also equals a plain tuple or list of the same rows, so
    ``result.trades == ()`` reads as it did when results held tuples.
    """

    __slots__ = ("columns",)
    row: ClassVar[type[Any]]

    def __init__(self, columns: Sequence[Sequence[Any]]) -> None:
        fields = self.row._fields
        if len(columns) != len(fields):
            raise ClearingError(f"{type(self).__name__} needs {len(fields)} columns")
        self.columns: tuple[tuple[Any, ...], ...] = tuple(map(tuple, columns))
        if len(set(map(len, self.columns))) > 1:
            raise ClearingError(f"{type(self).__name__}: columns of different lengths")

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> Self:
        """Columns from rows (the straightforward clearing, network curtailment, tests)."""
        columns = tuple(zip(*rows, strict=True))
        return cls(columns or ((),) * len(cls.row._fields))

    def __len__(self) -> int:
        return len(self.columns[0])

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Row, ...]: ...

    def __getitem__(self, index: int | slice) -> Row | tuple[Row, ...]:
        if isinstance(index, slice):
            return tuple(map(self.row._make, zip(*(c[index] for c in self.columns), strict=True)))
        return self.row._make([c[index] for c in self.columns])  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Row]:
        return map(self.row._make, zip(*self.columns, strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Columns):
            return type(other) is type(self) and other.columns == self.columns
        if isinstance(other, tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.columns)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"

    def by_field(self) -> dict[str, list[Any]]:
        """Each field's column as a list, by field name: what :func:`result_hash` encodes."""
        return dict(zip(self.row._fields, map(list, self.columns), strict=True))


class Trades(_Columns[Trade]):
    """A result's trades, sorted by (buyer, seller, price): one per pair at a uniform price, one
    per pair and price in the continuous double auction."""

    __slots__ = ()
    row = Trade


class Outcomes(_Columns[NodeOutcome]):
    """A result's outcomes, one per node that has an order, sorted by node."""

    __slots__ = ()
    row = NodeOutcome

    def of(self, node: str) -> NodeOutcome | None:
        """``node``'s outcome, found by bisection (the nodes are sorted); None if it had no order.
        """
        nodes = self.columns[0]
        i = bisect_left(nodes, node)
        return self[i] if i < len(nodes) and nodes[i] == node else None


@dataclass(frozen=True, slots=True)
class Result:
    """A clearing's outcome. ``price`` is the uniform P2P price, or None when there is none (no
    trade, or the continuous double auction, whose trades carry their own prices). ``trades`` are
    sorted by (buyer, seller, price), ``outcomes`` by node, one per node."""

    mechanism: str
    price: int | None
    trades: Trades
    outcomes: Outcomes
    grid_import_wh: int
    grid_export_wh: int


def result_hash(result: Result) -> str:
    """The hash gateways put in their commitments: canonical JSON of every field of the result.

    Trades and outcomes are encoded as columns, ``{"buyer": [...], "seller": [...], ...}``: the
    encoder writes a few long flat lists at C speed, where 150,000 row lists (the form before
    2026-11-22) took twice as long to build and encode. The collector is paused meanwhile (see
    :mod:`protocols.clearing.collector`).
    """
    with collector_paused():
        return digest(
            {
                "mechanism": result.mechanism,
                "price": result.price,
                "trades": result.trades.by_field(),
                "outcomes": result.outcomes.by_field(),
                "grid_import_wh": result.grid_import_wh,
                "grid_export_wh": result.grid_export_wh,
            }
        )


_new_order = tuple.__new__


def orders_from_bids(
    bids_with_digests: Iterable[tuple[Bid, str]],
    *,
    buses: Mapping[str, str] | None = None,
    limits: Mapping[str, Limits] | None = None,
) -> tuple[Order, ...]:
    """Turn verified bids (with their digests) into orders; ``buses`` maps node to feeder bus.

    The caller has already kept one bid per node (the session resolves replacements and
    equivocation); clearing refuses duplicates rather than guess which one counts. A withdrawal
    (0 Wh) becomes no order: the node takes no part, as if it had not bid. A curve becomes one
    order per step. ``limits`` clips a node's offer to what its certificate lets it trade
    (:class:`Limits`): a signed bid is only the node's wish, and every gateway must clip it the
    same way for their results to agree. The clip holds for the curve's sum: its steps are kept
    best first up to the limit (a seller that may export 500 Wh sells its cheapest 500); a step
    clipped to 0 is no order.
    """
    bus_of = buses or {}
    limit_of = limits or {}
    # ``tuple.__new__`` with the fields in order: the NamedTuple's own ``__new__`` is a Python
    # function taking keywords, ~40 % of this function's time at 100,000 bids. The collector is
    # paused meanwhile (see :mod:`protocols.clearing.collector`).
    with collector_paused():
        orders = []
        for bid, bid_digest in bids_with_digests:
            energy = bid.energy_wh
            limit = limit_of.get(bid.node)
            if limit is not None:
                energy = min(energy, limit.of(bid.side))
            if not energy:
                continue
            node, side, bus, created = bid.node, bid.side, bus_of.get(bid.node, ""), bid.created_ms
            if not bid.steps:
                orders.append(_new_order(Order, (node, side, energy, bid.limit_price, bid_digest,
                                                 bus, created, 0)))
                continue
            for step, (wh, price) in enumerate(bid.steps):
                orders.append(_new_order(Order, (node, side, min(wh, energy), price, bid_digest,
                                                 bus, created, step)))
                energy -= wh
                if energy <= 0:
                    break
        return tuple(orders)
