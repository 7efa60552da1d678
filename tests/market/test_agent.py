"""Three real agents on a real broker (embedded amqtt and Mosquitto) agree on one result and get
their positions."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from protocols.market import Agreed, MarketError, State
from protocols.signing import verify
from tests.market.community import Community


async def test_three_agents_agree_and_trade(any_broker: str) -> None:
    community = Community()
    async with AsyncExitStack() as stack:
        alice, bob, carol = await community.agents(stack, any_broker, "alice", "bob", "carol")
        await asyncio.sleep(0.2)  # presence and certificates travel
        k = community.next_interval()
        await alice.submit_bid(k, "sell", 2_000, 100)
        await bob.submit_bid(k, "buy", 1_500, 250)
        await carol.submit_bid(k, "buy", 1_000, 200)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in (alice, bob, carol)]
        assert all(isinstance(o, Agreed) for o in outcomes), outcomes
        agreed = [o for o in outcomes if isinstance(o, Agreed)]
        assert len({o.result_hash for o in agreed}) == 1
        assert len(agreed[0].committed_by) >= 2  # a quorum of 2/3, whoever was first
        a, b, c = (o.position for o in agreed)
        assert a is not None and b is not None and c is not None
        assert a.sold_wh == 2_000 and b.bought_wh + c.bought_wh == 2_000
        assert b.bought_wh > 0 and c.bought_wh > 0
        assert agreed[0].result.trades
        for agent, outcome in zip((alice, bob, carol), agreed, strict=True):
            assert not agent.rejections, agent.rejections
            # The quorum's proof, as signed by each voter, for the ledger.
            proof = agent.commitments(k)
            assert {verify(e, expected_kind="commit").body.node  # type: ignore[union-attr]
                    for e in proof} == outcome.committed_by
        async with asyncio.timeout(5):
            while alice.session_state(k) is not State.DISPATCHING:
                await asyncio.sleep(0.02)


async def test_a_finished_interval_is_forgotten_but_its_agreed_result_kept_to_settle(
    any_broker: str,
) -> None:
    """The agent keeps nothing per interval for its whole life (the 24 h soak's memory grew by
    one result per interval per agent): once retired, an interval's outcome is gone, and asking
    for it is an error rather than a wait forever. Its agreed result stays while it settles."""
    community = Community()
    async with AsyncExitStack() as stack:
        alice, bob, carol = await community.agents(stack, any_broker, "alice", "bob", "carol")
        await asyncio.sleep(0.2)
        k = community.next_interval()
        await alice.submit_bid(k, "sell", 1_000, 100)
        await bob.submit_bid(k, "buy", 1_000, 250)
        async with asyncio.timeout(10):
            agreed = await alice.outcome(k)
        assert isinstance(agreed, Agreed)
        async with asyncio.timeout(10):
            while alice.session_state(k) is not None:  # retired one interval after its end
                await asyncio.sleep(0.05)
        with pytest.raises(MarketError, match="forgotten"):
            await alice.outcome(k)
        kept = alice.agreed(k)
        assert kept is not None and kept.result_hash == agreed.result_hash
