"""Revocation in the field: the installer publishes it with the gridpeer CLI on the TLS broker,
every gateway drops the revoked node from then on (one that starts later too), and the revoked
node can neither clear the retained revocation nor keep trading."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import aiomqtt
import pytest

from gateway.brokerconfig import BrokerFiles
from gateway.identity import save_envelope
from gateway.market import topics
from gateway.market.agent import MarketAgent, MarketError
from gateway.market.session import Agreed
from protocols.messages import Bid, Revocation
from protocols.signing import generate_key, public_key_hex, sign
from tests.deploy.mosquitto import Brokers, free_port
from tests.deploy.site import tls_agent, write_site
from tests.market.community import COMMUNITY, PARAMS, Community, now_ms

pytestmark = pytest.mark.mosquitto


async def gridpeer(*args: str) -> tuple[int, str]:
    """Run the real CLI in a subprocess (it runs its own event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def retained(port: int, files: BrokerFiles, topic: str) -> bytes:
    """What the broker holds retained on ``topic`` (b"" for nothing), read by a fresh client."""
    tls = files.node("dave").client_context()
    async with aiomqtt.Client("127.0.0.1", port, identifier="dave-probe", tls_context=tls,
                              timeout=5) as probe:
        await probe.subscribe(topic, qos=1)
        sentinel = topics.presence(COMMUNITY, "dave")
        await probe.publish(sentinel, b"probe", qos=1)
        async with asyncio.timeout(10):
            async for message in probe.messages:
                if message.topic.value == topic:
                    return bytes(message.payload)  # type: ignore[arg-type]
                if message.topic.value == sentinel:
                    return b""
    raise AssertionError("message stream ended")


async def test_a_published_revocation_drops_the_node_everywhere(
    mosquitto: Brokers, tmp_path: Path,
) -> None:
    port = free_port()
    files = write_site(tmp_path / "site", port)
    mosquitto.start(files.config, port, tmp_path / "mosquitto.log")
    url = f"mqtts://127.0.0.1:{port}"
    community = Community()
    carol_key = generate_key()
    revocation = tmp_path / "carol.revoke"
    save_envelope(revocation, sign("revoke", Revocation(
        community=COMMUNITY, node="carol", public_key=public_key_hex(carol_key),
        revoked_at_ms=now_ms()), community.authority))

    async with AsyncExitStack() as stack:
        alice, bob = [await stack.enter_async_context(tls_agent(community, files, port, node))
                      for node in ("alice", "bob")]
        carol = await stack.enter_async_context(MarketAgent(
            broker_url=url, community=COMMUNITY, node="carol", identity=carol_key,
            certificate=community.certificate("carol", carol_key),
            authority_key_hex=community.authority_hex, timing=community.timing, params=PARAMS,
            clock=now_ms, tls=files.node("carol")))
        await asyncio.sleep(0.2)

        # Before: carol is a member like the others.
        k = community.next_interval()
        await carol.submit_bid(k, "sell", 1_000, 100)
        await bob.submit_bid(k, "buy", 1_000, 250)
        async with asyncio.timeout(10):
            before = await alice.outcome(k)
        assert isinstance(before, Agreed) and before.result.trades
        assert not alice.rejections

        code, out = await gridpeer(
            "community", "publish-revocation", str(revocation), "--broker", url,
            "--tls-ca", str(files.ca_cert), "--tls-cert", str(files.authority.cert),
            "--tls-key", str(files.authority.key))
        assert code == 0, out
        assert topics.revoked(COMMUNITY, "carol") in out

        # Carol tries to clear it with her own certificate: the ACL drops the publish.
        async with aiomqtt.Client("127.0.0.1", port, identifier="carol-eraser",
                                  tls_context=files.node("carol").client_context(),
                                  timeout=5) as eraser:
            await eraser.publish(topics.revoked(COMMUNITY, "carol"), b"", qos=1, retain=True)
        assert await retained(port, files, topics.revoked(COMMUNITY, "carol")) == (
            revocation.read_bytes())

        # After: carol's bids are refused as revoked, alice and bob still agree and trade, and
        # a gateway that only starts now learns the revocation from the broker.
        dave = await stack.enter_async_context(tls_agent(community, files, port, "dave"))
        await asyncio.sleep(0.3)
        k = community.next_interval()
        with pytest.raises(MarketError, match="revoked"):
            await carol.submit_bid(k, "sell", 2_000, 90)  # her own gateway knows it too
        # A tampered gateway signs and sends one anyway.
        forced = sign("bid", Bid(community=COMMUNITY, interval=k, node="carol", seq=0,
                                 side="sell", energy_wh=2_000, limit_price=90,
                                 created_ms=now_ms()), carol_key)
        async with aiomqtt.Client("127.0.0.1", port, identifier="carol-forced",
                                  tls_context=files.node("carol").client_context(),
                                  timeout=5) as rogue:
            await rogue.publish(topics.bid(COMMUNITY, k, "carol"), forced.to_bytes(), qos=1)
        await alice.submit_bid(k, "sell", 800, 100)
        await bob.submit_bid(k, "buy", 800, 250)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in (alice, bob, dave)]
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({o.result_hash for o in agreed}) == 1
    assert {t.seller for t in agreed[0].result.trades} == {"alice"}
    for agent in (alice, bob, dave):
        assert agent.rejections["revoked"] >= 1, agent.rejections


async def test_publishing_a_certificate_or_a_forged_revocation_is_refused(
    tmp_path: Path,
) -> None:
    community = Community()
    key = generate_key()
    cert = tmp_path / "carol.cert"
    save_envelope(cert, community.certificate("carol", key))
    code, out = await gridpeer("community", "publish-revocation", str(cert),
                               "--broker", "mqtt://127.0.0.1:1")
    assert code == 1 and "not a revocation" in out and "Traceback" not in out

    forged = tmp_path / "forged.revoke"
    envelope = sign("revoke", Revocation(community=COMMUNITY, node="carol",
                                         public_key=public_key_hex(key), revoked_at_ms=0), key)
    tampered = envelope.to_bytes().replace(b'"carol"', b'"alice"')
    forged.write_bytes(tampered)
    code, out = await gridpeer("community", "publish-revocation", str(forged),
                               "--broker", "mqtt://127.0.0.1:1")
    assert code == 1 and "bad-signature" in out and "Traceback" not in out
