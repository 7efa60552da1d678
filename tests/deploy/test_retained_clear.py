"""A gateway clears its retained bid while the field broker is down (TLS, persistence on): the
clear goes out when the link is back, so the broker, which restored the bid from its database,
does not go on serving it to every gateway that connects."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from gateway.market.peerlink import PeerLink
from protocols.market import topics
from tests.deploy.mosquitto import Brokers, free_port
from tests.deploy.site import retained, write_site
from tests.market.community import COMMUNITY

pytestmark = pytest.mark.mosquitto


async def test_a_clear_made_while_the_broker_is_down_reaches_it_after_a_restart(
    mosquitto: Brokers, tmp_path: Path,
) -> None:
    port = free_port()
    files = write_site(tmp_path / "site", port)
    broker = mosquitto.start(files.config, port, tmp_path / "first.log")
    bid = topics.bid(COMMUNITY, 7, "alice")
    witness = topics.bid(COMMUNITY, 7, "bob")
    async with aiomqtt.Client("127.0.0.1", port, identifier="bob", timeout=5,
                              tls_context=files.node("bob").client_context()) as bob:
        await bob.publish(witness, b"bob's bid", qos=1, retain=True)

    alice = PeerLink(broker_url=f"mqtts://127.0.0.1:{port}", community=COMMUNITY, node="alice",
                     tls=files.node("alice"), reconnect_s=0.1)
    async with alice:
        await alice.publish(bid, b"alice's bid", retain=True)
        assert await retained(port, files, bid) == b"alice's bid"

        broker.terminate()  # Mosquitto saves its database on the way out
        broker.wait(timeout=10)
        async with asyncio.timeout(10):
            while alice.connected:
                await asyncio.sleep(0.02)
        await alice.publish(bid, b"", retain=True)  # the interval retires while the broker is away

        mosquitto.start(files.config, port, tmp_path / "second.log")
        await alice.wait_connected(10)
        # The database came back (bob, gone, still has his bid there)...
        assert await retained(port, files, witness) == b"bob's bid"
        # ...and alice's bid is gone from it once her link has sent what it kept.
        for _ in range(100):
            if not await retained(port, files, bid):
                break
            await asyncio.sleep(0.1)
        assert await retained(port, files, bid) == b"", "the stale bid is still retained"
