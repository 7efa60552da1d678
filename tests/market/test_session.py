"""The interval state machine on its own: bids, clearing, quorum, joining, abstaining."""

from __future__ import annotations

import pytest

from protocols.market.actions import Abstained, Agreed, Cleared
from protocols.market.errors import SessionError
from protocols.market.session import (
    Commit,
    IntervalSession,
    Missing,
    SessionAction,
    quorum_size,
)
from protocols.market.state import TRANSITIONS, State
from protocols.market.timing import Timing
from protocols.messages import MAX_INLINE_BIDS, Bid, BidSet, Commitment
from protocols.signing import Rejected
from tests.market.community import COMMUNITY, PARAMS

TIMING = Timing(epoch_ms=0, length_ms=1000, gate_ms=600, grace_ms=100)
K = 5
GATE, CLEAR, START = TIMING.gate_close_ms(K), TIMING.clear_ms(K), TIMING.start_ms(K)
NODES = ("alice", "bob", "carol")


def session(node: str, active: tuple[str, ...] = NODES) -> IntervalSession:
    return IntervalSession(community=COMMUNITY, interval=K, node=node, timing=TIMING,
                           mechanism="uniform", params=PARAMS, active=lambda now_ms: active)


def bid(node: str, side: str, energy_wh: int, price: int, seq: int = 0, k: int = K) -> Bid:
    return Bid(community=COMMUNITY, interval=k, node=node, seq=seq, side=side,  # type: ignore[arg-type]
               energy_wh=energy_wh, limit_price=price, created_ms=0)


BIDS = (bid("alice", "sell", 2000, 100), bid("bob", "buy", 1500, 250),
        bid("carol", "buy", 1000, 200))


def published(actions: list[SessionAction]) -> tuple[BidSet | None, Commitment]:
    """The commitment the session made, and the bid set it names unless that travels inline."""
    [commit] = [a for a in actions if isinstance(a, Commit)]
    commitment, bidset = commit.commitment, commit.bidset
    assert (commitment.community, commitment.interval) == (COMMUNITY, K)
    if bidset is None:
        assert commitment.bid_digests is not None  # inline
        return None, commitment
    assert commitment.bid_digests is None
    assert bidset.set_digest() == commitment.bid_set_digest
    return bidset, commitment


def heard(s: IntervalSession, commitment: Commitment) -> list[SessionAction]:
    """``s`` hears ``commitment`` (its signature checked by the market)."""
    return s.on_commitment(commitment)


def commitment_of(actions: list[SessionAction]) -> Commitment:
    return published(actions)[1]


def cleared_with_set(
    s: IntervalSession, bids: tuple[Bid, ...] = BIDS
) -> tuple[BidSet | None, Commitment]:
    for b in bids:
        assert s.on_bid(b) == []
    assert s.tick(GATE) == [] and s.state is State.GATE_CLOSED
    actions = s.tick(CLEAR)
    assert isinstance(actions[0], Cleared) and s.state is State.COMMITTED
    return published(actions)


def cleared(s: IntervalSession, bids: tuple[Bid, ...] = BIDS) -> Commitment:
    return cleared_with_set(s, bids)[1]


def test_timing_arithmetic() -> None:
    assert (GATE, CLEAR, START, TIMING.end_ms(K)) == (4400, 4500, 5000, 6000)
    assert TIMING.open_interval(4399) == 5 and TIMING.open_interval(4400) == 6
    with pytest.raises(SessionError, match="gate_ms > grace_ms"):
        Timing(epoch_ms=0, length_ms=1000, gate_ms=100, grace_ms=100)


def test_quorum_is_two_thirds_rounded_up() -> None:
    assert [quorum_size(n, 2, 3) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 2, 3, 4, 4]
    with pytest.raises(SessionError, match="quorum"):
        IntervalSession(community=COMMUNITY, interval=K, node="a", timing=TIMING,
                        mechanism="uniform", params=PARAMS, active=lambda now_ms: (),
                        quorum=(1, 2))


def test_two_matching_commitments_of_three_agree_and_dispatch() -> None:
    a, b = session("alice"), session("bob")
    ca, cb = cleared(a), cleared(b)
    assert (ca.bid_set_digest, ca.result_hash) == (cb.bid_set_digest, cb.result_hash)
    [agreed] = heard(a, cb)
    assert isinstance(agreed, Agreed) and a.state is State.AGREED
    assert agreed.committed_by == {"alice", "bob"}
    assert agreed.position is not None and agreed.position.sold_wh == 2000
    # The signed proof of the quorum is the market's: tests/market/test_markets.py
    a.tick(START)
    assert a.state is State.DISPATCHING
    a.settled()
    assert a.state is State.SETTLED


FETCH = [Missing("bids")]


def test_minority_fetches_missed_bids_recomputes_and_joins() -> None:
    a, b, c = session("alice"), session("bob"), session("carol")
    ca, cb = cleared(a), cleared(b)
    cc = cleared(c, BIDS[1:])  # carol missed alice's bid before the gate
    assert cc.result_hash != ca.result_hash
    assert heard(c, ca) == []  # one vote is no quorum yet
    assert heard(c, cb) == FETCH  # the list is inline: only the bid it lacks
    actions = c.on_bid(BIDS[0])  # the broker resends the retained bid
    assert [type(x) for x in actions] == [Commit, Agreed]
    rejoined = commitment_of(actions)
    assert rejoined.result_hash == ca.result_hash and c.state is State.AGREED


def test_minority_that_cannot_reproduce_abstains_at_start() -> None:
    a, b, c = session("alice"), session("bob"), session("carol")
    ca, cb = cleared(a), cleared(b)
    cleared(c, BIDS[1:])
    heard(c, ca)
    heard(c, cb)
    assert c.tick(START - 1) == []
    # abstains, and asks the broker once more for the bids it lacks to reproduce the quorum's
    assert c.tick(START) == [Abstained(K, "minority"), *FETCH]
    assert c.state is State.ABSTAINED


def test_no_quorum_abstains() -> None:
    a = session("alice")
    cleared(a)
    assert a.tick(START) == [Abstained(K, "no-quorum")]


def test_abstained_node_adopts_the_quorum_result_for_settlement() -> None:
    """The peers pay for carol's position whether or not she heard the quorum in time."""
    a, b, c = session("alice"), session("bob"), session("carol")
    ca, cb = cleared(a), cleared(b)
    cleared(c, BIDS[1:])  # carol missed alice's bid, and the retained copy comes too late
    heard(c, ca)
    heard(c, cb)
    c.tick(START)
    assert c.state is State.ABSTAINED
    assert c.on_bid(BIDS[0]) == []  # kept; the next tick reproduces the majority's result
    [adopted] = c.tick(START + 100)
    [agreed] = heard(a, cb)
    assert isinstance(adopted, Agreed) and isinstance(agreed, Agreed)
    assert adopted.late and not agreed.late
    assert (adopted.result_hash, adopted.bid_set_digest) == (agreed.result_hash,
                                                            agreed.bid_set_digest)
    assert adopted.position is not None and adopted.position.bought_wh > 0
    assert adopted.position in agreed.result.outcomes
    assert c.state is State.ADOPTED and c.tick(START + 200) == []
    c.settled()
    assert c.state is State.SETTLED


def test_late_commitments_are_adopted_after_a_no_quorum_abstention() -> None:
    a, b = session("alice"), session("bob")
    cleared(a)
    cb = cleared(b)
    assert a.tick(START) == [Abstained(K, "no-quorum")]
    heard(a, cb)  # bob's commitment reaches alice only after the interval started
    [adopted] = a.tick(START + 1)
    assert isinstance(adopted, Agreed) and adopted.late
    assert adopted.committed_by == {"alice", "bob"} and adopted.position is not None


def test_a_quorum_heard_only_after_the_interval_ended_is_still_adopted() -> None:
    """Bob settles his side of alice's trade whenever she hears the quorum: she must too."""
    a, b = session("alice"), session("bob")
    cleared(a)
    cb = cleared(b)
    a.tick(START)
    heard(a, cb)
    [adopted] = a.tick(TIMING.end_ms(K) + TIMING.length_ms // 2)
    assert isinstance(adopted, Agreed) and adopted.late and a.state is State.ADOPTED


def test_bid_rules() -> None:
    s = session("alice")
    assert s.on_bid(bid("bob", "buy", 100, 200, seq=1)) == []
    assert s.on_bid(bid("bob", "buy", 100, 200, seq=1)) == []  # duplicate delivery
    assert s.on_bid(bid("bob", "buy", 50, 200, seq=0)) == [Rejected("stale-seq")]
    assert s.on_bid(bid("bob", "buy", 100, 200, k=K - 1)) == [Rejected("replay")]
    first, second = bid("carol", "buy", 1, 200), bid("carol", "buy", 2, 200)
    assert s.on_bid(first) == []
    [rejected, evidence] = s.on_bid(second)
    assert rejected == Rejected("equivocation")
    assert evidence.node == "carol" and evidence.messages == (first, second)  # type: ignore[union-attr]
    assert s.on_bid(bid("carol", "buy", 3, 200, seq=5)) == [Rejected("excluded")]
    for seq in range(2, 2 + 8):
        s.on_bid(bid("dave", "buy", seq, 200, seq=seq))
    [rejected, evidence] = s.on_bid(bid("dave", "buy", 99, 200, seq=99))
    assert rejected == Rejected("flood")
    assert evidence.node == "dave" and len(evidence.messages) == 9  # type: ignore[union-attr]
    assert s.on_bid(bid("dave", "buy", 98, 200, seq=98)) == [Rejected("flood")]


def test_members_that_each_kept_a_different_part_of_a_flood_clear_none_of_it() -> None:
    """Mallory signs twelve distinct bids; alice hears them in order, bob in reverse (a reorder),
    each verifying the first eight and no more, as the quota does. Each kept a different
    latest bid of hers, but both heard one past the limit, so both leave all of hers out and
    commit to the same honest bids."""
    flood = [bid("mallory", "sell", 100 + seq, 90, seq=seq) for seq in range(12)]
    commitments = []
    for node, order in (("alice", flood), ("bob", flood[::-1])):
        s = session(node, active=(*NODES, "mallory"))
        for b in order[:8]:
            s.on_bid(b)  # bob refuses all but the first as "stale-seq": he heard seq 11 first
        assert s.on_bid(order[8])[0] == Rejected("flood")
        commitments.append(cleared(s))
    alice, bob = commitments
    assert alice.bid_set_digest == bob.bid_set_digest and alice.result_hash == bob.result_hash
    assert alice.bid_digests is not None and len(alice.bid_digests) == len(BIDS)


def test_excluded_node_is_not_cleared_and_does_not_vote() -> None:
    s = session("alice", active=("alice", "bob", "carol", "mallory"))
    s.on_bid(bid("mallory", "sell", 10, 1))
    s.on_bid(bid("mallory", "sell", 20, 1))
    mine = cleared(s)
    assert mine.bid_digests is not None and len(mine.bid_digests) == 3
    vote = mine.model_copy(update={"node": "mallory"})
    assert heard(s, vote) == [Rejected("excluded")]


def test_illegal_transitions_raise() -> None:
    s = session("alice")
    with pytest.raises(SessionError, match="settle"):
        s.settled()
    assert (State.OPEN, "settle") not in TRANSITIONS


def test_a_quorum_is_never_less_than_a_majority_of_the_roster() -> None:
    """An agent that sees only two of six certified members present cannot agree on its own."""
    def lonely(node: str) -> IntervalSession:
        return IntervalSession(community=COMMUNITY, interval=K, node=node, timing=TIMING,
                               mechanism="uniform", params=PARAMS,
                               active=lambda now_ms: ("alice", "bob"), certified=lambda now_ms: 6)
    a, b = lonely("alice"), lonely("bob")
    cleared(a)
    assert heard(a, cleared(b)) == []  # 2 of its 2 present: short of 4 of 6
    assert a.tick(START) == [Abstained(K, "no-quorum")]


def test_commitments_spread_over_bid_sets_converge_on_their_union() -> None:
    """Each member missed a different bid: no first commitment has a quorum, the union does."""
    sessions = {n: session(n) for n in NODES}
    first = {n: cleared(s, tuple(b for b in BIDS if b.node != missed))
             for (n, s), missed in zip(sessions.items(), ("carol", "alice", "bob"), strict=True)}
    assert len({c.bid_set_digest for c in first.values()}) == 3
    for n, s in sessions.items():
        assert all(heard(s, c) == [] for m, c in first.items() if m != n)
    union_at = TIMING.union_ms(K)
    assert CLEAR < union_at < START
    assert all(s.tick(union_at - 1) == [] for s in sessions.values())
    # each fetches the bids it lacks; the broker resends them
    for s in sessions.values():
        assert s.tick(union_at) == FETCH
        for b in BIDS:
            s.on_bid(b)
    second = {}
    for n, s in sessions.items():
        actions = s.tick(union_at + 1)
        second[n] = commitment_of(actions)
        assert second[n].bid_digests is not None and len(second[n].bid_digests) == len(BIDS)
    for n, s in sessions.items():
        for m, c in second.items():
            if m != n:
                heard(s, c)
        assert isinstance(s.outcome, Agreed) and s.state is State.AGREED
    assert len({s.outcome.result_hash for s in sessions.values()}) == 1  # type: ignore[union-attr]


def test_a_member_whose_vote_had_the_majority_never_takes_it_back() -> None:
    """Alice, carol and mallory committed to the bids before dave's late replacement, bob and
    dave to the set with it: at the union round alice's result has a majority of the five, so
    she keeps it, and bob and dave may join it and count her in their quorum. Mallory then
    moves her vote: alice no longer sees a majority, but she must not re-vote for the union
    (the sim's seed 5086: her vote, taken back, left the quorum others had counted short)."""
    five = (*NODES, "dave", "mallory")
    early = (*BIDS, bid("dave", "buy", 300, 240))
    late = (*BIDS, bid("dave", "buy", 400, 240, seq=1))
    alice = session("alice", active=five)
    mine = cleared(alice, early)
    alice.on_bid(late[-1])  # after her gate: known, not in her first vote
    theirs = cleared(session("bob", active=five), late)
    for node, c in (("carol", mine), ("mallory", mine), ("bob", theirs), ("dave", theirs)):
        assert heard(alice, c.model_copy(update={"node": node})) == []
    union_at = TIMING.union_ms(K)
    assert alice.tick(union_at) == []  # ours has 3 of 5: the others come to it
    moved = mine.model_copy(update={"node": "mallory", "result_hash": "0" * 64})
    heard(alice, moved)
    assert not [a for a in alice.tick(union_at + 1) if isinstance(a, Commit)]
    assert alice.held("alice") == mine


def test_a_long_bid_set_travels_apart_and_a_minority_fetches_it_to_join() -> None:
    """Past MAX_INLINE_BIDS the commitment names its set by digest; the list goes out once as a
    BidSet, and a member that needs it (here to join the majority) fetches it."""
    many = tuple(bid(f"n{i:03d}", "buy" if i % 2 else "sell", 10 + i, 100 + i % 50)
                 for i in range(MAX_INLINE_BIDS + 1))
    a, b, c = session("alice"), session("bob"), session("carol")
    (la, ca), cb = cleared_with_set(a, many), cleared(b, many)
    assert la is not None and len(la.bid_digests) == len(many) and ca.bid_digests is None
    cleared(c, many[1:])  # carol missed one bid before the gate
    assert heard(c, ca) == []
    assert heard(c, cb) == [Missing("bids"), Missing("bidsets")]
    assert c.on_bidset(la) == []  # the broker resends alice's retained list ...
    actions = c.on_bid(many[0])  # ... and the bid it names that carol lacked
    assert [type(x) for x in actions] == [Commit, Agreed]
    listed, rejoined = published(actions)
    assert listed is not None  # the list goes out again with the commitment that names it
    assert (rejoined.bid_set_digest, rejoined.result_hash) == (ca.bid_set_digest, ca.result_hash)


def test_a_dissent_is_judged_once_its_long_bid_set_arrives() -> None:
    """A commitment to a set too long to travel inline is judged when its list comes: an honest
    minority's set clears to what it claims."""
    many = tuple(bid(f"n{i:03d}", "buy" if i % 2 else "sell", 10 + i, 100 + i % 50)
                 for i in range(MAX_INLINE_BIDS + 2))
    a, b, c = session("alice"), session("bob"), session("carol")
    cleared(a, many)
    cb = cleared(b, many)
    lc, cc = cleared_with_set(c, many[1:])  # carol's honest view lacks one bid
    assert lc is not None
    assert heard(a, cc) == []
    actions = heard(a, cb)  # agreed with bob; carol's dissent waits for her list
    assert isinstance(actions[0], Agreed)
    assert Missing("bidsets") in actions
    assert a.on_bidset(lc) == [Rejected("minority-commitment")]


def test_a_later_vote_replaces_an_earlier_one_whatever_order_they_arrive_in() -> None:
    """A node's votes are numbered: its re-vote (seq 1) replaces its first (seq 0), and the
    first, delivered after it (the broker may reorder), is refused as stale, not taken as its
    latest. Arrival order decided the latest before, so a member that signed two votes counted
    for one result at one peer and another at the next."""
    a, b = session("alice"), session("bob")
    cleared(a)
    first = cleared(b, BIDS[:2])
    revote = first.model_copy(update={"seq": 1, "bid_set_digest": "ab" * 32})
    assert heard(a, revote) == [] and a.held("bob") == revote
    assert heard(a, first) == [Rejected("stale-seq")] and a.held("bob") == revote


def test_two_votes_with_one_number_are_an_equivocation_and_count_for_nothing() -> None:
    """Bob signs two different first votes: alice catches it with the second, whichever it is,
    keeps both as evidence and counts neither; his votes no longer help make a quorum."""
    a, b = session("alice"), session("bob")
    mine, first = cleared(a), cleared(b)
    assert first == mine.model_copy(update={"node": "bob"})  # bob voted as alice did
    other = first.model_copy(update={"result_hash": "cd" * 32})
    [agreed] = heard(a, first)  # alice and bob: two of three
    assert isinstance(agreed, Agreed)
    a2 = session("alice")
    cleared(a2)
    assert heard(a2, other) == []
    [rejected, evidence] = heard(a2, first)
    assert rejected == Rejected("equivocation")
    assert evidence.node == "bob" and evidence.messages == (other, first)  # type: ignore[union-attr]
    assert heard(a2, first.model_copy(update={"seq": 1})) == [Rejected("excluded")]
    assert not any(isinstance(x, Agreed) for x in a2.tick(START - 1))


def test_a_re_vote_is_numbered_past_the_first() -> None:
    """Alice missed carol's bid: her first vote (seq 0) differs from bob's and carol's; joining
    their majority she votes again, as seq 1, which replaces her first at every peer."""
    a, b, c = session("alice"), session("bob"), session("carol")
    mine = cleared(a, BIDS[:2])
    cb, cc = cleared(b), cleared(c)
    assert mine.seq == 0 and b"seq" not in mine.model_dump_json().encode()
    a.on_bid(BIDS[2])
    heard(a, cb)
    actions = heard(a, cc)
    rejoined = commitment_of(actions)
    assert rejoined.seq == 1 and rejoined.result_hash == cb.result_hash
    assert heard(b, mine) == []
    [agreed] = heard(b, rejoined)  # bob and alice now: two of three
    assert isinstance(agreed, Agreed) and b.held("alice") == rejoined
