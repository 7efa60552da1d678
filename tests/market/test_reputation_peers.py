"""Reputation is a rule peers clear by (protocols.reputation): a member that sold energy it did not
deliver has its offers capped in every gateway's clearing, whatever its own gateway asks, and a
peer that restarts takes the settlements back from what its ledger kept and what the broker still
retains, and caps alike."""

from __future__ import annotations

from protocols.market import Abstained, Agreed, TaggedMeterReading, topics
from protocols.messages import Bid, Settlement
from protocols.settlement import ReputationRule
from protocols.signing import sign
from tests.market.community import COMMUNITY
from tests.market.pair import TIMING, InMemoryStreet

K = 2  # the interval alice under-delivers in
CAPPED = K + ReputationRule().lag  # the first interval its settlement caps
HOUR_MS = 3_600_000  # one interval counts as an hour: the 10 kW export limit is 10,000 Wh
NO_TAG = TaggedMeterReading(seq=1, import_wh=0, export_wh=0, tag="ab" * 32)
NODES = ("alice", "bob", "carol")


def under_delivered(*, abstains: str = "") -> InMemoryStreet:
    """alice sells 2,000 Wh in K and exports 1,000; everyone settles it (her reputation for
    CAPPED on: 875 per-mille, her cap 8,750 Wh). ``abstains``: a node that hears nothing of K but
    the settlements, so it has no agreed result of K and settles it with the grid alone."""
    s = InMemoryStreet(*NODES, energy_interval_ms=HOUR_MS)
    s.lost = lambda node, topic: (node == abstains and f"/{topics.slot(K)}/" in topic
                                  and "/settle/" not in topic)
    s.bid("alice", K, "sell", 2_000, 100)
    s.bid("bob", K, "buy", 1_500, 250)
    s.bid("carol", K, "buy", 1_000, 200)
    s.run(TIMING.end_ms(K))
    outcome = s.outcomes["bob"][K]
    assert isinstance(outcome, Agreed)
    bought = {o.node: o.bought_wh - o.sold_wh for o in outcome.result.outcomes}
    delivered = {**bought, "alice": -1_000}
    for node, market in s.markets.items():
        if node != abstains:
            _, actions = market.settle(K, delivered_wh=delivered.get(node, 0),
                                       meter_reading=NO_TAG, bus_wh=0, now_ms=s.now_ms)
            s.carry_out(node, actions)
    s.deliver()
    settled = set(NODES) - {abstains}
    assert all(set(m.settlements(K)) == settled for n, m in s.markets.items() if n != abstains)
    s.lost = lambda node, topic: False
    return s


def offer_uncapped(s: InMemoryStreet, energy_wh: int) -> None:
    """alice's gateway, modified or without its history, signs an offer past her cap."""
    bid = Bid(community=COMMUNITY, interval=CAPPED, node="alice", seq=0, side="sell",
              energy_wh=energy_wh, limit_price=100, created_ms=s.now_ms)
    s.broker.publish(topics.bid(COMMUNITY, CAPPED, "alice"),
                     sign("bid", bid, s.keys["alice"]).to_bytes(), retain=True)
    s.deliver()


def sold(outcome: object) -> int:
    assert isinstance(outcome, Agreed), outcome
    alice = outcome.result.outcomes.of("alice")
    return 0 if alice is None else alice.sold_wh


def broker_forgets_settlements(s: InMemoryStreet) -> None:
    """The broker restarted without persistence: the settlements it retained are gone."""
    for topic in [t for t in s.broker.retained if "/settle/" in t]:
        del s.broker.retained[topic]


def restart(s: InMemoryStreet, node: str, *, restore: bool) -> None:
    """``node``'s gateway restarts: a new market, given back (or not) the settlements its ledger
    kept, joins the broker again and is sent what it retains."""
    old = s.markets[node]
    kept = [envelope for j in range(K, CAPPED) for envelope in old.signed_settlements(j).values()]
    market = s.market(node, s.keys[node], energy_interval_ms=HOUR_MS)
    assert market.restore_settlements(kept if restore else [], s.now_ms) == []
    s.markets[node] = market
    online, _ = market.presence(2)
    s.broker.publish(topics.presence(COMMUNITY, node), online, retain=True)
    s.carry_out(node, market.start(s.now_ms))
    for topic_filter in topics.subscriptions(COMMUNITY):
        s.broker.unsubscribe(node, topic_filter)
        s.broker.subscribe(node, topic_filter)
    s.deliver()


def test_every_peer_clips_an_offer_above_the_members_reputation_cap() -> None:
    s = under_delivered()
    for market in s.markets.values():
        assert market.offer_cap_wh("alice", CAPPED, s.now_ms) == 8_750
        assert market.offer_cap_wh("alice", CAPPED - 1, s.now_ms) == 10_000
    s.run(TIMING.gate_close_ms(CAPPED) - 200)
    offer_uncapped(s, 10_000)
    s.bid("bob", CAPPED, "buy", 10_000, 250)
    s.run(TIMING.start_ms(CAPPED))
    assert [sold(s.outcomes[n][CAPPED]) for n in NODES] == [8_750] * 3


def test_a_peer_that_restarts_caps_alike_from_the_settlements_its_ledger_kept() -> None:
    s = under_delivered()
    s.run(TIMING.start_ms(K + 2))
    broker_forgets_settlements(s)
    restart(s, "bob", restore=True)
    restart(s, "carol", restore=True)
    assert [s.markets[n].reputation("alice", CAPPED) for n in NODES] == [875] * 3
    s.run(TIMING.gate_close_ms(CAPPED) - 200)
    offer_uncapped(s, 10_000)
    s.bid("bob", CAPPED, "buy", 10_000, 250)
    s.run(TIMING.start_ms(CAPPED))
    assert [sold(s.outcomes[n][CAPPED]) for n in NODES] == [8_750] * 3


def test_a_peer_that_restarts_hears_the_settlements_the_broker_retains() -> None:
    """Those accepted since its last ledger block are in no block yet; the broker still has them
    (signature and membership checked, figures the member's own word)."""
    s = under_delivered()
    s.run(TIMING.start_ms(K + 2))
    restart(s, "carol", restore=False)
    assert s.markets["carol"].reputation("alice", CAPPED) == 875
    assert not s.rejections["carol"]


def test_a_peer_restarted_without_its_settlements_is_alone_and_does_not_decide() -> None:
    """Why they must be kept: a gateway that lost them clears alice's whole offer, a result no
    quorum shares; the two that remember agree on the capped one."""
    s = under_delivered()
    s.run(TIMING.start_ms(K + 2))
    broker_forgets_settlements(s)
    restart(s, "carol", restore=False)
    assert s.markets["carol"].reputation("alice", CAPPED) == 1_000
    s.run(TIMING.gate_close_ms(CAPPED) - 200)
    offer_uncapped(s, 10_000)
    s.bid("bob", CAPPED, "buy", 10_000, 250)
    s.run(TIMING.start_ms(CAPPED))
    assert [sold(s.outcomes[n][CAPPED]) for n in ("alice", "bob")] == [8_750] * 2
    assert s.outcomes["carol"][CAPPED] == Abstained(CAPPED, "minority")
    assert s.rejections["alice"]["wrong-commitment"] == 1  # carol's, counted by her peers


def test_a_ledgered_settlement_that_was_altered_or_is_foreign_is_not_restored() -> None:
    """A ledger entry is taken back only as its signer signed it, and only of this community;
    each refused one comes back with its reason and moves no reputation."""
    s = under_delivered()
    alices = s.markets["bob"].signed_settlements(K)["alice"]
    flattered = alices.model_copy(update={"body": {**alices.body, "delivered_wh": -2_000}})
    foreign = sign("settle", settlement_of(s, "alice").model_copy(
        update={"community": "elm-street"}), s.keys["alice"])
    market = s.market("carol", s.keys["carol"], energy_interval_ms=HOUR_MS)
    refused = market.restore_settlements([flattered, foreign], s.now_ms)
    assert [r.reason for r in refused] == ["bad-signature", "wrong-community"]
    assert market.reputation("alice", CAPPED) == 1_000


def settlement_of(s: InMemoryStreet, node: str) -> Settlement:
    held = s.markets["bob"].settlements(K)[node]
    assert isinstance(held, Settlement)
    return held


def test_a_peer_that_abstained_in_the_interval_still_caps_alike() -> None:
    """carol never learnt K's agreed result, so she cannot check its settlements against it; she
    holds them on their signers' word and caps alice as alice's other peers do."""
    s = under_delivered(abstains="carol")
    assert s.outcomes["carol"][K] == Abstained(K, "no-quorum")
    assert s.markets["carol"].agreed(K) is None
    assert [s.markets[n].reputation("alice", CAPPED) for n in NODES] == [875] * 3
    s.run(TIMING.gate_close_ms(CAPPED) - 200)
    offer_uncapped(s, 10_000)
    s.bid("bob", CAPPED, "buy", 10_000, 250)
    s.run(TIMING.start_ms(CAPPED))
    assert [sold(s.outcomes[n][CAPPED]) for n in NODES] == [8_750] * 3
