"""feeder-100 with real agents: a hundred MarketAgents, one per home of the shipped scenario, each
with a certificate naming the home's feeder bus and each clearing on the scenario's radial feeder
(lines rated per interval). The west estate's midday surplus is more than its line carries: every
agent agrees on the same result, curtailed at that line, with a network fee per trading pair that
grows with distance, and the agreed hash covers the fees.

The broker is Mosquitto, not the embedded one: a hundred clients joining the embedded (pure
Python) broker at once time out on their CONNACKs and PUBACKs while it fans out the retained
certificates, so this test exercises the agents at the scale Mosquitto serves in a real street.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gateway.market.agent import MarketAgent
from protocols.clearing import Order, clear
from protocols.market import Agreed, Timing, agreed_hash
from protocols.messages import MembershipCertificate, message_digest
from protocols.network import line_flows
from protocols.signing import generate_key, public_key_hex, sign
from sim_devices.scenario import load_scenario
from tests.brokers import mosquitto_config
from tests.deploy.mosquitto import Brokers, free_port
from tests.market.community import HOUR_MS, PARAMS, Community, now_ms

pytestmark = [pytest.mark.mosquitto, pytest.mark.realtime(cost_s=60)]

SCENARIO = load_scenario("feeder-100")
FEEDER = SCENARIO.feeder.radial().for_market(  # type: ignore[union-attr]
    interval_s=SCENARIO.market.interval_s)
FEES = SCENARIO.market.fees()
BUS_OF = SCENARIO.bus_of()
COMMUNITY = SCENARIO.market.community


def midday_bids() -> dict[str, tuple[str, int, int]]:
    """What each home offers or asks for one interval at midday, from its nameplate: the west
    estate sells its surplus, every other north home a quarter of its own (a little cheaper, from
    nearer); the south homes buy a fifth of their battery, more than the west line can carry.
    Limits spread so the clearing has a margin to cut at."""
    hours = SCENARIO.market.interval_s / 3600
    bids = {}
    for index, spec in enumerate(SCENARIO.home_specs()):
        surplus_w = spec.pv_peak_w * 9 // 10 - spec.base_load_w
        if BUS_OF[spec.name] == "west":
            bids[spec.name] = ("sell", int(surplus_w * hours), 90 + index % 25)
        elif BUS_OF[spec.name] == "south":
            bids[spec.name] = ("buy", spec.battery_wh // 5, 260 - index % 25)
        elif BUS_OF[spec.name] == "north" and index % 2:
            bids[spec.name] = ("sell", int(surplus_w * hours) // 4, 85 + index % 5)
    return bids


def agent(community: Community, url: str, node: str) -> MarketAgent:
    key = generate_key()
    cert = MembershipCertificate(
        community=COMMUNITY, node=node, public_key=public_key_hex(key), bus=BUS_OF[node],
        import_limit_w=20_000, export_limit_w=20_000, valid_from_ms=now_ms() - HOUR_MS,
        valid_until_ms=now_ms() + HOUR_MS,
    )
    return MarketAgent(
        broker_url=url, community=COMMUNITY, node=node, identity=key,
        certificate=sign("cert", cert, community.authority),
        authority_key_hex=community.authority_hex, timing=community.timing, params=PARAMS,
        clock=now_ms, feeder=FEEDER, fees=FEES,
        # A hundred agents share one process on two cores: a coarser tick still meets every
        # phase, and a hundred connecting at once may wait longer for their CONNACKs.
        tick_s=0.2, connect_timeout_s=30,
    )


async def test_a_hundred_agents_agree_on_the_curtailed_feeder_100_clearing(
    mosquitto: Brokers, tmp_path: Path,
) -> None:
    port = free_port()
    mosquitto.start(mosquitto_config(tmp_path, port), port, tmp_path / "mosquitto.log")
    url = f"mqtt://127.0.0.1:{port}"
    # Long phases: every agent verifies every certificate, bid and commitment (some 30,000
    # Ed25519 checks in this one process, on two shared cores), so the 10,000 commitment
    # deliveries get up to 40 s (agreement comes as soon as a quorum is in); nothing here asserts
    # how fast. Interval 1 is the first the agents see and its gate closes 30 s from now: time to
    # join and bid (else they trade in interval 2); clearing waits 12 s more for the bids.
    community = Community(timing=Timing(epoch_ms=now_ms() + 12_000, length_ms=70_000,
                                        gate_ms=52_000, grace_ms=12_000))
    homes = [spec.name for spec in SCENARIO.home_specs()]
    assert len(homes) == 100
    bids = midday_bids()
    async with AsyncExitStack() as stack:
        # All join at once: one by one, the later ones would wait for their CONNACK behind the
        # earlier ones' work on every certificate that arrives.
        joined = await asyncio.gather(*(stack.enter_async_context(agent(community, url, n))
                                        for n in homes))
        agents = dict(zip(homes, joined, strict=True))
        await asyncio.sleep(2)  # certificates and presence travel
        k = community.next_interval(margin_ms=3_000)
        made = await asyncio.gather(*(agents[node].submit_bid(k, side, energy, price)  # type: ignore[arg-type]
                                      for node, (side, energy, price) in bids.items()))
        submitted = dict(zip(bids, made, strict=True))
        async with asyncio.timeout(120):
            outcomes = await asyncio.gather(*(a.outcome(k) for a in agents.values()))

    assert all(isinstance(o, Agreed) for o in outcomes), {o.reason for o in outcomes
                                                          if not isinstance(o, Agreed)}
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({(o.result_hash, o.bid_set_digest) for o in agreed}) == 1
    first = agreed[0]
    assert first.result_hash == agreed_hash(first.result, first.fees)
    assert {o.node for o in first.result.outcomes} == set(bids)  # every bid was heard

    # Without the feeder the west estate would push more through its line than it carries.
    orders = [Order(b.node, b.side, b.energy_wh, b.limit_price, message_digest(b), BUS_OF[b.node])
              for b in submitted.values()]
    free = clear("uniform", orders, PARAMS)
    capacity = {line.bus: line.capacity_wh for line in FEEDER.lines}
    assert line_flows(free.trades, feeder=FEEDER, bus_of=BUS_OF)["west"] > capacity["west"]
    # Agreed: curtailed to exactly the west line's rating, no line over its rating.
    flows = line_flows(first.result.trades, feeder=FEEDER, bus_of=BUS_OF)
    assert flows["west"] == capacity["west"]  # + = towards the substation
    assert all(abs(flows[bus]) <= cap for bus, cap in capacity.items())
    sold_west = sum(t.energy_wh for t in first.result.trades if BUS_OF[t.seller] == "west")
    assert sold_west < sum(e for side, e, _ in (bids[n] for n in bids if BUS_OF[n] == "west"))

    # One fee per trading pair, paid by the buyer, growing with the electrical distance.
    assert len(first.fees) == len(first.result.trades)
    pairs = {(t.buyer, t.seller): t.energy_wh for t in first.result.trades}
    assert {(f.buyer, f.seller) for f in first.fees} == set(pairs)
    for fee in first.fees:
        assert fee.fee_per_wh == FEES.fee_per_wh(fee.distance_m)
        assert fee.fee == pairs[fee.buyer, fee.seller] * fee.fee_per_wh
    by_distance = sorted({(f.distance_m, f.fee_per_wh) for f in first.fees})
    assert len(by_distance) > 1
    assert [p for _, p in by_distance] == sorted(p for _, p in by_distance)
    assert by_distance[0][1] < by_distance[-1][1]
