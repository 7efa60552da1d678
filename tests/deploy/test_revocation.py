"""Revocation in the field: the installer publishes it with the gridpeer CLI on the TLS broker,
every gateway drops the revoked node from then on (one that starts later too), and the revoked
node can neither clear the retained revocation nor keep trading; and the same CLI shuts the node
out of the broker itself (its certificate on the CRL, its user denied in the ACL)."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import aiomqtt
import pytest

from gateway.identity import create_key_file, save_envelope
from gateway.market.agent import MarketAgent
from protocols.market import Agreed, MarketError, topics
from protocols.messages import Bid, Revocation
from protocols.signing import generate_key, public_key_hex, sign
from tests.deploy.mosquitto import Brokers, free_port
from tests.deploy.site import retained, tls_agent, write_site
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


def client(port: int, node: str, identifier: str, site: Path) -> aiomqtt.Client:
    from gateway.installer.brokerconfig import BrokerFiles

    tls = BrokerFiles(root=site).node(node).client_context()
    return aiomqtt.Client("127.0.0.1", port, identifier=identifier, tls_context=tls, timeout=5)


async def until(client: aiomqtt.Client, topic: str) -> list[str]:
    """The topics ``client`` receives up to and including ``topic``."""
    seen = []
    async with asyncio.timeout(10):
        async for message in client.messages:
            seen.append(message.topic.value)
            if message.topic.value == topic:
                return seen
    raise AssertionError("message stream ended")


async def test_revoke_shuts_the_member_out_of_the_broker(
    mosquitto: Brokers, tmp_path: Path,
) -> None:
    """After ``gridpeer community revoke --broker-dir`` and a reload, the revoked member's open
    connection can neither publish nor receive and a new one fails the TLS handshake; the
    other members keep connecting and trading."""
    port = free_port()
    site = tmp_path / "site"
    files = write_site(site, port)
    broker = mosquitto.start(files.config, port, tmp_path / "mosquitto.log")
    authority = create_key_file(tmp_path / "authority.key")
    community = Community(authority=authority)
    own = topics.roster(COMMUNITY, "carol")
    async with AsyncExitStack() as stack:
        alice, bob = [await stack.enter_async_context(tls_agent(community, files, port, node))
                      for node in ("alice", "bob")]
        watcher = await stack.enter_async_context(client(port, "dave", "dave-watch", site))
        await watcher.subscribe(f"gridpeer/{COMMUNITY}/#", qos=1)
        carol = await stack.enter_async_context(client(port, "carol", "carol-open", site))
        await carol.subscribe(f"gridpeer/{COMMUNITY}/#", qos=1)
        before = topics.presence(COMMUNITY, "dave")
        await watcher.publish(before, b"before", qos=1)
        await until(carol, before)  # carol hears the community, up to now
        await until(watcher, before)

        code, out = await gridpeer(
            "community", "revoke", "--key", str(tmp_path / "authority.key"),
            "--community", COMMUNITY, "--node", "carol",
            "--public-key", public_key_hex(generate_key()), "--out", str(tmp_path / "c.revoke"),
            "--broker-dir", str(site))
        assert code == 0, out
        assert "reload" in out
        broker.send_signal(signal.SIGHUP)
        async with asyncio.timeout(10):
            while "Reloading config" not in mosquitto.log_text():
                await asyncio.sleep(0.05)

        # The connection carol had: her publish goes nowhere, and she hears nothing more.
        await carol.publish(own, b"still here", qos=1, retain=True)
        sentinel = topics.roster(COMMUNITY, "dave")
        await watcher.publish(sentinel, b"after the reload", qos=1)
        heard = await until(watcher, sentinel)
        assert own not in heard
        # Mosquitto would have sent her the sentinel by now; what she still gets was on its way
        # before the reload.
        late: list[tuple[str, object]] = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                async for message in carol.messages:
                    late.append((message.topic.value, message.payload))
        assert (sentinel, b"after the reload") not in late, late
        assert await retained(port, files, own) == b""

        # A new connection with her certificate is refused during the handshake.
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=files.node("carol").client_context())
            writer.write(bytes.fromhex("101100044d5154540402003c000570726f6265"))
            await writer.drain()
            await reader.readexactly(4)

        # The others go on as before.
        k = community.next_interval()
        await alice.submit_bid(k, "sell", 1_000, 100)
        await bob.submit_bid(k, "buy", 1_000, 250)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in (alice, bob)]
        assert all(isinstance(o, Agreed) and o.result.trades for o in outcomes), outcomes
        async with client(port, "dave", "dave-again", site):
            pass
