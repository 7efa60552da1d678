"""Settlement through a real broker: three gateways settle an agreed interval with tagged meter
readings, every gateway verifies the others', a short delivery lowers the seller's reputation
everywhere and caps its next offer, and a settlement that contradicts the agreed result is
rejected; a gateway that abstained but learnt the quorum's result during the interval settles
against it, so the community's money still balances."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

import pytest

from gateway.market.agent import MarketAgent
from gateway.market.peerlink import PeerLink
from protocols.market import (
    Abstained,
    Agreed,
    MarketError,
    MeterKey,
    State,
    TaggedMeterReading,
    topics,
)
from protocols.messages import Settlement, SignedEnvelope
from protocols.metering import reading_tag
from protocols.settlement import ReputationRule
from protocols.signing import Rejected, generate_key, sign, verify
from sim_devices.demo.broker import EmbeddedBroker
from tests.market.community import COMMUNITY, PARAMS, Community, faulty, now_ms

NODES = ("alice", "bob", "carol")
KEYS = {node: MeterKey(device_id=f"meter-{node}", key=node.encode() * 8) for node in NODES}
HOUR_MS = 3_600_000


def agent(community: Community, url: str, node: str) -> MarketAgent:
    key = generate_key()
    return MarketAgent(
        broker_url=url, community=COMMUNITY, node=node, identity=key,
        certificate=community.certificate(node, key), authority_key_hex=community.authority_hex,
        timing=community.timing, params=PARAMS, clock=now_ms,
        # Every gateway holds every meter key here, as the community's auditor would.
        meter_keys=KEYS,
        # One interval counts as an hour of energy: the 10 kW export limit is 10,000 Wh.
        energy_interval_ms=HOUR_MS,
    )


def reading(node: str, seq: int, import_wh: int, export_wh: int) -> TaggedMeterReading:
    key = KEYS[node]
    tag = reading_tag(key.key, key.device_id, seq, import_wh, export_wh).hex()
    return TaggedMeterReading(seq=seq, import_wh=import_wh, export_wh=export_wh, tag=tag)


def body(envelope: SignedEnvelope) -> Settlement:
    verified = verify(envelope, expected_kind="settle")
    assert not isinstance(verified, Rejected) and isinstance(verified.body, Settlement)
    return verified.body


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.02)


async def test_settlements_are_verified_everywhere_and_reputation_caps_the_next_offer() -> None:
    community = Community()
    mallory_key = generate_key()
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(EmbeddedBroker())
        agents = [await stack.enter_async_context(agent(community, broker.url, n))
                  for n in NODES]
        alice, bob, carol = agents
        mallory = await stack.enter_async_context(
            PeerLink(broker_url=broker.url, community=COMMUNITY, node="mallory"))
        await mallory.publish(topics.roster(COMMUNITY, "mallory"),
                              community.certificate("mallory", mallory_key).to_bytes(),
                              retain=True)
        await asyncio.sleep(0.3)  # certificates and presence travel
        k = community.next_interval()
        await alice.submit_bid(k, "sell", 2_000, 100)
        await bob.submit_bid(k, "buy", 1_500, 250)
        await carol.submit_bid(k, "buy", 1_000, 200)
        async with asyncio.timeout(10):
            outcomes = [await a.outcome(k) for a in agents]
        assert all(isinstance(o, Agreed) and o.position is not None for o in outcomes)
        with pytest.raises(MarketError, match="has not ended"):
            alice.settle(k, delivered_wh=-2_000, meter_reading=reading("alice", 1, 0, 2000))

        await until(lambda: now_ms() >= community.timing.end_ms(k))
        bought = {o.position.node: o.position.bought_wh for o in outcomes  # type: ignore[union-attr]
                  if isinstance(o, Agreed)}
        # alice sold 2,000 Wh but exported only 1,000; the buyers took what they bought.
        signed = [
            alice.settle(k, delivered_wh=-1_000, meter_reading=reading("alice", 1, 0, 1000)),
            bob.settle(k, delivered_wh=bought["bob"],
                       meter_reading=reading("bob", 1, bought["bob"], 0)),
            carol.settle(k, delivered_wh=bought["carol"],
                         meter_reading=reading("carol", 1, bought["carol"], 0)),
        ]
        own = [body(envelope) for envelope in signed]
        assert all(a.session_state(k) is State.SETTLED for a in agents)
        # mallory had no bid, yet claims to have sold 500 Wh and been paid for it.
        lie = Settlement(community=COMMUNITY, interval=k, node="mallory", cleared_wh=-500,
                         delivered_wh=-500, grid_import_wh=0, grid_export_wh=0, money=-50_000,
                         meter_import_wh=0, meter_export_wh=500, meter_seq=1,
                         meter_tag="ab" * 32)
        await mallory.publish(topics.settle(COMMUNITY, k, "mallory"),
                              sign("settle", lie, mallory_key).to_bytes())

        expected = {s.node: s for s in own}
        await until(lambda: all(a.settlements(k) == expected for a in agents))
        # Each gateway keeps every accepted settlement as its signer sent it.
        assert all(a.signed_settlements(k) == dict(zip(NODES, signed, strict=True))
                   for a in agents)
        await until(lambda: all(a.rejections["settle-mismatch"] == 1 for a in agents))
        capped = k + ReputationRule().lag  # the first interval interval k's settlements cap
        for a in agents:
            assert [a.reputation(n, capped) for n in NODES] == [875, 1000, 1000], a.node
            assert a.offer_cap_wh("alice", capped) == 8_750
            assert a.offer_cap_wh("bob", capped) == 10_000
            assert a.offer_cap_wh("alice", capped - 1) == 10_000  # not yet
            assert dict(a.rejections) == {"settle-mismatch": 1}, a.node
        assert own[0].grid_import_wh == 1_000 and own[0].cleared_wh == -2_000

        # alice's offer there is capped at her reduced cap, not refused.
        offered = await alice.submit_bid(capped, "sell", 20_000, 100)
        assert offered.energy_wh == 8_750


async def test_a_gateway_that_abstained_settles_against_the_quorum_it_learnt_late() -> None:
    community = Community()
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(EmbeddedBroker())
        agents = [await stack.enter_async_context(agent(community, broker.url, n))
                  for n in NODES]
        alice, bob, carol = agents
        await asyncio.sleep(0.3)
        k = community.next_interval()
        alices_bid = topics.bid(COMMUNITY, k, "alice")
        # carol hears alice's bid only once the interval has started: too late to commit
        late = faulty(carol, lambda topic: topic == alices_bid
                      and now_ms() < community.timing.start_ms(k))
        with late:
            await alice.submit_bid(k, "sell", 2_000, 100)
            await bob.submit_bid(k, "buy", 1_500, 250)
            await carol.submit_bid(k, "buy", 1_000, 200)
            async with asyncio.timeout(10):
                outcomes = [await a.outcome(k) for a in agents]
            assert outcomes[2] == Abstained(k, "minority")
            assert all(isinstance(o, Agreed) for o in outcomes[:2])
            # the retained bid comes back with carol's fetch, and she adopts the result
            await until(lambda: carol.agreed(k) is not None)
        adopted = carol.agreed(k)
        assert adopted is not None and adopted.late and adopted.position is not None
        assert adopted.result_hash == outcomes[0].result_hash  # type: ignore[union-attr]
        assert adopted.position.bought_wh > 0  # the peers counted her bid

        await until(lambda: now_ms() >= community.timing.end_ms(k))
        bought = {o.node: o.bought_wh for o in adopted.result.outcomes}
        # carol ran in safe mode: she imported only 300 Wh of the 1,000 she bought
        signed = [
            alice.settle(k, delivered_wh=-2_000, meter_reading=reading("alice", 1, 0, 2000)),
            bob.settle(k, delivered_wh=bought["bob"],
                       meter_reading=reading("bob", 1, bought["bob"], 0)),
            carol.settle(k, delivered_wh=300, meter_reading=reading("carol", 1, 300, 0)),
        ]
        own = {s.node: s for s in map(body, signed)}
        assert carol.session_state(k) is State.SETTLED
        await until(lambda: all(a.settlements(k) == own for a in agents))
    tariffs = PARAMS.tariffs
    grid_money = sum(s.grid_import_wh * tariffs.retail_price
                     - s.grid_export_wh * tariffs.feed_in_price for s in own.values())
    assert sum(s.money for s in own.values()) == grid_money  # P2P money nets to zero
    assert own["carol"].cleared_wh == adopted.position.bought_wh
    assert own["carol"].grid_export_wh == adopted.position.bought_wh - 300
