"""Topic building and parsing: round trips, the slot ring, and every malformed shape is a
BadTopic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.market import topics
from protocols.market.topics import BadTopic, Kind, Topic

ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)


def test_golden_strings() -> None:
    assert topics.roster("c1", "n1") == "gridpeer/c1/roster/n1"
    assert topics.presence("c1", "n1") == "gridpeer/c1/presence/n1"
    assert topics.revoked("c1", "n1") == "gridpeer/c1/revoked/n1"
    assert topics.bid("c1", 42, "n1") == "gridpeer/c1/bids/10/n1"
    assert topics.commit("c1", 0, "n1") == "gridpeer/c1/commit/0/n1"
    assert topics.settle("c1", 5, "n1") == "gridpeer/c1/settle/5/n1"
    assert topics.bidset("c1", 19, "n1") == "gridpeer/c1/bidset/3/n1"
    assert topics.bids_of("c1", 21) == "gridpeer/c1/bids/5/+"
    assert topics.bidsets_of("c1", 5) == "gridpeer/c1/bidset/5/+"
    assert topics.subscriptions("c1") == (
        "gridpeer/c1/roster/+", "gridpeer/c1/revoked/+", "gridpeer/c1/presence/+",
        "gridpeer/c1/bids/+/+",
        "gridpeer/c1/commit/+/+", "gridpeer/c1/settle/+/+",
    )  # bid sets are fetched, never subscribed to


@given(community=ids, node=ids, kind=st.sampled_from(list(Kind)),
       k=st.integers(min_value=0, max_value=10**17))
def test_parse_inverts_build(community: str, node: str, kind: Kind, k: int) -> None:
    slot = topics.slot(k) if kind in topics.PER_INTERVAL else None
    t = Topic(community, kind, node, slot)
    assert topics.parse(str(t)) == t
    assert len(str(t)) <= topics.MAX_TOPIC_BYTES


@given(k=st.integers(min_value=0, max_value=2**53), other=st.integers(min_value=0, max_value=2**53))
def test_a_slot_holds_exactly_the_intervals_congruent_to_it(k: int, other: int) -> None:
    """The receiver's check: a body about ``other`` belongs on the topic built for ``k`` only if
    both fall on the same slot, so a node's messages live on at most SLOTS topics per kind."""
    t = topics.parse(topics.bid("c", k, "n"))
    assert t.holds(k)
    assert t.holds(other) == (other % topics.SLOTS == k % topics.SLOTS)
    assert not topics.parse(topics.roster("c", "n")).holds(k)


def test_a_member_has_one_topic_per_slot_whatever_intervals_it_names() -> None:
    built = {topics.bid("c", k, "n") for k in range(3_000)}
    assert len(built) == topics.SLOTS


@pytest.mark.parametrize("bad", [
    "", "gridpeer", "other/c/bids/1/n", "gridpeer/c/nope/n", "gridpeer/c/bids/n",
    "gridpeer/c/bids/01/n", "gridpeer/c/bids/-1/n", "gridpeer/c/bids/x/n",
    "gridpeer/c/bids/16/n", "gridpeer/c/settle/2500/n", "gridpeer/c/bids/+/n",
    "gridpeer/c/roster/n/extra", "gridpeer/c/bids/1/n/extra", "gridpeer/c/roster/+",
    "gridpeer/c d/roster/n", "gridpeer/c/roster/" + "n" * 33, "gridpeer/C/roster/n",
    "gridpeer/c/roster/-n",
])
def test_malformed_topics_are_rejected(bad: str) -> None:
    with pytest.raises(BadTopic):
        topics.parse(bad)


@pytest.mark.parametrize("node", ["a/b", "+", "#", "", "é", "A", "a_b"])
def test_ids_cannot_inject_levels_or_wildcards(node: str) -> None:
    with pytest.raises(BadTopic):
        topics.bid("c", 1, node)
