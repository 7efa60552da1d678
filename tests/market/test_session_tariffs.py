"""Each interval's tariffs in the session: cleared at them, named in the commitment, and a
commitment that names other tariffs refused as "tariff-mismatch" and never counted."""

from __future__ import annotations

from dataclasses import replace

from protocols.canonical import canonical_bytes
from protocols.clearing import Tariffs
from protocols.market.actions import Abstained, Agreed, Cleared
from protocols.market.session import IntervalSession
from protocols.market.state import State
from protocols.signing import Rejected
from tests.market.community import COMMUNITY, PARAMS
from tests.market.test_session import (
    BIDS,
    CLEAR,
    GATE,
    NODES,
    START,
    TIMING,
    K,
    bid,
    cleared,
    commitment_of,
)

PEAK = replace(PARAMS, tariffs=Tariffs(retail_price=460, feed_in_price=110))
OTHER = replace(PARAMS, tariffs=Tariffs(retail_price=470, feed_in_price=110))


def priced(node: str, params: object = PEAK, *, agree: bool = True,
           active: tuple[str, ...] = NODES, certified: int | None = None) -> IntervalSession:
    return IntervalSession(community=COMMUNITY, interval=K, node=node, timing=TIMING,
                           mechanism="uniform", params=params,  # type: ignore[arg-type]
                           active=lambda now_ms: active, agree_tariffs=agree,
                           certified=None if certified is None else lambda now_ms: certified)


def test_the_commitment_names_the_interval_tariffs_it_cleared_at() -> None:
    a = priced("alice")
    for b in BIDS:
        a.on_bid(b)
    a.tick(GATE)
    cleared_action, commit = a.tick(CLEAR)
    assert isinstance(cleared_action, Cleared)
    # the buyers' unmet 500 Wh is priced at the interval's retail price
    result = cleared_action.result
    assert result.grid_import_wh == 500
    assert sum(o.paid_grid for o in result.outcomes) == 500 * 460
    assert commitment_of([commit]).tariffs == (460, 110)


def test_without_a_schedule_the_commitment_is_the_one_from_before_schedules() -> None:
    plain = cleared(priced("alice", PARAMS, agree=False))
    assert plain.tariffs is None
    assert b'"tariffs"' not in canonical_bytes(plain.model_dump(mode="json"))


def test_a_commitment_with_other_tariffs_is_refused_and_never_counted() -> None:
    alice, bob = priced("alice"), priced("bob", OTHER)
    ca, cb = cleared(alice), cleared(bob)
    assert ca.bid_set_digest == cb.bid_set_digest  # the same bids, other prices
    [refused] = alice.on_commitment(cb)
    assert refused == Rejected("tariff-mismatch")
    assert "(470, 110)" in refused.detail and "(460, 110)" in refused.detail  # what to put right
    assert bob.on_commitment(ca) == [Rejected("tariff-mismatch")]
    assert alice.held("bob") is None and alice.state is State.COMMITTED
    assert isinstance(alice.tick(START)[-1], Abstained)  # two of three needed: only its own


def test_a_member_without_the_schedule_is_refused_too() -> None:
    alice, bob = priced("alice"), priced("bob", PEAK, agree=False)
    assert alice.on_commitment(cleared(bob)) == [Rejected("tariff-mismatch")]
    assert bob.on_commitment(cleared(alice)) == [Rejected("tariff-mismatch")]


def test_two_members_with_the_same_tariffs_agree_past_a_third_with_others() -> None:
    alice, bob, carol = priced("alice"), priced("bob"), priced("carol", OTHER)
    ca, cb, cc = cleared(alice), cleared(bob), cleared(carol)
    assert alice.on_commitment(cc) == [Rejected("tariff-mismatch")]
    [agreed] = alice.on_commitment(cb)
    assert isinstance(agreed, Agreed) and agreed.committed_by == {"alice", "bob"}
    assert carol.on_commitment(ca) == carol.on_commitment(cb) == [Rejected("tariff-mismatch")]


def test_the_union_round_does_not_wait_for_a_member_with_other_tariffs() -> None:
    """alice and bob each missed a different bid; carol's file differs. Its vote is known to
    count for nothing here, so the union round runs and the two agree on every bid."""
    extra = bid("dave", "buy", 500, 220)
    members = (*NODES, "dave")
    alice = priced("alice", active=members, certified=4)
    bob = priced("bob", active=members, certified=4)
    carol = priced("carol", OTHER, active=members, certified=4)
    dave = priced("dave", active=members, certified=4)
    ca = cleared(alice, (*BIDS[:2], extra))
    cb = cleared(bob, BIDS)
    cc = cleared(carol, (*BIDS, extra))
    cd = cleared(dave, (*BIDS, extra))
    for session, others in ((alice, (cb, cc, cd)), (bob, (ca, cc, cd))):
        for c in others:
            session.on_commitment(c)
    union = TIMING.union_ms(K)
    for session, missed in ((alice, BIDS[2]), (bob, extra)):
        actions = session.tick(union)
        assert actions and session.state is State.COMMITTED
        session.on_bid(missed)  # the fetch brings the bid it lacked
    redone = [commitment_of(s.tick(union + 1)) for s in (alice, bob)]
    assert redone[0].result_hash == redone[1].result_hash == cd.result_hash
    agreed = [a for a in alice.on_commitment(redone[1]) if isinstance(a, Agreed)]
    assert agreed and agreed[0].committed_by == {"alice", "bob", "dave"}
