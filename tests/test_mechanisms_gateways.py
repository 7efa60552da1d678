"""Every mechanism through the gateways' market seat: four agents on a real broker, real Ed25519
signatures, agree on one result, trade energy, settle it, and every gateway accepts every
settlement; each mechanism's defining identity holds in the agreed interval.

Pool mechanisms (mmr, sdr, bill-sharing) are bid at the grid's own prices (sell at feed-in, buy
at retail), the limits at which a member loses nothing by pooling; with an owner's narrower limits
a pool can leave everyone out (bill sharing prices at retail when the community is short).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Literal

import pytest

from gateway.market.agent import MarketAgent
from protocols.clearing import Result, Tariffs
from protocols.clearing.sdr import sdr_price
from protocols.market import Agreed, MeterKey, TaggedMeterReading
from protocols.metering import reading_tag
from sim_devices.demo.broker import EmbeddedBroker
from tests.market.community import PARAMS, Community, now_ms

pytestmark = pytest.mark.realtime

MECHANISMS = ("uniform", "trade-reduction", "mmr", "sdr", "bill-sharing", "cda")
POOLS = ("mmr", "sdr", "bill-sharing")
NODES = ("s1", "s2", "b1", "b2")
TARIFFS: Tariffs = PARAMS.tariffs
R, F = TARIFFS.retail_price, TARIFFS.feed_in_price
KEYS = {node: MeterKey(device_id=f"meter-{node}", key=node.encode() * 16) for node in NODES}
Bids = dict[str, tuple[Literal["buy", "sell"], int, int]]


def bids(mechanism: str) -> Bids:
    """Supply short of demand; limits that cross (two pairs, so trade reduction keeps one)."""
    if mechanism in POOLS:
        return {"s1": ("sell", 600, F), "s2": ("sell", 400, F),
                "b1": ("buy", 900, R), "b2": ("buy", 700, R)}
    return {"s1": ("sell", 600, 100), "s2": ("sell", 400, 140),
            "b1": ("buy", 900, 260), "b2": ("buy", 700, 180)}


def reading(node: str, seq: int, import_wh: int, export_wh: int) -> TaggedMeterReading:
    key = KEYS[node]
    tag = reading_tag(key.key, key.device_id, seq, import_wh, export_wh).hex()
    return TaggedMeterReading(seq=seq, import_wh=import_wh, export_wh=export_wh, tag=tag)


def check_identity(mechanism: str, result: Result, offered: Bids) -> None:
    """The rule each mechanism is defined by, on the agreed result."""
    outcomes = {o.node: o for o in result.outcomes}
    demand = sum(o.bought_wh + o.grid_import_wh for o in outcomes.values())
    supply = sum(o.sold_wh + o.grid_export_wh for o in outcomes.values())
    traded = sum(o.sold_wh for o in outcomes.values())
    buyers = [o for o in outcomes.values() if offered[o.node][0] == "buy"]
    sellers = [o for o in outcomes.values() if offered[o.node][0] == "sell"]
    buyers_pay = sum(o.paid_p2p + o.paid_grid for o in buyers)
    sellers_get = sum(o.received_p2p + o.received_grid for o in sellers)
    # Individual rationality in every mechanism: within each signed limit, per Wh.
    for o in buyers:
        assert o.paid_p2p <= o.bought_wh * offered[o.node][2]
    for o in sellers:
        assert o.received_p2p >= o.sold_wh * offered[o.node][2]
    if mechanism == "uniform":  # a competitive-equilibrium price: nobody left out would trade
        assert result.price is not None
        assert all(o.grid_import_wh == 0 or offered[o.node][2] <= result.price for o in buyers)
        assert all(o.grid_export_wh == 0 or offered[o.node][2] >= result.price for o in sellers)
    elif mechanism == "mmr":  # the midpoint; the long side (buyers here) averages it with retail
        assert result.price == (R + F) // 2 and demand > supply == traded
        assert buyers_pay == result.price * supply + R * (demand - supply)
    elif mechanism == "sdr":  # the buyers' average is price x SDR + retail x (1 - SDR)
        assert result.price == sdr_price(demand, supply, TARIFFS) and supply == traded
        assert buyers_pay == result.price * supply + R * (demand - supply)
    elif mechanism == "bill-sharing":  # the members pay the pooled net bill, no more, no less
        assert buyers_pay - sellers_get == R * max(demand - supply, 0) - F * max(supply - demand, 0)
    elif mechanism == "cda":  # pay-as-bid pairs: every trade within both limits
        assert result.price is None
        for trade in result.trades:
            assert offered[trade.seller][2] <= trade.price <= offered[trade.buyer][2]


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_a_community_of_gateways_agrees_trades_and_settles_under(mechanism: str) -> None:
    community = Community()
    offered = bids(mechanism)
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(EmbeddedBroker())
        agents: list[MarketAgent] = [
            await stack.enter_async_context(community.agent(
                broker.url, node, mechanism=mechanism, meter_keys=KEYS,
                energy_interval_ms=3_600_000))
            for node in NODES]
        await asyncio.sleep(0.3)  # certificates and presence travel
        k = community.next_interval()
        for agent in agents:
            side, energy, price = offered[agent.node]
            await agent.submit_bid(k, side, energy, price)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in agents]
        agreed = [o for o in outcomes if isinstance(o, Agreed)]
        assert len(agreed) == len(NODES) and len({o.result_hash for o in agreed}) == 1, outcomes
        result = agreed[0].result
        assert result.mechanism == mechanism
        assert sum(o.sold_wh for o in result.outcomes) > 0  # energy traded, not nothing agreed
        check_identity(mechanism, result, offered)

        async with asyncio.timeout(10):
            while now_ms() < community.timing.end_ms(k):
                await asyncio.sleep(0.02)
        signed = {}
        for agent in agents:  # every member delivers what it cleared
            position = result.outcomes.of(agent.node)
            assert position is not None
            net = position.bought_wh - position.sold_wh
            signed[agent.node] = agent.settle(
                k, delivered_wh=net, meter_reading=reading(agent.node, 1, max(net, 0),
                                                           max(-net, 0)))
        async with asyncio.timeout(10):
            while not all(set(a.settlements(k)) == set(NODES) for a in agents):
                await asyncio.sleep(0.02)
        assert all(not a.rejections for a in agents), [dict(a.rejections) for a in agents]
        settled = agents[0].settlements(k)
        # P2P money nets to zero: the members' bills sum to what the grid was paid.
        grid = sum(s.grid_import_wh * R - s.grid_export_wh * F for s in settled.values())
        assert sum(s.money for s in settled.values()) == grid
