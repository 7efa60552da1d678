"""Market clearing: pure, integer, deterministic functions from orders to a result.

Every gateway runs the same mechanism on the same signed bids and must get a bit-identical
:class:`Result` (its :func:`result_hash` goes into the signed commitment), so everything here is
integer arithmetic with digest tie-breaks and no dependence on input order.
"""

from protocols.clearing.book import MAX_ORDERS
from protocols.clearing.registry import MECHANISMS, POOLS, Mechanism, clear
from protocols.clearing.types import (
    ClearingError,
    ClearingParams,
    Limits,
    NodeOutcome,
    Order,
    Outcomes,
    Result,
    Side,
    Tariffs,
    Trade,
    Trades,
    orders_from_bids,
    result_hash,
)
from protocols.clearing.uniform import clear_uniform

__all__ = [
    "MAX_ORDERS",
    "MECHANISMS",
    "POOLS",
    "ClearingError",
    "ClearingParams",
    "Limits",
    "Mechanism",
    "NodeOutcome",
    "Order",
    "Outcomes",
    "Result",
    "Side",
    "Tariffs",
    "Trade",
    "Trades",
    "clear",
    "clear_uniform",
    "orders_from_bids",
    "result_hash",
]
