"""``sdr``: supply-demand-ratio pricing (Liu et al., 2017).

Rule. With demand ``D``, supply ``S``, retail ``r`` and feed-in ``f``, the ratio is ``SDR = S / D``.
If ``S >= D`` the price is ``f``. Otherwise it is ``r f / ((r - f) SDR + f)``, computed exactly as
``floor(r f D / ((r - f) S + f D))``: it equals ``r`` as S falls to 0, ``f`` at S = D, and falls
monotonically in between, so scarce local supply earns close to retail and a glut earns feed-in.
Buyers' average cost over P2P and grid energy is then ``price SDR + r (1 - SDR)``, as in the paper.
The short side is served fully, the long side pro rata (see :mod:`protocols.clearing.pool`, which
also explains how limits that refuse the price are handled).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocols.clearing.pool import clear_pool
from protocols.clearing.types import ClearingParams, Order, Result, Tariffs

__all__ = ["clear_sdr", "sdr_price"]


def sdr_price(demand_wh: int, supply_wh: int, tariffs: Tariffs) -> int:
    """The SDR internal selling price, integer floor; needs positive demand and supply."""
    retail, feed_in = tariffs.retail_price, tariffs.feed_in_price
    if supply_wh >= demand_wh:
        return feed_in
    return (retail * feed_in * demand_wh) // ((retail - feed_in) * supply_wh + feed_in * demand_wh)


def clear_sdr(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Clear ``orders`` at the supply-demand-ratio price (see the module docstring)."""
    return clear_pool(mechanism="sdr", orders=orders, params=params, price_rule=sdr_price)
