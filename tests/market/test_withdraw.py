"""A withdrawal (a bid of 0 Wh replacing a node's offer) takes the node out of the clearing.

The property, for every mechanism, any tariffs and any other bids: the withdrawing node's bid
becomes no order, and the result is the one the other bids alone give. (End to end, with real
gateways and a device that goes silent after the bid: tests/faults/test_device_offline.py.)
"""

from hypothesis import given
from hypothesis import strategies as st

from protocols.clearing import ClearingParams, Tariffs
from protocols.clearing.registry import MECHANISMS, clear
from protocols.clearing.types import orders_from_bids
from protocols.messages import Bid, message_digest

sides = st.sampled_from(["buy", "sell"])
others = st.lists(st.tuples(sides, st.integers(1, 5000), st.integers(0, 1000)), max_size=12)


def bid(node: str, side: str, energy_wh: int, price: int, seq: int = 0) -> Bid:
    return Bid(community="oak", interval=1, node=node, seq=seq, side=side,  # type: ignore[arg-type]
               energy_wh=energy_wh, limit_price=price, created_ms=seq)


@given(mechanism=st.sampled_from(sorted(MECHANISMS)), side=sides, others=others,
       feed_in=st.integers(0, 200), spread=st.integers(1, 400), price=st.integers(0, 1000))
def test_a_withdrawn_bid_takes_no_part(mechanism, side, others, feed_in, spread, price):
    params = ClearingParams(tariffs=Tariffs(retail_price=feed_in + spread, feed_in_price=feed_in))
    rest = [bid(f"n{i}", s, wh, p, seq=i) for i, (s, wh, p) in enumerate(others)]
    withdrawn = bid("gone", side, 0, price, seq=len(others))
    with_digests = [(b, message_digest(b)) for b in rest]
    orders = orders_from_bids([*with_digests, (withdrawn, message_digest(withdrawn))])
    assert all(o.node != "gone" for o in orders)
    result = clear(mechanism, orders, params)
    assert all(o.node != "gone" for o in result.outcomes)
    assert result == clear(mechanism, orders_from_bids(with_digests), params)
