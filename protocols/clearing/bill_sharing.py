"""``bill-sharing``: the community as one net meter, its grid bill shared by net use.

Rule. Pooled, the community imports ``D - S`` at retail when it is short and exports ``S - D`` at
feed-in when it is long. Sharing that one bill in proportion to each member's net use means every
member, buyer or seller, faces the same marginal price: ``retail`` when the community is a net
importer (``D > S``), ``feed_in`` when it is a net exporter (``S > D``). So that is the P2P price;
a buyer's unserved part is imported at retail and a seller's unsold part exported at feed-in,
which reproduces each member's share of the pooled bill exactly. When ``D == S`` the bill is zero
and "proportional to net use" is 0/0; the price is then the midpoint ``floor((r + f) / 2)`` so the
saving is split evenly. Orders whose limits refuse the price sit out (see
:mod:`protocols.clearing.pool`).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocols.clearing.pool import clear_pool
from protocols.clearing.types import ClearingParams, Order, Result, Tariffs

__all__ = ["bill_sharing_price", "clear_bill_sharing"]


def bill_sharing_price(demand_wh: int, supply_wh: int, tariffs: Tariffs) -> int:
    """The community's marginal grid price: retail if short, feed-in if long, midpoint if even."""
    if demand_wh > supply_wh:
        return tariffs.retail_price
    if supply_wh > demand_wh:
        return tariffs.feed_in_price
    return (tariffs.retail_price + tariffs.feed_in_price) // 2


def clear_bill_sharing(orders: Sequence[Order], params: ClearingParams) -> Result:
    """Clear ``orders`` by sharing the pooled grid bill (see the module docstring)."""
    return clear_pool(
        mechanism="bill-sharing", orders=orders, params=params, price_rule=bill_sharing_price
    )
