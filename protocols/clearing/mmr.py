"""``mmr``: mid-market rate.

Rule. The P2P price is the midpoint of the tariffs, ``floor((retail + feed_in) / 2)``, whatever the
balance of supply and demand. The short side is served fully, the long side pro rata to energy,
and the grid balances the rest (buyers import at retail, sellers export at feed-in). Orders whose
effective limit refuses the midpoint sit out (see :mod:`protocols.clearing.pool`); with the price
fixed this takes one round.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocols.clearing.pool import clear_pool
from protocols.clearing.types import ClearingParams, Order, Result, Tariffs

__all__ = ["clear_mmr", "mid_market_price"]


def mid_market_price(demand_wh: int, supply_wh: int, tariffs: Tariffs) -> int:
    """``floor((retail + feed_in) / 2)``; independent of demand and supply by design."""
    return (tariffs.retail_price + tariffs.feed_in_price) // 2


def clear_mmr(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Clear ``orders`` at the mid-market rate (see the module docstring for the rule)."""
    return clear_pool(mechanism="mmr", orders=orders, params=params, price_rule=mid_market_price)
