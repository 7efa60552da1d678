"""A node's own retained messages as the link replays them: latest per topic, clears kept until
the broker has them, bounded and counted."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.market.retained import OwnRetained


def test_a_clear_is_replayed_until_delivered_and_a_later_write_wins() -> None:
    store = OwnRetained()
    store.write("bids/3/a", b"bid")
    store.write("bids/3/a", b"")  # cleared while the broker was away
    store.write("roster/a", b"cert")
    assert store.replay() == [("bids/3/a", b""), ("roster/a", b"cert")]
    assert store.pending_clears == 1
    store.delivered("bids/3/a", b"")
    store.delivered("roster/a", b"cert")  # a payload stays: the next broker may have lost it
    assert store.replay() == [("roster/a", b"cert")]

    store.write("bids/4/a", b"")
    store.write("bids/4/a", b"new bid")  # written again before the clear went out
    store.delivered("bids/4/a", b"")
    assert ("bids/4/a", b"new bid") in store.replay()


def test_the_store_is_bounded_and_counts_what_it_forgets() -> None:
    store = OwnRetained(limit=2)
    assert store.write("a", b"") is None
    assert store.write("b", b"1") is None
    assert store.write("a", b"2") is None  # a rewrite is not a new topic
    assert store.write("c", b"3") == "b"  # the least recently written goes
    assert store.dropped == 1
    assert [t for t, _ in store.replay()] == ["a", "c"]


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.binary(max_size=3)), max_size=60),
       st.integers(1, 5))
def test_replay_is_the_latest_write_of_each_remembered_topic(
    writes: list[tuple[str, bytes]], limit: int,
) -> None:
    store = OwnRetained(limit=limit)
    for topic, payload in writes:
        store.write(topic, payload)
    latest = dict(writes)
    replay = store.replay()
    assert len(replay) == min(limit, len(latest))
    assert all(latest[topic] == payload for topic, payload in replay)
