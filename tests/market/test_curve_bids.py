"""A gateway bids its home's curve: signed as steps, capped best steps first, cleared step by step.

The EMS prices each Wh at what it is worth to the home (``gateway/ems.py``); the agent carries
that curve onto the wire as the bid's steps, and a cap (the certificate's limit, the reputation)
keeps the steps the home wants most, as every gateway's clipping of the order does.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack

from hypothesis import given
from hypothesis import strategies as st

from gateway.market.agent import MarketAgent
from protocols.market import Agreed
from protocols.messages import MAX_STEPS, Step, curve_head
from protocols.signing import generate_key
from tests.market.community import COMMUNITY, HOUR_MS, PARAMS, Community, now_ms

SELL = (Step(300, 120), Step(400, 150), Step(500, 200))


@given(curve=st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 1000)), max_size=MAX_STEPS),
       wh=st.integers(-10, 10_000))
def test_a_curve_cut_keeps_its_first_steps_up_to_the_energy(
        curve: list[tuple[int, int]], wh: int) -> None:
    steps = [Step(*step) for step in curve]
    head = curve_head(steps, wh)
    assert sum(s.wh for s in head) == max(0, min(wh, sum(s.wh for s in steps)))
    assert [s.price for s in head] == [s.price for s in steps[:len(head)]]
    assert all(0 < h.wh <= s.wh for h, s in zip(head, steps, strict=False))
    assert all(h == s for h, s in zip(head[:-1], steps, strict=False))


async def test_a_capped_curve_keeps_its_cheapest_steps_and_one_step_is_written_without(
        any_broker: str) -> None:
    community = Community()
    key = generate_key()
    async with MarketAgent(
        broker_url=any_broker, community=COMMUNITY, node="solo", identity=key,
        certificate=community.certificate("solo", key, export_limit_w=500),
        authority_key_hex=community.authority_hex, timing=community.timing,
        params=PARAMS, clock=now_ms, energy_interval_ms=HOUR_MS,
    ) as solo:
        k = community.next_interval(margin_ms=400)
        whole = await solo.submit_bid(k, "buy", 900, 250, steps=(Step(600, 250), Step(300, 200)))
        assert (whole.energy_wh, whole.limit_price, whole.steps) == (
            900, 250, (Step(600, 250), Step(300, 200)))
        capped = await solo.submit_bid(k + 1, "sell", 1200, 120, steps=SELL)
        assert (capped.energy_wh, capped.limit_price, capped.steps) == (
            500, 120, (Step(300, 120), Step(200, 150)))
        one = await solo.submit_bid(k + 2, "sell", 300, 120, steps=SELL[:1])
        assert (one.energy_wh, one.limit_price, one.steps) == (300, 120, ())


async def test_every_gateway_clears_the_curves_step_by_step(any_broker: str) -> None:
    """alice sells 300 Wh at 120, 400 more at 150 and 500 at 200; bob and carol want 600 Wh at
    up to 180: every gateway agrees that alice sells her two cheaper steps and not the third."""
    community = Community()
    async with AsyncExitStack() as stack:
        agents: list[MarketAgent] = await community.agents(stack, any_broker, "alice", "bob",
                                                           "carol")
        alice, bob, carol = agents
        await asyncio.sleep(0.3)  # certificates and presence travel
        k = community.next_interval(margin_ms=400)
        await alice.submit_bid(k, "sell", 1200, 120, steps=SELL)
        await bob.submit_bid(k, "buy", 500, 180, steps=(Step(300, 180), Step(200, 130)))
        await carol.submit_bid(k, "buy", 600, 180)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in agents]
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({o.result_hash for o in agreed}) == 1
    result = agreed[0].result
    sold: Counter[str] = Counter()
    bought: Counter[str] = Counter()
    for trade in result.trades:
        sold[trade.seller] += trade.energy_wh
        bought[trade.buyer] += trade.energy_wh
    # demand at 150..180 is 900 Wh (bob's first step, carol): alice's 700 Wh up to 150 all sell
    assert sold == {"alice": 700}
    assert result.price is not None and 150 <= result.price <= 180
    assert sum(bought.values()) == 700 and bought["bob"] <= 300  # nothing at bob's 130
