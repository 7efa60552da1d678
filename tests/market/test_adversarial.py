"""Attacks through the real broker: each is rejected with its own reason counted at every honest
gateway, and the honest gateways still agree and trade.

One attacker connection ("mallory", a certified member) publishes on any topic, as a broker without
per-node ACLs allows: forged signatures, an unknown key, an expired certificate, malformed JSON, an
oversized payload, a bid replayed from an earlier interval, equivocation, a flood of bids (after
which no gateway clears her bids of that interval) and a wrong commitment. Two intervals, so
that a replay from the first can be tried in the second.
Run on the embedded amqtt and on Mosquitto.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from gateway.market.agent import MarketAgent
from gateway.market.peerlink import PeerLink
from protocols.market import Agreed, Timing, topics
from protocols.messages import DEFAULT_MAX_ENVELOPE_BYTES, Bid, BidSet, Commitment, SignedEnvelope
from protocols.signing import generate_key, sign
from tests.market.community import COMMUNITY, HOUR_MS, Community, now_ms

FLOOD = 100


def bid(node: str, k: int, seq: int, energy_wh: int, side: str = "sell") -> Bid:
    return Bid(community=COMMUNITY, interval=k, node=node, seq=seq, side=side,  # type: ignore[arg-type]
               energy_wh=energy_wh, limit_price=120, created_ms=now_ms())


async def captured(link: PeerLink, topic: str) -> bytes:
    async with asyncio.timeout(5):
        async for msg in link.messages():
            if msg.topic == topic and msg.payload:
                return msg.payload
    raise AssertionError("unreachable")


async def agreed_everywhere(agents: list[MarketAgent], k: int) -> Agreed:
    async with asyncio.timeout(10):
        outcomes = [await agent.outcome(k) for agent in agents]
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({o.result_hash for o in agreed}) == 1
    assert agreed[0].result.trades
    return agreed[0]


async def test_attacks_are_rejected_and_honest_agents_still_trade(any_broker: str) -> None:
    community = Community(timing=Timing(epoch_ms=now_ms(), length_ms=2000, gate_ms=1000,
                                        grace_ms=300))
    mallory_key, eve_key, old_key = generate_key(), generate_key(), generate_key()
    expired = community.certificate("old", old_key, valid_from_ms=now_ms() - 2 * HOUR_MS,
                                    valid_until_ms=now_ms() - HOUR_MS)
    async with AsyncExitStack() as stack:
        mallory = await stack.enter_async_context(
            PeerLink(broker_url=any_broker, community=COMMUNITY, node="mallory"))
        await mallory.publish(topics.roster(COMMUNITY, "mallory"),
                              community.certificate("mallory", mallory_key).to_bytes(),
                              retain=True)
        honest = await community.agents(stack, any_broker, "alice", "bob", "carol")
        alice, bob, carol = honest
        await asyncio.sleep(0.3)  # certificates and presence reach everyone
        k1 = community.next_interval(margin_ms=700)

        # --- interval k1: honest bids, plus garbage from outside the community -----------------
        await alice.submit_bid(k1, "sell", 2_000, 100)
        await bob.submit_bid(k1, "buy", 1_500, 250)
        await carol.submit_bid(k1, "buy", 1_000, 200)
        alice_k1 = await captured(mallory, topics.bid(COMMUNITY, k1, "alice"))

        async def send(topic: str, payload: bytes) -> None:
            await mallory.publish(topic, payload)

        forged = sign("bid", bid("mallory", k1, 0, 10), mallory_key)
        tampered = SignedEnvelope(kind="bid", body={**forged.body, "energy_wh": 9_999},
                                  signer=forged.signer, sig=forged.sig)
        await send(topics.bid(COMMUNITY, k1, "mallory"), tampered.to_bytes())
        await send(topics.bid(COMMUNITY, k1, "eve"), sign("bid", bid("eve", k1, 0, 10),
                                                          eve_key).to_bytes())
        await send(topics.roster(COMMUNITY, "old"), expired.to_bytes())
        await send(topics.bid(COMMUNITY, k1, "old"), sign("bid", bid("old", k1, 0, 10),
                                                          old_key).to_bytes())
        await send(topics.bid(COMMUNITY, k1, "eve"), b'{"kind": "bid", not json')
        # Over the envelope limit, under the packet limit: the brokers relay it, the gateways
        # refuse it (bigger ones never leave the publisher: tests/deploy/test_oversized.py).
        await send(topics.bid(COMMUNITY, k1, "eve"), b"x" * (DEFAULT_MAX_ENVELOPE_BYTES + 1))
        for seq in range(FLOOD):
            await send(topics.bid(COMMUNITY, k1, "mallory"),
                       sign("bid", bid("mallory", k1, seq, 10 + seq), mallory_key).to_bytes())
        # A commitment to a result nobody computed, from an (empty) bid set it publishes: an
        # honest gateway fetches the set, clears it and finds the claim false.
        empty = BidSet(community=COMMUNITY, interval=k1, node="mallory", bid_digests=())
        wrong = Commitment(community=COMMUNITY, interval=k1, node="mallory",
                           bid_set_digest=empty.set_digest(), result_hash="0" * 64,
                           mechanism="uniform")
        await mallory.publish(topics.bidset(COMMUNITY, k1, "mallory"),  # retained, as a gateway
                              sign("bidset", empty, mallory_key).to_bytes(), retain=True)
        await send(topics.commit(COMMUNITY, k1, "mallory"),
                   sign("commit", wrong, mallory_key).to_bytes())

        first = await agreed_everywhere(honest, k1)
        assert "mallory" not in first.committed_by

        # --- interval k2: a replay of alice's k1 bid, and mallory equivocates ------------------
        k2 = k1 + 1
        await send(topics.bid(COMMUNITY, k2, "alice"), alice_k1)
        await send(topics.bid(COMMUNITY, k2, "mallory"),
                   sign("bid", bid("mallory", k2, 0, 500), mallory_key).to_bytes())
        await send(topics.bid(COMMUNITY, k2, "mallory"),
                   sign("bid", bid("mallory", k2, 0, 900), mallory_key).to_bytes())
        await alice.submit_bid(k2, "sell", 1_000, 90)
        await bob.submit_bid(k2, "buy", 800, 260)
        await carol.submit_bid(k2, "buy", 800, 210)
        second = await agreed_everywhere(honest, k2)
        assert "mallory" not in {o.node for o in second.result.outcomes}

    expected = {
        "bad-signature": 1, "unknown-key": 1, "malformed-json": 1, "oversized": 1,
        "expired": 2,  # the certificate, then the bid signed under it
        "flood": FLOOD - 8,  # a node's first 8 distinct bids per interval are heard
        "wrong-commitment": 1, "replay": 1, "equivocation": 1,
    }
    for agent in honest:
        assert dict(agent.rejections) == expected, agent.node
        assert [(e.node, e.reason, e.interval) for e in agent.evidence] == [
            ("mallory", "flood", k1), ("mallory", "equivocation", k2)]
