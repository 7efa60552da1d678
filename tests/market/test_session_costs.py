"""What one interval's agreement costs a gateway per message: work that does not grow with the
community it has already done.

Each member hears every member's commitment, so anything a commitment makes it redo over all
commitments or all bids is paid N times per interval, N² across the community. The counts here
are of the expensive steps themselves (a clearing, a list's hash, a judgement), observed by
wrapping the real functions; outcomes are those of tests/market/test_session.py.
"""

from __future__ import annotations

from unittest.mock import patch

import protocols.messages as messages_module
from protocols.clearing import clear
from protocols.market.actions import Agreed
from protocols.market.session import IntervalSession, Missing
from protocols.messages import MAX_INLINE_BIDS, BidSet
from protocols.signing import Rejected
from tests.market.community import COMMUNITY, PARAMS
from tests.market.test_session import TIMING, K, bid, cleared, cleared_with_set, heard

FIVE = ("alice", "bob", "carol", "dave", "erin")
LONG = tuple(bid(f"n{i:03d}", "buy" if i % 2 else "sell", 10 + i, 100 + i % 50)
             for i in range(MAX_INLINE_BIDS + 2))


def member(node: str) -> IntervalSession:
    """A member of five whose quorum is three (3/5): two liars cannot stop the other three."""
    return IntervalSession(community=COMMUNITY, interval=K, node=node, timing=TIMING,
                           mechanism="uniform", params=PARAMS, active=lambda now_ms: FIVE,
                           quorum=(3, 5))


def test_each_bid_set_is_cleared_once_however_many_claims_name_it() -> None:
    """Two peers claim the agreed bid set clears to two other results: both are judged wrong
    with the one clearing this member already did of that set, not one clearing each."""
    a, b, c = member("alice"), member("bob"), member("carol")
    ca, cb, cc = cleared(a), cleared(b), cleared(c)
    lies = [ca.model_copy(update={"node": node, "result_hash": str(i) * 64})
            for i, node in enumerate(("dave", "erin"), start=1)]
    with patch("protocols.market.session.clear", wraps=clear) as clearing:
        assert heard(a, lies[0]) == []
        agreed = heard(a, cb) + heard(a, cc)
        assert [type(x) for x in agreed] == [Agreed, Rejected]
        assert agreed[1] == Rejected("wrong-commitment")
        assert heard(a, lies[1]) == [Rejected("wrong-commitment")]
    assert clearing.call_count == 0


def test_a_commitment_after_agreement_is_judged_alone() -> None:
    """After agreement each new commitment costs one judgement: a dissent still waiting for its
    list is judged when the list comes, not again at every commitment that arrives meanwhile."""
    a, b, c, d = member("alice"), member("bob"), member("carol"), member("dave")
    ca, cb = cleared(a, LONG), cleared(b, LONG)
    cc = cleared(c, LONG)
    ld, cd = cleared_with_set(d, LONG[1:])  # dave's honest view lacks one bid
    assert ld is not None
    assert heard(a, cd) == []
    assert heard(a, cb) == []
    agreed = heard(a, cc)
    assert isinstance(agreed[0], Agreed) and Missing("bidsets") in agreed
    erin = ca.model_copy(update={"node": "erin"})
    with patch.object(IntervalSession, "_verdict", autospec=True,
                      side_effect=IntervalSession._verdict) as judged:
        assert heard(a, erin) == []  # erin agrees: nothing to judge, dave still waits
        assert judged.call_count == 0
        assert a.on_bidset(ld) == [Rejected("minority-commitment")]
        assert judged.call_count == 1


def test_a_bid_sets_digest_is_computed_once_per_message() -> None:
    """Every member matches a peer's list to its commitment by the list's digest; the hash of
    up to MAX_BIDS_PER_SET digests is taken once per parsed list, however often it is asked."""
    listed = BidSet(community=COMMUNITY, interval=K, node="alice",
                    bid_digests=tuple(sorted(f"{i:064x}" for i in range(50))))
    parsed = BidSet.model_validate_json(listed.model_dump_json())
    with patch.object(messages_module, "bid_set_digest",
                      wraps=messages_module.bid_set_digest) as hashing:
        digests = {listed.set_digest(), listed.set_digest(), parsed.set_digest()}
    assert len(digests) == 1 and hashing.call_count == 2
    assert parsed == listed and hash(parsed) == hash(listed)  # the cache is no field


def test_a_peer_recommitting_to_sets_never_listed_is_awaited_once() -> None:
    """A peer that keeps re-committing after agreement to long sets whose lists never come is
    awaited for its latest commitment only: what waits stays one entry per peer."""
    a, b, c = member("alice"), member("bob"), member("carol")
    ca, cb, cc = cleared(a, LONG), cleared(b, LONG), cleared(c, LONG)
    heard(a, cb)
    assert isinstance(heard(a, cc)[0], Agreed)
    for i in range(20):
        bogus = ca.model_copy(update={"node": "mallory", "bid_set_digest": f"{i:064x}",
                                      "result_hash": f"{i + 1:064x}"})
        heard(a, bogus)
    assert sum(len(nodes) for nodes in a._awaiting.values()) == 1
