"""The feeder in the market: buses from certificates, curtailment and network fees agreed on.

Four real agents on a real broker agree on a result curtailed at a congested line, with fees that
grow with distance and are covered by the committed hash; a session on a 100-bus feeder shows the
curtailment falls on the trades with the least gain across the congested line.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.market.agent import MarketAgent
from protocols.clearing import Order, clear, result_hash
from protocols.market import Agreed, Cleared, Timing, agreed_hash
from protocols.market.session import IntervalSession
from protocols.messages import Bid, MembershipCertificate, message_digest
from protocols.network import Feeder, FeederFees, FeeSchedule, Line, line_flows
from protocols.signing import Rejected, generate_key, public_key_hex, sign
from sim_devices.demo.broker import EmbeddedBroker
from tests.market.community import COMMUNITY, HOUR_MS, PARAMS, Community, now_ms

#        sub
#       /    \
#   a (100 m)  d (300 m, 600 Wh: congested)
#   /     \
# b (50 m) c (200 m)
SMALL = Feeder(root="sub", lines=[
    Line(bus="a", parent="sub", length_m=100, capacity_wh=50_000),
    Line(bus="b", parent="a", length_m=50, capacity_wh=50_000),
    Line(bus="c", parent="a", length_m=200, capacity_wh=50_000),
    Line(bus="d", parent="sub", length_m=300, capacity_wh=600),
])
FEES = FeeSchedule(base=1, per_km=20)


def agent(community: Community, url: str, node: str, bus: str) -> MarketAgent:
    key: Ed25519PrivateKey = generate_key()
    cert = MembershipCertificate(
        community=COMMUNITY, node=node, public_key=public_key_hex(key), bus=bus,
        import_limit_w=10_000, export_limit_w=10_000, valid_from_ms=now_ms() - HOUR_MS,
        valid_until_ms=now_ms() + HOUR_MS,
    )
    return MarketAgent(
        broker_url=url, community=COMMUNITY, node=node, identity=key,
        certificate=sign("cert", cert, community.authority),
        authority_key_hex=community.authority_hex, timing=community.timing, params=PARAMS,
        clock=now_ms, feeder=SMALL, fees=FEES,
    )


async def test_four_agents_agree_on_a_curtailed_result_with_distance_fees() -> None:
    community = Community()
    homes = {"sol": "b", "near": "b", "mid": "c", "far": "d"}
    async with EmbeddedBroker() as broker, AsyncExitStack() as stack:
        agents = {n: await stack.enter_async_context(agent(community, broker.url, n, bus))
                  for n, bus in homes.items()}
        await asyncio.sleep(0.3)  # certificates and presence travel
        k = community.next_interval()
        await agents["sol"].submit_bid(k, "sell", 3_000, 90)
        await agents["near"].submit_bid(k, "buy", 1_000, 250)
        await agents["mid"].submit_bid(k, "buy", 1_000, 240)
        await agents["far"].submit_bid(k, "buy", 1_000, 230)
        async with asyncio.timeout(10):
            outcomes = [await a.outcome(k) for a in agents.values()]
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({(o.result_hash, o.fees) for o in agreed}) == 1
    first = agreed[0]
    # The fees are part of what was committed: the hash is not the bare result's.
    assert first.result_hash == agreed_hash(first.result, first.fees)
    assert first.result_hash != result_hash(first.result)
    # Line d carries only its 600 Wh: far's trade was curtailed, the others kept whole.
    energy = {t.buyer: t.energy_wh for t in first.result.trades}
    assert energy == {"near": 1_000, "mid": 1_000, "far": 600}
    flows = line_flows(first.result.trades, feeder=SMALL, bus_of=homes)
    assert all(abs(flows[line.bus]) <= line.capacity_wh for line in SMALL.lines)
    far = next(o for o in first.result.outcomes if o.node == "far")
    assert far.grid_import_wh == 400  # the curtailed energy falls back to the grid
    # One fee per trade, growing with the distance from the seller's bus.
    by_buyer = {fee.buyer: fee for fee in first.fees}
    assert [(by_buyer[b].distance_m, by_buyer[b].fee_per_wh) for b in ("near", "mid", "far")] == [
        (0, 1), (250, 6), (450, 10)]
    assert all(fee.fee == energy[fee.buyer] * fee.fee_per_wh for fee in first.fees)


# --- session level: 100 nodes on a 100-bus feeder, one congested line -------------------------

TIMING = Timing(epoch_ms=0, length_ms=1000, gate_ms=600, grace_ms=100)
K = 5
CAPACITY = 3_000


def feeder_100() -> Feeder:
    """Two branches of 50 buses under the substation; the west trunk (bus0) is congested."""
    lines = [Line(bus="bus0", parent="sub", length_m=400, capacity_wh=CAPACITY),
             Line(bus="bus50", parent="sub", length_m=400, capacity_wh=10**6)]
    for index in range(1, 100):
        if index != 50:
            trunk = "bus0" if index < 50 else "bus50"
            lines.append(Line(bus=f"bus{index}", parent=trunk, length_m=40 + index,
                              capacity_wh=10**6))
    return Feeder(root="sub", lines=lines)


def bid(node: str, side: str, energy_wh: int, price: int) -> Bid:
    return Bid(community=COMMUNITY, interval=K, node=node, seq=0, side=side,  # type: ignore[arg-type]
               energy_wh=energy_wh, limit_price=price, created_ms=0)


def community_100() -> tuple[dict[str, str], list[Bid]]:
    """40 sellers in the west, 10 in the east, 50 buyers in the east; limits spread out."""
    buses: dict[str, str] = {}
    bids: list[Bid] = []
    for index in range(100):
        node = f"n{index:03d}"
        buses[node] = f"bus{index}"
        if index < 40 or 90 <= index:
            bids.append(bid(node, "sell", 200 + 7 * (index % 5), 80 + 3 * (index % 37)))
        elif index >= 50:
            bids.append(bid(node, "buy", 250, 300 - 2 * (index - 50)))
    return buses, bids


def session(buses: dict[str, str]) -> IntervalSession:
    return IntervalSession(
        community=COMMUNITY, interval=K, node="n000", timing=TIMING,
        mechanism="uniform", params=PARAMS, active=lambda now_ms: list(buses),
        bus_of=lambda node: buses.get(node, "nowhere"), feeder=feeder_100(), fees=FEES,
    )


def cleared(s: IntervalSession, bids: list[Bid]) -> Cleared:
    for b in bids:
        assert s.on_bid(b) == []
    s.tick(TIMING.gate_close_ms(K))
    [action] = [a for a in s.tick(TIMING.clear_ms(K)) if isinstance(a, Cleared)]
    return action


def test_100_nodes_on_a_100_bus_feeder_are_curtailed_at_the_margin() -> None:
    buses, bids = community_100()
    feeder = feeder_100()
    got = cleared(session(buses), bids)
    # The same bids in another order give the same agreed hash.
    assert cleared(session(buses), bids[::-1]).result_hash == got.result_hash

    orders = [Order(b.node, b.side, b.energy_wh, b.limit_price, message_digest(b), buses[b.node])
              for b in bids]
    # The clearing before curtailment, fees inside it as the session clears (issue 16).
    fees = FeederFees(feeder=feeder, schedule=FEES)
    free = clear("uniform", orders, replace(PARAMS, fees=fees))
    assert line_flows(free.trades, feeder=feeder, bus_of=buses)["bus0"] > CAPACITY
    flows = line_flows(got.result.trades, feeder=feeder, bus_of=buses)
    assert flows["bus0"] == CAPACITY
    assert all(abs(flows[line.bus]) <= line.capacity_wh for line in feeder.lines)

    limit = {b.node: b.limit_price for b in bids}
    kept = {(t.buyer, t.seller): t.energy_wh for t in got.result.trades}
    crossing = [t for t in free.trades if int(t.seller[1:]) < 50]
    local = [t for t in free.trades if int(t.seller[1:]) >= 50]
    # Trades that stay in the east are untouched; west-to-east ones are cut least gain first:
    # ordered by gain, a prefix is cut entirely, at most one is cut in part, the rest is whole.
    assert local and all(kept[(t.buyer, t.seller)] == t.energy_wh for t in local)
    by_gain = sorted(crossing, key=lambda t: limit[t.buyer] - limit[t.seller]
                     - fees.fee_per_wh(buses[t.seller], buses[t.buyer]))
    status = [0 if (t.buyer, t.seller) not in kept
              else 2 if kept[(t.buyer, t.seller)] == t.energy_wh else 1 for t in by_gain]
    assert status == sorted(status) and status.count(1) <= 1
    assert status[0] == 0 and status[-1] == 2  # something was cut, the best trades were not
    # Every trade pays a fee; across the trunk it costs more than within a branch.
    assert len(got.fees) == len(got.result.trades)
    east = [f.fee_per_wh for f in got.fees if int(f.seller[1:]) >= 50]
    west = [f.fee_per_wh for f in got.fees if int(f.seller[1:]) < 50]
    assert max(east) < min(west)


def test_a_bid_from_a_bus_off_the_feeder_is_rejected() -> None:
    buses, _ = community_100()
    s = session(buses)
    assert s.on_bid(bid("stranger", "sell", 100, 90)) == [Rejected("unknown-bus")]
