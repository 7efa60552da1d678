"""Reputation end to end: real gateways (Modbus devices, the broker, signed settlements, ledgers)
cap a member that sold energy it did not deliver, and keep capping it after they restart.

home-1 has the sun and a full battery but a certificate for 600 W of export (10 Wh per 60 s
interval), so two buyers always want more than it may sell. A fault makes it import whatever its
gateway does (a load of 20 kW it never forecast, in the last third of every interval): every sale
is a shortfall its own signed settlement admits. Its neighbours then restart, rebuild its
reputation from their ledgers and the settlements the broker still retains, and clip its offers
with it: an offer its key signs past the cap is clipped by every gateway.
"""

from __future__ import annotations

from pathlib import Path
from unittest.mock import patch

import pytest

from gateway.identity import load_certificate, load_key_file, save_envelope
from gateway.market.peerlink import PeerLink
from protocols.market import Agreed, topics
from protocols.messages import Bid, MembershipCertificate
from protocols.signing import sign
from sim_devices.demo.community import Rules
from tests.street import INTERVAL_MS, NAMES, Street, street

pytestmark = pytest.mark.realtime(cost_s=40)

SELLER, NEIGHBOURS = "home-1", ("home-2", "home-3")
EXPORT_W = 600  # 10 Wh in a 60 s interval
LIMIT_WH = EXPORT_W * INTERVAL_MS // 3_600_000
COMMUNITY = Rules().community


def narrow_export(out: Path) -> None:
    """Re-issue the seller's certificate as the authority would, with ``EXPORT_W`` of export."""
    path = out / SELLER / "node.cert"
    envelope, cert = load_certificate(path)
    authority = load_key_file(out / "authority.key")
    narrowed = MembershipCertificate(**{**cert.model_dump(), "export_limit_w": EXPORT_W})
    save_envelope(path, sign("cert", narrowed, authority))
    assert envelope.signer == sign("cert", cert, authority).signer


def now_ms(g: Street) -> int:
    return g.nodes[SELLER].clock.now_ms()


def surge(_spec: object, t_ms: int) -> int:
    """The seller's load: 20 kW in the last 20 s of every minute, its usual 300 W otherwise."""
    return 20_000 if t_ms % INTERVAL_MS >= 40_000 else 300


def short_sales(g: Street, node: str) -> list[int]:
    """The intervals in which ``SELLER`` sold and delivered less, as ``node``'s gateway accepted
    its signed settlements."""
    agent = g.nodes[node].agent
    assert agent is not None
    return [k for k in range(g.now_k() - 6, g.now_k())
            if (s := agent.settlements(k).get(SELLER)) is not None
            and s.cleared_wh < 0 and s.delivered_wh > s.cleared_wh]


async def test_neighbours_restarted_from_their_ledgers_cap_a_member_that_under_delivered(
    tmp_path: Path,
) -> None:
    async with street(tmp_path, before_start=narrow_export) as g:
        home = g.world.home(SELLER)
        with patch.object(home._profiles, "base_load_w", side_effect=surge):
            # a short sale settled and accepted by both neighbours
            await g.until(lambda: all(short_sales(g, n) for n in NEIGHBOURS),
                          timeout_s=90)
            for name in NEIGHBOURS:
                await g.stop(name)
            for name in NEIGHBOURS:
                await g.start(name)
            k = g.now_k() + 3  # past the restarted gateways' first interval

            def reputations() -> dict[str, int]:
                return {n: agent.reputation(SELLER, k) for n in NAMES
                        if (agent := g.nodes[n].agent) is not None}

            # rebuilt alike (the ledger's, and the broker's retained ones since its last block),
            # long before the gate of k
            await g.until(lambda: len(set(reputations().values())) == 1, timeout_s=5)
            assert now_ms(g) < g.nodes[SELLER].timing.gate_close_ms(k)
            assert reputations()[SELLER] < 1_000, reputations()
            cap = LIMIT_WH * reputations()[SELLER] // 1_000
            assert cap < LIMIT_WH

            # The seller's key signs an offer of its whole limit for k, past its cap.
            offer = Bid(community=COMMUNITY, interval=k, node=SELLER, seq=1_000,
                        side="sell", energy_wh=LIMIT_WH, limit_price=1, created_ms=0)
            seller_key = load_key_file(tmp_path / SELLER / "node.key")
            async with PeerLink(broker_url=g.broker_url, community=COMMUNITY,
                                node="forger") as link:
                await link.publish(topics.bid(COMMUNITY, k, SELLER),
                                   sign("bid", offer, seller_key).to_bytes(), retain=True)
            await g.until(lambda: all(k in g.closed[n] for n in NAMES), timeout_s=60)
    outcomes = [g.closed[n][k].outcome for n in NAMES]
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert {n for o in agreed for n in o.committed_by} >= set(NEIGHBOURS), outcomes
    assert len({o.result_hash for o in agreed}) == 1
    seller = agreed[0].result.outcomes.of(SELLER)
    assert seller is not None and seller.sold_wh == cap  # the buyers wanted more
