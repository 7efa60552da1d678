"""Presence decides who counts towards a quorum, so only a member can say it is online or
offline: an outsider's retained "offline" for every node, an "offline" it signed itself and an old
signed "offline" replayed after the member reconnected change nothing, on a broker without any
ACL. The member's own last will, signed in advance for its connection, still marks it offline
when it vanishes, and its next connection online again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

import aiomqtt

from gateway.market.agent import MarketAgent
from gateway.market.peerlink import parse_broker_url
from protocols.market import Agreed, topics
from protocols.messages import Presence
from protocols.signing import generate_key, sign
from tests.faults.proxy import TcpProxy
from tests.market.community import COMMUNITY, Community, now_ms

NODES = ("alice", "bob", "carol")


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):  # a bound for a loaded machine, not a speed claim
        while not condition():
            await asyncio.sleep(0.02)


async def test_no_outsider_or_replay_can_make_a_member_look_offline(any_broker: str) -> None:
    community = Community()
    _, host, port = parse_broker_url(any_broker)
    keys = {node: generate_key() for node in NODES}
    captured: dict[str, bytes] = {}  # each node's signed goodbye from its first run
    async with AsyncExitStack() as stack:
        outsider = await stack.enter_async_context(aiomqtt.Client(host, port))
        await outsider.subscribe(f"{topics.ROOT}/{COMMUNITY}/{topics.Kind.PRESENCE}/+", qos=1)

        async def capture() -> None:
            async for message in outsider.messages:
                node = message.topic.value.rsplit("/", 1)[1]
                if isinstance(message.payload, bytes) and b'"offline"' in message.payload:
                    captured.setdefault(node, message.payload)

        listener = asyncio.create_task(capture())
        try:
            async with AsyncExitStack() as first_run:  # each gateway runs once, then stops
                for node in NODES:
                    await first_run.enter_async_context(
                        community.agent(any_broker, node, keys[node]))
            await until(lambda: captured.keys() == set(NODES))
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

        honest: list[MarketAgent] = [
            await stack.enter_async_context(community.agent(any_broker, node, keys[node]))
            for node in NODES]
        await asyncio.sleep(0.3)  # certificates and presence travel
        forger = generate_key()
        for node in NODES:
            where = topics.presence(COMMUNITY, node)
            forged = sign("presence", Presence(community=COMMUNITY, node=node,
                                               session=2**52, state="offline"), forger)
            for payload in (b"offline", forged.to_bytes(), captured[node]):
                await outsider.publish(where, payload, qos=1, retain=True)
        await until(lambda: all(a.rejections["stale-presence"] >= len(NODES) for a in honest))

        k = community.next_interval()
        await honest[0].submit_bid(k, "sell", 2_000, 100)
        await honest[1].submit_bid(k, "buy", 1_500, 250)
        await honest[2].submit_bid(k, "buy", 1_000, 200)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in honest]
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    assert len({o.result_hash for o in outcomes if isinstance(o, Agreed)}) == 1
    for agent in honest:
        # each of the three, on every node's topic: unsigned, signed by no member, older (the
        # broker may also replay a node's goodbye from its first run after its new "online")
        rejected = agent.rejections
        # "stale": the first run's retained messages of a closed interval, replayed to the
        # second run by the broker, are refused as they should be; nothing else is refused
        assert (rejected.keys() - {"stale"}, rejected["malformed-json"],
                rejected["unknown-key"]) == (
            {"malformed-json", "unknown-key", "stale-presence"}, 3, 3), (agent.node, rejected)


async def test_a_vanished_member_is_offline_by_its_signed_will_and_back_when_it_reconnects(
    any_broker: str,
) -> None:
    community = Community()
    _, host, port = parse_broker_url(any_broker)
    async with AsyncExitStack() as stack:
        alice, bob = await community.agents(stack, any_broker, "alice", "bob")
        proxy = await stack.enter_async_context(TcpProxy(target=(host, port)))
        await stack.enter_async_context(
            community.agent(f"mqtt://127.0.0.1:{proxy.port}", "dave", keepalive_s=1))

        def present(agent: MarketAgent) -> bool:
            return "dave" in agent._market.active(now_ms())

        await until(lambda: present(alice) and present(bob))
        proxy.sever()  # no goodbye: the broker publishes dave's will
        await until(lambda: not present(alice) and not present(bob))
        proxy.restore()  # dave's link reconnects by itself, as a new session
        await until(lambda: present(alice) and present(bob))
        assert not alice.rejections and not bob.rejections
