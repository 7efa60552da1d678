"""A community over two sites: two Mosquittos bridged over TLS, half the gateways on each.

Site A runs the generated ``mosquitto.conf``; site B runs the same listener and ACL plus the
generated bridge section (on another port, since both sites share this machine). The agents
need no change: they agree on one result and trade exactly as on one broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiomqtt
import pytest

from gateway.installer.brokerconfig import Bridge, BrokerFiles, render_config
from protocols.market import Agreed, topics
from tests.deploy.mosquitto import Brokers, free_port
from tests.deploy.site import run_as, tls_agent, write_site
from tests.market.community import COMMUNITY, Community

pytestmark = pytest.mark.mosquitto


async def wait_for_bridge(files: BrokerFiles, port_a: int, port_b: int, *,
                          timeout_s: float) -> None:
    """Publish from a node on site B until a node on site A hears it: the bridge is up."""
    probe = topics.settle(COMMUNITY, 0, "dave")

    def connect(port: int, node: str) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", port, identifier=f"probe-{node}", timeout=5,
                              tls_context=files.node(node).client_context())

    async with connect(port_a, "alice") as a, connect(port_b, "dave") as b:
        await a.subscribe(probe, qos=1)

        async def ping() -> None:
            while True:
                await b.publish(probe, b"ping", qos=1)
                await asyncio.sleep(0.1)

        async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as group:
            pinger = group.create_task(ping())
            async for _ in a.messages:
                pinger.cancel()
                break


Sites = tuple[Brokers, BrokerFiles, int, int, Callable[[], None]]


@pytest.fixture
def two_sites(mosquitto: Brokers, tmp_path: Path) -> Sites:
    """Both sites running; the callable restarts site B (and with it the bridge)."""
    port_a, port_b = free_port(), free_port()
    files = write_site(tmp_path / "site", port_a, bridge_to=("127.0.0.1", port_a))
    site_b = tmp_path / "site-b.conf"
    site_b.write_text(render_config(
        community=COMMUNITY, port=port_b, server=files.server, acl=files.acl, crl=files.crl,
        data_dir=tmp_path, run_as=run_as(),
        bridge=Bridge(community=COMMUNITY, host="127.0.0.1", port=port_a, tls=files.bridge),
    ))
    # Site B (the bridge's end) first: its first bridge attempt is refused and the retry meets a
    # site A that is up. The other way round, Mosquitto 2.0.11 sometimes left a bridge that site
    # A had accepted silent on site B, for good.
    b = mosquitto.start(site_b, port_b, tmp_path / "site-b.log")
    mosquitto.start(files.config, port_a, tmp_path / "site-a.log")

    def restart_b() -> None:
        b.terminate()
        b.wait(timeout=10)
        mosquitto.start(site_b, port_b, tmp_path / "site-b-restarted.log")

    return mosquitto, files, port_a, port_b, restart_b


async def test_gateways_on_two_bridged_brokers_agree_and_trade(two_sites: Sites) -> None:
    brokers, files, port_a, port_b, restart_b = two_sites
    try:
        await wait_for_bridge(files, port_a, port_b, timeout_s=45)
    except TimeoutError:
        # Mosquitto 2.0.11 once left a TLS bridge that site A had accepted silent on site B for
        # the whole 90 s (loaded host, no retry logged): restart site B once, as an installer
        # would, and let the rest of the test judge the bridged community.
        restart_b()
        try:
            await wait_for_bridge(files, port_a, port_b, timeout_s=45)
        except TimeoutError:
            pytest.fail(f"the bridge never carried a message:\n{brokers.log_text()}")
    community = Community()
    placement = {"alice": port_a, "bob": port_b, "carol": port_a, "dave": port_b}
    async with AsyncExitStack() as stack:
        agents = {
            node: await stack.enter_async_context(tls_agent(community, files, port, node))
            for node, port in placement.items()
        }
        await asyncio.sleep(0.3)  # presence and certificates cross the bridge
        k = community.next_interval()
        await agents["alice"].submit_bid(k, "sell", 2_000, 100)  # site A
        await agents["bob"].submit_bid(k, "sell", 1_000, 120)  # site B
        await agents["carol"].submit_bid(k, "buy", 1_500, 250)  # site A
        await agents["dave"].submit_bid(k, "buy", 1_200, 200)  # site B
        async with asyncio.timeout(15):
            outcomes = {node: await agent.outcome(k) for node, agent in agents.items()}
    assert all(isinstance(o, Agreed) for o in outcomes.values()), outcomes
    agreed = {node: o for node, o in outcomes.items() if isinstance(o, Agreed)}
    assert len({o.result_hash for o in agreed.values()}) == 1
    result = agreed["alice"].result
    # Every bid, from either site, went into the one result, and energy crossed the bridge:
    # supply 3,000 Wh against demand 2,700 Wh at overlapping prices, so every buyer is filled.
    assert {o.node for o in result.outcomes} == set(placement)
    bought = {o.node: o.bought_wh for o in result.outcomes}
    assert bought["carol"] == 1_500 and bought["dave"] == 1_200
    assert sum(t.energy_wh for t in result.trades) == 2_700
    for agent in agents.values():
        assert not agent.rejections, agent.rejections
