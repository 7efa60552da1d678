"""Mosquitto with the generated config: gateways trade over TLS, nobody speaks for another node,
and a client without a community certificate does not get in."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from contextlib import AsyncExitStack
from pathlib import Path

import aiomqtt
import pytest

from gateway.clock import Clock
from gateway.config import load_config
from gateway.home import GatewayNode
from gateway.identity import create_key_file, load_certificate, save_envelope
from gateway.installer.brokerconfig import BrokerFiles
from gateway.installer.pki import CommunityCa
from gateway.tls import TlsFiles
from protocols.market import Agreed, topics
from tests.deploy.mosquitto import Brokers, free_port
from tests.deploy.site import TEST_LIMIT_W, tls_agent, write_site
from tests.market.community import COMMUNITY, Community

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def site(mosquitto: Brokers, tmp_path: Path) -> tuple[BrokerFiles, int]:
    port = free_port()
    files = write_site(tmp_path / "site", port)
    mosquitto.start(files.config, port, tmp_path / "mosquitto.log")
    return files, port


def client(port: int, identifier: str, tls: ssl.SSLContext) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, identifier=identifier, tls_context=tls, timeout=5)


async def drain_until(c: aiomqtt.Client, sentinel: str) -> list[aiomqtt.Message]:
    """Every message up to and including the one on ``sentinel``. Mosquitto delivers one
    client's messages in order, so anything published before the sentinel has arrived by then:
    no waiting for something that should not come."""
    seen = []
    async with asyncio.timeout(10):
        async for message in c.messages:
            seen.append(message)
            if message.topic.value == sentinel:
                return seen
    raise AssertionError("message stream ended")


async def test_agents_trade_over_tls(site: tuple[BrokerFiles, int]) -> None:
    files, port = site
    community = Community()
    async with AsyncExitStack() as stack:
        alice, bob, carol = [
            await stack.enter_async_context(tls_agent(community, files, port, node))
            for node in ("alice", "bob", "carol")
        ]
        await asyncio.sleep(0.2)  # presence and certificates travel
        k = community.next_interval()
        await alice.submit_bid(k, "sell", 2_000, 100)
        await bob.submit_bid(k, "buy", 1_500, 250)
        await carol.submit_bid(k, "buy", 1_000, 200)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in (alice, bob, carol)]
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    agreed = [o for o in outcomes if isinstance(o, Agreed)]
    assert len({o.result_hash for o in agreed}) == 1
    assert agreed[0].result.trades
    sold = agreed[0].position
    assert sold is not None and sold.sold_wh == 2_000
    for agent in (alice, bob, carol):
        assert not agent.rejections, agent.rejections


async def test_a_gateway_configured_for_mqtts_trades_over_tls(
    site: tuple[BrokerFiles, int], tmp_path: Path,
) -> None:
    """The homeowner's path: ``gridpeer.toml`` names the broker as mqtts:// and the TLS files
    (relative to the config), and the gateway's market link comes up over TLS from that alone."""
    files, port = site
    community = Community()
    home = tmp_path / "dave"
    home.mkdir()
    key = create_key_file(home / "node.key")
    # Every gateway clips an order to its sender's certificate over the interval, the test agents
    # with the same interval length as the gateway: 1,000 Wh in these 1 s intervals needs 3.6 MW.
    save_envelope(home / "node.cert", community.certificate(
        "dave", key, import_limit_w=TEST_LIMIT_W, export_limit_w=TEST_LIMIT_W))
    for name, src in (("ca.crt", files.ca_cert), ("dave.crt", files.node("dave").cert),
                      ("dave.key", files.node("dave").key)):
        (home / name).write_bytes(src.read_bytes())
    start_ms = community.timing.epoch_ms
    (home / "gridpeer.toml").write_text(
        'node = "dave"\nkey_file = "node.key"\ncertificate_file = "node.cert"\n'
        f'state_dir = "state"\n[market]\ncommunity = "{COMMUNITY}"\n'
        f'broker = "mqtts://127.0.0.1:{port}"\nauthority_key = "{community.authority_hex}"\n'
        f"interval_s = 1\ngate_s = 0.6\ngrace_s = 0.15\nepoch_ms = {start_ms}\n"
        'tls_ca = "ca.crt"\ntls_cert = "dave.crt"\ntls_key = "dave.key"\n'
        "[dashboard]\nenabled = false\n"
    )
    config = load_config(home / "gridpeer.toml")
    gateway = GatewayNode(config=config, key=key, certificate=load_certificate(
        config.certificate_file)[0], clock=Clock.wall())
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(gateway)
        alice, bob = [await stack.enter_async_context(tls_agent(
            community, files, port, node, energy_interval_ms=community.timing.length_ms))
            for node in ("alice", "bob")]
        await asyncio.sleep(0.2)
        assert gateway.agent is not None
        k = community.next_interval()
        await gateway.agent.submit_bid(k, "sell", 1_000, 100)
        await alice.submit_bid(k, "buy", 1_000, 250)
        await bob.submit_bid(k, "buy", 500, 200)
        async with asyncio.timeout(10):
            outcomes = [await agent.outcome(k) for agent in (gateway.agent, alice, bob)]
    assert all(isinstance(o, Agreed) for o in outcomes), outcomes
    assert len({o.result_hash for o in outcomes if isinstance(o, Agreed)}) == 1
    dave = outcomes[0]
    assert isinstance(dave, Agreed) and dave.position is not None
    assert dave.position.sold_wh == 1_000


async def test_a_node_cannot_publish_under_another_id(site: tuple[BrokerFiles, int]) -> None:
    files, port = site
    forged = [
        topics.presence(COMMUNITY, "alice"),
        topics.roster(COMMUNITY, "alice"),
        topics.bid(COMMUNITY, 7, "alice"),
        topics.commit(COMMUNITY, 7, "alice"),
        topics.settle(COMMUNITY, 7, "alice"),
        "gridpeer/other-street/bids/7/bob",  # another community
    ]
    own = topics.bid(COMMUNITY, 7, "bob")
    alice_ctx = files.node("alice").client_context()
    async with client(port, "alice", alice_ctx) as watcher:
        await watcher.subscribe("gridpeer/#", qos=1)
        async with client(port, "bob", files.node("bob").client_context()) as bob:
            for topic in forged:
                await bob.publish(topic, b"forged", qos=1, retain=True)
            await bob.publish(own, b"mine", qos=1, retain=True)
        seen = await drain_until(watcher, own)
    assert [m.topic.value for m in seen] == [own]

    # Nothing forged was retained either: a newcomer gets bob's own bid and nothing else.
    async with client(port, "carol", files.node("carol").client_context()) as carol:
        await carol.subscribe("gridpeer/#", qos=1)
        sentinel = topics.settle(COMMUNITY, 0, "carol")
        await carol.publish(sentinel, b"done", qos=1)
        seen = await drain_until(carol, sentinel)
    assert sorted(m.topic.value for m in seen) == sorted([own, sentinel])


# MQTT 3.1.1 CONNECT, clean session, keepalive 60, client id "probe".
_CONNECT = bytes.fromhex("101100044d5154540402003c000570726f6265")
_CONNACK_OK = bytes.fromhex("20020000")


async def first_reply(port: int, tls: ssl.SSLContext | None) -> bytes:
    """Send one CONNECT and read the 4-byte CONNACK. A refusal raises (TLS alert, reset, EOF)
    at once instead of leaving a client library waiting for its timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        writer.write(_CONNECT)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.readexactly(len(_CONNACK_OK))
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


_REFUSED = (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)


async def test_clients_without_a_community_certificate_are_refused(
    site: tuple[BrokerFiles, int], tmp_path: Path,
) -> None:
    files, port = site
    # The genuine certificate gets a CONNACK "accepted", so the refusals below are about
    # the certificate and not about the probe.
    assert await first_reply(port, files.node("alice").client_context()) == _CONNACK_OK

    with pytest.raises(_REFUSED):
        await first_reply(port, ssl.create_default_context(cafile=str(files.ca_cert)))

    # A certificate from another CA, even with a member's name, is not the community's.
    now = dt.datetime.now(dt.UTC)
    foreign = CommunityCa.create(community="elsewhere", now=now)
    foreign.issue_client(common_name="alice", now=now).write(
        cert=tmp_path / "fake.crt", key=tmp_path / "fake.key")
    fake = TlsFiles(ca=files.ca_cert, cert=tmp_path / "fake.crt", key=tmp_path / "fake.key")
    with pytest.raises(_REFUSED):
        await first_reply(port, fake.client_context())

    # Plain MQTT on the TLS port gets nowhere.
    with pytest.raises(_REFUSED):
        await first_reply(port, None)
