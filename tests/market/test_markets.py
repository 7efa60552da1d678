"""Markets joined by an in-memory broker (:mod:`tests.market.pair`): the whole protocol of an
interval, from bids to retired settlements, with every step in the test's hands."""

from __future__ import annotations

import pytest

from protocols.market import Abstained, Agreed, MarketError, State, TaggedMeterReading, topics
from protocols.market.session import MAX_BIDS_PER_NODE
from protocols.messages import Commitment
from protocols.signing import Verified, public_key_hex, verify
from tests.market.pair import TIMING, InMemoryStreet

K = 2  # the gate of interval 1 is closed at 400 ms, before any bid could go out
START, END = TIMING.start_ms(K), TIMING.end_ms(K)
NO_TAG = TaggedMeterReading(seq=1, import_wh=0, export_wh=0, tag="ab" * 32)


def trade(street: InMemoryStreet) -> None:
    street.bid("alice", K, "sell", 2_000, 100)
    street.bid("bob", K, "buy", 1_500, 250)
    street.bid("carol", K, "buy", 1_000, 200)


def test_three_markets_agree_and_each_holds_the_quorums_signed_proof() -> None:
    s = InMemoryStreet("alice", "bob", "carol")
    trade(s)
    s.run(START)
    outcomes = [s.outcomes[n][K] for n in s.markets]
    assert all(isinstance(o, Agreed) and not o.late for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({o.result_hash for o in agreed}) == 1
    for node, outcome in zip(s.markets, agreed, strict=True):
        assert len(outcome.committed_by) >= 2  # a quorum of 2/3, whoever was first
        proof = s.markets[node].commitments(K)
        assert list(outcome.commitments) == proof
        # Each voter's commitment as it signed it, by node: anyone can re-verify the quorum.
        assert [e.signer for e in proof] == [public_key_hex(s.keys[n])
                                             for n in sorted(outcome.committed_by)]
        for envelope in proof:
            checked = verify(envelope, expected_kind="commit")
            assert isinstance(checked, Verified) and isinstance(checked.body, Commitment)
            assert checked.body.result_hash == outcome.result_hash
        assert s.markets[node].session_state(K) is State.DISPATCHING
    assert not any(s.rejections.values()), s.rejections


def test_a_market_that_lost_a_bid_fetches_it_from_the_broker_and_joins() -> None:
    s = InMemoryStreet("alice", "bob", "carol")
    s.lost = lambda node, topic: node == "carol" and topic == topics.bid("oak-street", K, "alice")
    trade(s)
    s.run(START)
    a, c = s.outcomes["alice"][K], s.outcomes["carol"][K]
    assert isinstance(a, Agreed) and isinstance(c, Agreed)
    assert c.result_hash == a.result_hash and c.position is not None
    # She fetched the bids the broker retains, and dropped the fetch once the outcome was in.
    assert s.fetched["carol"] == [topics.bids_of("oak-street", K)]
    assert topics.bids_of("oak-street", K) not in s.broker.filters["carol"]
    assert not any(s.fetched[n] for n in ("alice", "bob"))


def test_a_market_that_hears_no_one_abstains_and_adopts_the_quorum_it_hears_later() -> None:
    s = InMemoryStreet("alice", "bob", "carol")
    deaf = True
    s.lost = lambda node, topic: deaf and node == "carol" and "/commit/" in topic
    trade(s)
    s.run(START)
    assert s.outcomes["carol"][K] == Abstained(K, "no-quorum")
    deaf = False  # the commitments reach her after the start (a starved host, a slow link)
    for topic in (topics.commit("oak-street", K, n) for n in ("alice", "bob")):
        s.broker.queue.append(("carol", topic, s.broker.retained[topic], True))
    s.run(START + 100)
    late = s.markets["carol"].agreed(K)
    agreed = s.outcomes["alice"][K]
    assert isinstance(late, Agreed) and late.late and isinstance(agreed, Agreed)
    assert late.result_hash == agreed.result_hash
    assert s.markets["carol"].session_state(K) is State.ADOPTED


def test_settlements_are_checked_by_every_peer_and_cleared_when_forgotten() -> None:
    s = InMemoryStreet("alice", "bob", "carol")
    trade(s)
    s.run(START)
    with pytest.raises(MarketError, match="has not ended"):
        s.markets["alice"].settle(K, delivered_wh=0, meter_reading=NO_TAG, bus_wh=0,
                                  now_ms=s.now_ms)
    s.run(END)
    delivered = {"alice": -2_000, "bob": 1_200, "carol": 800}
    for node, market in s.markets.items():
        envelope, actions = market.settle(K, delivered_wh=delivered[node], meter_reading=NO_TAG,
                                          bus_wh=0, now_ms=s.now_ms)
        s.carry_out(node, actions)
        assert market.session_state(K) is State.SETTLED
    s.deliver()
    for market in s.markets.values():
        assert set(market.signed_settlements(K)) == set(delivered)
    assert not any(s.rejections.values()), s.rejections
    settled = [topics.settle("oak-street", K, n) for n in s.markets]
    assert all(topic in s.broker.retained for topic in settled)
    # Forgotten ``horizon`` intervals after the session retires: the retained copies go too.
    s.run(TIMING.end_ms(K + 4) + TIMING.length_ms + 10)
    assert not any(topic in s.broker.retained for topic in settled)
    assert s.markets["alice"].settlements(K) == {}


def test_a_retired_interval_leaves_nothing_retained_and_stays_closed() -> None:
    s = InMemoryStreet("alice", "bob", "carol")
    trade(s)
    s.run(START)
    commitment = s.broker.retained[topics.commit("oak-street", K, "bob")]
    s.run(END + TIMING.length_ms + 10)  # retired one interval after its end
    assert all(m.session_state(K) is None for m in s.markets.values())
    slot = f"/{topics.slot(K)}/"
    assert not [t for t in s.broker.retained if slot in t and "/settle/" not in t]
    with pytest.raises(MarketError, match="closed"):
        s.markets["alice"].bid(K, "sell", 1, 1, s.now_ms)
    # A peer's commitment for it, replayed live, is old news: counted, and nothing reopens.
    s.broker.queue.append(("alice", topics.commit("oak-street", K, "bob"), commitment, False))
    s.deliver()
    assert s.rejections["alice"] == {"stale": 1}
    assert s.markets["alice"].session_state(K) is None


def test_a_market_never_signs_more_bids_for_an_interval_than_its_peers_take_from_one_node() -> None:
    """A node past the bid limit is excluded from the interval by every peer (a flood), so its
    own market refuses the bid that would cross it: an honest gateway's re-bids never do."""
    s = InMemoryStreet("alice", "bob", "carol")
    for energy in range(1, MAX_BIDS_PER_NODE + 1):
        s.bid("alice", K, "sell", energy, 100)
    with pytest.raises(MarketError, match="the most a node may make"):
        s.markets["alice"].bid(K, "sell", 1, 100, s.now_ms)
    s.bid("bob", K, "buy", 1_500, 250)
    s.bid("carol", K, "buy", 1_000, 200)
    s.run(START)
    outcomes = [s.outcomes[n][K] for n in s.markets]
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    assert not any(s.rejections.values()), s.rejections
