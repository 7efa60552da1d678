"""A closed interval stays closed: a valid signed commitment for an interval every gateway has
retired (a hostile member's, or a stale retained copy that the broker replays after a reconnect)
is counted as "stale" at every gateway and brings nothing back: no gateway rebuilds the
interval, and none publishes a commitment for it again.

Through a real broker (the embedded amqtt and Mosquitto), with three real agents, one of them
connected through a TCP proxy that the test severs so that it reconnects and gets the broker's
retained messages again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiomqtt

from gateway.market.agent import MarketAgent
from gateway.market.peerlink import parse_broker_url
from protocols.market import Agreed, topics
from protocols.messages import Commitment, SignedEnvelope
from protocols.signing import generate_key, sign, verify
from tests.faults.proxy import TcpProxy
from tests.market.community import COMMUNITY, Community

HONEST = ("alice", "bob", "dave")


class CommitWatch:
    """Every commitment the broker relays, in order, as (node, interval, payload), and the
    topics whose retained commitment was cleared."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, bytes]] = []
        self.cleared: set[str] = set()

    async def run(self, client: aiomqtt.Client) -> None:
        await client.subscribe(f"{topics.ROOT}/{COMMUNITY}/{topics.Kind.COMMIT}/+/+", qos=1)
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes) or not payload:
                self.cleared.add(message.topic.value)
                continue
            checked = verify(SignedEnvelope.from_bytes(payload), expected_kind="commit")
            assert not isinstance(checked, Exception) and isinstance(checked.body, Commitment)
            self.seen.append((checked.body.node, checked.body.interval, payload))


@asynccontextmanager
async def watching(host: str, port: int) -> AsyncIterator[CommitWatch]:
    watch = CommitWatch()
    async with aiomqtt.Client(host, port) as client:
        task = asyncio.create_task(watch.run(client))
        try:
            yield watch
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):  # a bound for a loaded machine, not a speed claim
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_retired_interval_stays_retired_whatever_commitment_comes_for_it(
    any_broker: str,
) -> None:
    community = Community()
    _, host, port = parse_broker_url(any_broker)
    mallory_key = generate_key()
    async with AsyncExitStack() as stack:
        watch = await stack.enter_async_context(watching(host, port))
        mallory = await stack.enter_async_context(aiomqtt.Client(host, port))
        await mallory.publish(topics.roster(COMMUNITY, "mallory"),
                              community.certificate("mallory", mallory_key).to_bytes(),
                              qos=1, retain=True)
        proxy = await stack.enter_async_context(TcpProxy(target=(host, port)))
        alice, bob = await community.agents(stack, any_broker, "alice", "bob")
        dave = await stack.enter_async_context(
            community.agent(f"mqtt://127.0.0.1:{proxy.port}", "dave"))
        honest: list[MarketAgent] = [alice, bob, dave]
        await asyncio.sleep(0.3)  # certificates and presence travel
        k = community.next_interval()
        await alice.submit_bid(k, "sell", 2_000, 100)
        await bob.submit_bid(k, "buy", 1_500, 250)
        await dave.submit_bid(k, "buy", 1_000, 200)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in honest]
        assert all(isinstance(o, Agreed) for o in outcomes), outcomes
        agreed = outcomes[0]
        assert isinstance(agreed, Agreed)
        await until(lambda: all(a.session_state(k) is None for a in honest))  # retired
        # Retiring clears each node's retained commitment; wait until the broker has the clears,
        # or one could land after the stale copy below and remove it before dave reconnects.
        await until(lambda: all(topics.commit(COMMUNITY, k, node) in watch.cleared
                                for node in HONEST))
        alices = next(p for node, i, p in watch.seen if (node, i) == ("alice", k))
        before = len(watch.seen)

        # A certified member's valid commitment to the agreed result, live ...
        valid = Commitment(community=COMMUNITY, interval=k, node="mallory",
                           bid_set_digest=agreed.bid_set_digest, result_hash=agreed.result_hash,
                           mechanism="uniform")
        await mallory.publish(topics.commit(COMMUNITY, k, "mallory"),
                              sign("commit", valid, mallory_key).to_bytes(), qos=1)
        # ... and alice's own commitment for k back on the broker, retained: what a clear that
        # never reached the broker leaves behind.
        await mallory.publish(topics.commit(COMMUNITY, k, "alice"), alices, qos=1, retain=True)
        await until(lambda: all(a.rejections["stale"] >= 2 for a in honest))

        # dave's link drops and comes back: the broker replays the stale retained commitment.
        proxy.sever()
        proxy.restore()
        await until(lambda: dave._link.connects >= 2 and dave.rejections["stale"] >= 3)
        await asyncio.sleep(0.5)  # time for a revived interval to show (it took one tick)

        assert all(a.session_state(k) is None for a in honest)
        revived = [(node, p) for node, i, p in watch.seen[before:] if i == k and node in HONEST]
        assert revived == [("alice", alices)], "a gateway committed to a retired interval again"
        for agent in honest:
            kept = agent.agreed(k)
            assert kept is not None and kept.result_hash == agreed.result_hash
            # ("stale-presence": a reconnect's old will may reach a peer after the new online)
            assert not agent.rejections.keys() - {"stale", "stale-presence"}, agent.rejections
