"""A member trades no more than its certificate allows, whatever it signs.

The certificate's import and export limits are power (W); held for the length of an interval they
are the most energy the member may buy or sell in it. Every gateway clips each order to that,
from the same certificate and interval length, so the agreed result is the same everywhere; a
gateway caps its own bids the same way.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.market.agent import MarketAgent
from gateway.market.peerlink import parse_broker_url
from protocols.clearing import Limits, orders_from_bids
from protocols.market import Agreed, MarketError, topics
from protocols.messages import MAX_ENERGY_WH, Bid, message_digest
from protocols.signing import generate_key, sign
from tests.market.community import COMMUNITY, PARAMS, Community, now_ms

HOUR_MS = 3_600_000  # an interval of one hour: a limit of N W is N Wh


def bid(node: str, k: int, side: str, energy_wh: int, price: int) -> Bid:
    return Bid(community=COMMUNITY, interval=k, node=node, seq=0, side=side,  # type: ignore[arg-type]
               energy_wh=energy_wh, limit_price=price, created_ms=now_ms())


def test_a_limit_in_watts_over_an_interval_is_watt_hours_rounded_down() -> None:
    assert Limits.over(import_limit_w=10_000, export_limit_w=0,
                       interval_ms=15 * 60_000) == Limits(import_wh=2_500, export_wh=0)
    assert Limits.over(import_limit_w=7, export_limit_w=5, interval_ms=1000) == Limits(0, 0)
    huge = Limits.over(import_limit_w=10**12, export_limit_w=10**12, interval_ms=HOUR_MS)
    assert huge == Limits(MAX_ENERGY_WH, MAX_ENERGY_WH)


@given(energy=st.integers(0, MAX_ENERGY_WH), cap=st.integers(0, MAX_ENERGY_WH),
       side=st.sampled_from(["buy", "sell"]))
def test_an_order_never_exceeds_its_nodes_limit_on_its_side(energy: int, cap: int,
                                                            side: str) -> None:
    b = bid("n1", 1, side, energy, 100)
    other = cap + 1  # the limit on the other side must not matter
    limits = Limits(cap, other) if side == "buy" else Limits(other, cap)
    orders = orders_from_bids([(b, message_digest(b))], limits={"n1": limits})
    expected = min(energy, cap)
    assert [o.energy_wh for o in orders] == ([expected] if expected else [])


async def test_orders_beyond_the_certificate_are_clipped_identically_everywhere(
    any_broker: str,
) -> None:
    community = Community()
    _, host, port = parse_broker_url(any_broker)
    mallory_key, oscar_key = generate_key(), generate_key()
    async with AsyncExitStack() as stack:
        raw = await stack.enter_async_context(aiomqtt.Client(host, port))
        # mallory may export nothing, oscar may import 300 W: both sign far more.
        await raw.publish(topics.roster(COMMUNITY, "mallory"), community.certificate(
            "mallory", mallory_key, export_limit_w=0).to_bytes(), qos=1, retain=True)
        await raw.publish(topics.roster(COMMUNITY, "oscar"), community.certificate(
            "oscar", oscar_key, import_limit_w=300).to_bytes(), qos=1, retain=True)
        honest: list[MarketAgent] = [
            await stack.enter_async_context(community.agent(any_broker, node,
                                                            energy_interval_ms=HOUR_MS))
            for node in ("alice", "bob", "carol")]
        alice, bob, carol = honest
        await asyncio.sleep(0.3)  # certificates and presence travel
        k = community.next_interval(margin_ms=400)
        await raw.publish(topics.bid(COMMUNITY, k, "mallory"), sign(
            "bid", bid("mallory", k, "sell", MAX_ENERGY_WH, 50), mallory_key).to_bytes(), qos=1)
        await raw.publish(topics.bid(COMMUNITY, k, "oscar"), sign(
            "bid", bid("oscar", k, "buy", MAX_ENERGY_WH, 300), oscar_key).to_bytes(), qos=1)
        offered = await alice.submit_bid(k, "sell", 50_000, 100)  # above her own 10 kW
        await bob.submit_bid(k, "buy", 1_500, 250)
        await carol.submit_bid(k, "buy", 1_000, 200)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in honest]
    assert offered.energy_wh == 10_000  # her own cap is her certificate's limit
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({o.result_hash for o in agreed}) == 1
    result = agreed[0].result
    sold: Counter[str] = Counter()
    bought: Counter[str] = Counter()
    for t in result.trades:
        sold[t.seller] += t.energy_wh
        bought[t.buyer] += t.energy_wh
    assert "mallory" not in sold  # 0 W export: its 1 MWh offer was no order at all
    assert 0 < bought["oscar"] <= 300
    assert sold["alice"] == sum(bought.values()) == 300 + 1_500 + 1_000


async def test_a_gateway_refuses_to_bid_for_what_its_certificate_forbids(any_broker: str) -> None:
    community = Community()
    key = generate_key()
    async with MarketAgent(
        broker_url=any_broker, community=COMMUNITY, node="solo", identity=key,
        certificate=community.certificate("solo", key, import_limit_w=0, export_limit_w=500),
        authority_key_hex=community.authority_hex, timing=community.timing,
        params=PARAMS, clock=now_ms,
        energy_interval_ms=HOUR_MS,
    ) as solo:
        k = community.next_interval(margin_ms=400)
        with pytest.raises(MarketError, match="allows no import"):
            await solo.submit_bid(k, "buy", 100, 250)
        assert (await solo.submit_bid(k, "sell", 2_000, 100)).energy_wh == 500
