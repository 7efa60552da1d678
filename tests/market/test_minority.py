"""A gateway that missed messages, through the real broker (faults injected in its PeerLink):

* it missed a bid: its result differs from the quorum's, it fetches the retained bids, recomputes
  and joins;
* it cannot get the bid at all: it abstains ("minority") while the others agree;
* its connection died after the commitments went out: the broker hands it the retained
  commitments when it reconnects, and it agrees;
* every gateway missed a different bid, so no first commitment has a quorum: halfway to the
  start they all clear the union of the committed bids and agree on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AsyncExitStack

import aiomqtt

from gateway.market.agent import MarketAgent
from protocols.market import Abstained, Agreed, Outcome, Timing, topics
from tests.market.community import COMMUNITY, Community, faulty, now_ms

NODES = ("alice", "bob", "carol", "dave")  # quorum: 3 of 4


def community() -> Community:
    return Community(timing=Timing(epoch_ms=now_ms(), length_ms=2000, gate_ms=1200,
                                   grace_ms=200))


def first_copy_lost(topic: str, lost: list[str]) -> Callable[[str], bool]:
    """A fault for :func:`faulty`: the first delivery of ``topic`` is lost (noted in ``lost``);
    the broker's retained copy comes back on a fetch."""
    def fault(delivered: str) -> bool:
        if delivered == topic and not lost:
            lost.append(topic)
            return True
        return False
    return fault


async def bid_and_wait(c: Community, agents: list[MarketAgent], k: int) -> list[Outcome]:
    alice, bob, carol, dave = agents
    await alice.submit_bid(k, "sell", 2_000, 100)
    await bob.submit_bid(k, "buy", 1_500, 250)
    await carol.submit_bid(k, "buy", 1_000, 200)
    await dave.submit_bid(k, "buy", 500, 180)
    async with asyncio.timeout(10):
        return [await a.outcome(k) for a in agents]


async def test_a_gateway_that_missed_a_bid_fetches_it_and_joins(any_broker: str) -> None:
    c = community()
    async with AsyncExitStack() as stack:
        agents = await c.agents(stack, any_broker, *NODES)
        dave = agents[3]
        await asyncio.sleep(0.3)
        k = c.next_interval()
        missed: list[str] = []
        with faulty(dave, first_copy_lost(topics.bid(COMMUNITY, k, "alice"), missed)):
            outcomes = await bid_and_wait(c, agents, k)
    assert missed, "the fault never fired"
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({o.result_hash for o in agreed}) == 1
    assert "dave" in agreed[3].committed_by  # it re-committed to the quorum's result
    alice = next(o for o in agreed[3].result.outcomes if o.node == "alice")
    assert alice.sold_wh == 2_000 and agreed[3].position is not None  # alice's bid counted
    assert not dave.rejections


async def test_a_gateway_that_cannot_get_the_bid_abstains_and_the_rest_agree(
    any_broker: str,
) -> None:
    c = community()
    async with AsyncExitStack() as stack:
        agents = await c.agents(stack, any_broker, *NODES)
        await asyncio.sleep(0.3)
        k = c.next_interval()
        alices_bid = topics.bid(COMMUNITY, k, "alice")
        with faulty(agents[3], lambda topic: topic == alices_bid):
            outcomes = await bid_and_wait(c, agents, k)
    *majority, dave = outcomes
    assert dave == Abstained(k, "minority")
    assert all(isinstance(o, Agreed) and "dave" not in o.committed_by for o in majority)
    assert len({o.result_hash for o in majority if isinstance(o, Agreed)}) == 1
    for a in agents[:3]:
        # Seen from the majority, dave's short-handed commitment is honest: the bids it lists
        # (all held) clear to the result it claims.
        assert dict(a.rejections) == {"minority-commitment": 1}


async def test_a_gateway_reconnecting_after_the_commitments_still_agrees(any_broker: str) -> None:
    c = community()
    async with AsyncExitStack() as stack:
        agents = await c.agents(stack, any_broker, *NODES)
        dave = agents[3]
        await asyncio.sleep(0.3)
        k = c.next_interval()
        others = {topics.commit(COMMUNITY, k, n) for n in NODES[:3]}
        lost: set[str] = set()

        def link_dies_after_the_commitments(topic: str) -> bool:
            if topic not in others or lost == others:
                return False
            lost.add(topic)
            if lost == others:
                raise aiomqtt.MqttError("injected: connection lost")
            return True

        connects = dave._link.connects
        with faulty(dave, link_dies_after_the_commitments):
            outcomes = await bid_and_wait(c, agents, k)
    assert lost == others and dave._link.connects == connects + 1
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    assert len({o.result_hash for o in outcomes if isinstance(o, Agreed)}) == 1


async def test_gateways_that_each_missed_a_different_bid_agree_on_the_union(
    any_broker: str,
) -> None:
    c = community()
    async with AsyncExitStack() as stack:
        agents = await c.agents(stack, any_broker, *NODES)
        await asyncio.sleep(0.3)
        k = c.next_interval()
        missed: dict[str, list[str]] = {n: [] for n in NODES}
        with contextlib.ExitStack() as faults:
            for victim, node in zip(NODES, NODES[1:] + NODES[:1], strict=True):
                agent = next(a for a in agents if a.node == victim)
                fault = first_copy_lost(topics.bid(COMMUNITY, k, node), missed[victim])
                faults.enter_context(faulty(agent, fault))
            outcomes = await bid_and_wait(c, agents, k)
    assert all(missed.values()), f"a fault never fired: {missed}"
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({(o.result_hash, o.bid_set_digest) for o in agreed}) == 1
    assert {o.node for o in agreed[0].result.outcomes} == set(NODES)  # every bid counted
