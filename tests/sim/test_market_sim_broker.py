"""The simulated broker keeps MQTT 3.1.1's rules as the market relies on them (the rules are
listed in :mod:`sim_devices.market_sim.broker`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sim_devices.market_sim.broker import Broker, matches

T = "gridpeer/c/commit/3/alice"
F = "gridpeer/c/commit/+/+"


def broker(**options: bool) -> Broker:
    b = Broker(acl=options.get("acl", False), persistence=options.get("persistence", False),
               max_queued=2)
    return b


@given(st.lists(st.sampled_from(["a", "b", "c1"]), min_size=1, max_size=5), st.data())
def test_a_filter_made_from_a_topic_matches_it_and_no_other_length(
        levels: list[str], data: st.DataObject) -> None:
    topic = "/".join(levels)
    wild = [data.draw(st.sampled_from([level, "+"])) for level in levels]
    assert matches("/".join(wild), topic)
    cut = data.draw(st.integers(0, len(levels) - 1))
    assert matches("/".join([*wild[:cut], "#"]), topic)
    assert not matches("/".join(wild), topic + "/x")
    assert not matches("/".join([*wild, "x"]), topic)


def test_a_retained_message_is_replayed_on_each_subscribe_and_an_empty_one_clears_it() -> None:
    b = broker()
    b.connect("bob", clean=True, will=None)
    assert b.publish("alice", T, b"1", retain=True) == []
    assert b.subscribe("bob", F) == [("bob", T, b"1", True)]
    assert b.subscribe("bob", F) == [("bob", T, b"1", True)]  # again, as MQTT says
    assert b.publish("alice", T, b"", retain=True) == [("bob", T, b"", False)]
    assert b.subscribe("bob", F) == []


def test_a_lost_connection_publishes_its_will_and_a_takeover_too() -> None:
    b = broker()
    b.connect("bob", clean=True, will=None)
    b.subscribe("bob", "gridpeer/c/presence/+")
    will = ("gridpeer/c/presence/alice", b"offline")
    b.connect("alice", clean=True, will=will)
    assert b.lose("alice") == [("bob", will[0], b"offline", False)]
    assert b.retained[will[0]] == b"offline"
    b.connect("alice", clean=True, will=(will[0], b"offline-2"))
    out = b.connect("alice", clean=True, will=None)  # a new connection takes the session over
    assert out == [("bob", will[0], b"offline-2", False)]


def test_a_persistent_session_queues_while_away_up_to_its_limit() -> None:
    b = broker()
    b.connect("bob", clean=False, will=None)
    b.subscribe("bob", F)
    b.lose("bob")
    for payload in (b"1", b"2", b"3"):
        b.publish("alice", T, payload, retain=False)
    assert b.dropped["queue-full"] == 1
    assert b.connect("bob", clean=False, will=None) == [("bob", T, b"1", False),
                                                         ("bob", T, b"2", False)]
    b.lose("bob")
    b.publish("alice", T, b"4", retain=False)
    assert b.connect("bob", clean=True, will=None) == []  # a clean session starts empty


def test_the_acl_lets_a_node_publish_only_under_its_own_id() -> None:
    b = broker(acl=True)
    b.publish("mallory", T, b"x", retain=True)
    b.publish("alice", "gridpeer/c/revoked/alice", b"x", retain=True)
    assert b.retained == {} and b.dropped["acl"] == 2
    b.publish("alice", T, b"x", retain=True)
    assert b.retained == {T: b"x"}


def test_a_restart_keeps_only_what_persistence_last_saved() -> None:
    b = broker(persistence=True)
    b.publish("alice", T, b"old", retain=True)
    b.save()
    b.publish("alice", T, b"", retain=True)  # cleared after the save ...
    b.publish("bob", "gridpeer/c/commit/3/bob", b"new", retain=True)  # ... written after it
    b.restart()
    assert b.retained == {T: b"old"}
    volatile = broker()
    volatile.publish("alice", T, b"old", retain=True)
    volatile.save()
    volatile.restart()
    assert volatile.retained == {}
