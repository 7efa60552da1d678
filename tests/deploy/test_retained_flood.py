"""A member floods retained messages, one per interval number, on the field broker (TLS + ACL):
it keeps at most ``SLOTS`` alive per kind, and a gateway that connects afterwards gets the
honest members' retained bids and commitments, which a full queue used to drop."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import aiomqtt
import pytest

from gateway.market.peerlink import Incoming, PeerLink
from protocols.market import topics
from protocols.market.topics import SLOTS
from tests.deploy.mosquitto import Brokers, free_port
from tests.deploy.site import write_site
from tests.market.community import COMMUNITY

pytestmark = pytest.mark.mosquitto

FLOOD = 3_000  # interval numbers dave retains a message on, per kind
KINDS = (topics.Kind.BIDS, topics.Kind.COMMIT)
K = 2_500  # the honest interval, well inside the flooded range


async def test_a_flood_of_retained_topics_cannot_crowd_out_the_honest_ones(
    mosquitto: Brokers, tmp_path: Path,
) -> None:
    port = free_port()
    files = write_site(tmp_path / "site", port)
    mosquitto.start(files.config, port, tmp_path / "mosquitto.log")
    url = f"mqtts://127.0.0.1:{port}"

    def link(node: str) -> PeerLink:
        return PeerLink(broker_url=url, community=COMMUNITY, node=node, tls=files.node(node))

    async with AsyncExitStack() as stack:
        # dave, a certified member, retains a message on every interval number he can name.
        dave = await stack.enter_async_context(aiomqtt.Client(
            "127.0.0.1", port, identifier="dave", tls_context=files.node("dave").client_context(),
            max_inflight_messages=500, timeout=30))
        flood = [f"{topics.ROOT}/{COMMUNITY}/{kind}/{k}/dave" for kind in KINDS
                 for k in range(FLOOD)]
        for start in range(0, len(flood), 500):
            await asyncio.gather(*(dave.publish(topic, b"junk", qos=1, retain=True)
                                   for topic in flood[start:start + 500]))

        # Then the honest members retain their bid and commitment for interval K.
        honest = {}
        for node in ("alice", "bob"):
            peer = await stack.enter_async_context(link(node))
            for topic in (topics.bid(COMMUNITY, K, node), topics.commit(COMMUNITY, K, node)):
                honest[topic] = f"{node}-{topic}".encode()
                await peer.publish(topic, honest[topic], retain=True)

        # carol (re)connects: the broker sends her everything it retains, then a live sentinel.
        carol = await stack.enter_async_context(link("carol"))
        sentinel = topics.settle(COMMUNITY, K, "bob")
        await peer.publish(sentinel, b"sentinel")  # bob's link, the last opened
        seen: list[Incoming] = []
        async with asyncio.timeout(30):
            async for message in carol.messages():
                if message.topic == sentinel:
                    break
                seen.append(message)

    retained = {m.topic: m.payload for m in seen if m.retained}
    for topic, payload in honest.items():
        assert retained.get(topic) == payload, f"{topic} did not arrive"
    daves = Counter(topics.parse(t).kind for t in retained if t.endswith("/dave"))
    assert daves == dict.fromkeys(KINDS, SLOTS), daves
