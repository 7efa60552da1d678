"""A gateway that lost a peer's certificate on the way asks the broker for it when the peer's next
verified message comes, instead of refusing the peer as "unknown-key" until its link reconnects;
and a sender of made-up signers gets a bounded number of asks, however many it signs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from protocols.market import Agreed, Fetch, Forget, Market, topics
from protocols.market.lookup import Lookups
from protocols.market.market import LOOKUPS_AT_ONCE
from protocols.messages import Bid, SignedEnvelope
from protocols.signing import Rejected, generate_key, sign
from tests.market.community import COMMUNITY, PARAMS, Community, faulty
from tests.market.pair import DAY_MS, TIMING

EVERY = TIMING.length_ms


def certificate(c: Community, node: str, key: Ed25519PrivateKey) -> SignedEnvelope:
    return c.certificate(node, key, valid_from_ms=0, valid_until_ms=DAY_MS)


def market(c: Community, node: str) -> Market:
    """``node``'s market on the in-memory street's clock (from 0)."""
    key = generate_key()
    return Market(community=COMMUNITY, node=node, identity=key,
                  certificate=certificate(c, node, key), authority_key_hex=c.authority_hex,
                  timing=TIMING, params=PARAMS)


def signed_bid(node: str) -> bytes:
    """A bid of interval 3 under ``node``'s name, well signed by a key of its own."""
    key = generate_key()
    bid = Bid(community=COMMUNITY, interval=3, node=node, seq=0, side="sell",
              energy_wh=100, limit_price=100, created_ms=0)
    return sign("bid", bid, key).to_bytes()


def test_a_verified_message_from_a_node_whose_certificate_was_lost_fetches_it_once() -> None:
    c = Community()
    carol = market(c, "carol")
    carol.start(0)
    alice_key = generate_key()
    alice_cert = certificate(c, "alice", alice_key)
    bid = Bid(community=COMMUNITY, interval=3, node="alice", seq=0, side="sell", energy_wh=100,
              limit_price=100, created_ms=0)
    wire = sign("bid", bid, alice_key).to_bytes()
    lookup = topics.membership_of(COMMUNITY, "alice")
    topic = topics.bid(COMMUNITY, 3, "alice")
    # Alice's certificate never reached carol: her bid is refused, and carol asks for it.
    assert carol.receive(topic, wire, False, 100) == [Rejected("unknown-key"), Fetch(lookup)]
    # Again before the answer: refused, and no second ask.
    assert carol.receive(topic, wire, False, 110) == [Rejected("unknown-key")]
    # The broker answers with what it retains under the filter; the ask is closed.
    assert carol.receive(topics.roster(COMMUNITY, "alice"), alice_cert.to_bytes(), True,
                         120) == [Forget(lookup)]
    assert carol.receive(topic, wire, False, 130) == []  # her bid counts now
    assert lookup == "gridpeer/oak-street/+/alice"


def test_made_up_signers_get_a_bounded_number_of_asks_each_closed_in_time() -> None:
    c = Community()
    carol = market(c, "carol")
    carol.start(0)
    asks: list[str] = []
    for i in range(1_000):
        node = f"nobody-{i}"
        for action in carol.receive(topics.bid(COMMUNITY, 3, node), signed_bid(node), False,
                                    100 + i // 10):
            if isinstance(action, Fetch):
                asks.append(action.topic_filter)
            else:
                assert action == Rejected("unknown-key")
    assert len(asks) == LOOKUPS_AT_ONCE
    # Nothing answers a made-up name: the asks are dropped an interval length later.
    forgotten = [a.topic_filter for a in carol.tick(100 + EVERY) if isinstance(a, Forget)]
    assert forgotten == asks


def test_a_signer_under_a_members_name_with_another_key_is_looked_up_once_an_interval() -> None:
    """Where the broker has no ACL, anyone may sign under a member's name: the member's entry
    is fetched again (it may hold a newer certificate) at most once per interval length, not
    once per message."""
    c = Community()
    carol = market(c, "carol")
    carol.start(0)
    alice_key = generate_key()
    carol.receive(topics.roster(COMMUNITY, "alice"),
                  certificate(c, "alice", alice_key).to_bytes(), True, 0)
    fetches = 0
    for t in range(0, 3 * EVERY, 10):
        actions = carol.receive(topics.bid(COMMUNITY, 3, "alice"), signed_bid("alice"), False, t)
        actions += carol.tick(t)
        fetches += sum(isinstance(a, Fetch) and "/+/alice" in a.topic_filter for a in actions)
    assert fetches == 3


@given(st.lists(st.tuples(st.sampled_from(["ask", "answer", "wait"]), st.integers(0, 30),
                          st.integers(0, 400)), max_size=200))
def test_lookups_never_exceed_their_limits(ops: list[tuple[str, int, int]]) -> None:
    """Whatever comes in: at most ``at_once`` asks open, a node asked about at most once per
    ``every_ms``, and an open ask closed by its answer or ``every_ms`` after it was made."""
    every, at_once = 1_000, 4
    lookups = Lookups(every_ms=every, at_once=at_once)
    now = 0
    last_ask: dict[str, int] = {}
    open_: dict[str, int] = {}
    for op, n, dt in ops:
        node = f"n{n}"
        if op == "wait":
            now += dt
            closed = lookups.expire(now)
            assert set(closed) == {x for x, t in open_.items() if now - t >= every}
            for x in closed:
                del open_[x]
        elif op == "ask":
            if lookups.ask(node, now):
                assert node not in last_ask or now - last_ask[node] >= every
                last_ask[node] = open_[node] = now
        else:
            assert lookups.answered(node) == (node in open_)
            open_.pop(node, None)
        assert lookups.open == frozenset(open_) and len(open_) <= at_once


def lost_until_heard(node: str, lost: list[str]) -> Callable[[str], bool]:
    """A fault for :func:`faulty`: every copy of ``node``'s certificate is lost (noted in
    ``lost``) until a message of its own per-interval kinds has been delivered: the certificate
    missed while members join, and only what comes after can bring it back."""
    roster = topics.roster(COMMUNITY, node)
    heard: list[str] = []

    def fault(delivered: str) -> bool:
        parsed = topics.parse(delivered)
        if parsed.node == node and parsed.kind in topics.PER_INTERVAL:
            heard.append(delivered)
        if delivered == roster and not heard:
            lost.append(delivered)
            return True
        return False
    return fault


async def test_a_gateway_that_lost_a_peers_certificate_fetches_it_and_counts_its_bid(
    any_broker: str,
) -> None:
    """Through a real broker: dave's link loses alice's certificate, its only copy on this
    connection (a full inbox while members join). Her next verified message makes dave fetch
    it; he counts her bid and agrees with everyone (before: he refused her every message as
    "unknown-key" until a reconnect, and abstained as a minority)."""
    c = Community()
    async with AsyncExitStack() as stack:
        dave = c.agent(any_broker, "dave")
        lost: list[str] = []
        stack.enter_context(faulty(dave, lost_until_heard("alice", lost)))
        agents = await c.agents(stack, any_broker, "alice", "bob", "carol")
        await stack.enter_async_context(dave)
        alice, bob, carol = agents
        await asyncio.sleep(0.3)
        k = c.next_interval(margin_ms=400)
        await alice.submit_bid(k, "sell", 2_000, 100)
        await bob.submit_bid(k, "buy", 1_500, 250)
        await carol.submit_bid(k, "buy", 500, 200)
        await dave.submit_bid(k, "buy", 500, 180)
        async with asyncio.timeout(10):
            outcomes = [await a.outcome(k) for a in (*agents, dave)]
    assert lost, "the fault never fired"
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({o.result_hash for o in agreed}) == 1
    seller = next(o for o in agreed[3].result.outcomes if o.node == "alice")
    assert seller.sold_wh > 0 and "dave" in agreed[3].committed_by
    assert dave.rejections["unknown-key"] >= 1  # what made him look her up
